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
//! * [`report`](mod@report): `summary.md` and `accuracy-vs-size.png` from the ledger.
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

/// The ledger of finished trials inside a search directory (JSON lines).
pub const LEDGER_FILE: &str = "ledger.jsonl";
/// The search's settings inside a search directory ([`SearchMeta`]).
pub const META_FILE: &str = "search.json";
/// The markdown summary table inside a search directory.
pub const SUMMARY_FILE: &str = "summary.md";
/// The accuracy-vs-parameters plot inside a search directory.
pub const PLOT_FILE: &str = "accuracy-vs-size.png";

/// What a search reports while it runs, for the caller to show.
#[derive(Debug)]
pub enum SearchEvent<'a> {
    /// Opening the ledger fixed or skipped something.
    LedgerRepaired {
        /// The ledger file.
        path: &'a Path,
        /// What was fixed or skipped.
        repair: &'a LedgerRepair,
    },
    /// The trials are sampled: `finished` are in the ledger, `pending` will run.
    Planned {
        /// Trials in the search.
        trials: usize,
        /// The parameter budget each spec stays under.
        budget: u64,
        /// Sampled specs rejected over the budget, over all trials.
        rejected: u64,
        /// Trials already in the ledger.
        finished: usize,
        /// Trials still to run.
        pending: usize,
        /// The ledger file.
        ledger: &'a Path,
    },
    /// Successive halving is on.
    EarlyStopping {
        /// The stopping rule in use.
        asha: &'a Asha,
    },
    /// The device is chosen and the dataset is being loaded.
    Setup {
        /// The device trials run on (`cpu`, `cuda:0`, ...).
        device: &'a str,
        /// The CIFAR-10 folder being loaded.
        data_dir: &'a Path,
    },
    /// A trial continues from the checkpoint of an interrupted attempt.
    TrialResumed {
        /// The trial's id.
        trial_id: &'a str,
        /// Epochs the checkpoint had already trained.
        epochs_done: u32,
    },
    /// Training progress of a trial or a retrain.
    Train(TrainEvent<'a>),
    /// A trial ended and is about to be recorded.
    TrialFinished {
        /// The trial's ledger record.
        record: &'a TrialRecord,
        /// Trials in the search.
        total: usize,
    },
    /// `summary.md` and the plot are written; `table` is the markdown.
    Reported {
        /// The summary table (markdown).
        table: &'a str,
        /// Where the summary was written.
        summary: &'a Path,
        /// Where the plot was written.
        plot: &'a Path,
    },
    /// Fewer completed trials than `--retrain-top` asked for.
    FewerToRetrain {
        /// Completed trials found.
        found: usize,
        /// Trials asked for.
        asked: usize,
    },
    /// A trial's retrain begins.
    Retraining {
        /// The trial being retrained.
        record: &'a TrialRecord,
        /// The full training job of the retrain.
        job: &'a TrainJob,
    },
    /// A retrained model is exported (and published).
    Retrained {
        /// The exported model.
        model: &'a ExportedModel,
    },
    /// Every retrain is done and listed in `list`.
    RetrainedAll {
        /// Models retrained.
        count: usize,
        /// The file listing them.
        list: &'a Path,
    },
    /// Something that does not stop the search.
    Warning(String),
}

/// Why a search cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// A file of the search could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file of the search could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A search space file is not valid JSON of a [`SearchSpace`].
    #[error("{path} is not a valid search space ({source})")]
    SpaceJson {
        /// The space file.
        path: PathBuf,
        /// The parser's reason.
        source: serde_json::Error,
    },
    /// A search space's ranges are inconsistent.
    #[error("search space {origin}: {source}")]
    Space {
        /// Where the space came from (a file, or the built-in default).
        origin: String,
        /// What is wrong with it.
        source: SpaceError,
    },
    /// A sampled architecture is not a valid [`tpsnet_zoo::ResNetSpec`].
    #[error("the search space produced an invalid spec: {0}")]
    InvalidSpec(tpsnet_zoo::SpecError),
    /// No sample of the space fell within the parameter range.
    #[error(
        "trial {trial}: no spec within [{min}, {budget}) parameters after {attempts} samples ({over} over the budget, {under} under the minimum); widen the space (smaller stem_channels/blocks/width_factor) or raise the budget"
    )]
    NoSpecInBudget {
        /// The trial's id.
        trial: String,
        /// The least number of parameters accepted.
        min: u64,
        /// The parameter budget (exclusive upper bound).
        budget: u64,
        /// Samples drawn.
        attempts: u64,
        /// Samples at or over the budget.
        over: u64,
        /// Samples under the minimum.
        under: u64,
    },
    /// A ledger line is not a [`TrialRecord`].
    #[error("{path} line {line} is not a trial record ({source}); fix or remove that line")]
    LedgerLine {
        /// The ledger file.
        path: PathBuf,
        /// The line number (1-based).
        line: usize,
        /// The parser's reason.
        source: serde_json::Error,
    },
    /// Resuming a search directory with settings other than those it was started with.
    #[error(
        "{dir} was started with other settings: {} differ(s) from those in {path}",
        settings::list(.differs)
    )]
    SettingsDiffer {
        /// The search directory.
        dir: PathBuf,
        /// Each setting that differs, with both values.
        differs: Vec<SettingDiff>,
        /// Its `search.json`.
        path: PathBuf,
    },
    /// The directory has no readable `search.json`.
    #[error("cannot read {path}: is {dir} a search directory? ({source})")]
    NotASearch {
        /// The `search.json` looked for.
        path: PathBuf,
        /// The directory given.
        dir: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// `search.json` is not valid JSON of a [`SearchMeta`].
    #[error("{path} is unreadable ({source})")]
    BadSettings {
        /// The `search.json`.
        path: PathBuf,
        /// The parser's reason.
        source: serde_json::Error,
    },
    /// The validation split asked for holds no images.
    #[error(
        "a search scores trials on a validation split of the training set, and the split asked for is empty"
    )]
    NoValidationSplit,
    /// Trials were asked to train for zero epochs.
    #[error("a search's trials need at least one epoch")]
    NoEpochs,
    /// The recipe could not be built.
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
    /// The device could not be set up.
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    /// CIFAR-10 could not be loaded.
    #[error(transparent)]
    Data(#[from] tpsnet_zoo::cifar::CifarError),
    /// A trial's training failed.
    #[error("trial {trial} ({summary}) in {run_dir}: {source}")]
    Trial {
        /// The trial's id.
        trial: String,
        /// A one-line description of its architecture.
        summary: String,
        /// Its run folder.
        run_dir: PathBuf,
        /// Why training stopped.
        source: Box<TrainError>,
    },
    /// The plot could not be drawn or written.
    #[error(transparent)]
    Plot(#[from] crate::metrics::PlotError),
    /// `--retrain-top` found no completed trial.
    #[error("nothing to retrain: no completed trial in the ledger yet")]
    NothingToRetrain,
    /// A retrain (train, export, publish) failed.
    #[error(
        "retraining {trial} failed: {source}; its run folder is {run_dir}. Fix the cause and re-run the same command to continue"
    )]
    Retrain {
        /// The trial's id.
        trial: String,
        /// The retrain's run folder.
        run_dir: PathBuf,
        /// What failed.
        source: Box<PipelineError>,
    },
}
