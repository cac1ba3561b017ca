//! The quantizer's error type: every variant names the model and what is wrong with it
//! (`tpsnet-quantize` adds which flags fix it).

use std::path::PathBuf;

/// Everything that can stop a quantization.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not an ONNX model, or not one the quantizer can read (no graph,
    /// external data, an opset too old).
    #[error("{path} is not an ONNX model the quantizer can read: {reason}")]
    Decode {
        /// The model file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    #[error(
        "{path} cannot be quantized: node `{node}` is a {op}, which the quantizer does not handle; it quantizes the zoo's graphs (Conv, Relu, GELU written with Erf, Add, Mul, Sub, Div, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape, Gemm, MatMul). Use the fp32 model, or add support for {op} (docs/quantization.md)"
    )]
    /// A node's operator is outside the set the quantizer handles.
    UnsupportedOp {
        /// The model file.
        path: PathBuf,
        /// The node's name.
        node: String,
        /// Its operator type.
        op: String,
    },
    #[error(
        "{path} is already quantized (node `{node}` is a {op}); quantize its fp32 source instead"
    )]
    /// The model already holds quantized operators (`QLinearConv`, `QuantizeLinear`, ...).
    AlreadyQuantized {
        /// The model file.
        path: PathBuf,
        /// The first quantized node found.
        node: String,
        /// Its operator type.
        op: String,
    },
    /// The graph's structure (not one operator) is outside what the quantizer handles.
    #[error("{path} cannot be quantized: {reason}")]
    Unsupported {
        /// The model file.
        path: PathBuf,
        /// What the quantizer cannot handle.
        reason: String,
    },
    #[error("{path}: {} without validation images to choose by", if *.methods == 0 { "no range method to try".to_string() } else { format!("{} range methods to choose between", .methods) })]
    /// Choosing between range methods needs validation images, and none were asked for
    /// (or no method was given at all).
    MethodsNeedValidation {
        /// The model file.
        path: PathBuf,
        /// How many range methods were given.
        methods: usize,
    },
    #[error("no node named `{name}` in {path} can be kept in fp32; nodes that can be: {known}")]
    /// A node asked to stay in fp32 does not exist, or is not one that can be.
    UnknownNode {
        /// The model file.
        path: PathBuf,
        /// The node name asked for.
        name: String,
        /// The nodes that can be kept in fp32, comma-separated.
        known: String,
    },
    #[error("calibration of {path} needs {wanted} training images but {available} are available")]
    /// Fewer training images exist than calibration and validation together ask for.
    NotEnoughImages {
        /// The model file.
        path: PathBuf,
        /// Calibration plus validation images asked for.
        wanted: usize,
        /// Training images there are.
        available: usize,
    },
    #[error(
        "calibration of {path}: tensor `{tensor}` took the value {value}; the fp32 model produces NaN/Inf on training images and cannot be quantized (re-export or retrain it)"
    )]
    /// An activation took a NaN or infinite value during calibration.
    NotFinite {
        /// The model file.
        path: PathBuf,
        /// The tensor that did.
        tensor: String,
        /// The value it took.
        value: f32,
    },
    /// ONNX Runtime returned outputs of an unexpected shape or type.
    #[error("ONNX Runtime output of {path} is malformed: {reason}")]
    Output {
        /// The model file.
        path: PathBuf,
        /// What is wrong with the output.
        reason: String,
    },
    /// Loading or running a model with the runtime failed.
    #[error(transparent)]
    Runtime(#[from] tpsnet_runtime::Error),
    /// A manifest cannot be read, or the one written is invalid.
    #[error(transparent)]
    Manifest(#[from] tpsnet_zoo::manifest::ManifestError),
    /// The CIFAR-10 files cannot be read.
    #[error(transparent)]
    Data(#[from] tpsnet_zoo::cifar::CifarError),
    #[error("cannot write {path}: {source}")]
    /// An output file cannot be written.
    Write {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Result with the quantizer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
