//! `verify` run as a real process on the real CIFAR-10 test set (needs CIFAR10_DIR).
//!
//! The models are tiny and random; their manifests claim exactly what the library
//! measures (the check must pass) or something else (it must fail with exit status 1).

use tpsnet_test_support::fixtures as common;
use tpsnet_test_support::output::{assert_exit as status, text};

use std::path::{Path, PathBuf};
use std::process::Command;

use tpsnet_runtime::verify;
use tpsnet_runtime::{Classifier, SessionOptions, TtaMode};

fn verify_cmd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_verify"));
    c.current_dir(dir)
        .env("TPSNET_MODELS", "/nonexistent-models-dir")
        .env("CIFAR10_DIR", common::cifar_dir());
    c
}

/// Top-1 (single, flip TTA) the library measures for a model.
fn measure(manifest: &Path) -> (f64, f64) {
    let data = common::cifar_test();
    let c = Classifier::open(manifest, &SessionOptions::default()).unwrap();
    let single = verify::evaluate(&c, &data, TtaMode::None, &|_| {}).unwrap();
    let tta = verify::evaluate(&c, &data, TtaMode::Flip, &|_| {}).unwrap();
    (single.top1, tta.top1)
}

/// Publishes the tiny model of `seed` under `name` with the given claims.
fn publish(dir: &Path, name: &str, seed: u64, top1: f64, tta: Option<f64>) -> PathBuf {
    common::publish(
        dir,
        name,
        &common::tiny_spec(),
        &common::tiny_onnx(seed),
        top1,
        tta,
    )
}

