//! Replays every input the fuzzers found a bug with (`fuzz/regressions/TARGET/*`) through
//! the same entry points the fuzz targets call (the `tpsnet-fuzz-entry` crate, built here
//! on the stable toolchain): each must now be accepted or refused without a panic. The shipped
//! manifests and the smallest shipped ONNX model, the fuzzers' seeds, are replayed too.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target(name: &str) -> fn(&[u8]) {
    match name {
        "manifest" => tpsnet_fuzz_entry::manifest,
        "spec" => tpsnet_fuzz_entry::spec,
        "cifar_batch" => tpsnet_fuzz_entry::cifar_batch,
        "image" => tpsnet_fuzz_entry::image,
        "kserve_infer" => tpsnet_fuzz_entry::kserve_infer,
        "onnx_graph" => tpsnet_fuzz_entry::onnx_graph,
        "multipart" => tpsnet_fuzz_entry::multipart,
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
            tpsnet_fuzz_entry::manifest(&bytes);
            assert!(
                tpsnet_zoo::Manifest::load(&manifest).is_ok(),
                "{} is a seed of the manifest fuzzer and must load",
                manifest.display()
            );
        }
    }
}
