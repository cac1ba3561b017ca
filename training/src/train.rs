//! The training loop: data on the device, one recipe, a checkpoint every epoch.
//!
//! Read top to bottom, one epoch is: reseed torch's RNG from (seed, epoch) so a resumed
//! epoch replays exactly; shuffle; for each batch gather, augment on the device, forward
//! (bf16 autocast on CUDA if the recipe says so), smoothed cross-entropy, backward, flat
//! SGD step at the scheduled rate, EMA update; then evaluate, write the checkpoint
//! atomically, the metrics logs and the curves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Reduction, Tensor};
use zoo::ResNetSpec;
use zoo::cifar::{self, Split};

use crate::data::{TensorDataset, to_unit_float};
use crate::init;
use crate::metrics::{EpochMetrics, write_logs, write_plots};
use crate::model::{BuildOptions, ResNet, predict_batches, predict_views, to_channels_last};
use crate::optim::{Ema, FlatSgd};
use crate::recipe::Recipe;

/// Everything that defines one training run.
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
    /// Show a progress bar (otherwise one line per epoch on stderr).
    pub progress: bool,
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
}

/// What the checkpoint's `meta` entry records, besides tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    spec: ResNetSpec,
    recipe: Recipe,
    seed: u64,
    train_limit: Option<usize>,
    val_size: usize,
    epochs_done: u32,
    train_time_s: f64,
    history: Vec<EpochMetrics>,
}

/// Final test-set numbers of a finished run (fp32, eval mode, final epoch's weights).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinalMetrics {
    pub test_images: usize,
    pub top1: f64,
    pub top1_flip_tta: f64,
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

/// Path of the run's checkpoint file.
pub fn checkpoint_path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint.ot")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loss (mean), top-1 and flip-TTA top-1 (percent) of `model` on a dataset, with the
/// activations channels-last when `channels_last` (as in training).
pub fn evaluate(
    model: &ResNet,
    ds: &TensorDataset,
    device: Device,
    batch: usize,
    channels_last: bool,
) -> FinalMetrics {
    let labels = ds.labels.to_device(Device::Cpu);
    // Two passes (image, mirror) give both numbers: TTA is their mean.
    let (single, mirrored) = predict_views(model, &ds.images, device, batch as i64, channels_last);
    let tta = (&single + mirrored) * 0.5;
    FinalMetrics {
        test_images: ds.len(),
        top1: top1(&single, &labels),
        top1_flip_tta: top1(&tta, &labels),
        loss: single.cross_entropy_for_logits(&labels).double_value(&[]),
    }
}

