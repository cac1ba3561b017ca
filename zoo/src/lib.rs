//! Shared, pure-Rust core of the TPSNet model zoo.
//!
//! * [`arch`]: the declarative [`ResNetSpec`] with exact parameter and MAC counting and
//!   the paper's presets.
//! * [`manifest`]: the hashed JSON [`Manifest`] that sits beside every published ONNX file.
//! * [`tta`]: test-time augmentation modes (`none`, `flip`, `6view`), shared by trainer and runtime.
//! * [`onnx`]: writes a [`ResNetSpec`] plus its weights as an ONNX model (BatchNorm
//!   folded, normalisation inside the graph).
//! * [`rng`]: SplitMix64, the small deterministic generator shared by the workspace.
//!
//! Neither libtorch nor ONNX Runtime is linked here, so both the trainer and the
//! inference runtime can depend on this crate.

pub mod arch;
pub mod cifar;
pub mod download;
pub mod manifest;
pub mod onnx;
pub mod rng;
pub mod tta;
pub mod weights;

pub use arch::{Activation, BlockKind, HeadPool, LayerSpec, ResNetSpec, SpecError};
pub use manifest::Manifest;
pub use tta::TtaMode;
pub use weights::{WeightTensor, Weights};
