//! ONNX Runtime: loading the library, choosing the execution provider, creating sessions.
//!
//! The library is loaded at run time (`ort`'s `load-dynamic`) from the path in
//! `ORT_DYLIB_PATH`; nothing is linked at build time, so the crate builds without ONNX
//! Runtime (and never links libtorch).
//!
//! # Execution providers
//!
//! * [`Device::Cpu`]: ONNX Runtime's CPU provider with [`SessionOptions::threads`] intra-op
//!   threads (0 = ONNX Runtime's default, one per physical core).
//! * [`Device::Cuda`]: the CUDA provider on the given device index. If it cannot start
//!   (an ONNX Runtime built without CUDA, no GPU, missing CUDA/cuDNN libraries) that is an
//!   [`Error::CudaUnavailable`] — unless [`SessionOptions::allow_cpu_fallback`] is set, in
//!   which case the session runs on the CPU, the fallback is printed to stderr once and
//!   recorded in [`Execution::fallback`]. A fallback is never silent.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::ExecutionProvider;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use crate::error::{Error, Result};

/// Environment variable holding the path of `libonnxruntime.so`.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

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

/// How sessions are created.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Requested device.
    pub device: Device,
    /// Intra-op threads per session (0: ONNX Runtime's default, one per physical core).
    pub threads: usize,
    /// Number of sessions in the pool, i.e. how many batches may run at the same time
    /// (each session holds its own copy of the weights). 1 suits a CLI; a server with many
    /// concurrent requests may use more.
    pub sessions: usize,
    /// If the CUDA provider cannot start, run on the CPU instead of failing (announced on
    /// stderr and in [`Execution::fallback`]).
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

/// What a classifier actually runs on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Execution {
    /// What was asked for.
    pub requested: Device,
    /// The execution provider in use: `CPUExecutionProvider` or `CUDAExecutionProvider`.
    pub provider: String,
    /// The device in use.
    pub device: Device,
    /// Why the requested device was replaced by the CPU, if it was.
    pub fallback: Option<String>,
}

struct OrtRuntime {
    env: Environment,
    dylib: PathBuf,
}

static ORT: OnceLock<std::result::Result<OrtRuntime, InitFailure>> = OnceLock::new();

#[derive(Clone, Debug)]
enum InitFailure {
    PathMissing,
    Load { path: PathBuf, reason: String },
    Environment(String),
}

impl From<&InitFailure> for Error {
    fn from(f: &InitFailure) -> Self {
        match f {
            InitFailure::PathMissing => Error::OrtPathMissing,
            InitFailure::Load { path, reason } => Error::OrtLoad {
                path: path.clone(),
                reason: reason.clone(),
            },
            InitFailure::Environment(e) => Error::OrtEnvironment(e.clone()),
        }
    }
}

fn init_runtime() -> std::result::Result<OrtRuntime, InitFailure> {
    let path = match std::env::var_os(ORT_DYLIB_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => return Err(InitFailure::PathMissing),
    };
    if !path.is_file() {
        return Err(InitFailure::Load {
            reason: "no such file".into(),
            path,
        });
    }
    let builder = ort::init_from(&path).map_err(|e| InitFailure::Load {
        path: path.clone(),
        reason: match e {
            ort::LoadDynamicError::MissingApi { .. } => {
                "it is not an ONNX Runtime library (no OrtGetApiBase symbol)".to_string()
            }
            other => other.to_string(),
        },
    })?;
    let env = builder
        .with_name("tpsnet-runtime")
        .build()
        .map_err(|e| InitFailure::Environment(e.to_string()))?;
    Ok(OrtRuntime { env, dylib: path })
}

fn runtime() -> Result<&'static OrtRuntime> {
    ORT.get_or_init(init_runtime).as_ref().map_err(Error::from)
}

/// Loads ONNX Runtime (once per process) and returns the library path in use.
///
/// Fails with a message naming `ORT_DYLIB_PATH` when it is unset, points at a missing
/// file, at something that is not ONNX Runtime, or at a version older than the API this
/// crate needs.
pub fn init() -> Result<&'static Path> {
    Ok(runtime()?.dylib.as_path())
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
            Err(Error::CudaUnavailable { device, reason }) if opts.allow_cpu_fallback => {
                let why = format!("CUDA device {device} unavailable ({reason})");
                announce_fallback(&why);
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

fn announce_fallback(why: &str) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        eprintln!("warning: falling back to the CPU as allowed (--allow-cpu-fallback): {why}");
    });
}

type Builder = ort::session::builder::SessionBuilder;

fn session_error(model_path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Session {
        path: model_path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn invalid_model(model_path: &Path, e: impl std::fmt::Display) -> Error {
    Error::ModelInvalid {
        path: model_path.to_path_buf(),
        reason: e.to_string(),
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
    let unavailable = |reason: String| Error::CudaUnavailable { device, reason };
    if !ort::ep::CUDA::is_available().unwrap_or(false) {
        return Err(unavailable(format!(
            "the ONNX Runtime at {} was built without the CUDA execution provider (it has: {})",
            rt.dylib.display(),
            available_providers()
                .map(|p| p.join(", "))
                .unwrap_or_else(|_| "?".into())
        )));
    }
    let ep = ort::ep::CUDA::default()
        .with_device_id(device)
        .build()
        .error_on_failure();
    let mut b = builder(rt, model_path, opts.threads)?
        .with_execution_providers([ep])
        .map_err(|e| unavailable(e.to_string()))?;
    // A provider that registered but cannot start (no GPU, bad device index, missing
    // cuDNN) fails when the session is created; an invalid model fails there too, so the
    // message decides which of the two it is.
    b.commit_from_memory(bytes).map_err(|e| {
        let msg = e.to_string();
        let lower = msg.to_lowercase();
        if lower.contains("cuda") || lower.contains("cudnn") || lower.contains("gpu") {
            unavailable(msg)
        } else {
            invalid_model(model_path, e)
        }
    })
}
