//! The models the zoo ships in the checkout's `models/`, read once for every test that
//! checks them (manifests only: no inference here).

use std::path::{Path, PathBuf};

use tpsnet_zoo::Manifest;

/// The checkout's `models/` folder.
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ has a parent")
        .join("models")
}

/// Every manifest shipped in [`models_dir`], with its path, sorted by path. Panics naming
/// the file when one does not load with this build (unknown keys, schema, a model path
/// outside the folder) and when the folder ships no manifest.
pub fn manifests() -> Vec<(PathBuf, Manifest)> {
    let dir = models_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let loaded: Vec<(PathBuf, Manifest)> = paths
        .into_iter()
        .map(|path| {
            let m = Manifest::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(m.model_path(&path).parent(), path.parent(), "{m:?}");
            (path, m)
        })
        .collect();
    assert!(!loaded.is_empty(), "no manifests in {}", dir.display());
    loaded
}
