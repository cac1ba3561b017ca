//! ONNX Runtime sessions (feature `ort`): loading the library once per process and
//! creating sessions on the CPU or CUDA provider.

use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};

use ort::environment::Environment;
use ort::ep::ExecutionProvider;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use super::{Device, Execution, SessionOptions};
use crate::error::{Error, Result};
use crate::ort_library::OrtLibrary;

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
            build_cpu(rt, model_path, model_bytes, opts)?,
            Execution {
                backend: super::Backend::Ort,
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
                    backend: super::Backend::Ort,
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
                    build_cpu(rt, model_path, model_bytes, opts)?,
                    Execution {
                        backend: super::Backend::Ort,
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

/// A session builder with full graph optimisation, `opts.threads` intra-op threads and,
/// when set, `opts.spin_us` of spinning for idle intra-op threads.
fn builder(rt: &OrtRuntime, model_path: &Path, opts: &SessionOptions) -> Result<Builder> {
    let mut b = Session::builder(&rt.env)
        .map_err(|e| session_error(model_path, e))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| session_error(model_path, e))?;
    if let Some(us) = opts.spin_us.filter(|&us| us > 0) {
        // ONNX Runtime reads it when it makes the session's thread pool (1.31's
        // OrtThreadPoolParams::spin_duration_us; it logs the value at verbose level).
        b = b
            .with_config_entry("session.intra_op.spin_duration_us", us.to_string())
            .map_err(|e| session_error(model_path, e))?;
    }
    if opts.threads == 0 {
        return Ok(b);
    }
    b.with_intra_threads(opts.threads)
        .map_err(|e| session_error(model_path, e))
}

fn build_cpu(
    rt: &OrtRuntime,
    model_path: &Path,
    bytes: &[u8],
    opts: &SessionOptions,
) -> Result<Session> {
    // ONNX Runtime's memory pattern plans one block per input shape and keeps each plan
    // (and its block's arena space) for the session's life. Our batch dimension varies (a
    // server's batches take every size up to --max-batch), so with patterns on, memory
    // grows with every new size: 83 -> 177 MiB for three models over 3,000 calls of random
    // sizes, against a flat 129 MiB with patterns off, at the same speed (batch 1, 16 and
    // 256, resnet20 and airnet-wide; docs/benchmarks.md, "Memory of a long-running server").
    builder(rt, model_path, opts)?
        .with_memory_pattern(false)
        .map_err(|e| session_error(model_path, e))?
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
    let mut b = builder(rt, model_path, opts)?
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
