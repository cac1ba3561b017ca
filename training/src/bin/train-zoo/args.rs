//! Arguments that several commands share: the device group and the data folder.

use std::path::PathBuf;

use clap::Args;
use tch::Device;
use tpsnet_training::device::{DeviceChoice, DeviceError};

/// Where libtorch computes: `--device` and `--threads`.
#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// auto (CUDA if present), cpu, cuda or cuda:N.
    #[arg(long, short, default_value = "auto")]
    pub device: DeviceChoice,
    /// CPU threads for libtorch (default: all cores).
    #[arg(long)]
    pub threads: Option<i32>,
}

impl DeviceArgs {
    /// Sets libtorch's thread count when asked.
    pub fn apply_threads(&self) {
        if let Some(t) = self.threads {
            tch::set_num_threads(t);
        }
    }

    /// [`DeviceArgs::apply_threads`], then the device, checked against what libtorch sees.
    pub fn device(&self) -> Result<Device, DeviceError> {
        self.apply_threads();
        self.device.resolve()
    }
}

/// The device group plus the CIFAR-10 folder: every command that trains.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub compute: DeviceArgs,
    /// Folder with the CIFAR-10 binary files (default: $CIFAR10_DIR, else the cache filled
    /// by `train-zoo download`).
    #[arg(long, env = "CIFAR10_DIR")]
    pub data_dir: Option<PathBuf>,
}
