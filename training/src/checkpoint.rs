//! The checkpoint phase: `<run-dir>/checkpoint.ot`, written atomically after every epoch,
//! holds everything an exact resume needs (weights and BN statistics, the optimizer's
//! momentum, the EMA and lookahead copies, and the run's settings and history).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Tensor};
use tpsnet_zoo::ResNetSpec;

use crate::ema::Ema;
use crate::error::{TrainError, io_err};
use crate::metrics::EpochMetrics;
use crate::optim::FlatSgd;
use crate::recipe::Recipe;

/// What the checkpoint's `meta` entry records, besides tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CheckpointMeta {
    pub spec: ResNetSpec,
    pub recipe: Recipe,
    pub seed: u64,
    pub train_limit: Option<usize>,
    pub val_size: usize,
    pub epochs_done: u32,
    pub train_time_s: f64,
    pub history: Vec<EpochMetrics>,
}

/// Path of the run's checkpoint file.
pub fn checkpoint_path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint.ot")
}

/// The trainer's state that a checkpoint holds, borrowed for saving or restoring.
pub(crate) struct TrainState<'a> {
    pub vs: &'a VarStore,
    pub opt: &'a mut FlatSgd,
    pub ema: Option<&'a mut Ema>,
    pub lookahead: Option<&'a mut Ema>,
}

pub(crate) fn save_checkpoint(
    path: &Path,
    vs: &VarStore,
    opt: &FlatSgd,
    ema: Option<&Ema>,
    lookahead: Option<&Ema>,
    meta: &CheckpointMeta,
) -> Result<(), TrainError> {
    let meta_bytes = serde_json::to_vec(meta).expect("meta serialises");
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("model.{n}"), t))
        .collect();
    named.push(("optim.momentum".into(), opt.state().shallow_clone()));
    if let Some(l) = lookahead {
        named.extend(
            l.averaged()
                .map(|(n, t)| (format!("lookahead.{n}"), t.shallow_clone())),
        );
    }
    if let Some(e) = ema {
        named.extend(
            e.averaged()
                .map(|(n, t)| (format!("ema.{n}"), t.shallow_clone())),
        );
    }
    named.push(("meta".into(), Tensor::from_slice(&meta_bytes)));
    // Serialised in memory, then written by std: libtorch's own file writer aborts the
    // process (an exception thrown in a destructor) when the disk is full, where
    // `write_atomic` returns the error and leaves the previous checkpoint.
    let mut bytes = Vec::new();
    Tensor::save_multi_to_stream(&named, &mut bytes).map_err(TrainError::from)?;
    tpsnet_zoo::publish::write_atomic(path, &bytes).map_err(io_err(path))
}

fn load_checkpoint(
    path: &Path,
    device: Device,
) -> Result<(CheckpointMeta, HashMap<String, Tensor>), TrainError> {
    let bad = |reason: String| TrainError::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let tensors: HashMap<String, Tensor> = Tensor::load_multi_with_device(path, device)
        .map_err(|e| bad(e.to_string()))?
        .into_iter()
        .collect();
    let meta = tensors
        .get("meta")
        .ok_or_else(|| bad("no `meta` entry".into()))?;
    let bytes =
        Vec::<u8>::try_from(&meta.to_device(Device::Cpu)).map_err(|e| bad(e.to_string()))?;
    let meta: CheckpointMeta = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    Ok((meta, tensors))
}

/// Reads the checkpoint at `path` into `state`, after checking that it was written for
/// the run `expected` describes (same spec, recipe, seed and data selection). Returns
/// the saved progress (epochs done, time, history).
pub(crate) fn restore(
    path: &Path,
    device: Device,
    expected: &CheckpointMeta,
    state: TrainState,
) -> Result<CheckpointMeta, TrainError> {
    let (saved, tensors) = load_checkpoint(path, device)?;
    let differs = |what: &str| TrainError::Mismatch {
        path: path.to_path_buf(),
        what: what.into(),
    };
    if saved.spec != expected.spec {
        return Err(differs("the architecture spec"));
    }
    if saved.recipe != expected.recipe {
        return Err(differs("the recipe"));
    }
    if (saved.seed, saved.train_limit, saved.val_size)
        != (expected.seed, expected.train_limit, expected.val_size)
    {
        return Err(differs("the seed or data selection"));
    }
    let bad = |reason: String| TrainError::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let _guard = tch::no_grad_guard();
    for (name, var) in state.vs.variables() {
        let t = tensors
            .get(&format!("model.{name}"))
            .ok_or_else(|| bad(format!("missing `{name}`")))?;
        var.shallow_clone().copy_(t);
    }
    let m = tensors
        .get("optim.momentum")
        .ok_or_else(|| bad("missing optimizer state".into()))?;
    state.opt.load_state(m).map_err(|e| bad(e.to_string()))?;
    if let Some(l) = state.lookahead {
        l.load_prefixed(&tensors, "lookahead")
            .map_err(|e| bad(e.to_string()))?;
    }
    if let Some(e) = state.ema {
        e.load(&tensors).map_err(|e| bad(e.to_string()))?;
    }
    Ok(saved)
}