/// Loss and single-view top-1 only: one pass, for the per-epoch curves (on a CPU a
/// full two-view evaluation of 10,000 images costs about half a minute per epoch).
fn evaluate_single_view(
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
        false,
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

fn save_checkpoint(
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
    let tmp = path.with_extension(format!("ot.tmp-{}", std::process::id()));
    let result = Tensor::save_multi(&named, &tmp)
        .map_err(TrainError::from)
        .and_then(|_| {
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(io_err(path))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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

/// Runs (or resumes) one training run and evaluates the final weights on the test set.
pub fn train(cfg: &RunConfig) -> Result<RunResult, TrainError> {
    cfg.spec.validate()?;
    let device = cfg.device;
    let recipe = &cfg.recipe;
    std::fs::create_dir_all(&cfg.run_dir).map_err(io_err(&cfg.run_dir))?;
    let ckpt = checkpoint_path(&cfg.run_dir);
    if ckpt.exists() && !cfg.resume {
        return Err(TrainError::CheckpointExists { path: ckpt });
    }

    // Data: whole splits on the device.
    // One pass over the files gives both the data and the manifest's dataset digest.
    let (mut train_raw, dataset_digest) =
        cifar::load_and_digest(&cfg.data_dir, Split::Train, true)?;
    if let Some(n) = cfg.train_limit {
        train_raw = train_raw.subset(0..n.min(train_raw.len()));
    }
    let full_train = TensorDataset::from_cifar(&train_raw, device);
    drop(train_raw);
    let (train_set, val_set) = if cfg.val_size > 0 {
        let (t, v) = full_train.split_validation(cfg.val_size, cfg.seed);
        (t, Some(v))
    } else {
        (full_train, None)
    };
    if train_set.is_empty() {
        return Err(TrainError::EmptyTrainSet);
    }
    let mut test_raw = cifar::load(&cfg.data_dir, Split::Test)?;
    if let Some(n) = cfg.test_limit {
        test_raw = test_raw.subset(0..n.min(test_raw.len()));
    }
    let test_set = TensorDataset::from_cifar(&test_raw, device);
    drop(test_raw);

    // Model and optimizer, seeded.
    tch::manual_seed(cfg.seed as i64);
    let vs = VarStore::new(device);
    let mut model = ResNet::with_options(&vs.root(), &cfg.spec, BuildOptions::from_recipe(recipe));
    if recipe.whiten_stem {
        // airbench whitens from 5,000 training images; the statistics barely move
        // with more.
        let k = train_set.len().min(5000) as i64;
        init::whiten_stem(&vs, &cfg.spec, &train_set.images.narrow(0, 0, k))?;
    }
    if recipe.dirac_init {
        init::dirac_init(&vs, &cfg.spec);
    }
    let mut opt = FlatSgd::with_frozen(
        &vs,
        &cfg.spec,
        recipe.optimizer.clone(),
        &frozen_params(recipe),
    );
    let mut ema = recipe.ema.as_ref().map(|e| Ema::new(&vs, e.decay));
    let mut lookahead = recipe.lookahead.as_ref().map(|_| Ema::new(&vs, 0.0));

    let mut meta = CheckpointMeta {
        spec: cfg.spec.clone(),
        recipe: recipe.clone(),
        seed: cfg.seed,
        train_limit: cfg.train_limit,
        val_size: cfg.val_size,
        epochs_done: 0,
        train_time_s: 0.0,
        history: Vec::new(),
    };
    if cfg.resume && ckpt.exists() {
        let (saved, tensors) = load_checkpoint(&ckpt, device)?;
        let differs = |what: &str| TrainError::Mismatch {
            path: ckpt.clone(),
            what: what.into(),
        };
        if saved.spec != meta.spec {
            return Err(differs("the architecture spec"));
        }
        if saved.recipe != meta.recipe {
            return Err(differs("the recipe"));
        }
        if (saved.seed, saved.train_limit, saved.val_size)
            != (meta.seed, meta.train_limit, meta.val_size)
        {
            return Err(differs("the seed or data selection"));
        }
        let _guard = tch::no_grad_guard();
        for (name, var) in vs.variables() {
            let t =
                tensors
                    .get(&format!("model.{name}"))
                    .ok_or_else(|| TrainError::BadCheckpoint {
                        path: ckpt.clone(),
                        reason: format!("missing `{name}`"),
                    })?;
            var.shallow_clone().copy_(t);
        }
        let bad = |reason: String| TrainError::BadCheckpoint {
            path: ckpt.clone(),
            reason,
        };
        let m = tensors
            .get("optim.momentum")
            .ok_or_else(|| bad("missing optimizer state".into()))?;
        opt.load_state(m).map_err(bad)?;
        if let Some(l) = lookahead.as_mut() {
            l.load_prefixed(&tensors, "lookahead").map_err(bad)?;
        }
        if let Some(e) = ema.as_mut() {
            e.load(&tensors).map_err(bad)?;
        }
        meta = saved;
    }

    let n = train_set.len() as i64;
    // Alternating flip: one seeded orientation per image, inverted every other epoch.
    let base_flips = (recipe.augment.flip && recipe.augment.alternate_flip).then(|| {
        tch::manual_seed((cfg.seed as i64).wrapping_mul(1_000_003).wrapping_sub(1));
        Tensor::randint(2, [n], (Kind::Int64, device))
    });
    let bs = recipe.batch_size as i64;
    let steps_per_epoch = (n + bs - 1) / bs;
    let epochs = recipe.epochs;
    let bar = if cfg.progress {
        ProgressBar::new(epochs as u64 * steps_per_epoch as u64)
    } else {
        ProgressBar::with_draw_target(
            Some(epochs as u64 * steps_per_epoch as u64),
            ProgressDrawTarget::hidden(),
        )
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} steps, ETA {eta} | {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(cfg.name.clone());
    bar.set_position(meta.epochs_done as u64 * steps_per_epoch as u64);
    let cuda = device.is_cuda();
    let log_every = 10;
    let mut stopped_early = false;
    let mut epochs_this_call = 0;
    let mut last_test: Option<FinalMetrics> = None;

    while meta.epochs_done < epochs {
        if cfg.stop_after.is_some_and(|k| epochs_this_call >= k) {
            stopped_early = true;
            break;
        }
        let epoch = meta.epochs_done; // 0-based index of the epoch being run
        // Per-epoch seed: an epoch resumed from a checkpoint replays the same batches,
        // augmentations and dropout masks.
        tch::manual_seed(
            (cfg.seed as i64)
                .wrapping_mul(1_000_003)
                .wrapping_add(epoch as i64 + 1),
        );
        if cuda {
            tch::Cuda::synchronize(device_index(device));
        }
        let t0 = Instant::now();
        let perm = Tensor::randperm(n, (Kind::Int64, device));
        let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
        let mut correct = Tensor::zeros([], (Kind::Int64, device));
        let mut lr = recipe.lr_at(epoch as f64);
        for step in 0..steps_per_epoch {
            let start = step * bs;
            let len = bs.min(n - start);
            let idx = perm.narrow(0, start, len);
            let y = train_set.labels.index_select(0, &idx);
            lr = recipe.lr_at(epoch as f64 + step as f64 / steps_per_epoch as f64);
            let flips = base_flips
                .as_ref()
                .map(|b| b.index_select(0, &idx).bitwise_xor((epoch % 2) as i64));
            let (loss, logits) = train_step(
                &model,
                &mut opt,
                recipe,
                &train_set.images.index_select(0, &idx),
                &y,
                flips.as_ref(),
                lr,
                cuda,
            );
            if let Some(la) = &recipe.lookahead {
                let global = epoch as i64 * steps_per_epoch + step + 1;
                if global % la.every_steps.max(1) as i64 == 0 {
                    let t = global as f64 / steps_per_epoch as f64;
                    if let Some(l) = lookahead.as_mut() {
                        l.lookahead(recipe.lookahead_decay_at(t).unwrap_or(0.0));
                    }
                }
                if epoch + 1 == epochs && step + 1 == steps_per_epoch {
                    // The run ends on the slow weights (airbench's final decay 1).
                    if let Some(l) = lookahead.as_mut() {
                        l.lookahead(1.0);
                    }
                }
            }
            if let (Some(e), Some(ec)) = (ema.as_mut(), recipe.ema.as_ref()) {
                if (step as u32) % ec.every_steps.max(1) == 0 {
                    e.update();
                }
            }
            {
                let _g = tch::no_grad_guard();
                let _ = loss_sum.g_add_(&(loss.detach() * len as f64));
                let _ = correct.g_add_(&logits.argmax(1, false).eq_tensor(&y).sum(Kind::Int64));
            }
            bar.inc(1);
            if (step + 1) % log_every == 0 || step + 1 == steps_per_epoch {
                let seen = (start + len) as f64;
                let mean_loss = loss_sum.double_value(&[]) / seen;
                if !mean_loss.is_finite() {
                    bar.abandon();
                    return Err(TrainError::Diverged {
                        epoch: epoch + 1,
                        value: mean_loss,
                    });
                }
                let secs = t0.elapsed().as_secs_f64();
                bar.set_message(format!(
                    "epoch {}/{epochs} loss {mean_loss:.4} acc {:.2}% {:.0} img/s lr {lr:.4}",
                    epoch + 1,
                    100.0 * correct.double_value(&[]) / seen,
                    seen / secs.max(1e-9),
                ));
            }
        }
        if cuda {
            tch::Cuda::synchronize(device_index(device));
        }
        let epoch_time = t0.elapsed().as_secs_f64();
        let train_loss = loss_sum.double_value(&[]) / n as f64;
        if !train_loss.is_finite() {
            bar.abandon();
            return Err(TrainError::Diverged {
                epoch: epoch + 1,
                value: train_loss,
            });
        }
        let train_acc = 100.0 * correct.double_value(&[]) / n as f64;
        let (bs_eval, cl) = (recipe.eval_batch_size, recipe.channels_last);
        let single_view = |ds: &TensorDataset| {
            on_eval_weights(&vs, ema.as_ref(), || {
                evaluate_single_view(&model, ds, device, bs_eval, cl)
            })
        };
        let val = val_set.as_ref().map(&single_view);
        let last = epoch + 1 == epochs;
        let test = if cfg.eval_test_every > 0 && last {
            // The final evaluation, computed once and reused for the result below.
            let full = on_eval_weights(&vs, ema.as_ref(), || {
                evaluate(&model, &test_set, device, bs_eval, cl)
            });
            let curve = (full.loss, full.top1);
            last_test = Some(full);
            Some(curve)
        } else if cfg.eval_test_every > 0 && (epoch + 1) % cfg.eval_test_every == 0 {
            Some(single_view(&test_set))
        } else {
            None
        };
        let m = EpochMetrics {
            epoch: epoch + 1,
            lr,
            train_loss,
            train_acc,
            val_loss: val.map(|v| v.0),
            val_acc: val.map(|v| v.1),
            test_loss: test.map(|t| t.0),
            test_acc: test.map(|t| t.1),
            train_time_s: epoch_time,
            images_per_s: n as f64 / epoch_time,
        };
        bar.println(format!(
            "{} epoch {:>3}/{epochs}: train loss {:.4} acc {:.2}%{}{} | {:.1}s, {:.0} img/s",
            cfg.name,
            m.epoch,
            m.train_loss,
            m.train_acc,
            m.val_acc
                .map(|a| format!(" | val acc {a:.2}%"))
                .unwrap_or_default(),
            m.test_acc
                .map(|a| format!(" | test acc {a:.2}%"))
                .unwrap_or_default(),
            epoch_time,
            m.images_per_s
        ));
        if !cfg.progress {
            eprintln!(
                "{} epoch {}/{epochs}: loss {:.4} acc {:.2}% {:.0} img/s",
                cfg.name, m.epoch, m.train_loss, m.train_acc, m.images_per_s
            );
        }
        meta.history.push(m);
        meta.epochs_done = epoch + 1;
        meta.train_time_s += epoch_time;
        save_checkpoint(&ckpt, &vs, &opt, ema.as_ref(), lookahead.as_ref(), &meta)?;
        write_logs(&cfg.run_dir, &meta.history).map_err(io_err(&cfg.run_dir))?;
        if let Err(e) = write_plots(&cfg.run_dir, &cfg.name, &meta.history) {
            bar.println(format!("warning: could not draw the curves: {e}"));
        }
        epochs_this_call += 1;
    }
    bar.finish_and_clear();

    if let Some(e) = &ema {
        e.copy_to_model();
    }
    let final_metrics = (!stopped_early).then(|| {
        last_test.unwrap_or_else(|| {
            evaluate(
                &model,
                &test_set,
                device,
                recipe.eval_batch_size,
                recipe.channels_last,
            )
        })
    });
    model.fold_logit_scale();
    let seen: f64 = meta.history.len() as f64 * n as f64;
    Ok(RunResult {
        vs,
        model,
        final_metrics,
        epochs_done: meta.epochs_done,
        train_time_s: meta.train_time_s,
        images_per_s: if meta.train_time_s > 0.0 {
            seen / meta.train_time_s
        } else {
            0.0
        },
        train_images: n as usize,
        history: meta.history,
        dataset_digest,
    })
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

/// Training-step throughput of `spec` under `recipe` on synthetic images.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepBenchmark {
    pub batch_size: usize,
    pub steps: usize,
    /// Seconds of each timed step (after the warm-up steps).
    pub step_seconds: Vec<f64>,
    /// Images per second from the median step time.
    pub median_images_per_s: f64,
    /// Median seconds of each phase of a step ([`STEP_PHASES`] order): where the time
    /// goes (on CUDA each phase ends with a synchronisation, so they add up to a bit
    /// more than an unprofiled step).
    pub phase_seconds: Vec<(String, f64)>,
}

/// Times `steps` full training steps (augmentation, forward, backward, update) after
/// `warmup` untimed ones, on random uint8 images already on the device. Content does
/// not change the cost of a dense ResNet, so no dataset is needed.
pub fn benchmark_steps(
    spec: &ResNetSpec,
    recipe: &Recipe,
    device: Device,
    warmup: usize,
    steps: usize,
) -> StepBenchmark {
    tch::manual_seed(0);
    let vs = VarStore::new(device);
    let model = ResNet::with_options(&vs.root(), spec, BuildOptions::from_recipe(recipe));
    let mut opt = FlatSgd::with_frozen(&vs, spec, recipe.optimizer.clone(), &frozen_params(recipe));
    let bs = recipe.batch_size as i64;
    let images = Tensor::randint(256, [bs, 3, 32, 32], (Kind::Uint8, device));
    let labels = Tensor::randint(spec.num_classes as i64, [bs], (Kind::Int64, device));
    let cuda = device.is_cuda();
    let sync = || {
        if cuda {
            tch::Cuda::synchronize(device_index(device));
        }
    };
    let median = |v: &[f64]| {
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        sync();
        let t0 = Instant::now();
        let (loss, _) = train_step(&model, &mut opt, recipe, &images, &labels, None, 1e-3, cuda);
        let _ = loss.double_value(&[]);
        sync();
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    // Separate, profiled steps: the timed ones above stay free of the extra syncs.
    let mut phases = vec![Vec::with_capacity(steps); STEP_PHASES.len()];
    for _ in 0..steps {
        sync();
        let mut last = Instant::now();
        let mut mark = |i: usize| {
            sync();
            let now = Instant::now();
            phases[i].push((now - last).as_secs_f64());
            last = now;
        };
        let _ = timed_train_step(
            &model, &mut opt, recipe, &images, &labels, None, 1e-3, cuda, &mut mark,
        );
    }
    StepBenchmark {
        batch_size: recipe.batch_size,
        steps,
        median_images_per_s: bs as f64 / median(&times),
        step_seconds: times,
        phase_seconds: STEP_PHASES
            .iter()
            .zip(&phases)
            .map(|(name, t)| (name.to_string(), median(t)))
            .collect(),
    }
}

/// The trainable tensors a recipe keeps fixed: the whitened stem, and BN scales when
/// they are frozen.
fn frozen_params(recipe: &Recipe) -> impl Fn(&str) -> bool {
    let (stem, bn_scale) = (recipe.whiten_stem, recipe.freeze_bn_scale);
    move |name: &str| {
        (stem && name == "stem.conv.weight")
            || (bn_scale && name.contains(".bn") && name.ends_with(".weight"))
    }
}

fn device_index(d: Device) -> i64 {
    match d {
        Device::Cuda(i) => i as i64,
        _ => 0,
    }
}

/// Runs an evaluation `f` on the weights the run reports: the EMA ones when the recipe
/// averages (swapped in without disturbing the live ones), else the live ones.
fn on_eval_weights<T>(vs: &VarStore, ema: Option<&Ema>, f: impl FnOnce() -> T) -> T {
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
