//! bfloat16 convolutions for training on a CPU, where they pay: on CPUs with AMX-BF16
//! (Intel Sapphire Rapids and later) oneDNN runs bf16 convolutions on the matrix units.
//!
//! libtorch's CPU autocast is not reachable through tch (whose `autocast` switches CUDA's
//! only), so the model does what autocast does for convolutions itself: inside
//! [`with_bf16_convs`] every convolution casts its input, weight and bias to bf16 and
//! returns bf16; BatchNorm (fp32 parameters and statistics), activations and pooling
//! follow in bf16, and the head and the loss run in fp32. Gradients reach the fp32
//! weights through the casts, so the optimiser and the exported model stay fp32.
//! The switch is per thread, like autocast's.

use std::cell::Cell;

thread_local! {
    static BF16_CONVS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the model's convolutions in bf16 when `enabled` (see the module docs),
/// restoring the previous setting afterwards.
pub fn with_bf16_convs<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
    let previous = BF16_CONVS.replace(enabled);
    let out = f();
    BF16_CONVS.set(previous);
    out
}

/// Whether convolutions on this thread run in bf16 now.
pub(crate) fn bf16_convs() -> bool {
    BF16_CONVS.get()
}

/// Whether a recipe's `cpu_bf16` switch takes effect on `device`: on a CPU with AMX-BF16
/// only (never on CUDA, whose recipes use autocast instead).
pub fn honoured(cpu_bf16: bool, device: tch::Device) -> bool {
    cpu_bf16 && device == tch::Device::Cpu && cpu_has_amx_bf16()
}

/// What a run's device description adds about its convolutions' precision: `None` when
/// the recipe asked for fp32; otherwise whether `cpu_bf16` was honoured, so that a
/// manifest says which precision produced its weights.
pub fn describe(cpu_bf16: bool, device: tch::Device) -> Option<&'static str> {
    if !cpu_bf16 || device != tch::Device::Cpu {
        return None;
    }
    Some(if cpu_has_amx_bf16() {
        "bf16 convolutions (AMX-BF16)"
    } else {
        "fp32 convolutions (cpu_bf16 asked for; this CPU has no AMX-BF16)"
    })
}

/// Whether this CPU has AMX-BF16 (the `amx_bf16` flag of /proc/cpuinfo): where bf16
/// convolutions measured faster than fp32. Without it (an AVX-512 BF16 EPYC, say) they
/// were slower, so a recipe's `cpu_bf16` is only honoured where this holds.
pub fn cpu_has_amx_bf16() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo")
            .map(|info| {
                info.lines()
                    .filter(|l| l.starts_with("flags"))
                    .take(1)
                    .any(|l| l.split_whitespace().any(|f| f == "amx_bf16"))
            })
            .unwrap_or(false)
    })
}
