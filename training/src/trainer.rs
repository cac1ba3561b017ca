//! The trainer that other code drives, in named phases (in the manner of torchvision's
//! reference `train_one_epoch` / `evaluate` and burn's `Learner`):
//!
//! 1. **load data**: [`Cifar10Tensors::load`] once, [`Cifar10Tensors::select`] per run;
//! 2. **new or resumed state**: [`Trainer::start`] ([`Trainer::new`], [`Trainer::resume`]);
//! 3. **one epoch** of training steps: [`Trainer::run_epoch`];
//! 4. **evaluate** the epoch for the curves: [`Trainer::evaluate_epoch`];
//! 5. **checkpoint**, logs and curves: [`Trainer::checkpoint`];
//! 6. **finish**: the reported weights and their test-set numbers, [`Trainer::finish`].
//!
//! [`Trainer::epoch`] runs 3–5 in order; [`fit`] runs a whole run the way `train-zoo`
//! does. Progress and per-epoch metrics reach the driver through a [`TrainEvent`]
//! callback: the CLI draws its progress bar from them, a search trial streams them.
//!
//! Read top to bottom, one epoch is: reseed torch's RNG from (seed, epoch) so a resumed
//! epoch replays exactly; shuffle; for each batch gather, augment on the device, forward
//! (bf16 autocast on CUDA if the recipe says so), smoothed cross-entropy, backward, flat
//! SGD step at the scheduled rate, lookahead and EMA updates; then evaluate, write the
//! checkpoint atomically, the metrics logs and the curves.

use std::time::Instant;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, CheckpointMeta, TrainState, checkpoint_path, save_checkpoint};
use crate::config::RunConfig;
use crate::dataset::{Cifar10Tensors, DataSelection, RunData, TensorDataset};
use crate::device;
use crate::ema::{StepAt, WeightAverages};
use crate::error::{TrainError, io_err};
use crate::evaluation::{EvalSettings, FinalMetrics, evaluate, evaluate_single_view};
use crate::init;
use crate::metrics::{EpochMetrics, write_logs, write_plots};
use crate::model::{BuildOptions, ResNet};
use crate::optim::{FlatSgd, frozen_params};
use crate::step::{Batch, train_step};

/// Running means are reported (and checked for divergence) every this many steps.
const LOG_EVERY: u64 = 10;

/// What a trainer tells its driver.
#[derive(Debug)]
pub enum TrainEvent<'a> {
    /// Epoch `epoch` (1-based) of `epochs` begins; it is `steps` optimisation steps long.
    EpochStart {
        /// The run's name.
        name: &'a str,
        /// The epoch beginning (1-based).
        epoch: u32,
        /// Epochs in the run.
        epochs: u32,
        /// Optimisation steps in this epoch.
        steps: u64,
    },
    /// Running means of the epoch so far, every few steps and after its last step.
    Steps {
        /// The run's name.
        name: &'a str,
        /// The epoch (1-based).
        epoch: u32,
        /// Epochs in the run.
        epochs: u32,
        /// Steps done in this epoch (1-based).
        step: u64,
        /// Steps in this epoch.
        steps: u64,
        /// Mean training loss (label-smoothed cross-entropy) so far.
        loss: f64,
        /// Accuracy (%) on the augmented batches so far.
        acc: f64,
        /// Training throughput so far, in images per second.
        images_per_s: f64,
        /// Learning rate of the last step.
        lr: f64,
    },
    /// An epoch was trained, evaluated and checkpointed ([`Trainer::epoch`]).
    Epoch {
        /// The run's name.
        name: &'a str,
        /// Epochs in the run.
        epochs: u32,
        /// The epoch's metrics.
        metrics: &'a EpochMetrics,
    },
    /// Something that does not stop the run (the curves could not be drawn).
    Warning {
        /// The run's name.
        name: &'a str,
        /// What went wrong.
        message: String,
    },
}

/// The training steps of one epoch ([`Trainer::run_epoch`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochTraining {
    /// 1-based epoch number.
    pub epoch: u32,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Accuracy (%) on the epoch's augmented training batches.
    pub train_acc: f64,
    /// Wall-clock seconds of the epoch's training steps.
    pub train_time_s: f64,
}

