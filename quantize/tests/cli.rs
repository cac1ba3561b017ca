//! The `tpsnet-quantize` command: help, the calibration set, and refusing what it cannot
//! quantize before reading any image, with exit status 2 and nothing written.

use std::path::Path;
use std::process::{Command, Output};

use prost::Message;
use tpsnet_zoo::onnx::{ExportOptions, build_model};
use tpsnet_zoo::{ResNetSpec, Weights};

fn quantize_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tpsnet-quantize"))
        .args(args)
        // No data folder: a refusal must come before any image is needed.
        .env("CIFAR10_DIR", "/nonexistent-cifar")
        .output()
        .unwrap()
}

/// A published fixture (random weights, a 10 % single-view claim); its manifest path.
fn publish_fixture(dir: &Path, name: &str, bytes: &[u8], spec: &ResNetSpec) -> String {
    tpsnet_test_support::fixtures::publish(dir, name, spec, bytes, 10.0, None)
        .display()
        .to_string()
}

#[test]
fn help_teaches_and_calibration_set_is_printed() {
    let out = quantize_cmd(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--calibration-images",
        "--method",
        "tpsnet-int8",
        "never the test set",
        "Exit status",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
    let out = quantize_cmd(&[
        "--print-calibration-set",
        "--calibration-images",
        "8",
        "--validation-images",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["split"], "train");
    assert_eq!(v["calibration"].as_array().unwrap().len(), 8);
    assert_eq!(v["validation"].as_array().unwrap().len(), 4);
}

#[test]
fn a_model_it_cannot_handle_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let spec = ResNetSpec::paper(&[1, 1, 1], 4, 2);
    let mut m = build_model(&spec, &Weights::random(&spec, 1), &ExportOptions::default()).unwrap();
    let node = m
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.name == "layer2.block0.relu2")
        .unwrap();
    node.op_type = "Softplus".into();
    let manifest = publish_fixture(dir.path(), "odd", &m.encode_to_vec(), &spec);

    let out = quantize_cmd(&[&manifest, "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("layer2.block0.relu2") && err.contains("Softplus") && err.contains("odd-"),
        "{err}"
    );
    assert!(
        !out_dir.exists(),
        "a refused model must leave nothing behind"
    );

    // An unknown --fp32 node names the nodes that can be kept.
    let good = build_model(&spec, &Weights::random(&spec, 2), &ExportOptions::default()).unwrap();
    let manifest = publish_fixture(dir.path(), "good", &good.encode_to_vec(), &spec);
    let out = quantize_cmd(&[&manifest, "--fp32", "head.fc"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("head.fc") && err.contains("stem.conv"),
        "{err}"
    );

    // --list-nodes needs no data either.
    let out = quantize_cmd(&[&manifest, "--list-nodes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("layer0.block0.add"));
}
