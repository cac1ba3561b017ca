//! `train-zoo search` as a real process on a small subset of the real CIFAR-10 training
//! set (CPU, tiny networks): the ledger, the table, the plot, successive halving,
//! `--retrain-top`, and resuming an interrupted search. Needs `CIFAR10_DIR`.

mod common;
use common::cifar_dir;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_train-zoo");

/// A space of networks with at most a few tens of thousands of parameters.
const TINY_SPACE: &str = r#"{
  "budget_params": 40000,
  "num_layers": [2, 3],
  "blocks": {"min": 1, "max": 2},
  "same_blocks_in_every_layer": true,
  "stem_channels": {"min": 4, "max": 12},
  "width_factor": [1, 2],
  "conv_kernels": [3],
  "skip_kernels": [1, 3],
  "same_kernels_in_every_layer": false,
  "pool": [4, 8],
  "dropout": {"min": 0.0, "max": 0.3},
  "lr": {"min": 0.02, "max": 0.2, "log": true},
  "batch_size": [128]
}"#;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn search_cmd(dir: &Path, data: &Path, space: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("search")
        .arg("--search-dir")
        .arg(dir)
        .arg("--space")
        .arg(space)
        .arg("--data-dir")
        .arg(data)
        .args(["--device", "cpu", "--threads", "1", "--seed", "3"])
        .args(["--train-limit", "800", "--val-size", "300"])
        .args(extra);
    c
}

fn run_ok(mut c: Command) -> Output {
    let out = c.output().expect("train-zoo runs");
    assert!(
        out.status.success(),
        "train-zoo failed ({}):\n{}",
        out.status,
        text(&out.stderr)
    );
    out
}

