//! ONNX Runtime sessions: options, the execution provider, creating sessions.
//!
//! The library is loaded at run time (`ort`'s `load-dynamic`) from the first usable place
//! of [`crate::ort_library`]'s search order (`ORT_DYLIB_PATH`, beside the executable, the
//! checkout's `.venv`, the system library path); nothing is linked at build time, so the
//! crate builds without ONNX Runtime (and never links libtorch).
//!
//! # Execution providers
//!
//! * [`Device::Cpu`]: ONNX Runtime's CPU provider with [`SessionOptions::threads`] intra-op
//!   threads (0 = ONNX Runtime's default, one per physical core).
//! * [`Device::Cuda`]: the CUDA provider on the given device index. If it cannot start
//!   (an ONNX Runtime built without CUDA, no GPU, missing CUDA/cuDNN libraries) that is an
//!   [`Error::CudaUnavailable`] — unless [`SessionOptions::allow_cpu_fallback`] is set, in
//!   which case the session runs on the CPU and the reason is recorded in
//!   [`Execution::fallback`] for the caller to report (the commands print it). The
//!   library itself never prints.

use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};

use ort::environment::Environment;
use ort::ep::ExecutionProvider;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use crate::error::{Error, Result};
pub use crate::ort_library::{ORT_DYLIB_ENV, OrtLibrary};

/// Where inference runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// The CUDA execution provider on GPU `device`.
    Cuda { device: i32 },
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda { device } => write!(f, "cuda:{device}"),
        }
    }
}

/// Serialised as its display form (`cpu`, `cuda:0`).
impl serde::Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    /// `cpu`, `cuda` (device 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda { device: 0 }),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|n| *n >= 0)
                .map(|device| Device::Cuda { device })
                .ok_or_else(|| format!("unknown device `{s}`; use cpu, cuda or cuda:N")),
        }
    }
}

/// How sessions are created. Build one with [`SessionOptions::builder`]:
///
/// ```
/// use runtime::{Device, SessionOptions};
///
/// let options = SessionOptions::builder()
///     .device(Device::Cuda { device: 0 })
///     .allow_cpu_fallback(true)
///     .threads(2)
///     .sessions(4)
///     .batch_size(64)
///     .build();
/// assert_eq!((options.threads, options.sessions), (2, 4));
/// ```
///
/// `#[non_exhaustive]`: options may be added, so code outside this crate builds them
/// with the builder (or takes the defaults and sets fields).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Requested device.
    pub device: Device,
    /// Intra-op threads per session (0: ONNX Runtime's default, one per physical core).
    pub threads: usize,
    /// Number of sessions in the pool, i.e. how many batches may run at the same time
    /// (each session holds its own copy of the weights). 1 suits a CLI; a server with many
    /// concurrent requests may use more.
    pub sessions: usize,
    /// If the CUDA provider cannot start, run on the CPU instead of failing (recorded in
    /// [`Execution::fallback`]).
    pub allow_cpu_fallback: bool,
    /// Images per inference call; larger inputs are split into chunks of this size.
    pub batch_size: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            device: Device::Cpu,
            threads: 0,
            sessions: 1,
            allow_cpu_fallback: false,
            batch_size: 256,
        }
    }
}

impl SessionOptions {
    /// A builder starting from the defaults: CPU, ONNX Runtime's default threads, one
    /// session, no CPU fallback, batches of 256.
    pub fn builder() -> SessionOptionsBuilder {
        SessionOptionsBuilder::default()
    }
}

/// Builds [`SessionOptions`]; every setter is optional.
#[derive(Clone, Debug, Default)]
#[must_use = "call .build() to get the options"]
pub struct SessionOptionsBuilder {
    options: SessionOptions,
}

impl SessionOptionsBuilder {
    /// Where inference runs (default [`Device::Cpu`]).
    pub fn device(mut self, device: Device) -> Self {
        self.options.device = device;
        self
    }

