//! One training run: its configuration, its errors and its result, the training step,
//! and the test-set evaluation. The loop that drives them lives in [`crate::trainer`];
//! [`train`] is its simplest entry point.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Reduction, Tensor};
use zoo::ResNetSpec;
use zoo::cifar;

pub use crate::checkpoint::checkpoint_path;
use crate::data::{TensorDataset, to_unit_float};
use crate::dataset::Cifar10Tensors;
use crate::metrics::EpochMetrics;
use crate::model::{ResNet, combine_views, predict_batches, predict_views, to_channels_last};
use crate::optim::{Ema, FlatSgd};
use crate::recipe::Recipe;
use zoo::tta::{TtaMode, View};

/// Everything that defines one training run. [`crate::trainer::Trainer`] reads all but
/// `data_dir` (the data comes loaded), `resume` only in [`crate::trainer::Trainer::start`],
/// and `stop_after` only in [`crate::trainer::fit`].
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Model name (used for file names).
    pub name: String,
    pub spec: ResNetSpec,
    pub recipe: Recipe,
    pub seed: u64,
    pub device: Device,
    /// Folder holding the CIFAR-10 binary files.
    pub data_dir: PathBuf,
    /// Folder for the checkpoint, logs and curves of this run.
    pub run_dir: PathBuf,
    /// Train on the first N training images only (quick runs and tests).
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test images only (tests). `None` = all 10,000.
    pub test_limit: Option<usize>,
    /// Hold out this many training images as a validation split (0 = none).
    pub val_size: usize,
    /// Log test loss/accuracy every N epochs for the curves (0 = only at the end).
    pub eval_test_every: u32,
    /// Continue from `run_dir/checkpoint.ot` if it exists.
    pub resume: bool,
    /// Stop (cleanly, with a checkpoint) after this many epochs in this invocation.
    pub stop_after: Option<u32>,
}

/// Why a run stopped without a result.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] cifar::CifarError),
    #[error(
        "training diverged: the loss became {value} in epoch {epoch}; nothing was written for this epoch. Lower the learning rate (e.g. --set optimizer.lr=...) or add warm-up"
    )]
    Diverged { epoch: u32, value: f64 },
    #[error(
        "{path} already holds a checkpoint of an earlier run; pass --resume to continue it, or --restart to discard it"
    )]
    CheckpointExists { path: PathBuf },
    #[error(
        "cannot resume from {path}: it was written for a different run ({what} differs); use another --run-dir or --restart"
    )]
    Mismatch { path: PathBuf, what: String },
    #[error("checkpoint {path} is unreadable ({reason}); delete it or pass --restart")]
    BadCheckpoint { path: PathBuf, reason: String },
    #[error("invalid spec: {0}")]
    Spec(#[from] zoo::SpecError),
    #[error("the training set is empty; use a larger --train-limit or a smaller validation split")]
    EmptyTrainSet,
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("torch error: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Init(#[from] crate::init::InitError),
    #[error("the run has finished all its {epochs} epochs; nothing is left to train")]
    NoEpochsLeft { epochs: u32 },
}

/// Final test-set numbers of a finished run (fp32, eval mode, final epoch's weights).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinalMetrics {
    pub test_images: usize,
    pub top1: f64,
    pub top1_flip_tta: f64,
    /// Six-view TTA top-1, measured when the recipe claims it (`six_view_tta`).
    #[serde(default)]
    pub top1_6view: Option<f64>,
    pub loss: f64,
}

