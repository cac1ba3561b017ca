//! Helpers shared by the training crate's integration tests.

use std::path::PathBuf;

/// The real CIFAR-10 folder from `CIFAR10_DIR`, or `None` (with a notice) when unset;
/// with `TPSNET_REQUIRE_DATA=1` (CI) a missing folder fails the test instead.
pub fn cifar_dir() -> Option<PathBuf> {
    tpsnet_test_support::data::cifar_dir_or_skip()
}
