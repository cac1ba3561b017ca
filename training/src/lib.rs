//! Trains the zoo's ResNets with libtorch (through `tch`) and exports them to ONNX.
//! docs/architecture.md shows how the crates and these modules fit together.
//!
//! * [`model`]: the network of a [`tpsnet_zoo::ResNetSpec`], variable names shared with the ONNX writer.
//! * [`spec_file`]: a run's architecture from a preset name or a spec JSON file.
//! * [`dataset`]: the data phase: CIFAR-10 as device tensors, loaded once, each run's selection of it.
//! * [`augment`]: batched on-device augmentation.
//! * [`recipe`]: the `paper`, `fast`, `cpu`, `wide` and `cpu-short` recipes, every trick named and switchable.
//! * [`init`]: airbench's whitened stem and identity (dirac) block initialisation.
//! * [`optim`]: flat-buffer SGD (checkpointable state).
//! * [`ema`]: weight averages: the EMA of the weights and lookahead's slow copy.
//! * [`config`]: what defines a run ([`RunConfig`]); [`error`]: why one stops ([`TrainError`]).
//! * [`step`]: one training step (augment, forward, loss, backward, update).
//! * [`evaluation`]: loss, top-1 and TTA top-1s of a trained model.
//! * [`predict`]: TTA inference: every view of a set of images, the views' logits combined.
//! * [`trainer`]: the [`trainer::Trainer`] other code drives, phase by phase, with events;
//!   [`trainer::fit`] and [`trainer::train`] run a whole run.
//! * [`checkpoint`]: per-epoch atomic checkpoints for exact resume.
//! * [`step_bench`]: training-step throughput and where the time goes.
//! * [`metrics`]: JSONL/CSV logs and loss/accuracy curves.
//! * [`export`]: ONNX file plus hashed manifest.
//! * [`pipeline`]: train → export → publish, as `train-zoo` and the search run it.
//! * [`device`]: device selection (`auto` picks CUDA), CUDA backend loading.
//! * [`search`]: random architecture search under a parameter budget, trial runner for Ray Tune.
//! * [`zoo_models`]: which models `train-zoo --all` publishes;
//!   [`expectations`]: what a rerun of one should expect, measured over seeds.
//! * [`conv_precision`]: bf16 convolutions on CPUs with AMX-BF16 (recipe switch `cpu_bf16`).

#![warn(missing_docs)]

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod conv_precision;
pub mod cpu_memory;
pub mod dataset;
pub mod device;
pub mod ema;
pub mod error;
pub mod evaluation;
pub mod expectations;
pub mod export;
pub mod init;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod pipeline;
pub mod predict;
pub mod recipe;
pub mod search;
pub mod spec_file;
pub mod step;
pub mod step_bench;
pub mod trainer;
pub mod zoo_models;

pub use config::RunConfig;
pub use error::TrainError;
pub use trainer::{RunResult, Trainer, fit, train};
