//! Command-line pieces shared by `tpsnet-infer` and `verify` (feature `cli`, on by
//! default): the execution flags, `--version` with the ONNX Runtime and models folder
//! in use, and how a CPU fallback is announced.

use crate::classify::Classifier;
use crate::error::Error;
use crate::session::{Backend, Device, SessionOptions};

/// Where and how inference runs; flattened into both commands.
#[derive(clap::Args, Debug, Clone)]
pub struct ExecutionArgs {
    /// Inference engine: ort (ONNX Runtime, loaded at run time) or tract (pure Rust, CPU
    /// only; needs the `tract` cargo feature) [default: ort when this build has it].
    #[arg(long, value_name = "ort|tract", default_value_t = Backend::default())]
    pub backend: Backend,

    /// Images per inference call (and per decoding batch in tpsnet-infer).
    #[arg(short, long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: Device,

    /// If CUDA cannot start, run on the CPU instead of failing (announced on stderr).
    #[arg(long)]
    pub allow_cpu_fallback: bool,

    /// ONNX Runtime intra-op threads (0: one per physical core); with tract, how many
    /// images run at once, one per thread (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl ExecutionArgs {
    /// Session options for a command-line run (one session).
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions::builder()
            .backend(self.backend)
            .device(self.device)
            .threads(self.threads)
            .sessions(1)
            .allow_cpu_fallback(self.allow_cpu_fallback)
            .batch_size(self.batch_size as usize)
            .build()
    }
}

/// The long `--version` text: the crate version, the backends built in, the ONNX Runtime
/// library in use (or every place searched) and the models folder found without
/// `--models-dir`.
pub fn long_version() -> String {
    let built: Vec<String> = Backend::ALL
        .iter()
        .filter(|b| b.is_built())
        .map(|b| b.to_string())
        .collect();
    let backends = format!(
        "backends: {} (default {})",
        built.join(", "),
        Backend::default()
    );
    #[cfg(feature = "ort")]
    let ort = match crate::session::ort_library() {
        Ok(lib) => lib.to_string(),
        Err(e) => format!("ONNX Runtime not usable: {}", e.full_message()),
    };
    #[cfg(not(feature = "ort"))]
    let ort = "ONNX Runtime: not in this build (no native library is loaded)".to_string();
    let models = match crate::registry::locate_models_dir(None) {
        Ok(dir) => format!("models folder {dir}"),
        Err(e) => match error_advice(&e) {
            Some(advice) => format!("{e}; {advice}"),
            None => e.to_string(),
        },
    };
    format!("{}\n{backends}\n{ort}\n{models}", env!("CARGO_PKG_VERSION"))
}

/// Parses the command line of `A`, with [`long_version`] as its `--version` text.
pub fn parse<A: clap::Parser>() -> A {
    // clap wants a `'static` text; this runs once per process.
    let text: &'static str = Box::leak(long_version().into_boxed_str());
    let mut cmd = A::command().long_version(text);
    let mut matches = cmd.clone().get_matches();
    A::from_arg_matches_mut(&mut matches)
        .map_err(|e| e.format(&mut cmd))
        .unwrap_or_else(|e| e.exit())
}

/// Tells the user on stderr when `classifier` runs on the CPU although CUDA was asked
/// for (`--allow-cpu-fallback`); returns whether it did.
pub fn announce_fallback(classifier: &Classifier) -> bool {
    match &classifier.execution().fallback {
        Some(why) => {
            eprintln!("warning: falling back to the CPU as allowed (--allow-cpu-fallback): {why}");
            true
        }
        None => false,
    }
}

/// What the commands offer when CIFAR-10 is missing or damaged; the data reader's errors
/// describe the problem and name the files, and the commands add this.
pub const DATA_HINT: &str = "hint: `train-zoo download` (or `verify --download`) fetches CIFAR-10 into the cache and checks every file; --data-dir DIR or CIFAR10_DIR names a folder that holds `cifar-10-batches-bin`";

/// The advice line (`hint: ...`, naming these commands' flags) for an error of the
/// runtime or of the CIFAR-10 reader anywhere in `e`'s chain; the library's errors carry
/// the data and name no flags, the commands add this.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    if let Some(data) = data_hint(e) {
        return Some(data.to_string());
    }
    e.chain()
        .find_map(|cause| cause.downcast_ref::<Error>())
        .and_then(error_advice)
        .map(|advice| format!("hint: {advice}"))
}

/// What a user of `tpsnet-infer` or `verify` can do about `e`, in terms of their flags;
/// `None` when the error's own message says all there is.
pub fn error_advice(e: &Error) -> Option<String> {
    let advice = match e {
        #[cfg(feature = "ort")]
        Error::OrtNotFound { .. } | Error::OrtLoad { .. } => format!(
            "in a checkout, `scripts/setup --runtime` installs ONNX Runtime as .venv/libonnxruntime.so; \
             elsewhere `pip install onnxruntime==1.31.1` and point ORT_DYLIB_PATH at \
             site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1{}",
            if Backend::Tract.is_built() {
                ", or run with --backend tract"
            } else {
                ""
            }
        ),
        Error::ModelMissing { .. } => "pass an existing .onnx or .json file or a model name to \
             --model, or leave --model out to use the best shipped model"
            .to_string(),
        #[cfg(feature = "ort")]
        Error::CudaUnavailable { .. } => {
            "use the CPU (--device cpu), or --allow-cpu-fallback to run on the CPU when CUDA \
             cannot start"
                .to_string()
        }
        Error::BackendNotBuilt { backend } => format!(
            "rebuild with `--features {}`, or use --backend {}",
            backend.feature(),
            crate::error::other_backend(*backend)
        ),
        Error::BackendDevice { .. } => {
            "use --device cpu, --backend ort for CUDA, or --allow-cpu-fallback".to_string()
        }
        Error::TractUnsupportedOp { .. } | Error::TractModel { .. } => {
            "run this model with --backend ort".to_string()
        }
        Error::NoModels { .. } => "train and export models with `train-zoo --all`, or pass \
             --model FILE / --models-dir DIR / TPSNET_MODELS"
            .to_string(),
        Error::ModelsDirNotFound { .. } => {
            "pass --models-dir DIR or --model FILE, set TPSNET_MODELS, or run where a models/ \
             folder is"
                .to_string()
        }
        _ => return None,
    };
    Some(advice)
}

/// [`DATA_HINT`] when the error was caused by the CIFAR-10 data.
pub fn data_hint(e: &anyhow::Error) -> Option<&'static str> {
    e.chain()
        .any(|cause| cause.is::<tpsnet_zoo::cifar::CifarError>())
        .then_some(DATA_HINT)
}