fn report(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

#[test]
fn true_claims_pass_and_false_claims_fail() {
    let d = tempfile::tempdir().unwrap();
    let probe = publish(d.path(), "probe", 11, 0.0, None);
    let (single, tta) = measure(&probe);
    std::fs::remove_file(&probe).unwrap();

    let models = d.path().join("models");
    let honest = publish(&models, "honest", 11, single, None);
    let out = verify_cmd(d.path())
        .args(["--dataset", "cifar10-test", "--model"])
        .arg(&honest)
        .output()
        .unwrap();
    status(&out, 0);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("PASS top1 (headline claim)"), "{stdout}");
    assert!(stdout.contains("confusion matrix"), "{stdout}");
    assert!(stdout.contains("images/s"), "{stdout}");
    let r = report(d.path(), "verify-report.json");
    assert_eq!(r["passed"], true);
    assert_eq!(r["images"], 10_000);
    let m = &r["models"][0];
    assert_eq!(m["single"]["images"], 10_000);
    let confusion: u64 = m["single"]["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(confusion, 10_000);
    assert_eq!(m["single"]["per_class"].as_array().unwrap().len(), 10);
    assert!(m["flip_tta"].is_null());
    assert!((m["single"]["top1"].as_f64().unwrap() - single).abs() < 1e-9);

    // Off by 0.5 pp: fails with the default tolerance, passes with a wider one.
    let inflated = publish(&models, "inflated", 11, single + 0.5, None);
    let out = verify_cmd(d.path())
        .arg("--model")
        .arg(&inflated)
        .args(["--report", "inflated.json"])
        .output()
        .unwrap();
    status(&out, 1);
    assert!(
        text(&out.stdout).contains("FAIL top1"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(report(d.path(), "inflated.json")["passed"], false);
    let out = verify_cmd(d.path())
        .arg("--model")
        .arg(&inflated)
        .args(["--tolerance", "0.6", "--report", "wide.json"])
        .output()
        .unwrap();
    status(&out, 0);

    // A flip-TTA headline turns TTA on by itself and is checked against TTA.
    let tta_ok = publish(&models, "tta-ok", 11, single, Some(tta));
    let out = verify_cmd(d.path())
        .arg("--model")
        .arg(&tta_ok)
        .args(["--report", "tta.json"])
        .output()
        .unwrap();
    status(&out, 0);
    let r = report(d.path(), "tta.json");
    let checks = r["models"][0]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[1]["metric"], "top1_flip_tta");
    assert_eq!(checks[1]["headline"], true);
    assert!((r["models"][0]["flip_tta"]["top1"].as_f64().unwrap() - tta).abs() < 1e-9);

    let tta_bad = publish(&models, "tta-bad", 11, single, Some(tta - 1.0));
    let out = verify_cmd(d.path())
        .arg("--model")
        .arg(&tta_bad)
        .args(["--report", "tta-bad.json"])
        .output()
        .unwrap();
    status(&out, 1);
    assert!(text(&out.stdout).contains("FAIL top1_flip_tta (headline claim)"));

    // --all over the folder: one false claim fails the run, every model is reported.
    let out = verify_cmd(d.path())
        .arg("--all")
        .arg("--models-dir")
        .arg(&models)
        .args(["--report", "all.json"])
        .output()
        .unwrap();
    status(&out, 1);
    let r = report(d.path(), "all.json");
    let names: Vec<&str> = r["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["honest", "inflated", "tta-bad", "tta-ok"]);

    // Model by name; the default is the highest claim ("inflated").
    let out = verify_cmd(d.path())
        .env("TPSNET_MODELS", &models)
        .args(["--report", "default.json"])
        .output()
        .unwrap();
    status(&out, 1);
    assert_eq!(
        report(d.path(), "default.json")["models"][0]["name"],
        "inflated"
    );
    let out = verify_cmd(d.path())
        .env("TPSNET_MODELS", &models)
        .args(["--model", "honest", "--report", "byname.json"])
        .output()
        .unwrap();
    status(&out, 0);
}

#[test]
fn bad_data_and_missing_models_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let model = publish(d.path(), "m", 1, 10.0, None);

    // A test batch of the wrong size.
    let data = d.path().join("cifar");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("test_batch.bin"), vec![0u8; 3073 * 10]).unwrap();
    let out = verify_cmd(d.path())
        .arg("--model")
        .arg(&model)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    status(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains("test_batch.bin") && err.contains("truncated"),
        "{err}"
    );
    assert!(!d.path().join("verify-report.json").exists());

    let out = verify_cmd(d.path())
        .arg("--model")
        .arg(&model)
        .arg("--data-dir")
        .arg(d.path().join("nowhere"))
        .output()
        .unwrap();
    status(&out, 2);
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );

    let out = verify_cmd(d.path())
        .arg("--model")
        .arg(&model)
        .env_remove("CIFAR10_DIR")
        .env("TPSNET_CACHE", d.path().join("empty-cache"))
        .output()
        .unwrap();
    status(&out, 2);
    assert!(
        text(&out.stderr).contains("CIFAR10_DIR")
            && text(&out.stderr).contains("train-zoo download"),
        "{}",
        text(&out.stderr)
    );

    let out = verify_cmd(d.path()).arg("--all").output().unwrap();
    status(&out, 2);
    assert!(
        text(&out.stderr).contains("ships none yet"),
        "{}",
        text(&out.stderr)
    );

    let out = verify_cmd(d.path())
        .args(["--model", "m.onnx"])
        .output()
        .unwrap();
    status(&out, 2);
    assert!(text(&out.stderr).contains("m.onnx"));

    let out = verify_cmd(d.path())
        .args(["--dataset", "imagenet"])
        .output()
        .unwrap();
    status(&out, 2);

    let out = verify_cmd(d.path()).arg("--help").output().unwrap();
    status(&out, 0);
    assert!(text(&out.stdout).contains("Examples:"));
}

