//! Sessions: options, the backend, the execution provider, creating sessions.
//!
//! # Backends
//!
//! [`Backend::Ort`] (feature `ort`, on by default, and the default backend) runs models
//! on ONNX Runtime; [`Backend::Tract`] (feature `tract`) runs them on tract, a pure-Rust
//! ONNX engine, on the CPU, with no native library at all (see the `tract_engine` module).
//! Both sit behind the same [`crate::Classifier`]. Asking for a backend this build does
//! not have is an [`crate::Error::BackendNotBuilt`].
//!
//! # ONNX Runtime
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
//!   [`crate::Error::CudaUnavailable`] — unless [`SessionOptions::allow_cpu_fallback`] is set, in
//!   which case the session runs on the CPU and the reason is recorded in
//!   [`Execution::fallback`] for the caller to report (the commands print it). The
//!   library itself never prints.

#[cfg(feature = "ort")]
mod ort_sessions;

#[cfg(feature = "ort")]
pub use crate::ort_library::{ORT_DYLIB_ENV, OrtLibrary};
#[cfg(feature = "ort")]
pub use ort_sessions::{available_providers, create_session, init, ort_library};

/// Which engine runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// ONNX Runtime, loaded at run time (feature `ort`).
    Ort,
    /// tract, pure Rust, CPU only (feature `tract`).
    Tract,
}

impl Backend {
    /// Both backends, in the order the commands list them.
    pub const ALL: [Backend; 2] = [Backend::Ort, Backend::Tract];

    /// Whether this build has the backend (its cargo feature is on).
    pub fn is_built(self) -> bool {
        match self {
            Backend::Ort => cfg!(feature = "ort"),
            Backend::Tract => cfg!(feature = "tract"),
        }
    }

    /// The cargo feature that builds the backend.
    pub fn feature(self) -> &'static str {
        match self {
            Backend::Ort => "ort",
            Backend::Tract => "tract",
        }
    }
}

/// ONNX Runtime when this build has it, else tract.
impl Default for Backend {
    fn default() -> Self {
        if cfg!(feature = "ort") {
            Backend::Ort
        } else {
            Backend::Tract
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.feature())
    }
}

/// Serialised as its display form (`ort`, `tract`).
impl serde::Serialize for Backend {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    /// `ort` (also `onnxruntime`) or `tract`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ort" | "onnxruntime" => Ok(Backend::Ort),
            "tract" => Ok(Backend::Tract),
            _ => Err(format!("unknown backend `{s}`; use ort or tract")),
        }
    }
}

/// Where inference runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// The CUDA execution provider on GPU `device`.
    Cuda {
        /// The CUDA device index (0 for the first GPU).
        device: i32,
    },
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
/// use tpsnet_runtime::{Device, SessionOptions};
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
    /// The engine: ONNX Runtime (the default when built) or tract.
    pub backend: Backend,
    /// Requested device.
    pub device: Device,
    /// Intra-op threads per session (0: ONNX Runtime's default, one per physical core).
    /// With tract: how many images run at once, one per thread (0: one per core).
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
    /// ONNX Runtime only: how long (microseconds) an idle intra-op thread spins for new
    /// work before it sleeps (`None` or 0: ONNX Runtime's default). Spinning makes
    /// the next parallel step start at once, which a lone
    /// request needs; a busy server loses that CPU time to the threads that read and
    /// answer requests. `tpsnet-serve` sets 100 (docs/benchmarks.md, "How long ONNX
    /// Runtime's idle threads spin").
    pub spin_us: Option<u32>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            backend: Backend::default(),
            device: Device::Cpu,
            threads: 0,
            sessions: 1,
            allow_cpu_fallback: false,
            batch_size: 256,
            spin_us: None,
        }
    }
}

impl SessionOptions {
    /// A builder starting from the defaults: ONNX Runtime (tract in a build without it),
    /// CPU, ONNX Runtime's default threads, one
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
    /// The engine (default [`Backend::Ort`], or [`Backend::Tract`] in a build without
    /// ONNX Runtime).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.options.backend = backend;
        self
    }

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

    /// Microseconds an idle ONNX Runtime intra-op thread spins for work before it sleeps
    /// (default: ONNX Runtime's own; 0 means the same). tract ignores it.
    pub fn spin_us(mut self, us: u32) -> Self {
        self.options.spin_us = Some(us);
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
    /// The engine.
    pub backend: Backend,
    /// What was asked for.
    pub requested: Device,
    /// The execution provider in use: `CPUExecutionProvider` or `CUDAExecutionProvider`
    /// on ONNX Runtime, `tract` on tract.
    pub provider: String,
    /// The device in use.
    pub device: Device,
    /// Why the requested device was replaced by the CPU, if it was (only with
    /// [`SessionOptions::allow_cpu_fallback`]); callers should tell their users.
    pub fallback: Option<String>,
}