fn ledger(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("ledger.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("ledger line is JSON"))
        .collect()
}

/// numpy-style linear quantile, written independently of the crate's.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &b[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&b[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

#[test]
fn tiny_search_writes_ledger_table_plot_and_retrains_the_best() {
    let Some(data) = cifar_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let space = tmp.path().join("space.json");
    std::fs::write(&space, TINY_SPACE).unwrap();
    let dir = tmp.path().join("search");
    let t0 = Instant::now();
    let out = run_ok(search_cmd(
        &dir,
        &data,
        &space,
        &[
            "--trials",
            "3",
            "--epochs",
            "2",
            "--retrain-top",
            "1",
            "--retrain-epochs",
            "1",
            "--retrain-train-limit",
            "500",
            "--retrain-test-limit",
            "200",
        ],
    ));
    eprintln!(
        "search of 3 trials + retrain: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let log = text(&out.stderr);

    // Ledger: one line per trial, exact counts, per-epoch validation accuracy.
    let rows = ledger(&dir);
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["trial_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["t0000", "t0001", "t0002"], "{log}");
    for r in &rows {
        let spec: tpsnet_zoo::ResNetSpec = serde_json::from_value(r["spec"].clone()).unwrap();
        assert_eq!(r["params"].as_u64().unwrap(), spec.params());
        assert_eq!(r["macs"].as_u64().unwrap(), spec.macs());
        assert!(spec.params() < 40_000);
        let accs = r["val_acc"].as_array().unwrap();
        assert_eq!(accs.len() as u64, r["epochs_done"].as_u64().unwrap());
        assert!(
            accs.iter()
                .all(|a| (0.0..=100.0).contains(&a.as_f64().unwrap()))
        );
        assert!(r["wall_time_s"].as_f64().unwrap() > 0.0);
        assert_eq!(r["runner"], "local");
        assert!(
            r.get("test_acc").is_none(),
            "a trial must never record test accuracy"
        );
        let expected_epochs = match r["status"].as_str().unwrap() {
            "completed" => 2,
            "stopped" => 1,
            other => panic!("unexpected status {other}: {r}"),
        };
        assert_eq!(accs.len(), expected_epochs, "{r}");
    }

    // Successive halving (eta 3, rung at epoch 1): recompute every decision from the
    // ledger: a trial stops iff its epoch-1 accuracy is below the 2/3 quantile of
    // the earlier trials' epoch-1 accuracies.
    let mut peers: Vec<f64> = Vec::new();
    for r in &rows {
        let first = r["val_acc"][0].as_f64().unwrap();
        let should_stop = !peers.is_empty() && first < quantile(&peers, 2.0 / 3.0);
        assert_eq!(r["status"] == "stopped", should_stop, "{r}");
        peers.push(first);
    }

    // Table-1-style summary and Figure-3-style plot.
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("| rank | trial | N | blocks |"), "{md}");
    for id in ["t0000", "t0001", "t0002"] {
        assert!(md.contains(&format!("| {id} |")), "{id} missing:\n{md}");
    }
    assert!(md.contains("300-image validation split"), "{md}");
    assert!(text(&out.stdout).contains("| 1 | t00"), "table not printed");
    assert_eq!(png_size(&dir.join("accuracy-vs-size.png")), (1400, 600));

    // The best completed trial was retrained and exported.
    let best = rows
        .iter()
        .filter(|r| r["status"] == "completed")
        .max_by(|a, b| {
            let k = |r: &Value| r["final_val_acc"].as_f64().unwrap();
            k(a).partial_cmp(&k(b)).unwrap().then(
                // ties go to the lower index
                b["index"].as_u64().cmp(&a["index"].as_u64()),
            )
        })
        .unwrap();
    let name = format!("search-{}", best["trial_id"].as_str().unwrap());
    let retrained: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("retrain/retrained.json")).unwrap())
            .unwrap();
    let entry = &retrained[&name];
    assert!(entry.is_object(), "{name} not retrained: {retrained}");
    let onnx = PathBuf::from(entry["onnx"].as_str().unwrap());
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(entry["manifest"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert!(onnx.exists(), "{}", onnx.display());
    assert_eq!(manifest["params"], best["params"], "{manifest}");

    // Report mode: only the ledger is read; --top limits the table.
    let out = run_ok({
        let mut c = Command::new(BIN);
        c.args(["search", "--report", "--top", "2", "--color-by", "lr"])
            .arg("--search-dir")
            .arg(&dir);
        c
    });
    let table_rows = text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| rank"))
        .count();
    assert_eq!(table_rows, 2, "{}", text(&out.stdout));
}

#[test]
fn interrupted_search_resumes_without_redoing_finished_trials() {
    let Some(data) = cifar_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let space = tmp.path().join("space.json");
    std::fs::write(&space, TINY_SPACE).unwrap();
    let dir = tmp.path().join("search");
    let args = ["--trials", "2", "--epochs", "3", "--no-early-stop"];

    // Kill the search while the second trial is training (its checkpoint exists).
    let mut child = search_cmd(&dir, &data, &space, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = dir.join("trials/t0001/checkpoint.ot");
    let t1_log = dir.join("trials/t0001/metrics.jsonl");
    let deadline = Instant::now() + Duration::from_secs(300);
    // The epoch's log is written just after its checkpoint: wait for both, or a kill in
    // between leaves no log lines to compare (seen once under a loaded machine).
    while !ckpt.exists() || std::fs::metadata(&t1_log).map_or(true, |m| m.len() == 0) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the search ended before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "no checkpoint of t0001 appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let rows = ledger(&dir);
    assert_eq!(rows.len(), 1, "only t0000 was finished: {rows:?}");
    let ledger_before = std::fs::read(dir.join("ledger.jsonl")).unwrap();
    let t0_log = std::fs::read(dir.join("trials/t0000/metrics.jsonl")).unwrap();
    let t1_epochs_before = std::fs::read_to_string(dir.join("trials/t0001/metrics.jsonl"))
        .map(|s| s.lines().map(str::to_string).collect::<Vec<_>>())
        .unwrap_or_default();
    // ...and, as a crash in the middle of a ledger write would, leave a torn last line.
    let mut torn = ledger_before.clone();
    torn.extend_from_slice(br#"{"trial_id":"t0001","index":1,"spec":{"inpu"#);
    std::fs::write(dir.join("ledger.jsonl"), &torn).unwrap();

    // The same command resumes.
    let out = run_ok(search_cmd(&dir, &data, &space, &args));
    let log = text(&out.stderr);
    assert!(log.contains("1 already in"), "{log}");
    assert!(log.contains("1 to run"), "{log}");
    assert!(log.contains("dropping a torn last line"), "{log}");
    assert!(
        !log.contains("t0000 epoch"),
        "t0000 was trained again:\n{log}"
    );
    assert!(
        log.contains("t0001: continuing from its checkpoint after epoch"),
        "{log}"
    );
    let after = std::fs::read(dir.join("ledger.jsonl")).unwrap();
    assert!(
        after.starts_with(&ledger_before),
        "finished records changed"
    );
    let rows = ledger(&dir);
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["trial_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["t0000", "t0001"]);
    assert_eq!(rows[1]["epochs_done"], 3);
    assert_eq!(
        std::fs::read(dir.join("trials/t0000/metrics.jsonl")).unwrap(),
        t0_log,
        "t0000's run was touched"
    );
    // Epochs trained before the interruption were continued, not redone: their log
    // lines (with their measured times) are unchanged.
    let t1_epochs_after: Vec<String> =
        std::fs::read_to_string(dir.join("trials/t0001/metrics.jsonl"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
    assert!(!t1_epochs_before.is_empty());
    assert_eq!(
        t1_epochs_after[..t1_epochs_before.len()],
        t1_epochs_before[..]
    );
    assert!(!ckpt.exists(), "a finished trial's checkpoint is removed");

    // A third run has nothing left to train.
    let out = run_ok(search_cmd(&dir, &data, &space, &args));
    assert!(text(&out.stderr).contains("0 to run"));
    assert_eq!(std::fs::read(dir.join("ledger.jsonl")).unwrap(), after);
}
