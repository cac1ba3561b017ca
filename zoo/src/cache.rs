//! The cache folder the downloader fills and [`crate::cifar::resolve_dir`] looks in.
//!
//! Kept apart from `tpsnet_zoo::download` so that finding a cached copy of CIFAR-10 works in
//! builds without the `download` feature (no HTTP client, no progress bar).

use std::path::PathBuf;

/// Environment variable that overrides the cache folder.
pub const ENV_CACHE: &str = "TPSNET_CACHE";

/// The cache folder: `$TPSNET_CACHE`, else `$XDG_CACHE_HOME/tpsnet-zoo`, else
/// `~/.cache/tpsnet-zoo` (falling back to the system temp folder without a home).
pub fn default_cache_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(ENV_CACHE) {
        return PathBuf::from(dir);
    }
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(dir) = var("XDG_CACHE_HOME").map(PathBuf::from) {
        if dir.is_absolute() {
            return dir.join("tpsnet-zoo");
        }
    }
    match var("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("tpsnet-zoo"),
        None => std::env::temp_dir().join("tpsnet-zoo"),
    }
}
