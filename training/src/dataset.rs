//! The data phase of a run: CIFAR-10 loaded (and verified) once onto the device, and
//! each run's selection of it (training subset, validation split, test subset).
//!
//! The whole dataset (150 MB as uint8) lives on the device, so an epoch is a random
//! permutation plus `index_select` per batch: no loader threads, no host↔device copies.
//!
//! A search loads the dataset once and selects from it for every trial and retrain;
//! selecting only narrows and gathers tensors already on the device.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use tpsnet_zoo::cifar::{self, Cifar10, CifarError, Split};

use crate::config::RunConfig;
use crate::error::TrainError;

/// Images (N×3×32×32 uint8) and labels (N int64), on one device.
#[derive(Debug)]
pub struct TensorDataset {
    /// The images, N×3×32×32 uint8 (RGB, 0–255).
    pub images: Tensor,
    /// The class indices, N int64.
    pub labels: Tensor,
}

impl TensorDataset {
    /// Moves a decoded CIFAR-10 split onto `device`.
    pub fn from_cifar(data: &Cifar10, device: Device) -> Self {
        let n = data.len() as i64;
        let images = Tensor::from_slice(&data.images)
            .view([n, 3, 32, 32])
            .to_device(device);
        let labels = Tensor::from_slice(&data.labels)
            .to_kind(Kind::Int64)
            .to_device(device);
        TensorDataset { images, labels }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` records (or all of them if there are fewer).
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len()) as i64;
        TensorDataset {
            images: self.images.narrow(0, 0, n),
            labels: self.labels.narrow(0, 0, n),
        }
    }

    /// Splits off a validation set of `val` records chosen by a fixed permutation of
    /// `seed`, so searches and early stopping never look at the test set.
    /// Returns `(train, validation)`.
    pub fn split_validation(&self, val: usize, seed: u64) -> (Self, Self) {
        let n = self.len();
        let val = val.min(n);
        let mut order: Vec<i64> = (0..n as i64).collect();
        // Fisher–Yates with a SplitMix64 stream: independent of torch's RNG state.
        let mut rng = tpsnet_zoo::rng::SplitMix64::new(seed ^ 0xD1B5_4A32_D192_ED03);
        for i in (1..n).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let device = self.images.device();
        let pick = |idx: &[i64]| {
            let idx = Tensor::from_slice(idx).to_device(device);
            TensorDataset {
                images: self.images.index_select(0, &idx),
                labels: self.labels.index_select(0, &idx),
            }
        };
        (pick(&order[val..]), pick(&order[..val]))
    }
}

/// Both CIFAR-10 splits as uint8 tensors on one device, with the training split's
/// digest for manifests.
#[derive(Debug)]
pub struct Cifar10Tensors {
    /// The 50,000 training images.
    pub train: TensorDataset,
    /// The 10,000 test images.
    pub test: TensorDataset,
    /// [`tpsnet_zoo::cifar::dataset_digest`] of the training files.
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
    /// Seeds the permutation that picks the validation images.
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
    /// The training images (validation images removed).
    pub train: TensorDataset,
    /// The validation split, when the selection holds one out.
    pub val: Option<TensorDataset>,
    /// The test images.
    pub test: TensorDataset,
    /// [`tpsnet_zoo::cifar::dataset_digest`] of the training files.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_split_is_disjoint_and_seeded() {
        let images = Tensor::arange(10 * 3 * 32 * 32, (Kind::Int64, Device::Cpu))
            .remainder(251)
            .to_kind(Kind::Uint8)
            .view([10, 3, 32, 32]);
        let labels = Tensor::arange(10, (Kind::Int64, Device::Cpu));
        let d = TensorDataset { images, labels };
        let (t, v) = d.split_validation(3, 5);
        assert_eq!((t.len(), v.len()), (7, 3));
        let mut all: Vec<i64> = Vec::<i64>::try_from(&t.labels).unwrap();
        all.extend(Vec::<i64>::try_from(&v.labels).unwrap());
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        let (_, v2) = d.split_validation(3, 5);
        assert!(v.labels.equal(&v2.labels));
    }
}
