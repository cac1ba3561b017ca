//! Static int8 quantization of TPSNet zoo models, in Rust (no Python, no libtorch).
//!
//! It reads any fp32 zoo ONNX file and writes an int8 one that ONNX Runtime runs on
//! integer kernels (AVX-512 VNNI / AVX-VNNI on x86):
//!
//! 1. [`graph`] decodes the model (the zoo's prost structs) and refuses what it cannot
//!    handle, naming the node;
//! 2. [`rewrite`] makes exact fp32 rewrites: a BatchNorm behind a max-pool is folded into
//!    the conv before it where that commutes (positive scales), and GELU written with Erf
//!    becomes one `com.microsoft.Gelu` node;
//! 3. [`plan`] decides the lowering — QOperator layout: `QLinearConv`, `QLinearAdd` with
//!    ReLUs fused into their output range, uint8 `MaxPool`, the rest fp32;
//! 4. [`calibrate`] runs the fp32 graph on training images ([`images`]: never the test
//!    set) and histograms every activation to be quantized;
//! 5. [`ranges`] turns each histogram into a clipping range (MinMax, percentile or
//!    MSE-optimal); [`pipeline`] tries several and keeps the one whose int8 model stays
//!    closest to fp32 on *other* training images ([`validate`]), recording why
//!    ([`choose`]);
//! 6. [`emit`] writes the int8 graph with the arithmetic of [`params`] (uint8 asymmetric
//!    activations, int8 symmetric per-channel weights, int32 biases);
//! 7. [`publish`] measures the claims with the runtime's `verify` code and writes
//!    `<name>-int8-<sha8>.onnx` plus its manifest.
//!
//! ```no_run
//! use tpsnet_quantize::{QuantizeOptions, TrainingImages, quantize};
//! let images = TrainingImages::load("cifar-10-batches-bin".as_ref())?;
//! let path = std::path::Path::new("models/resnet20-3dcf6d04.onnx");
//! let bytes = std::fs::read(path).unwrap();
//! let q = quantize(path, &bytes, &images, &QuantizeOptions::default(), &|_| {})?;
//! println!("{} bytes, ranges by {}", q.bytes.len(), q.method.label());
//! # Ok::<(), tpsnet_quantize::Error>(())
//! ```
//!
//! Why this layout and these defaults: docs/quantization.md.

#![warn(missing_docs)]

pub mod calibrate;
pub mod choose;
pub mod emit;
pub mod engine;
pub mod error;
pub mod graph;
pub mod images;
pub mod params;
pub mod pipeline;
pub mod plan;
pub mod publish;
pub mod ranges;
pub mod rewrite;
pub mod validate;

pub use error::{Error, Result};
pub use images::{Selection, TrainingImages};
pub use pipeline::{QuantizeOptions, Quantized, Stage, quantize};
pub use ranges::RangeMethod;
