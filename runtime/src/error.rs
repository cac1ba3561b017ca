//! The runtime's error type: every variant names the file involved and how to fix it.

use std::path::PathBuf;

/// Everything that can go wrong loading a model or classifying images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "ONNX Runtime library not configured: set ORT_DYLIB_PATH to libonnxruntime.so (version 1.{min}.x or newer; `scripts/setup` installs it at .venv/libonnxruntime.so, `cargo run` sets it via .cargo/config.toml)",
        min = ort::MINOR_VERSION
    )]
    OrtPathMissing,
    #[error(
        "cannot load ONNX Runtime from {path} (ORT_DYLIB_PATH): {reason}; point ORT_DYLIB_PATH at libonnxruntime.so 1.{min}.x or newer (e.g. `pip install onnxruntime==1.31.1` and use onnxruntime/capi/libonnxruntime.so.1.31.1)",
        min = ort::MINOR_VERSION
    )]
    OrtLoad { path: PathBuf, reason: String },
    #[error("ONNX Runtime could not start: {0}")]
    OrtEnvironment(String),

    #[error(
        "model {path} not found; pass an existing .onnx or .json file, a model name from the models folder, or leave --model out to use the best shipped model"
    )]
    ModelMissing { path: PathBuf },
    #[error(
        "no manifest for model {model}: expected {manifest} beside it; zoo models ship as <name>-<sha8>.onnx plus <name>-<sha8>.json (re-export the model to create one)"
    )]
    ManifestMissing { model: PathBuf, manifest: PathBuf },
    #[error(transparent)]
    Manifest(#[from] zoo::manifest::ManifestError),
    #[error("cannot read model {path}: {source}")]
    ModelRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "model {path} does not match its manifest {manifest}: sha256 {actual} ({actual_bytes} bytes), manifest says {expected} ({expected_bytes} bytes); the file is corrupt or was changed, re-download or re-export it"
    )]
    HashMismatch {
        path: PathBuf,
        manifest: PathBuf,
        expected: String,
        actual: String,
        expected_bytes: u64,
        actual_bytes: u64,
    },
    #[error(
        "ONNX Runtime cannot load model {path}: {reason}; the file is not a valid ONNX model (truncated or corrupt?), re-export it"
    )]
    ModelInvalid { path: PathBuf, reason: String },
    #[error(
        "model {path} does not fit its manifest's contract: {reason}; re-export the model and its manifest together"
    )]
    Contract { path: PathBuf, reason: String },

    #[error(
        "CUDA execution provider (device {device}) cannot start: {reason}; use the CPU (--device cpu), install a CUDA build of ONNX Runtime (onnxruntime-gpu) and point ORT_DYLIB_PATH at it, or opt in to falling back to the CPU (--allow-cpu-fallback / SessionOptions::allow_cpu_fallback)"
    )]
    CudaUnavailable { device: i32, reason: String },
    #[error("cannot create an ONNX Runtime session for {path}: {reason}")]
    Session { path: PathBuf, reason: String },
    #[error("inference failed on model {path}: {reason}")]
    Inference { path: PathBuf, reason: String },
    #[error(
        "input holds {got} floats, not a whole number of 3x32x32 images ({per_image} floats each); pass NCHW RGB in [0, 1]"
    )]
    InputLength { got: usize, per_image: usize },

    #[error("{0}")]
    Image(#[from] crate::preprocess::ImageError),

    #[error("models folder {dir}: {reason}")]
    Registry { dir: PathBuf, reason: String },
    #[error(
        "no published models in {dir}: the zoo ships none yet (train and export them with `train-zoo --all`), or pass --model FILE / --models-dir DIR / TPSNET_MODELS"
    )]
    NoModels { dir: PathBuf },
    #[error("unknown model `{name}` in {dir}; known models: {known}")]
    UnknownModel {
        name: String,
        dir: PathBuf,
        known: String,
    },
}

/// Result with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
