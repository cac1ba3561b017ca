//! Shared, pure-Rust core of the TPSNet model zoo.
//!
//! * [`arch`]: the declarative [`ResNetSpec`] with exact parameter and MAC counting and
//!   the paper's presets.
//! * [`manifest`]: the hashed JSON [`Manifest`] that sits beside every published ONNX file.
//! * [`publish`]: writing a model and its manifest into a models folder (fp32 and int8
//!   alike), atomically and manifest last; [`hashing`]: the sha256 digests that name them.
//! * [`tta`]: test-time augmentation modes (`none`, `flip`, `6view`), shared by trainer and runtime.
//! * `onnx` (feature `onnx`, on by default): writes a [`ResNetSpec`] plus its weights as
//!   an ONNX model (BatchNorm folded, normalisation inside the graph).
//! * [`cifar`]: reading and checking the CIFAR-10 binary files; `download` (feature
//!   `download`, on by default) fetches them. Without the feature the crate has no HTTP
//!   client and no progress bar.
//! * [`rng`]: SplitMix64, the small deterministic generator shared by the workspace.
//!
//! Neither libtorch nor ONNX Runtime is linked here, so both the trainer and the
//! inference runtime can depend on this crate.

#![warn(missing_docs)]

pub mod arch;
pub mod cache;
pub mod cifar;
#[cfg(feature = "download")]
pub mod download;
pub mod hashing;
pub mod manifest;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod provenance;
pub mod publish;
pub mod rng;
pub mod tta;
pub mod weights;

pub use arch::{Activation, BlockKind, HeadPool, LayerSpec, ResNetSpec, SpecError};
pub use manifest::Manifest;
pub use tta::TtaMode;
pub use weights::{WeightTensor, Weights};
