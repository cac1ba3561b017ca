//! Why a training run stopped without a result. The variants carry what went wrong;
//! `train-zoo` adds which flags fix it.

use std::path::{Path, PathBuf};

use zoo::cifar;

/// Why a run stopped without a result.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] cifar::CifarError),
    #[error(
        "training diverged: the loss became {value} in epoch {epoch}; nothing was written for this epoch"
    )]
    Diverged { epoch: u32, value: f64 },
    #[error("{path} already holds a checkpoint of an earlier run")]
    CheckpointExists { path: PathBuf },
    #[error("cannot resume from {path}: it was written for a different run ({what} differs)")]
    Mismatch { path: PathBuf, what: String },
    #[error("checkpoint {path} is unreadable ({reason})")]
    BadCheckpoint { path: PathBuf, reason: String },
    #[error("invalid spec: {0}")]
    Spec(#[from] zoo::SpecError),
    #[error("the training set is empty")]
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

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}
