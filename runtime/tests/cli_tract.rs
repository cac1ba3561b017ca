//! `verify --backend tract` and `tpsnet-infer --backend tract` run as real processes on
//! real CIFAR-10 images with a shipped model.

use tpsnet_test_support::fixtures as common;
use tpsnet_test_support::output::{assert_exit as status, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tpsnet_runtime::verify;
use tpsnet_runtime::{Classifier, SessionOptions, TtaMode, registry};

/// Test images the subset verification runs on (both views: 2 x 500 images through
/// resnet20, about a second).
const SUBSET: usize = 500;

fn shipped(name: &str) -> PathBuf {
    let reg = registry::Registry::scan(&tpsnet_test_support::shipped::models_dir()).unwrap();
    reg.find(name).unwrap().manifest_path.clone()
}

/// The shipped model copied into `dir` with a manifest claiming `top1` / `flip` on the
/// first [`SUBSET`] test images; returns the new manifest's path.
fn with_claims(dir: &Path, manifest: &Path, top1: f64, flip: f64) -> PathBuf {
    let mut m = tpsnet_zoo::Manifest::load(manifest).unwrap();
    std::fs::copy(m.model_path(manifest), dir.join(&m.file)).unwrap();
    m.metrics.images = SUBSET as u64;
    m.metrics.top1 = top1;
    m.metrics.top1_flip_tta = Some(flip);
    m.metrics.top1_6view = None;
    m.metrics.claim = "flip_tta".into();
    let path = dir.join(manifest.file_name().unwrap());
    std::fs::write(&path, m.to_json()).unwrap();
    path
}

fn verify_tract(manifest: &Path, report: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verify"))
        .args(["--backend", "tract", "--tolerance", "0.05", "--model"])
        .arg(manifest)
        .arg("--report")
        .arg(report)
        .env("TPSNET_MODELS", "/nonexistent-models-dir")
        .env("CIFAR10_DIR", common::cifar_dir())
        .output()
        .unwrap()
}

/// What ONNX Runtime measures on the subset, claimed in a manifest, is what `verify
/// --backend tract` measures (within 0.05 pp, i.e. exactly on 500 images); a claim two
/// images higher fails.
#[test]
fn verify_on_tract_reproduces_what_onnx_runtime_measures() {
    let source = shipped("resnet20");
    let data = common::cifar_test().subset(0..SUBSET);
    let ort = Classifier::open(&source, &SessionOptions::default()).unwrap();
    let single = verify::evaluate(&ort, &data, TtaMode::None, &|_| {}).unwrap();
    let flip = verify::evaluate(&ort, &data, TtaMode::Flip, &|_| {}).unwrap();

    let d = tempfile::tempdir().unwrap();
    let manifest = with_claims(d.path(), &source, single.top1, flip.top1);
    let report_path = d.path().join("report.json");
    let out = verify_tract(&manifest, &report_path);
    status(&out, 0);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let model = &report["models"][0];
    assert_eq!(model["execution"]["backend"], "tract");
    assert_eq!(model["execution"]["provider"], "tract");
    assert_eq!(model["single"]["images"], SUBSET as u64);
    assert_eq!(model["single"]["top1"], single.top1);
    assert_eq!(model["flip_tta"]["top1"], flip.top1);

    let higher = tempfile::tempdir().unwrap();
    let two_images = 200.0 / SUBSET as f64;
    let manifest = with_claims(higher.path(), &source, single.top1, flip.top1 + two_images);
    let out = verify_tract(&manifest, &higher.path().join("report.json"));
    status(&out, 1);
}

fn infer(args: &[&str], images: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tpsnet-infer"))
        .args(args)
        .args(images)
        .env("TPSNET_MODELS", tpsnet_test_support::shipped::models_dir())
        .output()
        .unwrap()
}

/// `tpsnet-infer --backend tract` answers what the ort backend answers; the int8 file
/// and an unknown backend are clean errors.
#[test]
fn infer_on_tract_answers_like_onnx_runtime_and_refuses_int8() {
    let d = tempfile::tempdir().unwrap();
    let images = common::write_cifar_pngs(d.path(), 8);
    let common_args = ["--model", "airnet-short", "--format", "csv", "-k", "2"];
    let ort = infer(&common_args, &images);
    status(&ort, 0);
    let tract = infer(
        &[&common_args[..], &["--backend", "tract"]].concat(),
        &images,
    );
    status(&tract, 0);
    let classes = |out: &Output| -> Vec<String> {
        text(&out.stdout)
            .lines()
            .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(classes(&ort), classes(&tract));
    assert_eq!(classes(&tract).len(), 9, "{}", text(&tract.stdout));
    assert!(
        text(&tract.stderr).contains("on tract"),
        "{}",
        text(&tract.stderr)
    );

    let int8 = infer(&["--model", "resnet20-int8", "--backend", "tract"], &images);
    status(&int8, 2);
    let err = text(&int8.stderr);
    for part in [
        "resnet20-int8-",
        "com.microsoft.QLinearAdd",
        "--backend ort",
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }

    let bad = infer(&["--backend", "onnx"], &images);
    status(&bad, 2);
    assert!(
        text(&bad.stderr).contains("use ort or tract"),
        "{}",
        text(&bad.stderr)
    );

    let version = infer(&["--version"], &[]);
    status(&version, 0);
    assert!(
        text(&version.stdout).contains("backends: ort, tract (default ort)"),
        "{}",
        text(&version.stdout)
    );
}