    /// Intra-op threads per session (default 0: ONNX Runtime's choice, one per physical
    /// core).
    pub fn threads(mut self, threads: usize) -> Self {
        self.options.threads = threads;
        self
    }

    /// Sessions in the pool, i.e. how many batches may run at once (default 1; 0 counts
    /// as 1). Each holds its own copy of the weights.
    pub fn sessions(mut self, sessions: usize) -> Self {
        self.options.sessions = sessions;
        self
    }

    /// Run on the CPU when the CUDA provider cannot start, instead of failing (default
    /// false); the reason is kept in [`Execution::fallback`].
    pub fn allow_cpu_fallback(mut self, allow: bool) -> Self {
        self.options.allow_cpu_fallback = allow;
        self
    }

    /// Images per inference call (default 256; 0 counts as 1).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.options.batch_size = batch_size;
        self
    }

    /// The options.
    #[must_use]
    pub fn build(self) -> SessionOptions {
        self.options
    }
}

/// What a classifier actually runs on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Execution {
    /// What was asked for.
    pub requested: Device,
    /// The execution provider in use: `CPUExecutionProvider` or `CUDAExecutionProvider`.
    pub provider: String,
    /// The device in use.
    pub device: Device,
    /// Why the requested device was replaced by the CPU, if it was (only with
    /// [`SessionOptions::allow_cpu_fallback`]); callers should tell their users.
    pub fallback: Option<String>,
}

struct OrtRuntime {
    env: Environment,
    library: &'static OrtLibrary,
}

static RUNTIME: OnceLock<OrtRuntime> = OnceLock::new();
/// Serialises creating the environment; a failure is not cached (its `ort::Error` is
/// handed to the caller), so a later call tries again.
static RUNTIME_INIT: Mutex<()> = Mutex::new(());

fn runtime() -> Result<&'static OrtRuntime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let _guard = RUNTIME_INIT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let library = crate::ort_library::load()?;
    let env = ort::init()
        .with_name("tpsnet-runtime")
        .build()
        .map_err(|source| Error::OrtEnvironment {
            path: library.path.clone(),
            source,
        })?;
    Ok(RUNTIME.get_or_init(|| OrtRuntime { env, library }))
}

/// Loads ONNX Runtime (once per process) and returns the library path in use.
///
/// Fails with a message naming every place searched when none holds a usable library,
/// or naming `ORT_DYLIB_PATH` when it is set to something unusable.
pub fn init() -> Result<&'static Path> {
    Ok(runtime()?.library.path.as_path())
}

/// Loads ONNX Runtime (once per process) and tells which library is in use: its path,
/// version and where it was found.
pub fn ort_library() -> Result<&'static OrtLibrary> {
    Ok(runtime()?.library)
}

/// Execution providers the loaded ONNX Runtime was built with, e.g.
/// `["CPUExecutionProvider"]`.
pub fn available_providers() -> Result<Vec<String>> {
    runtime()?;
    let mut out = Vec::new();
    if ort::ep::CUDA::is_available().unwrap_or(false) {
        out.push("CUDAExecutionProvider".to_string());
    }
    if ort::ep::CPU::is_available().unwrap_or(true) {
        out.push("CPUExecutionProvider".to_string());
    }
    Ok(out)
}

