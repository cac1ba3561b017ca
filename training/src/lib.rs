//! Trains the zoo's ResNets with libtorch (through `tch`) and exports them to ONNX.
//!
//! * [`model`]: the network of a [`zoo::ResNetSpec`], variable names shared with the ONNX writer.
//! * [`data`]: CIFAR-10 as device tensors, batched on-device augmentation.
//! * [`recipe`]: the `paper` and `fast` recipes, every trick named and switchable.
//! * [`init`]: airbench's whitened stem and identity (dirac) block initialisation.
//! * [`optim`]: flat-buffer SGD (checkpointable state) and weight EMA.
//! * [`train`]: the loop, per-epoch atomic checkpoints, exact resume, divergence stop.
//! * [`metrics`]: JSONL/CSV logs and loss/accuracy curves.
//! * [`export`]: ONNX file plus hashed manifest.
//! * [`device`]: device selection (`auto` picks CUDA), CUDA backend loading.
//! * [`search`]: random architecture search under a parameter budget, trial runner for Ray Tune.
//! * [`zoo_models`]: which models `train-zoo --all` publishes.

pub mod cpu_memory;
pub mod data;
pub mod device;
pub mod export;
pub mod init;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod recipe;
pub mod search;
pub mod train;
pub mod zoo_models;
