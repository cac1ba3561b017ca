//! The real CIFAR-10 folder for the workspace's tests.

use std::path::PathBuf;

use tpsnet_zoo::cifar::{ENV_DIR, resolve_dir};

/// When `1`, a real-data test without usable data fails instead of skipping
/// ([`cifar_dir_or_skip`]); CI (`.ci/run`) exports it.
pub const REQUIRE_DATA_ENV: &str = "TPSNET_REQUIRE_DATA";

/// `$CIFAR10_DIR`, or `None` with a notice when it is unset, so a machine without the
/// data can run every other test. With `TPSNET_REQUIRE_DATA=1` (CI exports it) an unset
/// or unusable `CIFAR10_DIR` panics instead: a broken data path can never pass as green.
pub fn cifar_dir_or_skip() -> Option<PathBuf> {
    let required = std::env::var_os(REQUIRE_DATA_ENV).is_some_and(|v| v == "1");
    let Some(dir) = std::env::var_os(ENV_DIR).filter(|v| !v.is_empty()) else {
        if required {
            panic!(
                "{REQUIRE_DATA_ENV}=1 but {ENV_DIR} is not set, so the real-data tests cannot run; \
                 point {ENV_DIR} at the cifar-10-batches-bin folder (CI: ../shared/datasets/cifar-10-batches-bin)"
            );
        }
        eprintln!(
            "{ENV_DIR} is not set: skipping a real-data test (CI sets it, with {REQUIRE_DATA_ENV}=1)"
        );
        return None;
    };
    if required {
        // With the variable set, resolve_dir checks exactly that folder.
        if let Err(e) = resolve_dir(None) {
            panic!("{REQUIRE_DATA_ENV}=1 but the real-data tests cannot run: {e}");
        }
    }
    Some(PathBuf::from(dir))
}

/// The real CIFAR-10 folder (from `$CIFAR10_DIR` or the downloader's cache). Tests that
/// cannot run without it fail with a clear message when it is not there.
pub fn cifar_dir() -> PathBuf {
    resolve_dir(None).unwrap_or_else(|e| {
        panic!("these tests need the real CIFAR-10 binary files: set CIFAR10_DIR (e.g. ../shared/datasets/cifar-10-batches-bin): {e}")
    })
}