/// Validation and test `(loss, top-1 %)` of one epoch ([`Trainer::evaluate_epoch`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpochEvaluation {
    /// On the validation split; `None` when the run has none.
    pub val: Option<(f64, f64)>,
    /// On the test set; `None` when the run does not evaluate it per epoch.
    pub test: Option<(f64, f64)>,
}

/// The outcome of a run ([`Trainer::finish`], [`fit`], [`train`]).
#[derive(Debug)]
pub struct RunResult {
    /// The trained variables (EMA weights if the recipe averages).
    pub vs: VarStore,
    /// The network whose variables `vs` holds.
    pub model: ResNet,
    /// Metrics of every epoch, resumed ones included.
    pub history: Vec<EpochMetrics>,
    /// `None` when the run stopped early on `stop_after`.
    pub final_metrics: Option<FinalMetrics>,
    /// Epochs trained so far (all of them unless stopped early).
    pub epochs_done: u32,
    /// Wall-clock seconds of training steps over all epochs.
    pub train_time_s: f64,
    /// Training throughput over all epochs, in images per second.
    pub images_per_s: f64,
    /// Images in the run's training selection.
    pub train_images: usize,
    /// [`tpsnet_zoo::cifar::dataset_digest`] of the CIFAR-10 training files.
    pub dataset_digest: String,
}

/// One run's model, optimizer and progress, on data already on its device.
#[derive(Debug)]
pub struct Trainer {
    cfg: RunConfig,
    data: RunData,
    vs: VarStore,
    model: ResNet,
    opt: FlatSgd,
    averages: WeightAverages,
    meta: CheckpointMeta,
    /// Alternating flip: one seeded orientation per image, inverted every other epoch.
    base_flips: Option<Tensor>,
    /// The full (two-view) test evaluation of the final epoch, reused by `finish`.
    final_test: Option<FinalMetrics>,
}

impl Trainer {
    /// A fresh run: the seeded model with the recipe's initialisation, the optimizer
    /// and the weight averages. Reads no checkpoint.
    pub fn new(cfg: &RunConfig, data: RunData) -> Result<Self, TrainError> {
        cfg.spec.validate()?;
        if data.train.is_empty() {
            return Err(TrainError::EmptyTrainSet);
        }
        let (device, recipe) = (cfg.device, &cfg.recipe);
        tch::manual_seed(cfg.seed as i64);
        let vs = VarStore::new(device);
        let model = ResNet::with_options(&vs.root(), &cfg.spec, BuildOptions::from_recipe(recipe));
        if recipe.whiten_stem {
            // airbench whitens from 5,000 training images; the statistics barely move
            // with more.
            let k = data.train.len().min(5000) as i64;
            init::whiten_stem(&vs, &cfg.spec, &data.train.images.narrow(0, 0, k))?;
        }
        if recipe.dirac_init {
            init::dirac_init(&vs, &cfg.spec);
        }
        let opt = FlatSgd::with_frozen(
            &vs,
            &cfg.spec,
            recipe.optimizer.clone(),
            &frozen_params(recipe),
        );
        let averages = WeightAverages::new(&vs, recipe);
        let n = data.train.len() as i64;
        let base_flips = (recipe.augment.flip && recipe.augment.alternate_flip).then(|| {
            tch::manual_seed((cfg.seed as i64).wrapping_mul(1_000_003).wrapping_sub(1));
            Tensor::randint(2, [n], (Kind::Int64, device))
        });
        let meta = CheckpointMeta {
            spec: cfg.spec.clone(),
            recipe: recipe.clone(),
            seed: cfg.seed,
            train_limit: cfg.train_limit,
            val_size: cfg.val_size,
            epochs_done: 0,
            train_time_s: 0.0,
            history: Vec::new(),
        };
        Ok(Trainer {
            cfg: cfg.clone(),
            data,
            vs,
            model,
            opt,
            averages,
            meta,
            base_flips,
            final_test: None,
        })
    }

    /// The run continued from `<run-dir>/checkpoint.ot`, which must have been written
    /// for the same spec, recipe, seed and data selection.
    pub fn resume(cfg: &RunConfig, data: RunData) -> Result<Self, TrainError> {
        let mut t = Self::new(cfg, data)?;
        let state = TrainState {
            vs: &t.vs,
            opt: &mut t.opt,
            ema: t.averages.ema.as_mut(),
            lookahead: t.averages.lookahead.as_mut(),
        };
        let path = checkpoint_path(&cfg.run_dir);
        t.meta = checkpoint::restore(&path, cfg.device, &t.meta, state)?;
        Ok(t)
    }

