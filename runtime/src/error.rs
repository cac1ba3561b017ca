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
        "ONNX Runtime not found (libonnxruntime 1.{min}.x or newer); tried: {tried}. Copy libonnxruntime.so.1.x.y beside the executable, or set ORT_DYLIB_PATH to its path (the onnxruntime Python package ships one as onnxruntime/capi/libonnxruntime.so.1.x.y)",
        min = ort::MINOR_VERSION,
        tried = list_attempts(tried)
    )]
    OrtNotFound {
        /// Every place searched, in order, with why each was not usable.
        tried: Vec<Attempt>,
    },
    #[cfg(feature = "ort")]
    /// `ORT_DYLIB_PATH` names something that is not a usable ONNX Runtime library.
    #[error(
        "cannot load ONNX Runtime from {path} (ORT_DYLIB_PATH): {reason}; point ORT_DYLIB_PATH at libonnxruntime.so 1.{min}.x or newer (the onnxruntime Python package ships one as onnxruntime/capi/libonnxruntime.so.1.x.y), or unset it to search beside the executable, the checkout's .venv and the system library path",
        min = ort::MINOR_VERSION
    )]
    OrtLoad {
        /// The path `ORT_DYLIB_PATH` names.
        path: PathBuf,
        /// Why loading it failed (the loader's or the version check's words).
        reason: String,
    },
    #[cfg(feature = "ort")]
    /// The library loaded but its environment could not be created.
    #[error("ONNX Runtime at {path} could not start its environment")]
    OrtEnvironment {
        /// The ONNX Runtime library that was loaded.
        path: PathBuf,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },

    /// The model named is neither an existing file nor a published model's name.
    #[error(
        "model {path} not found; a model is an existing .onnx or .json file or the name of a model in the models folder"
    )]
    ModelMissing {
        /// The path (or name) that was looked for.
        path: PathBuf,
    },
    /// An .onnx file has no manifest beside it.
    #[error(
        "no manifest for model {model}: expected {manifest} beside it; zoo models ship as <name>-<sha8>.onnx plus <name>-<sha8>.json (re-export the model to create one)"
    )]
    ManifestMissing {
        /// The ONNX file.
        model: PathBuf,
        /// Where its manifest was expected.
        manifest: PathBuf,
    },
    /// The manifest cannot be read or is invalid.
    #[error(transparent)]
    Manifest(#[from] tpsnet_zoo::manifest::ManifestError),
    /// The ONNX file cannot be read.
    #[error("cannot read model {path}: {source}")]
    ModelRead {
        /// The ONNX file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The ONNX file's sha256 or size differs from what its manifest records.
    #[error(
        "model {path} does not match its manifest {manifest}: sha256 {actual} ({actual_bytes} bytes), manifest says {expected} ({expected_bytes} bytes); the file is corrupt or was changed, re-download or re-export it"
    )]
    HashMismatch {
        /// The ONNX file.
        path: PathBuf,
        /// The manifest that describes it.
        manifest: PathBuf,
        /// The sha256 (hex) the manifest records.
        expected: String,
        /// The sha256 (hex) of the file as read.
        actual: String,
        /// The size in bytes the manifest records.
        expected_bytes: u64,
        /// The size in bytes of the file as read.
        actual_bytes: u64,
    },
    #[cfg(feature = "ort")]
    /// ONNX Runtime refused the (hash-checked) bytes; its reason is the source.
    #[error(
        "ONNX Runtime cannot load model {path}: the file is not a valid ONNX model (truncated or corrupt?), re-export it"
    )]
    ModelInvalid {
        /// The ONNX file.
        path: PathBuf,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// The graph's inputs or outputs differ from the manifest's contract (one float
    /// input of shape `[N, 3, 32, 32]`, logits `[N, classes]`).
    #[error(
        "model {path} does not fit its manifest's contract: {reason}; re-export the model and its manifest together"
    )]
    Contract {
        /// The ONNX file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },

    #[cfg(feature = "ort")]
    /// The CUDA execution provider cannot run; `source` is ONNX Runtime's error when it
    /// gave one.
    #[error(
        "CUDA execution provider (device {device}) cannot start: {reason}; run on the CPU (Device::Cpu), install a CUDA build of ONNX Runtime (onnxruntime-gpu) and point ORT_DYLIB_PATH at it, or allow falling back to the CPU (SessionOptions::allow_cpu_fallback)"
    )]
    CudaUnavailable {
        /// The CUDA device index asked for.
        device: i32,
        /// Why it cannot start.
        reason: String,
        /// ONNX Runtime's error, when there is one.
        #[source]
        source: Option<ort::Error>,
    },
    #[cfg(feature = "ort")]
    /// ONNX Runtime could not create a session for the model.
    #[error("cannot create an ONNX Runtime session for {path}")]
    Session {
        /// The ONNX file.
        path: PathBuf,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    #[cfg(feature = "ort")]
    /// ONNX Runtime failed while running the model.
    #[error("inference failed on model {path}")]
    Inference {
        /// The ONNX file.
        path: PathBuf,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// The options ask for a backend this build does not have.
    #[error(
        "the {backend} backend is not in this build of tpsnet-runtime (it needs the cargo feature `{feature}`); build with that feature or use the {other} backend (SessionOptions::backend)",
        feature = backend.feature(),
        other = other_backend(*backend)
    )]
    BackendNotBuilt {
        /// The backend asked for.
        backend: Backend,
    },
    /// The backend cannot run on the requested device (tract runs on the CPU only).
    #[error(
        "the {backend} backend runs on the CPU only, not on {device}; run on the CPU (Device::Cpu), use the ONNX Runtime backend (Backend::Ort) for CUDA, or allow falling back to the CPU (SessionOptions::allow_cpu_fallback)"
    )]
    BackendDevice {
        /// The backend asked for.
        backend: Backend,
        /// The device asked for.
        device: Device,
    },
    /// The model uses an operator the tract backend does not implement; found by reading
    /// the graph before tract builds anything from it.
    #[error(
        "the tract backend cannot run model {path}: node `{node}` is a {op}{what}, which tract does not implement; run this model with the ONNX Runtime backend (Backend::Ort){int8}",
        op = qualified_op(domain, op),
        what = if domain.is_empty() || domain == "ai.onnx" { "" } else { " (an ONNX Runtime contrib operator)" },
        int8 = if op.starts_with("QLinear") || domain == "com.microsoft" { ", or use the fp32 model (the int8 files use ONNX Runtime's com.microsoft operators)" } else { "" }
    )]
    TractUnsupportedOp {
        /// The ONNX file.
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
        "the tract backend cannot {stage} model {path}: {reason}; the graph is not one tract can run, try the ONNX Runtime backend (Backend::Ort) or re-export the model"
    )]
    TractModel {
        /// The ONNX file.
        path: PathBuf,
        /// What was being done: `read`, `load`, `optimise`.
        stage: &'static str,
        /// tract's error chain.
        reason: String,
    },
    /// tract failed while running the model.
    #[error("inference with the tract backend failed on model {path}: {reason}")]
    TractInference {
        /// The ONNX file.
        path: PathBuf,
        /// tract's error chain.
        reason: String,
    },
    /// The model's output is not `[batch, classes]` as its manifest says.
    #[error(
        "model {path} returned logits of shape {got:?}, expected {expected:?}; the graph does not match its manifest, re-export it"
    )]
    OutputShape {
        /// The ONNX file.
        path: PathBuf,
        /// The shape the model returned.
        got: Vec<i64>,
        /// `[batch, classes]`.
        expected: [i64; 2],
    },
    /// A flat input batch whose length is not a multiple of one image's.
    #[error(
        "input holds {got} floats, not a whole number of 3x32x32 images ({per_image} floats each); pass NCHW RGB in [0, 1]"
    )]
    InputLength {
        /// The number of floats given.
        got: usize,
        /// Floats per image (3 x 32 x 32).
        per_image: usize,
    },

    /// An image could not be read or decoded.
    #[error("{0}")]
    Image(#[from] crate::preprocess::ImageError),

    /// The models folder cannot be listed, or a manifest in it cannot be used.
    #[error("models folder {dir}: {reason}")]
    Registry {
        /// The models folder.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The models folder holds no published model (no manifest with its ONNX file).
    #[error(
        "no published models in {dir}: the zoo ships none yet (they are trained and exported first), or the models are in another folder (TPSNET_MODELS names it)"
    )]
    NoModels {
        /// The models folder.
        dir: PathBuf,
    },
    /// No models folder exists in any of the places searched.
    #[error(
        "no models folder found; looked in {tried}; name a folder or a model file, set TPSNET_MODELS, or run where a models/ folder is",
        tried = list_paths(tried)
    )]
    ModelsDirNotFound {
        /// Every place searched, in order.
        tried: Vec<crate::models_dir::ModelsDir>,
    },
    /// No published model in the models folder has this name.
    #[error("unknown model `{name}` in {dir}; known models: {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The models folder.
        dir: PathBuf,
        /// The names it does hold, comma-separated.
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

/// The backend that is not `backend`.
pub(crate) fn other_backend(backend: Backend) -> Backend {
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
