//! Replays every input the fuzzers found a bug with (`fuzz/regressions/TARGET/*`) through
//! the same entry points the fuzz targets call (`fuzz/src/lib.rs`, compiled here on the
//! stable toolchain): each must now be accepted or refused without a panic. The shipped
//! manifests and the smallest shipped ONNX model, the fuzzers' seeds, are replayed too.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_targets;

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target(name: &str) -> fn(&[u8]) {
    match name {
        "manifest" => fuzz_targets::manifest,
        "spec" => fuzz_targets::spec,
        "cifar_batch" => fuzz_targets::cifar_batch,
        "image" => fuzz_targets::image,
        "kserve_infer" => fuzz_targets::kserve_infer,
        "onnx_graph" => fuzz_targets::onnx_graph,
        "multipart" => fuzz_targets::multipart,
        other => {
            panic!("fuzz/regressions/{other}: no fuzz target of that name (see fuzz/Cargo.toml)")
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

#[test]
fn every_saved_fuzz_finding_is_handled() {
    let mut replayed = 0;
    for dir in files(&root().join("fuzz/regressions")) {
        if !dir.is_dir() {
            continue;
        }
        let run = target(dir.file_name().unwrap().to_str().unwrap());
        for input in files(&dir) {
            eprintln!("replaying {}", input.display());
            run(&std::fs::read(&input).unwrap());
            replayed += 1;
        }
    }
    eprintln!("{replayed} saved fuzz inputs replayed");
}

#[test]
fn the_seeds_are_accepted() {
    for manifest in files(&root().join("models")) {
        if manifest.extension().is_some_and(|e| e == "json") && !manifest.ends_with("index.json") {
            let bytes = std::fs::read(&manifest).unwrap();
            fuzz_targets::manifest(&bytes);
            assert!(
                tpsnet_zoo::Manifest::load(&manifest).is_ok(),
                "{} is a seed of the manifest fuzzer and must load",
                manifest.display()
            );
        }
    }
}
