//! Trains the zoo's ResNets with libtorch (through `tch`) and exports them to ONNX.
//! docs/architecture.md shows how the crates and these modules fit together.
//!
//! * [`model`]: the network of a [`zoo::ResNetSpec`], variable names shared with the ONNX writer.
//! * [`spec_file`]: a run's architecture from a preset name or a spec JSON file.
//! * [`data`]: CIFAR-10 as device tensors, batched on-device augmentation.
//! * [`dataset`]: the data phase: CIFAR-10 loaded once, each run's selection of it.
//! * [`recipe`]: the `paper`, `fast`, `cpu`, `wide` and `cpu-short` recipes, every trick named and switchable.
//! * [`init`]: airbench's whitened stem and identity (dirac) block initialisation.
//! * [`optim`]: flat-buffer SGD (checkpointable state) and weight EMA.
//! * [`train`]: a run's configuration, errors and result; the training step; evaluation.
//! * [`trainer`]: the [`trainer::Trainer`] other code drives, phase by phase, with events.
//! * [`checkpoint`]: per-epoch atomic checkpoints for exact resume.
//! * [`step_bench`]: training-step throughput and where the time goes.
//! * [`metrics`]: JSONL/CSV logs and loss/accuracy curves.
//! * [`export`]: ONNX file plus hashed manifest.
//! * [`pipeline`]: train → export → publish, as `train-zoo` and the search run it.
//! * [`device`]: device selection (`auto` picks CUDA), CUDA backend loading.
//! * [`search`]: random architecture search under a parameter budget, trial runner for Ray Tune.
//! * [`zoo_models`]: which models `train-zoo --all` publishes.

pub mod checkpoint;
pub mod cpu_memory;
pub mod data;
pub mod dataset;
pub mod device;
pub mod export;
pub mod init;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod pipeline;
pub mod recipe;
pub mod search;
pub mod spec_file;
pub mod step_bench;
pub mod train;
pub mod trainer;
pub mod zoo_models;
