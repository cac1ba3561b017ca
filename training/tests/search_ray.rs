//! `search/ray_search.py` end to end on a local Ray (CPU): Tune's ASHA scheduler runs
//! three tiny `train-zoo trial` processes on a small subset of real CIFAR-10, the
//! driver writes the ledger, `train-zoo search --report` the table and plot, and a
//! second run finds nothing left to do.
//!
//! Needs `CIFAR10_DIR` and Ray in the set-up's Python (`TPSNET_PYTHON`):
//! `.venv/bin/pip install -r requirements-search.txt`. Without Ray the test prints a
//! notice and passes, unless `TPSNET_REQUIRE_RAY=1` (then it fails).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_train-zoo");

fn python() -> String {
    std::env::var("TPSNET_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn ray_available(py: &str) -> bool {
    let ok = Command::new(py)
        .args(["-c", "import ray.tune"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = format!(
            "Ray Tune is not importable by {py}: install it with `{py} -m pip install -r requirements-search.txt`"
        );
        if std::env::var("TPSNET_REQUIRE_RAY").is_ok_and(|v| v == "1") {
            panic!("{msg}");
        }
        eprintln!("skipping the Ray test: {msg}");
    }
    ok
}

fn ledger(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("ledger.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn ray_tune_runs_trials_end_to_end_and_resumes() {
    let Some(data) = tpsnet_test_support::data::cifar_dir_or_skip() else {
        return;
    };
    let py = python();
    if !ray_available(&py) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let space = tmp.path().join("space.json");
    std::fs::write(
        &space,
        r#"{
          "budget_params": 30000,
          "num_layers": [3],
          "blocks": {"min": 1, "max": 1},
          "same_blocks_in_every_layer": true,
          "stem_channels": {"min": 4, "max": 8},
          "width_factor": [1, 2],
          "conv_kernels": [3],
          "skip_kernels": [1],
          "same_kernels_in_every_layer": true,
          "pool": [8],
          "dropout": {"min": 0.0, "max": 0.2},
          "lr": {"min": 0.02, "max": 0.2, "log": true},
          "batch_size": [128]
        }"#,
    )
    .unwrap();
    let dir = tmp.path().join("search");
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("../search/ray_search.py");
    let run = |dir: &Path, space: &Path, extra: &[&str]| {
        let t0 = Instant::now();
        let out = Command::new(&py)
            .arg(&driver)
            .arg("--train-zoo")
            .arg(BIN)
            .arg("--search-dir")
            .arg(dir)
            .arg("--space")
            .arg(space)
            .arg("--data-dir")
            .arg(&data)
            .args(extra)
            .args(["--seed", "1"])
            .args(["--train-limit", "1000", "--val-size", "300"])
            .args(["--num-cpus", "2", "--cpus-per-trial", "1"])
            // Keep Ray's own files inside the test's folder.
            .env("RAY_TMPDIR", tmp.path())
            .output()
            .unwrap();
        eprintln!("ray_search.py: {:.1} s", t0.elapsed().as_secs_f64());
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "ray_search.py failed:\n{log}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), log)
    };
    let (stdout, log) = run(&dir, &space, &["--trials", "3", "--epochs", "2"]);

    let rows = ledger(&dir);
    let mut ids: Vec<&str> = rows
        .iter()
        .map(|r| r["trial_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["t0000", "t0001", "t0002"], "{log}");
    // The trials Ray ran are exactly the ones `--emit-specs` sampled.
    let emitted = Command::new(BIN)
        .args(["search", "--trials", "3", "--emit-specs", "--epochs", "2"])
        .args(["--seed", "1", "--train-limit", "1000", "--val-size", "300"])
        .arg("--space")
        .arg(&space)
        .arg("--search-dir")
        .arg(tmp.path().join("fresh"))
        .output()
        .unwrap();
    let plans: Vec<Value> = String::from_utf8_lossy(&emitted.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["plan"].clone())
        .collect();
    for r in &rows {
        assert_eq!(r["runner"], "ray");
        let plan = plans
            .iter()
            .find(|p| p["trial_id"] == r["trial_id"])
            .unwrap();
        assert_eq!(r["spec"], plan["spec"]);
        assert_eq!(r["params"], plan["params"]);
        let accs = r["val_acc"].as_array().unwrap();
        assert_eq!(accs.len() as u64, r["epochs_done"].as_u64().unwrap());
        match r["status"].as_str().unwrap() {
            "completed" => assert_eq!(accs.len(), 2, "{r}"),
            "stopped" => assert_eq!(accs.len(), 1, "{r}"),
            other => panic!("trial {} {other}: {r}\n{log}", r["trial_id"]),
        }
        assert_eq!(r["final_val_acc"], *accs.last().unwrap());
    }
    assert!(
        rows.iter().any(|r| r["status"] == "completed"),
        "ASHA keeps the best trial: {rows:?}"
    );
    assert!(stdout.contains("| rank | trial |"), "{stdout}");
    assert!(dir.join("summary.md").exists());
    assert!(dir.join("accuracy-vs-size.png").exists());

    // Re-running finds every trial in the ledger and trains nothing.
    let before = std::fs::read(dir.join("ledger.jsonl")).unwrap();
    let (_, log) = run(&dir, &space, &["--trials", "3", "--epochs", "2"]);
    assert!(log.contains("0 trial(s) to run"), "{log}");
    assert_eq!(std::fs::read(dir.join("ledger.jsonl")).unwrap(), before);

    // A trial whose training diverges is recorded as failed (not retried), with why.
    let boom_space = tmp.path().join("boom.json");
    let text = std::fs::read_to_string(&space).unwrap().replace(
        r#""lr": {"min": 0.02, "max": 0.2, "log": true}"#,
        r#""lr": {"min": 1e12, "max": 1e12}"#,
    );
    std::fs::write(&boom_space, text).unwrap();
    let boom = tmp.path().join("boom");
    run(&boom, &boom_space, &["--trials", "1", "--epochs", "1"]);
    let rows = ledger(&boom);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "failed", "{}", rows[0]);
    assert!(
        rows[0]["note"].as_str().unwrap().contains("diverged"),
        "{}",
        rows[0]
    );
}
