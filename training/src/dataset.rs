//! The data phase of a run: CIFAR-10 loaded (and verified) once onto the device, and
//! each run's selection of it (training subset, validation split, test subset).
//!
//! A search loads the dataset once and selects from it for every trial and retrain;
//! selecting only narrows and gathers tensors already on the device.

use std::path::{Path, PathBuf};

use tch::Device;
use zoo::cifar::{self, CifarError, Split};

use crate::data::TensorDataset;
use crate::train::{RunConfig, TrainError};

/// Both CIFAR-10 splits as uint8 tensors on one device, with the training split's
/// digest for manifests.
#[derive(Debug)]
pub struct Cifar10Tensors {
    pub train: TensorDataset,
    pub test: TensorDataset,
    /// [`zoo::cifar::dataset_digest`] of the training files.
    pub dataset_digest: String,
    /// The folder the files were read from.
    pub dir: PathBuf,
}

/// Which part of the data a run sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataSelection {
    /// The first N training images only (quick runs and searches).
    pub train_limit: Option<usize>,
    /// Training images held out (by a fixed permutation of `seed`) for validation.
    pub val_size: usize,
    pub seed: u64,
    /// The first N test images only; `None` is all 10,000.
    pub test_limit: Option<usize>,
}

impl DataSelection {
    /// The selection a [`RunConfig`] describes.
    pub fn of(cfg: &RunConfig) -> Self {
        DataSelection {
            train_limit: cfg.train_limit,
            val_size: cfg.val_size,
            seed: cfg.seed,
            test_limit: cfg.test_limit,
        }
    }
}

/// What one run trains and evaluates on.
#[derive(Debug)]
pub struct RunData {
    pub train: TensorDataset,
    pub val: Option<TensorDataset>,
    pub test: TensorDataset,
    pub dataset_digest: String,
}

impl Cifar10Tensors {
    /// Reads both splits from `dir` (checking sizes, md5s and labels) onto `device`.
    /// One pass over the training files gives both the data and the digest.
    pub fn load(dir: &Path, device: Device) -> Result<Self, CifarError> {
        let (train, dataset_digest) = cifar::load_and_digest(dir, Split::Train, true)?;
        let train = TensorDataset::from_cifar(&train, device);
        let test = TensorDataset::from_cifar(&cifar::load(dir, Split::Test)?, device);
        Ok(Cifar10Tensors {
            train,
            test,
            dataset_digest,
            dir: dir.to_path_buf(),
        })
    }

    /// The training subset, validation split and test subset `sel` asks for.
    pub fn select(&self, sel: &DataSelection) -> Result<RunData, TrainError> {
        let limited = match sel.train_limit {
            Some(n) => self.train.take(n),
            None => self.train.take(self.train.len()),
        };
        let (train, val) = if sel.val_size > 0 {
            let (t, v) = limited.split_validation(sel.val_size, sel.seed);
            (t, Some(v))
        } else {
            (limited, None)
        };
        if train.is_empty() {
            return Err(TrainError::EmptyTrainSet);
        }
        let test = self.test.take(sel.test_limit.unwrap_or(self.test.len()));
        Ok(RunData {
            train,
            val,
            test,
            dataset_digest: self.dataset_digest.clone(),
        })
    }
}
