//! One trial, in process: trained epoch by epoch by a [`Trainer`] on data already on the
//! device, continued from its checkpoint if an earlier attempt was interrupted, checked
//! against a stopping rule ([`Asha`]) between epochs, and scored on the validation split.
//!
//! The local search and `train-zoo trial` (the process Ray Tune runs per trial) both go
//! through [`run_trial`]; [`TrialLine`] is what `train-zoo trial` prints for Ray.
//!
//! Trials never touch the test set: they select none of it and never call
//! [`Trainer::finish`], the only phase that evaluates on it.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use tch::Device;

use super::asha::Asha;
use super::ledger::{TrialRecord, TrialStatus};
use super::settings::TrialJob;
use crate::checkpoint::checkpoint_path;
use crate::config::RunConfig;
use crate::dataset::{Cifar10Tensors, DataSelection};
use crate::error::TrainError;
use crate::metrics::EpochMetrics;
use crate::trainer::{TrainEvent, Trainer};

/// What a running trial reports.
#[derive(Debug)]
pub enum TrialEvent<'a> {
    /// The trial continues an interrupted attempt: `history` holds the epochs it had.
    Resumed {
        /// The trial's id.
        trial_id: &'a str,
        /// The epochs trained before the interruption.
        history: &'a [EpochMetrics],
    },
    /// Progress of the trial's training.
    Train(TrainEvent<'a>),
}

/// How a trial ended.
#[derive(Clone, Debug)]
pub struct TrialOutcome {
    /// Whether it completed, was stopped early or failed.
    pub status: TrialStatus,
    /// Every epoch trained, those of an interrupted earlier attempt included.
    pub history: Vec<EpochMetrics>,
    /// Why the trial stopped early or failed.
    pub note: Option<String>,
    /// The training error of a failed (diverged) trial.
    pub error: Option<String>,
    /// Seconds of this attempt (data selection, training and evaluation).
    pub wall_time_s: f64,
    /// Training seconds of the epochs an earlier, interrupted attempt ran.
    pub earlier_train_time_s: f64,
}

impl TrialOutcome {
    /// Validation top-1 after the last epoch trained: the trial's score.
    pub fn final_val_acc(&self) -> Option<f64> {
        self.history.last().and_then(|m| m.val_acc)
    }
}

/// The run a trial is: named by its id, validation split on, no test images, the test
/// curve off, and always resumed from an existing checkpoint.
pub fn trial_config(job: &TrialJob, run_dir: &Path, device: Device, data_dir: &Path) -> RunConfig {
    RunConfig {
        name: job.plan.trial_id.clone(),
        spec: job.plan.spec.clone(),
        recipe: job.recipe.clone(),
        seed: job.seed,
        device,
        data_dir: data_dir.to_path_buf(),
        run_dir: run_dir.to_path_buf(),
        train_limit: job.train_limit,
        test_limit: Some(0),
        val_size: job.val_size,
        eval_test_every: 0,
        resume: true,
        stop_after: None,
    }
}

/// Trains `job` in `run_dir` to completion, an early stop by `stop` (the rule and the
/// records of the trials that finished before this one) or a divergence. A diverged
/// trial is an outcome (`failed`); any other error is returned.
pub fn run_trial(
    job: &TrialJob,
    run_dir: &Path,
    device: Device,
    data: &Cifar10Tensors,
    stop: Option<(&Asha, &[TrialRecord])>,
    on_event: &mut dyn FnMut(TrialEvent),
) -> Result<TrialOutcome, TrainError> {
    let t0 = Instant::now();
    let cfg = trial_config(job, run_dir, device, &data.dir);
    let resumed = checkpoint_path(run_dir).exists();
    let mut trainer = Trainer::start(&cfg, data.select(&DataSelection::of(&cfg))?)?;
    let earlier_train_time_s = trainer.history().iter().map(|m| m.train_time_s).sum();
    if resumed {
        on_event(TrialEvent::Resumed {
            trial_id: &job.plan.trial_id,
            history: trainer.history(),
        });
    }
    let outcome = |trainer: &Trainer,
                   status: TrialStatus,
                   note: Option<String>,
                   error: Option<String>| TrialOutcome {
        status,
        history: trainer.history().to_vec(),
        note,
        error,
        wall_time_s: t0.elapsed().as_secs_f64(),
        earlier_train_time_s,
    };
    loop {
        if let Some((rule, earlier)) = stop {
            let accs: Vec<Option<f64>> = trainer.history().iter().map(|m| m.val_acc).collect();
            if let Some(note) = rule.stop_reason(&accs, earlier) {
                return Ok(outcome(&trainer, TrialStatus::Stopped, Some(note), None));
            }
        }
        if trainer.is_done() {
            return Ok(outcome(&trainer, TrialStatus::Completed, None, None));
        }
        match trainer.epoch(&mut |e| on_event(TrialEvent::Train(e))) {
            Ok(_) => {}
            Err(e @ TrainError::Diverged { epoch, value }) => {
                let note = format!("diverged: loss {value} in epoch {epoch}");
                return Ok(outcome(
                    &trainer,
                    TrialStatus::Failed,
                    Some(note),
                    Some(e.to_string()),
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

/// One JSON line on the stdout of `train-zoo trial`, the protocol `search/ray_search.py`
/// reads: an `epoch` line after every epoch, then one `done` line.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrialLine<'a> {
    /// An epoch was trained and scored.
    Epoch {
        /// The trial's id.
        trial_id: &'a str,
        /// The epoch (1-based).
        epoch: u32,
        /// Epochs the trial trains unless stopped early.
        epochs: u32,
        /// Validation top-1 (%), when the trial has a validation split.
        val_acc: Option<f64>,
        /// Validation loss, when the trial has a validation split.
        val_loss: Option<f64>,
        /// Mean training loss of the epoch.
        train_loss: f64,
        /// Accuracy (%) on the epoch's augmented training batches.
        train_acc: f64,
        /// Seconds of the epoch's training steps.
        train_time_s: f64,
        /// Seconds since the trial started.
        elapsed_s: f64,
    },
    /// The trial ended; the last line.
    Done {
        /// The trial's id.
        trial_id: &'a str,
        /// How it ended.
        status: TrialStatus,
        /// Epochs trained.
        epochs_done: u32,
        /// Validation top-1 (%) of the last epoch trained.
        final_val_acc: Option<f64>,
        /// Seconds the whole trial took.
        wall_time_s: f64,
        /// Why it stopped early or failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl<'a> TrialLine<'a> {
    /// The `epoch` line of `m`, `elapsed_s` seconds into the trial's process.
    pub fn epoch(trial_id: &'a str, epochs: u32, elapsed_s: f64, m: &EpochMetrics) -> Self {
        TrialLine::Epoch {
            trial_id,
            epoch: m.epoch,
            epochs,
            val_acc: m.val_acc,
            val_loss: m.val_loss,
            train_loss: m.train_loss,
            train_acc: m.train_acc,
            train_time_s: m.train_time_s,
            elapsed_s,
        }
    }

    /// The `done` line of a trial that ended with `outcome`.
    pub fn done(trial_id: &'a str, outcome: &TrialOutcome, wall_time_s: f64) -> Self {
        TrialLine::Done {
            trial_id,
            status: outcome.status,
            epochs_done: outcome.history.len() as u32,
            final_val_acc: outcome.final_val_acc(),
            wall_time_s,
            error: outcome.error.clone(),
        }
    }
}
