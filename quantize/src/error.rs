//! The quantizer's error type: every variant names the model and what is wrong with it
//! (`tpsnet-quantize` adds which flags fix it).

use std::path::PathBuf;

/// Everything that can stop a quantization.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is not an ONNX model the quantizer can read: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error(
        "{path} cannot be quantized: node `{node}` is a {op}, which the quantizer does not handle; it quantizes the zoo's graphs (Conv, Relu, GELU written with Erf, Add, Mul, Sub, Div, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape, Gemm, MatMul). Use the fp32 model, or add support for {op} (docs/quantization.md)"
    )]
    UnsupportedOp {
        path: PathBuf,
        node: String,
        op: String,
    },
    #[error(
        "{path} is already quantized (node `{node}` is a {op}); quantize its fp32 source instead"
    )]
    AlreadyQuantized {
        path: PathBuf,
        node: String,
        op: String,
    },
    #[error("{path} cannot be quantized: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: {} without validation images to choose by", if *.methods == 0 { "no range method to try".to_string() } else { format!("{} range methods to choose between", .methods) })]
    MethodsNeedValidation { path: PathBuf, methods: usize },
    #[error("no node named `{name}` in {path} can be kept in fp32; nodes that can be: {known}")]
    UnknownNode {
        path: PathBuf,
        name: String,
        known: String,
    },
    #[error("calibration of {path} needs {wanted} training images but {available} are available")]
    NotEnoughImages {
        path: PathBuf,
        wanted: usize,
        available: usize,
    },
    #[error(
        "calibration of {path}: tensor `{tensor}` took the value {value}; the fp32 model produces NaN/Inf on training images and cannot be quantized (re-export or retrain it)"
    )]
    NotFinite {
        path: PathBuf,
        tensor: String,
        value: f32,
    },
    #[error("ONNX Runtime output of {path} is malformed: {reason}")]
    Output { path: PathBuf, reason: String },
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error(transparent)]
    Manifest(#[from] zoo::manifest::ManifestError),
    #[error(transparent)]
    Data(#[from] zoo::cifar::CifarError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Result with the quantizer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
