//! The size limits of `tpsnet-infer` (docs/limits.md), each fed an input just over it as
//! a real process: a clean refusal naming the file and the limit, and a peak resident
//! set far below what believing the input would cost.

use std::path::Path;
use std::process::Command;

use tpsnet_runtime::classify::MAX_MODEL_BYTES;
use tpsnet_runtime::preprocess::{MAX_DECODE_BYTES, MAX_SIDE};
use tpsnet_test_support::fixtures;
use tpsnet_test_support::output::describe;
use tpsnet_test_support::rss::{mib, run_with_peak_rss};
use tpsnet_zoo::manifest::{MAX_MANIFEST_BYTES, Manifest};

/// A refusal costs what starting the program and ONNX Runtime costs: well under this.
const REFUSAL_RSS_CEILING: u64 = 100 << 20;

fn infer(model: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tpsnet-infer"));
    c.env("TPSNET_MODELS", "/nonexistent-models-dir")
        .arg("--model")
        .arg(model);
    c
}

/// `tpsnet-infer` with an image to classify, for refusals of the model itself.
fn infer_one(model: &Path, dir: &Path) -> Command {
    let image = dir.join("one.png");
    std::fs::write(&image, fixtures::png_with_dimensions(32, 32)).unwrap();
    let mut c = infer(model);
    c.arg(image);
    c
}

fn refused(cmd: &mut Command, needles: &[&str]) -> u64 {
    let (out, rss) = run_with_peak_rss(cmd);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for n in needles {
        assert!(
            stderr.contains(n),
            "stderr lacks {n:?}:\n{}",
            describe(&out)
        );
    }
    assert!(!stderr.contains("panicked"), "{}", describe(&out));
    assert!(
        rss < REFUSAL_RSS_CEILING,
        "refusing cost {:.0} MiB, over the {:.0} MiB ceiling",
        mib(rss),
        mib(REFUSAL_RSS_CEILING)
    );
    rss
}

#[test]
fn images_over_the_side_or_decode_limit_are_refused_cheaply() {
    let d = tempfile::tempdir().unwrap();
    let model = fixtures::tiny_model(d.path(), "tiny", 1, 10.0);
    // Just over the side limit, and within it but over the decode memory limit (RGBA8:
    // 4 bytes a pixel).
    let side = MAX_SIDE + 1;
    let square = ((MAX_DECODE_BYTES / 4) as f64).sqrt() as u32 + 1;
    assert!(u64::from(square).pow(2) * 4 > MAX_DECODE_BYTES && square <= MAX_SIDE);
    for (name, w, h) in [("wide.png", side, 1), ("square.png", square, square)] {
        let path = d.path().join(name);
        std::fs::write(&path, fixtures::png_with_dimensions(w, h)).unwrap();
        let rss = refused(infer(&model).arg(&path), &[name, "too large"]);
        eprintln!("{name} ({w}x{h}): refused at {:.0} MiB peak RSS", mib(rss));
    }
}

#[test]
fn model_and_manifest_files_over_their_limits_are_refused_unread() {
    let d = tempfile::tempdir().unwrap();
    let manifest = fixtures::tiny_model(d.path(), "tiny", 1, 10.0);
    let model = fixtures::model_of(&manifest);
    // A sparse file: no disk space, but a size over what any ONNX model can have.
    let huge = std::fs::File::options().write(true).open(&model).unwrap();
    huge.set_len(MAX_MODEL_BYTES + 1).unwrap();
    let rss = refused(
        &mut infer_one(&manifest, d.path()),
        &["2 GiB", &model.display().to_string()],
    );
    eprintln!(
        "a {} byte model: refused at {:.0} MiB",
        MAX_MODEL_BYTES + 1,
        mib(rss)
    );
    // Under that limit but not the size the manifest says: refused before reading it.
    huge.set_len(MAX_MODEL_BYTES / 2).unwrap();
    refused(
        &mut infer_one(&manifest, d.path()),
        &["does not match its manifest"],
    );

    let mut text = Manifest::load(&manifest).unwrap().to_json().into_bytes();
    text.resize(MAX_MANIFEST_BYTES as usize + 1, b' ');
    std::fs::write(&manifest, text).unwrap();
    refused(
        &mut infer_one(&manifest, d.path()),
        &["manifest", "1048576"],
    );
}
