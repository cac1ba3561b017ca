//! `train-zoo search` and `train-zoo trial` as processes: sampling and settings checks
//! (no training, no data), and the trial's per-epoch JSON stream (needs `CIFAR10_DIR`).

mod common;
use common::cifar_dir;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_train-zoo");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn train_zoo(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--search-dir")
        .arg(dir)
        .output()
        .expect("train-zoo runs")
}

fn jobs(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn emitted_trials_respect_the_exact_budget_and_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "search",
        "--trials",
        "25",
        "--budget",
        "1000000",
        "--emit-specs",
    ];
    let a = jobs(&train_zoo(&args, &tmp.path().join("a")));
    let b = jobs(&train_zoo(&args, &tmp.path().join("b")));
    assert_eq!(a.len(), 25);
    assert_eq!(a, b, "same seed, same trials");
    let mut rejected = 0;
    for (i, job) in a.iter().enumerate() {
        let plan = &job["plan"];
        assert_eq!(plan["trial_id"], format!("t{i:04}"));
        let spec: tpsnet_zoo::ResNetSpec = serde_json::from_value(plan["spec"].clone()).unwrap();
        spec.validate().unwrap();
        assert_eq!(plan["params"].as_u64().unwrap(), spec.params());
        assert!(spec.params() < 1_000_000, "{}", plan["summary"]);
        assert_eq!(job["recipe"]["optimizer"]["lr"], plan["lr"]);
        assert_eq!(job["recipe"]["batch_size"], plan["batch_size"]);
        assert_eq!(job["recipe"]["epochs"], 30);
        rejected += plan["rejected_over_budget"].as_u64().unwrap();
    }
    assert!(
        rejected > 0,
        "a 1M budget on the default space rejects some samples"
    );
    let other_seed = jobs(&train_zoo(
        &[&args[..], &["--seed", "1"]].concat(),
        &tmp.path().join("c"),
    ));
    assert_ne!(a[0]["plan"]["spec"], other_seed[0]["plan"]["spec"]);
}

#[test]
fn emit_specs_skips_trials_already_in_the_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let args = ["search", "--trials", "3", "--emit-specs"];
    let all = jobs(&train_zoo(&args, &dir));
    // Record t0001 as finished, the way a runner would.
    let mut record = all[1]["plan"].as_object().unwrap().clone();
    for (k, v) in [
        ("status", serde_json::json!("completed")),
        ("epochs_done", serde_json::json!(30)),
        ("val_acc", serde_json::json!([50.0])),
        ("val_loss", serde_json::json!([1.0])),
        ("final_val_acc", serde_json::json!(50.0)),
        ("train_time_s", serde_json::json!(1.0)),
        ("wall_time_s", serde_json::json!(1.0)),
        ("runner", serde_json::json!("ray")),
        ("finished_at", serde_json::json!("2025-01-01T00:00:00Z")),
    ] {
        record.insert(k.into(), v);
    }
    std::fs::write(
        dir.join("ledger.jsonl"),
        format!("{}\n", Value::Object(record)),
    )
    .unwrap();
    let pending = jobs(&train_zoo(&args, &dir));
    let ids: Vec<&str> = pending
        .iter()
        .map(|j| j["plan"]["trial_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["t0000", "t0002"]);
    assert_eq!(pending[1], all[2]);
}

#[test]
fn resuming_with_other_settings_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    jobs(&train_zoo(
        &["search", "--trials", "2", "--emit-specs"],
        &dir,
    ));
    let out = train_zoo(
        &["search", "--trials", "2", "--emit-specs", "--seed", "9"],
        &dir,
    );
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("seed (0 vs 9)") && e.contains("--search-dir"),
        "{e}"
    );
    let out = train_zoo(
        &["search", "--trials", "2", "--emit-specs", "--epochs", "5"],
        &dir,
    );
    assert!(text(&out.stderr).contains("epochs (30 vs 5)"));
    // More trials is not a different search: it extends it.
    assert_eq!(
        jobs(&train_zoo(
            &["search", "--trials", "4", "--emit-specs"],
            &dir
        ))
        .len(),
        4
    );
}

#[test]
fn spaces_load_from_json_and_bad_ones_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = train_zoo(&["search", "--print-space"], tmp.path());
    assert!(out.status.success());
    let mut space: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(space["budget_params"], 5_000_000);
    space["num_layers"] = serde_json::json!([3]);
    let path = tmp.path().join("space.json");
    std::fs::write(&path, space.to_string()).unwrap();
    let p = path.to_str().unwrap();
    let all = jobs(&train_zoo(
        &["search", "--space", p, "--trials", "5", "--emit-specs"],
        &tmp.path().join("s"),
    ));
    assert!(
        all.iter()
            .all(|j| j["plan"]["spec"]["layers"].as_array().unwrap().len() == 3)
    );

    space["conv_kernels"] = serde_json::json!([3, 4]);
    std::fs::write(&path, space.to_string()).unwrap();
    let out = train_zoo(
        &["search", "--space", p, "--emit-specs"],
        &tmp.path().join("t"),
    );
    let e = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("space.json") && e.contains("even kernel 4"),
        "{e}"
    );

    let out = train_zoo(&["search", "--report"], &tmp.path().join("nothing"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("search.json"));
}

#[test]
fn an_impossible_budget_fails_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let out = train_zoo(
        &[
            "search",
            "--budget",
            "1000",
            "--max-attempts",
            "2000",
            "--emit-specs",
        ],
        tmp.path(),
    );
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("2000 over the budget"), "{e}");
}

#[test]
fn trial_streams_one_json_line_per_epoch_then_done() {
    let Some(data) = cifar_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let spec = serde_json::to_string(&tpsnet_zoo::ResNetSpec::paper(&[1, 1, 1], 4, 2)).unwrap();
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .args(["trial", "--spec-json", &spec, "--trial-id", "probe"])
            .args(["--epochs", "2", "--lr", "0.05", "--batch-size", "128"])
            .args(["--train-limit", "600", "--val-size", "200"])
            .args(["--device", "cpu", "--threads", "1"])
            .arg("--run-dir")
            .arg(tmp.path().join("run"))
            .arg("--data-dir")
            .arg(&data)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("stdout carries JSON lines only"))
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    for (i, e) in events[..2].iter().enumerate() {
        assert_eq!(e["event"], "epoch");
        assert_eq!(e["epoch"], i + 1);
        assert_eq!(e["trial_id"], "probe");
        assert!((0.0..=100.0).contains(&e["val_acc"].as_f64().unwrap()));
        assert!(e.get("test_acc").is_none());
    }
    let done = &events[2];
    assert_eq!(done["event"], "done");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["final_val_acc"], events[1]["val_acc"]);

    // Run again in the same folder: the finished checkpoint is resumed, not retrained,
    // and its epochs are streamed again with the same numbers.
    let again = run(&[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let replay: Vec<Value> = text(&again.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replay[1]["val_acc"], events[1]["val_acc"]);
    assert!(!text(&again.stderr).contains("epoch 1/2"), "retrained");

    // A diverging trial ends with a `failed` done line and a non-zero exit.
    let bad = Command::new(BIN)
        .args(["trial", "--spec-json", &spec, "--trial-id", "boom"])
        .args(["--epochs", "1", "--lr", "1e12", "--train-limit", "600"])
        .args(["--val-size", "200", "--device", "cpu", "--threads", "1"])
        .arg("--run-dir")
        .arg(tmp.path().join("boom"))
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let last: Value = serde_json::from_str(text(&bad.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "failed");
    assert!(
        last["error"].as_str().unwrap().contains("diverged"),
        "{last}"
    );
}
