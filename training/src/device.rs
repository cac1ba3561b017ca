//! Picking and describing the training device.

use tch::Device;

/// Loads `libtorch_cuda.so` into the process before the first tch call.
///
/// rustc links with `--as-needed`, which drops `libtorch_cuda.so` because no symbol of
/// it is referenced directly; libtorch then never registers its CUDA backend and
/// `tch::Cuda::is_available()` is false even on a GPU
/// (docs/design-notes.md#native-libraries). Opening it ourselves with RTLD_GLOBAL
/// registers the backend; where the library or the CUDA runtime is absent the call
/// fails quietly and we stay on the CPU.
#[allow(unsafe_code)] // One of the workspace's two unsafe calls (see the SAFETY note).
pub fn load_cuda_backend() -> bool {
    use std::sync::OnceLock;
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        let name = c"libtorch_cuda.so";
        // SAFETY: dlopen with a valid NUL-terminated name; the handle is intentionally
        // leaked so the library stays loaded for the life of the process.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        !handle.is_null()
    })
}

/// A device as the user names it: `auto`, `cpu`, `cuda` or `cuda:N`. Parsing checks the
/// spelling only; [`DeviceChoice::resolve`] asks libtorch whether the device exists, so
/// a command line can be parsed without loading CUDA.
///
/// ```
/// use tpsnet_training::device::DeviceChoice;
/// assert_eq!("cuda:1".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(1));
/// assert_eq!("cuda".parse::<DeviceChoice>().unwrap().to_string(), "cuda:0");
/// assert!("gpu".parse::<DeviceChoice>().unwrap_err().to_string().contains("auto, cpu, cuda"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA device 0 when libtorch sees one, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

/// Why a device cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The name is not a device (the name given).
    #[error("unknown device `{0}`; use auto, cpu, cuda or cuda:N")]
    Unknown(String),
    /// `cuda:` is followed by something other than a number (the name given).
    #[error("device `{0}`: expected cuda:N with N a number")]
    BadIndex(String),
    /// The CUDA device asked for does not exist (or libtorch has no CUDA).
    #[error("device `cuda:{index}` was asked for, but libtorch sees {available} CUDA device(s)")]
    Unavailable {
        /// The index asked for.
        index: usize,
        /// CUDA devices libtorch sees.
        available: usize,
    },
}

impl std::str::FromStr for DeviceChoice {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            s => match s.strip_prefix("cuda:") {
                Some(i) => i
                    .parse()
                    .map(DeviceChoice::Cuda)
                    .map_err(|_| DeviceError::BadIndex(s.to_string())),
                None => Err(DeviceError::Unknown(s.to_string())),
            },
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceChoice {
    /// The libtorch device, after loading the CUDA backend; a CUDA index libtorch does
    /// not see is an error.
    pub fn resolve(self) -> Result<Device, DeviceError> {
        load_cuda_backend();
        let cuda_count = || {
            if tch::Cuda::is_available() {
                tch::Cuda::device_count() as usize
            } else {
                0
            }
        };
        match self {
            DeviceChoice::Auto => Ok(if cuda_count() > 0 {
                cuda_device(0)
            } else {
                Device::Cpu
            }),
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(index) => {
                let available = cuda_count();
                if index >= available {
                    Err(DeviceError::Unavailable { index, available })
                } else {
                    Ok(cuda_device(index))
                }
            }
        }
    }
}

/// Parses `auto`, `cpu`, `cuda` or `cuda:N` and resolves it ([`DeviceChoice::resolve`]).
/// `auto` picks CUDA device 0 when present.
pub fn parse(spec: &str) -> Result<Device, DeviceError> {
    spec.parse::<DeviceChoice>()?.resolve()
}

/// CUDA device `idx`, with cuDNN's autotuner switched on: every step of a run has the
/// same shapes, so timing the candidate kernels once per shape pays for itself within
/// the first epoch (PyTorch's `torch.backends.cudnn.benchmark`).
fn cuda_device(idx: usize) -> Device {
    tch::Cuda::cudnn_set_benchmark(true);
    Device::Cuda(idx)
}

/// The CUDA device index to synchronise (0 off CUDA).
fn device_index(d: Device) -> i64 {
    match d {
        Device::Cuda(i) => i as i64,
        _ => 0,
    }
}

/// Waits for the device's queued work when it is a CUDA device (before reading a clock).
pub(crate) fn synchronize(d: Device) {
    if d.is_cuda() {
        tch::Cuda::synchronize(device_index(d));
    }
}

/// A human description: `cuda:0 (NVIDIA H100 80GB HBM3)` or `cpu (2 threads, <model>)`.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cuda(i) => {
            let name = std::process::Command::new("nvidia-smi")
                .args([
                    "--query-gpu=name",
                    "--format=csv,noheader",
                    &format!("--id={i}"),
                ])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unknown GPU".into());
            format!("cuda:{i} ({name})")
        }
        _ => {
            let model = std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split(':').nth(1))
                        .map(|m| m.trim().to_string())
                })
                .unwrap_or_else(|| "unknown CPU".into());
            format!("cpu ({} threads, {model})", tch::get_num_threads())
        }
    }
}
