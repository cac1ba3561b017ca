//! What defines one training run.

use std::path::PathBuf;

use tch::Device;
use tpsnet_zoo::ResNetSpec;

use crate::recipe::Recipe;

/// Everything that defines one training run. [`crate::trainer::Trainer`] reads all but
/// `data_dir` (the data comes loaded), `resume` only in [`crate::trainer::Trainer::start`],
/// and `stop_after` only in [`crate::trainer::fit`].
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Model name (used for file names).
    pub name: String,
    /// The architecture to train.
    pub spec: ResNetSpec,
    /// How to train it (epochs, schedule, augmentation, tricks).
    pub recipe: Recipe,
    /// Seeds the initial weights, the shuffles and the augmentation.
    pub seed: u64,
    /// Where the model and data live (`cpu` or a CUDA device).
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
