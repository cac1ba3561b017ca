//! `cpu_memory::reuse_freed_memory` measured in a process of its own: the allocator setting
//! is process-wide, and page faults are counted for the whole process, so this file holds
//! one test and nothing else runs beside it (the library's unit tests run in parallel and
//! would add their own faults).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn minor_faults() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage.ru_minflt
    }
}

/// After the call, a 64 MiB tensor allocated and freed again and again reuses its pages: a
/// fresh mapping would fault in all 16,384 of them each time (81,920 for five).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn large_tensors_reuse_their_pages() {
    assert!(training::cpu_memory::reuse_freed_memory());
    let fill = || {
        let t = tch::Tensor::ones([16 << 20], (tch::Kind::Float, tch::Device::Cpu));
        assert_eq!(t.size(), [16 << 20]);
    };
    fill();
    let before = minor_faults();
    for _ in 0..5 {
        fill();
    }
    let faults = minor_faults() - before;
    assert!(
        faults < 16_384,
        "{faults} minor page faults for 5 reused 64 MiB blocks"
    );
}