/// Creates one session for `model_bytes` (already hash-checked) on the requested device,
/// falling back to the CPU only when the options allow it. `model_path` only names the
/// model in errors. Public for tools that need raw sessions on the same ONNX Runtime
/// (`tpsnet-quantize` reads intermediate tensors while calibrating).
pub fn create_session(
    model_path: &Path,
    model_bytes: &[u8],
    opts: &SessionOptions,
) -> Result<(Session, Execution)> {
    let rt = runtime()?;
    match opts.device {
        Device::Cpu => Ok((
            build_cpu(rt, model_path, model_bytes, opts.threads)?,
            Execution {
                requested: Device::Cpu,
                provider: "CPUExecutionProvider".into(),
                device: Device::Cpu,
                fallback: None,
            },
        )),
        Device::Cuda { device } => match build_cuda(rt, model_path, model_bytes, device, opts) {
            Ok(session) => Ok((
                session,
                Execution {
                    requested: opts.device,
                    provider: "CUDAExecutionProvider".into(),
                    device: opts.device,
                    fallback: None,
                },
            )),
            Err(Error::CudaUnavailable {
                device,
                reason,
                source,
            }) if opts.allow_cpu_fallback => {
                let why = match source {
                    Some(source) => {
                        format!("CUDA device {device} unavailable ({reason}: {source})")
                    }
                    None => format!("CUDA device {device} unavailable ({reason})"),
                };
                Ok((
                    build_cpu(rt, model_path, model_bytes, opts.threads)?,
                    Execution {
                        requested: opts.device,
                        provider: "CPUExecutionProvider".into(),
                        device: Device::Cpu,
                        fallback: Some(why),
                    },
                ))
            }
            Err(e) => Err(e),
        },
    }
}

type Builder = ort::session::builder::SessionBuilder;

fn session_error(model_path: &Path, e: impl Into<ort::Error>) -> Error {
    Error::Session {
        path: model_path.to_path_buf(),
        source: e.into(),
    }
}

fn invalid_model(model_path: &Path, e: impl Into<ort::Error>) -> Error {
    Error::ModelInvalid {
        path: model_path.to_path_buf(),
        source: e.into(),
    }
}

/// A session builder with full graph optimisation and `threads` intra-op threads.
fn builder(rt: &OrtRuntime, model_path: &Path, threads: usize) -> Result<Builder> {
    let b = Session::builder(&rt.env)
        .map_err(|e| session_error(model_path, e))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| session_error(model_path, e))?;
    if threads == 0 {
        return Ok(b);
    }
    b.with_intra_threads(threads)
        .map_err(|e| session_error(model_path, e))
}

fn build_cpu(rt: &OrtRuntime, model_path: &Path, bytes: &[u8], threads: usize) -> Result<Session> {
    builder(rt, model_path, threads)?
        .commit_from_memory(bytes)
        .map_err(|e| invalid_model(model_path, e))
}

fn build_cuda(
    rt: &OrtRuntime,
    model_path: &Path,
    bytes: &[u8],
    device: i32,
    opts: &SessionOptions,
) -> Result<Session> {
    let unavailable = |reason: String, source: Option<ort::Error>| Error::CudaUnavailable {
        device,
        reason,
        source,
    };
    if !ort::ep::CUDA::is_available().unwrap_or(false) {
        return Err(unavailable(
            format!(
                "the ONNX Runtime at {} was built without the CUDA execution provider (it has: {})",
                rt.library.path.display(),
                available_providers()
                    .map(|p| p.join(", "))
                    .unwrap_or_else(|_| "?".into())
            ),
            None,
        ));
    }
    let ep = ort::ep::CUDA::default()
        .with_device_id(device)
        .build()
        .error_on_failure();
    let mut b = builder(rt, model_path, opts.threads)?
        .with_execution_providers([ep])
        .map_err(|e| {
            unavailable(
                "ONNX Runtime could not register the CUDA provider".into(),
                Some(e.into()),
            )
        })?;
    // A provider that registered but cannot start (no GPU, bad device index, missing
    // cuDNN) fails when the session is created; an invalid model fails there too, so the
    // message decides which of the two it is.
    b.commit_from_memory(bytes).map_err(|e| {
        let lower = e.to_string().to_lowercase();
        if lower.contains("cuda") || lower.contains("cudnn") || lower.contains("gpu") {
            unavailable(
                "ONNX Runtime could not start a session on it".into(),
                Some(e),
            )
        } else {
            invalid_model(model_path, e)
        }
    })
}