    /// [`Trainer::resume`] when the run folder holds a checkpoint and `cfg.resume` allows
    /// it, else [`Trainer::new`]; a checkpoint without `cfg.resume` is an error rather
    /// than silently overwritten.
    pub fn start(cfg: &RunConfig, data: RunData) -> Result<Self, TrainError> {
        std::fs::create_dir_all(&cfg.run_dir).map_err(io_err(&cfg.run_dir))?;
        let ckpt = checkpoint_path(&cfg.run_dir);
        match (ckpt.exists(), cfg.resume) {
            (true, true) => Self::resume(cfg, data),
            (true, false) => Err(TrainError::CheckpointExists { path: ckpt }),
            (false, _) => Self::new(cfg, data),
        }
    }

    /// The run's configuration.
    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }

    /// Epochs the run trains in all (the recipe's).
    pub fn epochs(&self) -> u32 {
        self.cfg.recipe.epochs
    }

    /// Epochs trained so far, resumed ones included.
    pub fn epochs_done(&self) -> u32 {
        self.meta.epochs_done
    }

    /// Whether every epoch has been trained.
    pub fn is_done(&self) -> bool {
        self.meta.epochs_done >= self.epochs()
    }

    /// Metrics of every epoch so far (resumed epochs included).
    pub fn history(&self) -> &[EpochMetrics] {
        &self.meta.history
    }

    /// Training images per epoch (the validation split excluded).
    pub fn train_images(&self) -> usize {
        self.data.train.len()
    }

    fn steps_per_epoch(&self) -> i64 {
        let bs = self.cfg.recipe.batch_size as i64;
        (self.data.train.len() as i64 + bs - 1) / bs
    }

    /// Phase "one epoch": every training step of the next epoch. A loss that stops being
    /// finite ends the run with [`TrainError::Diverged`] before anything is recorded.
    pub fn run_epoch(
        &mut self,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<EpochTraining, TrainError> {
        let epochs = self.epochs();
        if self.is_done() {
            return Err(TrainError::NoEpochsLeft { epochs });
        }
        let (name, device) = (self.cfg.name.clone(), self.cfg.device);
        let (n, steps) = (self.data.train.len() as i64, self.steps_per_epoch());
        let bs = self.cfg.recipe.batch_size as i64;
        let epoch = self.meta.epochs_done; // 0-based index of the epoch being run
        let (name, number) = (name.as_str(), epoch + 1);
        on_event(TrainEvent::EpochStart {
            name,
            epoch: number,
            epochs,
            steps: steps as u64,
        });
        // Per-epoch seed: an epoch resumed from a checkpoint replays the same batches,
        // augmentations and dropout masks.
        tch::manual_seed(
            (self.cfg.seed as i64)
                .wrapping_mul(1_000_003)
                .wrapping_add(epoch as i64 + 1),
        );
        device::synchronize(device);
        let t0 = Instant::now();
        let perm = Tensor::randperm(n, (Kind::Int64, device));
        let mut totals = EpochTotals::new(device);
        let mut lr = self.cfg.recipe.lr_at(epoch as f64);
        for step in 0..steps {
            let start = step * bs;
            let idx = perm.narrow(0, start, bs.min(n - start));
            let at = StepAt {
                epoch,
                step,
                steps_per_epoch: steps,
            };
            lr = self.train_batch(&idx, at, &mut totals);
            if (step as u64 + 1) % LOG_EVERY == 0 || step + 1 == steps {
                let (loss, acc) = totals.means(number)?;
                let images_per_s = totals.seen as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                on_event(TrainEvent::Steps {
                    name,
                    epoch: number,
                    epochs,
                    step: step as u64 + 1,
                    steps: steps as u64,
                    loss,
                    acc,
                    images_per_s,
                    lr,
                });
            }
        }
        device::synchronize(device);
        let train_time_s = t0.elapsed().as_secs_f64();
        let (train_loss, train_acc) = totals.means(number)?;
        Ok(EpochTraining {
            epoch: number,
            lr,
            train_loss,
            train_acc,
            train_time_s,
        })
    }

    /// One training step on the training images `idx` at step `at` of the run, at its
    /// scheduled learning rate (returned), then the weight averages' updates.
    fn train_batch(&mut self, idx: &Tensor, at: StepAt, totals: &mut EpochTotals) -> f64 {
        let (recipe, train_set) = (&self.cfg.recipe, &self.data.train);
        let lr = recipe.lr_at(at.epoch as f64 + at.step as f64 / at.steps_per_epoch as f64);
        let labels = train_set.labels.index_select(0, idx);
        let flips = self
            .base_flips
            .as_ref()
            .map(|b| b.index_select(0, idx).bitwise_xor((at.epoch % 2) as i64));
        let batch = Batch {
            images_u8: &train_set.images.index_select(0, idx),
            labels: &labels,
            flips: flips.as_ref(),
        };
        let (loss, logits) = train_step(&self.model, &mut self.opt, recipe, &batch, lr);
        self.averages.after_step(recipe, at);
        totals.add(&loss, &logits, &labels);
        lr
    }

    /// Phase "evaluate": the validation split (single view) after every epoch, and the
    /// test set every `eval_test_every` epochs for the curves, on the weights the run
    /// reports (EMA when the recipe averages). In the final epoch the test set gets the
    /// full evaluation (single view, flip and, when the recipe claims it, six views), kept
    /// for [`Trainer::finish`].
    pub fn evaluate_epoch(&mut self, epoch: u32) -> EpochEvaluation {
        let how = EvalSettings::of(&self.cfg.recipe, self.cfg.device);
        let six_view = self.cfg.recipe.six_view_tta;
        let every = self.cfg.eval_test_every;
        let (vs, averages, model) = (&self.vs, &self.averages, &self.model);
        let single_view = |ds: &TensorDataset| {
            averages.on_eval_weights(vs, || evaluate_single_view(model, ds, how))
        };
        let val = self.data.val.as_ref().map(&single_view);
        let test = if every > 0 && epoch == self.epochs() {
            let full =
                averages.on_eval_weights(vs, || evaluate(model, &self.data.test, how, six_view));
            let curve = (full.loss, full.top1);
            self.final_test = Some(full);
            Some(curve)
        } else if every > 0 && epoch % every == 0 {
            Some(single_view(&self.data.test))
        } else {
            None
        };
        EpochEvaluation { val, test }
    }

    /// Adds a trained and evaluated epoch to the run's history; returns its metrics.
    pub fn record_epoch(&mut self, t: EpochTraining, e: EpochEvaluation) -> &EpochMetrics {
        self.meta.history.push(EpochMetrics {
            epoch: t.epoch,
            lr: t.lr,
            train_loss: t.train_loss,
            train_acc: t.train_acc,
            val_loss: e.val.map(|v| v.0),
            val_acc: e.val.map(|v| v.1),
            test_loss: e.test.map(|t| t.0),
            test_acc: e.test.map(|t| t.1),
            train_time_s: t.train_time_s,
            images_per_s: self.data.train.len() as f64 / t.train_time_s,
        });
        self.meta.epochs_done = t.epoch;
        self.meta.train_time_s += t.train_time_s;
        self.meta.history.last().expect("just pushed")
    }

    /// Phase "checkpoint": `checkpoint.ot` (atomically), `metrics.jsonl`/`.csv` and the
    /// loss and accuracy curves in the run folder. A curve that cannot be drawn is a
    /// warning, not an error.
    pub fn checkpoint(&self, on_event: &mut dyn FnMut(TrainEvent)) -> Result<(), TrainError> {
        let dir = &self.cfg.run_dir;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        save_checkpoint(
            &checkpoint_path(dir),
            &self.vs,
            &self.opt,
            self.averages.ema.as_ref(),
            self.averages.lookahead.as_ref(),
            &self.meta,
        )?;
        write_logs(dir, &self.meta.history).map_err(io_err(dir))?;
        if let Err(e) = write_plots(dir, &self.cfg.name, &self.meta.history) {
            on_event(TrainEvent::Warning {
                name: &self.cfg.name,
                message: format!("could not draw the curves: {e}"),
            });
        }
        Ok(())
    }

    /// Phases 3–5 for the next epoch: train, evaluate, record, checkpoint; then an
    /// [`TrainEvent::Epoch`] with the epoch's metrics.
    pub fn epoch(
        &mut self,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<&EpochMetrics, TrainError> {
        let trained = self.run_epoch(on_event)?;
        let evaluated = self.evaluate_epoch(trained.epoch);
        self.record_epoch(trained, evaluated);
        self.checkpoint(on_event)?;
        let metrics = self.meta.history.last().expect("recorded");
        on_event(TrainEvent::Epoch {
            name: &self.cfg.name,
            epochs: self.cfg.recipe.epochs,
            metrics,
        });
        Ok(metrics)
    }

    /// Phase "finish": the weights the run reports (the EMA ones when the recipe
    /// averages) moved into the model, the logit scale folded into the head, and, when
    /// every epoch is done, their loss and top-1 on the selected test images.
    pub fn finish(mut self) -> RunResult {
        if let Some(e) = &self.averages.ema {
            e.copy_to_model();
        }
        let how = EvalSettings::of(&self.cfg.recipe, self.cfg.device);
        let six_view = self.cfg.recipe.six_view_tta;
        let final_metrics = self.is_done().then(|| {
            self.final_test
                .take()
                .unwrap_or_else(|| evaluate(&self.model, &self.data.test, how, six_view))
        });
        self.model.fold_logit_scale();
        let n = self.data.train.len();
        let seen = self.meta.history.len() as f64 * n as f64;
        let train_time_s = self.meta.train_time_s;
        RunResult {
            vs: self.vs,
            model: self.model,
            final_metrics,
            epochs_done: self.meta.epochs_done,
            train_time_s,
            images_per_s: if train_time_s > 0.0 {
                seen / train_time_s
            } else {
                0.0
            },
            train_images: n,
            history: self.meta.history,
            dataset_digest: self.data.dataset_digest,
        }
    }
}

/// A whole run on preloaded data, as `train-zoo` runs it: started fresh or resumed
/// ([`Trainer::start`]), one checkpointed epoch at a time until the recipe's last epoch
/// or until `cfg.stop_after` epochs in this call, then [`Trainer::finish`].
pub fn fit(
    cfg: &RunConfig,
    data: &Cifar10Tensors,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<RunResult, TrainError> {
    let mut trainer = Trainer::start(cfg, data.select(&DataSelection::of(cfg))?)?;
    let mut epochs_this_call = 0;
    while !trainer.is_done() && cfg.stop_after.is_none_or(|k| epochs_this_call < k) {
        trainer.epoch(on_event)?;
        epochs_this_call += 1;
    }
    Ok(trainer.finish())
}

/// Runs (or resumes) one training run start to finish: loads the data from
/// `cfg.data_dir`, then [`fit`] without progress reports.
pub fn train(cfg: &RunConfig) -> Result<RunResult, TrainError> {
    let data = Cifar10Tensors::load(&cfg.data_dir, cfg.device)?;
    fit(cfg, &data, &mut |_| {})
}

/// The running sums of an epoch's training steps, kept on the device so that reading
/// them (a synchronisation) happens only when they are reported.
#[derive(Debug)]
struct EpochTotals {
    loss_sum: Tensor,
    correct: Tensor,
    /// Images trained on so far.
    seen: i64,
}

impl EpochTotals {
    fn new(device: Device) -> Self {
        EpochTotals {
            loss_sum: Tensor::zeros([], (Kind::Float, device)),
            correct: Tensor::zeros([], (Kind::Int64, device)),
            seen: 0,
        }
    }

    /// Adds a step's mean loss (weighted by its batch) and its correct predictions.
    fn add(&mut self, loss: &Tensor, logits: &Tensor, labels: &Tensor) {
        let len = labels.size()[0];
        let _g = tch::no_grad_guard();
        let _ = self.loss_sum.g_add_(&(loss.detach() * len as f64));
        let _ = self
            .correct
            .g_add_(&logits.argmax(1, false).eq_tensor(labels).sum(Kind::Int64));
        self.seen += len;
    }

    /// Mean loss and accuracy (%) so far; a loss that is no longer finite is
    /// [`TrainError::Diverged`] in `epoch` (1-based).
    fn means(&self, epoch: u32) -> Result<(f64, f64), TrainError> {
        let seen = self.seen as f64;
        let loss = self.loss_sum.double_value(&[]) / seen;
        if !loss.is_finite() {
            return Err(TrainError::Diverged { epoch, value: loss });
        }
        Ok((loss, 100.0 * self.correct.double_value(&[]) / seen))
    }
}
