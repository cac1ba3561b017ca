//! The runtime's error type: every variant names the file involved and how to fix it.
//!
//! Errors that ONNX Runtime reports keep its [`ort::Error`] as their
//! [`source`](std::error::Error::source); their own message says what failed and how to
//! fix it, so print the whole chain ([`Error::full_message`], `anyhow`'s `{:#}`, or walk
//! `source()`) to see ONNX Runtime's words too.

use std::path::PathBuf;

#[cfg(feature = "ort")]
use crate::ort_library::Attempt;
use crate::session::{Backend, Device};

/// Everything that can go wrong loading a model or classifying images.
///
/// New variants may be added in minor releases, hence `#[non_exhaustive]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[cfg(feature = "ort")]
    /// No place in the search order held a usable ONNX Runtime library.
    #[error(
        "ONNX Runtime not found (libonnxruntime 1.{min}.x or newer); tried: {tried}. Install it with `scripts/setup --runtime` in the checkout (it lands in .venv/libonnxruntime.so), copy libonnxruntime.so.1.x.y beside the executable, or set ORT_DYLIB_PATH to its path (e.g. after `pip install onnxruntime==1.31.1`: site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1)",
        min = ort::MINOR_VERSION,
        tried = list_attempts(tried)
    )]
    OrtNotFound { tried: Vec<Attempt> },
    #[cfg(feature = "ort")]
    /// `ORT_DYLIB_PATH` names something that is not a usable ONNX Runtime library.
    #[error(
        "cannot load ONNX Runtime from {path} (ORT_DYLIB_PATH): {reason}; point ORT_DYLIB_PATH at libonnxruntime.so 1.{min}.x or newer (e.g. `pip install onnxruntime==1.31.1` and use onnxruntime/capi/libonnxruntime.so.1.31.1), or unset it to search beside the executable, the checkout's .venv and the system library path",
        min = ort::MINOR_VERSION
    )]
    OrtLoad { path: PathBuf, reason: String },
    #[cfg(feature = "ort")]
    /// The library loaded but its environment could not be created.
    #[error("ONNX Runtime at {path} could not start its environment")]
    OrtEnvironment {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },

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
    #[cfg(feature = "ort")]
    /// ONNX Runtime refused the (hash-checked) bytes; its reason is the source.
    #[error(
        "ONNX Runtime cannot load model {path}: the file is not a valid ONNX model (truncated or corrupt?), re-export it"
    )]
    ModelInvalid {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
    #[error(
        "model {path} does not fit its manifest's contract: {reason}; re-export the model and its manifest together"
    )]
    Contract { path: PathBuf, reason: String },

    #[cfg(feature = "ort")]
    /// The CUDA execution provider cannot run; `source` is ONNX Runtime's error when it
    /// gave one.
    #[error(
        "CUDA execution provider (device {device}) cannot start: {reason}; use the CPU (--device cpu), install a CUDA build of ONNX Runtime (onnxruntime-gpu) and point ORT_DYLIB_PATH at it, or opt in to falling back to the CPU (--allow-cpu-fallback / SessionOptions::allow_cpu_fallback)"
    )]
    CudaUnavailable {
        device: i32,
        reason: String,
        #[source]
        source: Option<ort::Error>,
    },
    #[cfg(feature = "ort")]
    #[error("cannot create an ONNX Runtime session for {path}")]
    Session {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
    #[cfg(feature = "ort")]
    #[error("inference failed on model {path}")]
    Inference {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
    /// The options ask for a backend this build does not have.
    #[error(
        "the {backend} backend is not in this build of tpsnet-runtime; rebuild it with `--features {feature}` or use the {other} backend (--backend {other} / SessionOptions::backend)",
        feature = backend.feature(),
        other = other_backend(*backend)
    )]
    BackendNotBuilt { backend: Backend },
    /// The backend cannot run on the requested device (tract runs on the CPU only).
    #[error(
        "the {backend} backend runs on the CPU only, not on {device}; use --device cpu, the ort backend (--backend ort) for CUDA, or allow falling back to the CPU (--allow-cpu-fallback / SessionOptions::allow_cpu_fallback)"
    )]
    BackendDevice { backend: Backend, device: Device },
    /// The model uses an operator the tract backend does not implement; found by reading
    /// the graph before tract builds anything from it.
    #[error(
        "the tract backend cannot run model {path}: node `{node}` is a {op}{what}, which tract does not implement; run this model with the ONNX Runtime backend (--backend ort / SessionOptions::backend(Backend::Ort)){int8}",
        op = qualified_op(domain, op),
        what = if domain.is_empty() || domain == "ai.onnx" { "" } else { " (an ONNX Runtime contrib operator)" },
        int8 = if op.starts_with("QLinear") || domain == "com.microsoft" { ", or use the fp32 model (the int8 files use ONNX Runtime's com.microsoft operators)" } else { "" }
    )]
    TractUnsupportedOp {
        path: PathBuf,
        /// The node's name (or its first output's, when it has none).
        node: String,
        /// The operator type, e.g. `QLinearAdd`.
        op: String,
        /// The operator's domain, empty for standard ONNX.
        domain: String,
    },
    /// tract could not read, type or optimise the graph; `reason` is tract's error chain,
    /// which names the node (`#id "name" Op`) where it failed.
    #[error(
        "the tract backend cannot {stage} model {path}: {reason}; the graph is not one tract can run, try the ONNX Runtime backend (--backend ort) or re-export the model"
    )]
    TractModel {
        path: PathBuf,
        /// What was being done: `read`, `load`, `optimise`.
        stage: &'static str,
        reason: String,
    },
    /// tract failed while running the model.
    #[error("inference with the tract backend failed on model {path}: {reason}")]
    TractInference { path: PathBuf, reason: String },
    #[error(
        "model {path} returned logits of shape {got:?}, expected {expected:?}; the graph does not match its manifest, re-export it"
    )]
    OutputShape {
        path: PathBuf,
        got: Vec<i64>,
        expected: [i64; 2],
    },
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
    /// No models folder exists in any of the places searched.
    #[error(
        "no models folder found; looked in {tried}; pass --models-dir DIR or --model FILE, set TPSNET_MODELS, or run where a models/ folder is",
        tried = list_paths(tried)
    )]
    ModelsDirNotFound {
        tried: Vec<crate::models_dir::ModelsDir>,
    },
    #[error("unknown model `{name}` in {dir}; known models: {known}")]
    UnknownModel {
        name: String,
        dir: PathBuf,
        known: String,
    },
}

impl Error {
    /// This error's message followed by those of its sources (ONNX Runtime's own words,
    /// an I/O error), joined by `: ` — what to show a user in one line.
    pub fn full_message(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            let text = e.to_string();
            // Some messages already quote their source; do not repeat it.
            if !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = e.source();
        }
        out
    }
}

fn other_backend(backend: Backend) -> Backend {
    match backend {
        Backend::Ort => Backend::Tract,
        Backend::Tract => Backend::Ort,
    }
}

fn qualified_op(domain: &str, op: &str) -> String {
    if domain.is_empty() || domain == "ai.onnx" {
        op.to_string()
    } else {
        format!("{domain}.{op}")
    }
}

#[cfg(feature = "ort")]
fn list_attempts(tried: &[Attempt]) -> String {
    let items: Vec<String> = tried.iter().map(Attempt::to_string).collect();
    items.join("; ")
}

fn list_paths(dirs: &[crate::models_dir::ModelsDir]) -> String {
    let items: Vec<String> = dirs.iter().map(ToString::to_string).collect();
    items.join(", ")
}

/// Result with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
