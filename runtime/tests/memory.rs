//! Memory of a long-lived classifier (a server's): after [`Classifier::warm_up`], batches
//! of every size up to the batch size, run again and again, take no more memory.
//! ONNX Runtime's memory pattern (on by default) would keep a block per batch size that
//! it has seen twice: 12.7 MiB more for resnet20 over sizes 1..63 (measured with Python
//! onnxruntime), and RSS that creeps up through a server's first ten minutes
//! (docs/benchmarks.md, "Memory of a long-running server"). This file holds one test so
//! that its process's RSS is its own.

use tpsnet_runtime::{Classifier, SessionOptions, registry};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib / 1024.0
}

#[test]
#[cfg(target_os = "linux")]
fn every_batch_size_after_warm_up_takes_no_more_memory() {
    let reg = registry::Registry::scan(&tpsnet_test_support::shipped::models_dir()).unwrap();
    let manifest = reg.find("resnet20").unwrap().manifest_path.clone();
    let batch = 64;
    let clf = Classifier::open(
        &manifest,
        &SessionOptions::builder()
            .threads(2)
            .batch_size(batch)
            .build(),
    )
    .unwrap();
    clf.warm_up().unwrap();
    let blank = vec![0.5f32; batch * 3072];
    // The first pass of each size may still set up per-shape state; the memory pattern's
    // blocks are taken from the second pass on.
    for n in 1..batch {
        clf.logits_chw(&blank[..n * 3072]).unwrap();
    }
    let before = rss_mib();
    for _ in 0..2 {
        for n in 1..batch {
            clf.logits_chw(&blank[..n * 3072]).unwrap();
        }
    }
    let grown = rss_mib() - before;
    assert!(
        grown < 3.0,
        "RSS grew by {grown:.1} MiB over two passes of batch sizes 1 to {} after warm-up \
         (from {before:.1} MiB); is ONNX Runtime's memory pattern back on?",
        batch - 1
    );
}
