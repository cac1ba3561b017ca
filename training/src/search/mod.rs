//! Random architecture search under a parameter budget (the paper's method), with
//! asynchronous successive halving, a resumable trial ledger, a Table-1-style summary,
//! a Figure-3-style plot, and a trial runner that Ray Tune drives across a cluster.
//!
//! One concept per module:
//! * [`space`]: what is sampled ([`SearchSpace`], loadable from JSON with `--space`) and
//!   [`sample_trial`]: trial `i` of seed `s` from its own random stream, specs at or over
//!   the budget rejected (and counted) before any training.
//! * [`settings`]: the [`SearchRequest`], `search.json` ([`SearchMeta`]) and [`TrialJob`].
//! * [`ledger`]: `<search-dir>/ledger.jsonl`, one line per finished trial.
//! * [`asha`]: the stopping rule of asynchronous successive halving.
//! * [`trial`]: one trial trained in process by the [`crate::trainer::Trainer`], and the
//!   JSON lines `train-zoo trial` streams to `search/ray_search.py`.
//! * [`local`]: the local driver ([`run_search`]), `--emit-specs` and `--report`.
//! * [`report`]: `summary.md` and `accuracy-vs-size.png` from the ledger.
//! * [`retrain`]: `--retrain-top`, through [`crate::pipeline`].
//!
//! Trials are scored on a validation split carved from the training set; they never
//! select or evaluate test images. See docs/search.md.

pub mod asha;
pub mod ledger;
pub mod local;
pub mod report;
pub mod retrain;
pub mod settings;
pub mod space;
pub mod trial;

#[cfg(test)]
pub(crate) mod test_support;

use std::path::{Path, PathBuf};

pub use asha::{Asha, quantile};
pub use ledger::{Ledger, LedgerRepair, TrialRecord, TrialStatus};
pub use local::{LocalSearch, ReportOptions, Workbench, pending_jobs, report, run_search};
pub use report::{ColorBy, ranked, write_report};
pub use retrain::RetrainOptions;
pub use settings::{SearchMeta, SearchRequest, SearchResults, SettingDiff, TrialJob};
pub use space::{
    Candidate, FloatRange, IntRange, SearchSpace, SpaceError, TrialPlan, sample_trial, trial_id,
};
pub use trial::{TrialEvent, TrialLine, TrialOutcome, run_trial};

use crate::error::TrainError;
use crate::pipeline::{ExportedModel, PipelineError, TrainJob};
use crate::trainer::TrainEvent;

/// File names inside a search directory.
pub const LEDGER_FILE: &str = "ledger.jsonl";
pub const META_FILE: &str = "search.json";
pub const SUMMARY_FILE: &str = "summary.md";
pub const PLOT_FILE: &str = "accuracy-vs-size.png";

/// What a search reports while it runs, for the caller to show.
#[derive(Debug)]
pub enum SearchEvent<'a> {
    /// Opening the ledger fixed or skipped something.
    LedgerRepaired {
        path: &'a Path,
        repair: &'a LedgerRepair,
    },
    /// The trials are sampled: `finished` are in the ledger, `pending` will run.
    Planned {
        trials: usize,
        budget: u64,
        /// Sampled specs rejected over the budget, over all trials.
        rejected: u64,
        finished: usize,
        pending: usize,
        ledger: &'a Path,
    },
    /// Successive halving is on.
    EarlyStopping { asha: &'a Asha },
    /// The device is chosen and the dataset is being loaded.
    Setup { device: &'a str, data_dir: &'a Path },
    /// A trial continues from the checkpoint of an interrupted attempt.
    TrialResumed { trial_id: &'a str, epochs_done: u32 },
    /// Training progress of a trial or a retrain.
    Train(TrainEvent<'a>),
    /// A trial ended and is about to be recorded.
    TrialFinished {
        record: &'a TrialRecord,
        /// Trials in the search.
        total: usize,
    },
    /// `summary.md` and the plot are written; `table` is the markdown.
    Reported {
        table: &'a str,
        summary: &'a Path,
        plot: &'a Path,
    },
    /// Fewer completed trials than `--retrain-top` asked for.
    FewerToRetrain { found: usize, asked: usize },
    /// A trial's retrain begins.
    Retraining {
        record: &'a TrialRecord,
        job: &'a TrainJob,
    },
    /// A retrained model is exported (and published).
    Retrained { model: &'a ExportedModel },
    /// Every retrain is done and listed in `list`.
    RetrainedAll { count: usize, list: &'a Path },
    /// Something that does not stop the search.
    Warning(String),
}

/// Why a search cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid search space ({source})")]
    SpaceJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("search space {origin}: {source}")]
    Space { origin: String, source: SpaceError },
    #[error("the search space produced an invalid spec: {0}")]
    InvalidSpec(zoo::SpecError),
    #[error(
        "trial {trial}: no spec within [{min}, {budget}) parameters after {attempts} samples ({over} over the budget, {under} under the minimum); widen the space (smaller stem_channels/blocks/width_factor) or raise the budget"
    )]
    NoSpecInBudget {
        trial: String,
        min: u64,
        budget: u64,
        attempts: u64,
        over: u64,
        under: u64,
    },
    #[error("{path} line {line} is not a trial record ({source}); fix or remove that line")]
    LedgerLine {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error(
        "{dir} was started with other settings: {} differ(s) from those in {path}",
        settings::list(.differs)
    )]
    SettingsDiffer {
        dir: PathBuf,
        differs: Vec<SettingDiff>,
        path: PathBuf,
    },
    #[error("cannot read {path}: is {dir} a search directory? ({source})")]
    NotASearch {
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is unreadable ({source})")]
    BadSettings {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "a search scores trials on a validation split of the training set, and the split asked for is empty"
    )]
    NoValidationSplit,
    #[error("a search's trials need at least one epoch")]
    NoEpochs,
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    #[error(transparent)]
    Data(#[from] zoo::cifar::CifarError),
    #[error("trial {trial} ({summary}) in {run_dir}: {source}")]
    Trial {
        trial: String,
        summary: String,
        run_dir: PathBuf,
        source: Box<TrainError>,
    },
    #[error(transparent)]
    Plot(#[from] crate::metrics::PlotError),
    #[error("nothing to retrain: no completed trial in the ledger yet")]
    NothingToRetrain,
    #[error(
        "retraining {trial} failed: {source}; its run folder is {run_dir}. Fix the cause and re-run the same command to continue"
    )]
    Retrain {
        trial: String,
        run_dir: PathBuf,
        source: Box<PipelineError>,
    },
}