/// A six-view headline is measured and checked in six-view mode without being asked, and
/// `--tta 6view` measures six views for any model (checked only where a number is claimed).
#[test]
fn six_view_claims_are_checked_in_six_view_mode() {
    let d = tempfile::tempdir().unwrap();
    let models = d.path().join("models");
    let probe = publish(d.path(), "probe", 12, 0.0, None);
    let data = common::cifar_test();
    let c = Classifier::open(&probe, &SessionOptions::default()).unwrap();
    let single = verify::evaluate(&c, &data, TtaMode::None, &|_| {})
        .unwrap()
        .top1;
    let six = verify::evaluate(&c, &data, TtaMode::SixView, &|_| {}).unwrap();
    assert_eq!(six.mode, "6view");
    assert_eq!(six.images, 10_000);
    drop(c);
    std::fs::remove_file(&probe).unwrap();

    let claim_six = |name: &str, six_top1: f64| {
        let path = publish(&models, name, 12, single, None);
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        m["metrics"]["top1_6view"] = six_top1.into();
        m["metrics"]["claim"] = "6view".into();
        std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
        path
    };
    let honest = claim_six("six-ok", six.top1);
    let out = verify_cmd(d.path())
        .arg("--model")
        .arg(&honest)
        .args(["--report", "six.json"])
        .output()
        .unwrap();
    status(&out, 0);
    assert!(text(&out.stdout).contains("PASS top1_6view (headline claim)"));
    let r = report(d.path(), "six.json");
    let m = &r["models"][0];
    assert_eq!(m["claim"], "6view");
    assert!((m["6view"]["top1"].as_f64().unwrap() - six.top1).abs() < 1e-9);
    assert!(m["flip_tta"].is_null());
    assert_eq!(m["checks"].as_array().unwrap().len(), 2);

    let inflated = claim_six("six-bad", six.top1 + 0.5);
    let out = verify_cmd(d.path())
        .arg("--model")
        .arg(&inflated)
        .args(["--report", "six-bad.json"])
        .output()
        .unwrap();
    status(&out, 1);
    assert!(text(&out.stdout).contains("FAIL top1_6view (headline claim)"));

    // A single-view model asked for six views: measured and reported, nothing to check.
    let plain = publish(&models, "plain", 12, single, None);
    let out = verify_cmd(d.path())
        .arg("--model")
        .arg(&plain)
        .args(["--tta", "6view", "--report", "plain.json"])
        .output()
        .unwrap();
    status(&out, 0);
    let r = report(d.path(), "plain.json");
    assert_eq!(r["tta_requested"], "6view");
    assert!((r["models"][0]["6view"]["top1"].as_f64().unwrap() - six.top1).abs() < 1e-9);
    assert_eq!(r["models"][0]["checks"].as_array().unwrap().len(), 1);

    let out = verify_cmd(d.path())
        .arg("--model")
        .arg(&plain)
        .args(["--tta", "9view"])
        .output()
        .unwrap();
    status(&out, 2);
    assert!(
        text(&out.stderr).contains("none, flip or 6view"),
        "{}",
        text(&out.stderr)
    );
}

/// `verify` runs each distinct view once and averages each mode's views from those
/// passes; every mode must predict exactly what running that mode on its own predicts
/// (`evaluate`, the path `Classifier` takes with TTA). A trained model (the shipped
/// resnet20) so that the views really disagree on some images.
#[test]
fn shared_view_passes_predict_what_each_mode_predicts_alone() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let reg = tpsnet_runtime::registry::Registry::scan(&models).unwrap();
    let entry = reg.find("resnet20").unwrap();
    let c = Classifier::open(&entry.manifest_path, &SessionOptions::default()).unwrap();
    let data = common::cifar_test().subset(0..2_000);
    let modes = [TtaMode::None, TtaMode::Flip, TtaMode::SixView];
    let labels = std::sync::Mutex::new(Vec::new());
    let shared = verify::evaluate_modes(&c, &data, &modes, &|view, _| {
        let mut l = labels.lock().unwrap();
        if l.last().map(String::as_str) != Some(view) {
            l.push(view.to_string());
        }
    })
    .unwrap();
    // Six distinct views (single's and flip's are among six-view's), each run once.
    let labels = labels.into_inner().unwrap();
    assert_eq!(labels.len(), 6, "{labels:?}");
    assert_eq!(labels[0], "view 1/6 (image)");
    assert_eq!(labels[1], "view 2/6 (mirror)");
    let alone: Vec<_> = modes
        .iter()
        .map(|&m| verify::evaluate(&c, &data, m, &|_| {}).unwrap())
        .collect();
    for (s, a) in shared.iter().zip(&alone) {
        assert_eq!(s.mode, a.mode);
        assert_eq!(s.images, 2_000);
        assert_eq!(s.confusion, a.confusion, "{}", s.mode);
    }
    // The views disagree: each mode predicts differently (else this test proves little).
    assert_ne!(shared[0].confusion, shared[1].confusion);
    assert_ne!(shared[1].confusion, shared[2].confusion);
    // A mode's time is the sum of its views' passes.
    assert!(shared[0].seconds < shared[1].seconds && shared[1].seconds < shared[2].seconds);
}
