//! How many heaps the C allocator keeps: the server's resident memory stays flat only
//! when their number is bounded.

/// Caps glibc's malloc arenas at `arenas`, unless the environment already sets
/// `MALLOC_ARENA_MAX` (then that value stands). Returns whether the cap was set here
/// (false on other C libraries, or when the environment decided).
///
/// glibc gives a thread that finds the arenas busy an arena of its own, up to 8 per core,
/// and an arena keeps the memory freed in it. A server's threads (the async workers,
/// the blocking pool that decodes uploads and runs batches, ONNX Runtime's intra-op
/// threads) spread short-lived request buffers over up to 16 arenas on 2 cores, and
/// each holds its own high-water mark. In a 10-minute soak of three models over three
/// protocols the server's RSS crept up about 1 MiB a minute without a cap (152 → 160.5
/// MiB, spread 5.5 %); with `MALLOC_ARENA_MAX=2` it stayed within 129.7–132.2 MiB at the
/// same throughput (docs/benchmarks.md, "Memory of a long-running server"). Process-wide,
/// so the binary calls it, before it starts any thread.
#[allow(unsafe_code)] // See the SAFETY note; listed in the workspace's lint comment.
pub fn cap_malloc_arenas(arenas: usize) -> bool {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = i32::try_from(arenas.max(1)).unwrap_or(i32::MAX);
        // SAFETY: mallopt only changes allocator parameters; the binary calls it before
        // it starts other threads.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = arenas;
        false
    }
}
