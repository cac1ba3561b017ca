//! Why a training run stopped without a result. The variants carry what went wrong;
//! `train-zoo` adds which flags fix it.

use std::path::{Path, PathBuf};

use tpsnet_zoo::cifar;

/// Why a run stopped without a result.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// CIFAR-10 could not be read.
    #[error(transparent)]
    Data(#[from] cifar::CifarError),
    /// The loss became NaN or infinite; the epoch's checkpoint was not written.
    #[error(
        "training diverged: the loss became {value} in epoch {epoch}; nothing was written for this epoch"
    )]
    Diverged {
        /// The 1-based epoch it happened in.
        epoch: u32,
        /// The loss's running mean at that point.
        value: f64,
    },
    /// A new run would overwrite the checkpoint of an earlier run in its folder.
    #[error("{path} already holds a checkpoint of an earlier run")]
    CheckpointExists {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// The checkpoint to resume was written for another run (spec, recipe, seed or data).
    #[error("cannot resume from {path}: it was written for a different run ({what} differs)")]
    Mismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// Which part of the run differs.
        what: String,
    },
    /// The checkpoint to resume cannot be read or is inconsistent.
    #[error("checkpoint {path} is unreadable ({reason})")]
    BadCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The run's architecture is invalid.
    #[error("invalid spec: {0}")]
    Spec(#[from] tpsnet_zoo::SpecError),
    /// The run's selection of the training set holds no image.
    #[error("the training set is empty")]
    EmptyTrainSet,
    /// Reading or writing a file of the run failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// libtorch reported an error.
    #[error("torch error: {0}")]
    Torch(#[from] tch::TchError),
    /// The recipe's initialisation (whitened stem, dirac blocks) failed.
    #[error(transparent)]
    Init(#[from] crate::init::InitError),
    /// Resuming a run that has already trained all its epochs.
    #[error("the run has finished all its {epochs} epochs; nothing is left to train")]
    NoEpochsLeft {
        /// The run's epochs.
        epochs: u32,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}
