//! Helpers shared by the training crate's integration tests.

use std::path::PathBuf;

/// The real CIFAR-10 folder from `CIFAR10_DIR`, or `None` (with a notice) when unset.
/// CI always sets it, so the real-data tests run there.
pub fn cifar_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("CIFAR10_DIR").map(PathBuf::from);
    if dir.is_none() {
        eprintln!("CIFAR10_DIR is not set: skipping (CI always sets it)");
    }
    dir
}
