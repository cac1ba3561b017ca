//! How the process's C allocator treats freed memory, which libtorch's CPU tensors use.

/// Makes glibc keep freed memory for reuse instead of handing it back to the kernel.
///
/// libtorch allocates CPU tensors with `malloc`. glibc serves every block above its mmap
/// threshold (at most 32 MiB) with a fresh `mmap` and unmaps it on `free`, so a training
/// step whose activations reach 63 MB (`airnet` at batch 256: 256 × 64 × 31 × 31 floats)
/// gets new pages every step, and the kernel faults in and zeroes hundreds of megabytes
/// per step: in the first `airnet-short` run 465 of 4,554 CPU seconds (10 %) were the
/// kernel's, with 188 million minor page faults (docs/lab/training-log.md, 2026-11-30).
/// Serving every block from the heap (`M_MMAP_MAX` 0) and never trimming its top
/// (`M_TRIM_THRESHOLD` 2 GiB) lets the next step reuse the same pages. Results are
/// bit-identical (the same run gives the same ONNX sha256 either way); the price is that
/// the heap keeps its high-water mark. Process-wide, so binaries call it, not the library.
/// It governs glibc's main arena, which serves the main thread (where `train-zoo` runs its
/// steps); a block too large for another thread's arena is still mapped afresh there.
///
/// Returns whether glibc accepted both settings (false on other C libraries).
#[allow(unsafe_code)] // One of the workspace's two unsafe calls (see the SAFETY note).
pub fn reuse_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called before the
        // program allocates from other threads.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