/// The outcome of [`train`].
#[derive(Debug)]
pub struct RunResult {
    /// The trained variables (EMA weights if the recipe averages).
    pub vs: VarStore,
    pub model: ResNet,
    pub history: Vec<EpochMetrics>,
    /// `None` when the run stopped early on `stop_after`.
    pub final_metrics: Option<FinalMetrics>,
    pub epochs_done: u32,
    pub train_time_s: f64,
    pub images_per_s: f64,
    pub train_images: usize,
    pub dataset_digest: String,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loss (mean), top-1, flip-TTA top-1 and, when `six_view`, six-view top-1 (percent) of
/// `model` on a dataset, with the activations channels-last when `channels_last` (as in
/// training).
pub fn evaluate(
    model: &ResNet,
    ds: &TensorDataset,
    device: Device,
    batch: usize,
    channels_last: bool,
    six_view: bool,
) -> FinalMetrics {
    let labels = ds.labels.to_device(Device::Cpu);
    // One pass per view; the first two views of every mode past `none` are the image
    // and its mirror, so the single-view and flip numbers come from the same passes.
    let mode = if six_view {
        TtaMode::SixView
    } else {
        TtaMode::Flip
    };
    let views = predict_views(model, &ds.images, device, batch as i64, mode, channels_last);
    let flip = combine_views(TtaMode::Flip, &views[..2]);
    FinalMetrics {
        test_images: ds.len(),
        top1: top1(&views[0], &labels),
        top1_flip_tta: top1(&flip, &labels),
        top1_6view: six_view.then(|| top1(&combine_views(mode, &views), &labels)),
        loss: views[0].cross_entropy_for_logits(&labels).double_value(&[]),
    }
}

/// Loss and single-view top-1 only: one pass, for the per-epoch curves (on a CPU a
/// full two-view evaluation of 10,000 images costs about half a minute per epoch).
pub(crate) fn evaluate_single_view(
    model: &ResNet,
    ds: &TensorDataset,
    device: Device,
    batch: usize,
    channels_last: bool,
) -> (f64, f64) {
    let labels = ds.labels.to_device(Device::Cpu);
    let logits = predict_batches(
        model,
        &ds.images,
        device,
        batch as i64,
        View::IDENTITY,
        channels_last,
    );
    (
        logits.cross_entropy_for_logits(&labels).double_value(&[]),
        top1(&logits, &labels),
    )
}

fn top1(logits: &Tensor, labels: &Tensor) -> f64 {
    100.0
        * logits
            .argmax(1, false)
            .eq_tensor(labels)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
}

/// Runs (or resumes) one training run start to finish: loads the data from
/// `cfg.data_dir`, then [`crate::trainer::fit`] without progress reports.
pub fn train(cfg: &RunConfig) -> Result<RunResult, TrainError> {
    let data = Cifar10Tensors::load(&cfg.data_dir, cfg.device)?;
    crate::trainer::fit(cfg, &data, &mut |_| {})
}

/// One optimisation step on a batch of uint8 images: augment on the device, forward
/// (channels-last when the recipe asks; bf16 autocast when it asks and `cuda`), smoothed
/// cross-entropy, backward, SGD at `lr`. Returns the loss and the fp32 logits.
/// `flips` gives each image's mirror decision (alternating flip); `None` draws them.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    model: &ResNet,
    opt: &mut FlatSgd,
    recipe: &Recipe,
    images_u8: &Tensor,
    labels: &Tensor,
    flips: Option<&Tensor>,
    lr: f64,
    cuda: bool,
) -> (Tensor, Tensor) {
    timed_train_step(
        model,
        opt,
        recipe,
        images_u8,
        labels,
        flips,
        lr,
        cuda,
        &mut |_| {},
    )
}

/// The phases of a training step, in order, as [`timed_train_step`] reports them.
pub const STEP_PHASES: [&str; 4] = ["augment", "forward", "backward", "update"];

/// [`train_step`] with `mark(i)` called as phase `i` of [`STEP_PHASES`] ends, so a
/// profiler can read a clock there (and synchronise a GPU first).
#[allow(clippy::too_many_arguments)]
pub fn timed_train_step(
    model: &ResNet,
    opt: &mut FlatSgd,
    recipe: &Recipe,
    images_u8: &Tensor,
    labels: &Tensor,
    flips: Option<&Tensor>,
    lr: f64,
    cuda: bool,
    mark: &mut dyn FnMut(usize),
) -> (Tensor, Tensor) {
    let x = recipe
        .augment
        .apply_with_flips(&to_unit_float(images_u8), flips);
    let x = if recipe.channels_last {
        to_channels_last(&x)
    } else {
        x
    };
    mark(0);
    let logits = tch::autocast(recipe.bf16_autocast && cuda, || model.forward_t(&x, true))
        .to_kind(Kind::Float);
    let loss = logits.cross_entropy_loss::<Tensor>(
        labels,
        None,
        Reduction::Mean,
        -100,
        recipe.label_smoothing,
    );
    mark(1);
    opt.zero_grad();
    loss.backward();
    mark(2);
    opt.step(lr);
    mark(3);
    (loss, logits)
}

/// The trainable tensors a recipe keeps fixed: the whitened stem, and BN scales when
/// they are frozen.
pub(crate) fn frozen_params(recipe: &Recipe) -> impl Fn(&str) -> bool {
    let (stem, bn_scale) = (recipe.whiten_stem, recipe.freeze_bn_scale);
    move |name: &str| {
        (stem && name == "stem.conv.weight")
            || (bn_scale && name.contains(".bn") && name.ends_with(".weight"))
    }
}

pub(crate) fn device_index(d: Device) -> i64 {
    match d {
        Device::Cuda(i) => i as i64,
        _ => 0,
    }
}

/// Runs an evaluation `f` on the weights the run reports: the EMA ones when the recipe
/// averages (swapped in without disturbing the live ones), else the live ones.
pub(crate) fn on_eval_weights<T>(vs: &VarStore, ema: Option<&Ema>, f: impl FnOnce() -> T) -> T {
    match ema {
        Some(e) => with_ema_weights(vs, e, f),
        None => f(),
    }
}

/// Runs `f` with the EMA weights swapped into the model, then restores the live ones.
fn with_ema_weights<T>(vs: &VarStore, ema: &Ema, f: impl FnOnce() -> T) -> T {
    let _guard = tch::no_grad_guard();
    let backup: Vec<(Tensor, Tensor)> = vs
        .variables()
        .into_values()
        .map(|t| {
            let copy = t.detach().copy();
            (t, copy)
        })
        .collect();
    ema.copy_to_model();
    let out = f();
    for (live, saved) in backup {
        live.shallow_clone().copy_(&saved);
    }
    out
}
