//! `cpu_memory::reuse_freed_memory` measured in a process of its own, on its main thread:
//! the allocator setting is process-wide and page faults are counted for the whole process,
//! so nothing else may run beside it (the library's unit tests run in parallel), and glibc
//! serves a 64 MiB block from a thread's own arena with a fresh mapping whatever the
//! setting, so the allocation must come from the main arena, as the trainer's steps do
//! (`harness = false` in Cargo.toml: this `main` is the test).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // A test's libc call (see the SAFETY note).
fn minor_faults() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage.ru_minflt
    }
}

/// A step that allocates and frees four 64 MiB tensors, as a training step does with its
/// activations. Without the setting every step maps them afresh and faults in all 65,536
/// pages (measured: 65,540 a step); with it the heap settles within a few steps (the
/// first ones still grow it: a 64-byte-aligned block does not always fit the hole its
/// predecessor left) and later steps fault in nothing new (measured: 0).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn step() -> f64 {
    let ones = tch::Tensor::ones([16 << 20], (tch::Kind::Float, tch::Device::Cpu));
    let shifted = &ones + 1.0;
    let activated = shifted.relu() * 2.0;
    activated.sum(tch::Kind::Float).double_value(&[])
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() {
    assert!(tpsnet_training::cpu_memory::reuse_freed_memory());
    for _ in 0..5 {
        assert_eq!(step(), 4.0 * (16 << 20) as f64);
    }
    let before = minor_faults();
    for _ in 0..5 {
        step();
    }
    let faults = minor_faults() - before;
    // One fresh 64 MiB block is 16,384 pages; five steps without the setting are 327,700.
    assert!(
        faults < 16_384,
        "large_tensors_reuse_their_pages: {faults} minor page faults in 5 settled steps of four 64 MiB tensors"
    );
    println!("large_tensors_reuse_their_pages: {faults} minor page faults in 5 settled steps: ok");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {}
