//! Picking and describing the training device.

use tch::Device;

/// Loads `libtorch_cuda.so` into the process before the first tch call.
///
/// rustc links with `--as-needed`, which drops `libtorch_cuda.so` because no symbol of
/// it is referenced directly; libtorch then never registers its CUDA backend and
/// `tch::Cuda::is_available()` is false even on a GPU (DESIGN.md §4). Opening it
/// ourselves with RTLD_GLOBAL registers the backend; where the library or the CUDA
/// runtime is absent the call fails quietly and we stay on the CPU.
#[allow(unsafe_code)] // The workspace's one unsafe call (see the SAFETY note).
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

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`. `auto` picks CUDA device 0 when present.
pub fn parse(spec: &str) -> Result<Device, String> {
    load_cuda_backend();
    let cuda_count = || {
        if tch::Cuda::is_available() {
            tch::Cuda::device_count() as usize
        } else {
            0
        }
    };
    match spec {
        "auto" => Ok(if cuda_count() > 0 {
            cuda_device(0)
        } else {
            Device::Cpu
        }),
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let idx: usize = match s.strip_prefix("cuda:") {
                Some(i) => i
                    .parse()
                    .map_err(|_| format!("device `{s}`: expected cuda:N with N a number"))?,
                None => 0,
            };
            let n = cuda_count();
            if idx >= n {
                Err(format!(
                    "device `{s}` was asked for, but libtorch sees {n} CUDA device(s); use --device cpu or auto"
                ))
            } else {
                Ok(cuda_device(idx))
            }
        }
        other => Err(format!(
            "unknown device `{other}`; use auto, cpu, cuda or cuda:N"
        )),
    }
}

/// CUDA device `idx`, with cuDNN's autotuner switched on: every step of a run has the
/// same shapes, so timing the candidate kernels once per shape pays for itself within
/// the first epoch (PyTorch's `torch.backends.cudnn.benchmark`).
fn cuda_device(idx: usize) -> Device {
    tch::Cuda::cudnn_set_benchmark(true);
    Device::Cuda(idx)
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
