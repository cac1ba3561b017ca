//! `train-zoo` as a user runs it: listing, training, exact resume after a kill,
//! divergence and bad-input errors. Real CIFAR-10 from `CIFAR10_DIR`.

mod common;
use common::cifar_dir;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_train-zoo"));
    c.env_remove("RUST_BACKTRACE");
    c
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A small but real network: trains a few epochs on 2,000 images in seconds.
const TINY: &str = r#"{"input_size":32,"in_channels":3,"stem_channels":8,"stem_kernel":3,
 "layers":[{"blocks":1,"channels":16,"conv_kernel":3,"skip_kernel":1,"stride":1},
           {"blocks":1,"channels":32,"conv_kernel":3,"skip_kernel":1,"stride":2},
           {"blocks":1,"channels":64,"conv_kernel":3,"skip_kernel":1,"stride":2}],
 "pool":8,"dropout":0.1,"num_classes":10}"#;

fn tiny_spec(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.json");
    std::fs::write(&p, TINY).unwrap();
    p
}

/// Common arguments of a quick CPU run.
fn quick_args(spec: &Path, run_dir: &Path, data: &Path, epochs: u32) -> Vec<String> {
    [
        "--model",
        spec.to_str().unwrap(),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--train-limit",
        "2000",
        "--test-limit",
        "500",
        "--batch-size",
        "100",
        "--epochs",
        &epochs.to_string(),
        "--set",
        "schedule.warmup_epochs=0.5",
        "--set",
        "optimizer.lr=0.1",
        "--eval-test-every",
        "0",
        "--no-progress",
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
        "--run-dir",
        run_dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn summary(o: &Output) -> serde_json::Value {
    let line = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("no JSON summary ({e}):\n{}", text(o)))
}

#[test]
fn list_shows_exact_counts() {
    let o = bin().arg("list").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    for n in ["4,865,580", "4,971,680", "4,959,770"] {
        assert!(s.contains(n), "missing {n}:\n{s}");
    }
    let o = bin().args(["list", "--json"]).output().unwrap();
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let params: Vec<u64> = rows.iter().map(|r| r["params"].as_u64().unwrap()).collect();
    assert_eq!(params[..3], [4_865_580, 4_971_680, 4_959_770]);
}

#[test]
fn bench_reports_where_the_step_time_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path());
    let o = bin()
        .args(["bench", "--model", spec.to_str().unwrap(), "plainnet"])
        .args([
            "--recipe",
            "cpu",
            "--batch-size",
            "16",
            "--warmup",
            "1",
            "--steps",
            "2",
        ])
        .args(["--device", "cpu", "--threads", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{}", text(&o));
    for r in &rows {
        let phases = r["phase_seconds"].as_object().unwrap();
        let names: Vec<&str> = phases.keys().map(String::as_str).collect();
        assert_eq!(names.len(), 4, "{r}");
        for n in ["augment", "forward", "backward", "update"] {
            let t = phases[n].as_f64().unwrap();
            assert!(t > 0.0 && t < 60.0, "{n}: {t} in {r}");
        }
        // Forward and backward through a conv net dwarf the flat SGD update.
        assert!(
            phases["backward"].as_f64() > phases["update"].as_f64(),
            "{r}"
        );
        assert!(r["median_images_per_s"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(rows[1]["model"], "plainnet");
    assert_eq!(rows[1]["params"], 1_973_186);
}

#[test]
fn help_teaches() {
    let o = bin().arg("--help").output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for needle in ["--all", "--resume", "--recipe", "Examples:", "CIFAR10_DIR"] {
        assert!(s.contains(needle), "--help lacks {needle}");
    }
}

/// Kill -9 after the first checkpoint, resume, and end bit-identical to a run that was
/// never interrupted (same ONNX sha256 = same weights).
#[test]
fn resume_after_kill_matches_uninterrupted_run() {
    let Some(data) = cifar_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path());
    let epochs = 4;

    let straight = tmp.path().join("straight");
    let o = bin()
        .args(quick_args(&spec, &straight, &data, epochs))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let want = summary(&o);

    let killed = tmp.path().join("killed");
    let mut child = bin()
        .args(quick_args(&spec, &killed, &data, epochs))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = killed.join("metrics.jsonl");
    let t0 = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if lines >= 1 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before it could be killed"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no checkpoint after 300 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run finished before the kill; make it longer"
    );
    let done_before = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(
        done_before < epochs as usize,
        "kill came too late to test resume"
    );

    // Without --resume the existing checkpoint is protected.
    let o = bin()
        .args(quick_args(&spec, &killed, &data, epochs))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--resume"),
        "{}",
        text(&o)
    );

    let mut args = quick_args(&spec, &killed, &data, epochs);
    args.push("--resume".into());
    let o = bin().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let got = summary(&o);
    assert_eq!(
        got["sha256"], want["sha256"],
        "resumed weights differ from the straight run"
    );
    assert_eq!(got["top1"], want["top1"]);
    let history = std::fs::read_to_string(&log).unwrap();
    assert_eq!(history.lines().count(), epochs as usize, "{history}");

    // A changed recipe cannot silently continue someone else's checkpoint.
    let mut args = quick_args(&spec, &killed, &data, epochs + 1);
    args.push("--resume".into());
    let o = bin().args(&args).output().unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("recipe"),
        "{}",
        text(&o)
    );
}

/// `--stop-after` then `--resume` also continues exactly.
#[test]
fn stop_and_resume_is_exact_and_artifacts_are_complete() {
    let Some(data) = cifar_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path());
    let a = tmp.path().join("a");
    let o = bin()
        .args(quick_args(&spec, &a, &data, 2))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let want = summary(&o);

    let b = tmp.path().join("b");
    let mut args = quick_args(&spec, &b, &data, 2);
    args.extend(["--stop-after".into(), "1".into()]);
    let o = bin().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("stopped after epoch 1/2"));
    let mut args = quick_args(&spec, &b, &data, 2);
    args.push("--resume".into());
    let out_dir = tmp.path().join("published");
    args.extend(["--out".into(), out_dir.to_str().unwrap().into()]);
    let o = bin().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let got = summary(&o);
    assert_eq!(got["sha256"], want["sha256"]);

    for f in [
        "checkpoint.ot",
        "metrics.jsonl",
        "metrics.csv",
        "loss.png",
        "accuracy.png",
    ] {
        assert!(b.join(f).exists(), "missing {f}");
    }
    let png = std::fs::read(b.join("loss.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let sha = got["sha256"].as_str().unwrap();
    let onnx = out_dir.join(format!("tiny-{}.onnx", &sha[..8]));
    let m = tpsnet_zoo::Manifest::load(&tpsnet_zoo::Manifest::path_for_model(&onnx)).unwrap();
    assert_eq!(tpsnet_zoo::hashing::sha256_file(&onnx).unwrap().0, m.sha256);
    assert_eq!(m.metrics.dataset, "cifar10-test[:500]");
    assert_eq!(m.training.epochs, 2);
    assert!(m.training.device.starts_with("cpu"));
    assert_eq!(m.training.dataset_digest.len(), 64);
    // The binary names its checkout (the library cannot): a commit, not `unknown`.
    let commit = &m.training.source_commit;
    assert!(
        commit.len() >= 40 && commit[..40].bytes().all(|b| b.is_ascii_hexdigit()),
        "source_commit {commit:?}"
    );
    for f in ["tiny-loss.png", "tiny-accuracy.png", "tiny-metrics.csv"] {
        assert!(out_dir.join(f).exists(), "not published: {f}");
    }
}

/// The CPU job as `scripts/run` trains it (`airnet`, recipe `cpu-short`: bf16 convolutions
/// where the CPU has AMX-BF16, fp32 elsewhere), cut to one short epoch: the same seed on
/// the same CPU gives the same model file, byte for byte; another seed gives another; and
/// the manifest says which precision the convolutions ran in.
#[test]
fn the_cpu_job_is_reproducible_seed_for_seed() {
    let Some(data) = cifar_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let train = |dir: &str, seed: &str| {
        let run_dir = tmp.path().join(dir);
        let o = bin()
            .args(["--model", "airnet", "--recipe", "cpu-short", "--seed", seed])
            .args(["--device", "cpu", "--threads", "2", "--epochs", "1"])
            .args(["--train-limit", "1024", "--test-limit", "256"])
            .args(["--eval-test-every", "0", "--no-progress", "--json"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--run-dir")
            .arg(&run_dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let sha = summary(&o)["sha256"].as_str().unwrap().to_string();
        let manifest = run_dir.join(format!("airnet-{}.json", &sha[..8]));
        let m = tpsnet_zoo::Manifest::load(&manifest).unwrap_or_else(|e| panic!("{e}"));
        (sha, m.training.device, m.metrics.how)
    };
    let (first, device, how) = train("first", "7");
    let (again, _, _) = train("again", "7");
    let (other, _, _) = train("other", "8");
    assert_eq!(first, again, "seed 7 twice gave two model files");
    assert_ne!(first, other, "seeds 7 and 8 gave the same model file");
    let precision = if tpsnet_training::conv_precision::cpu_has_amx_bf16() {
        "bf16 convolutions"
    } else {
        "fp32 convolutions"
    };
    assert!(
        device.contains(precision),
        "manifest device {device:?} lacks {precision:?}"
    );
    // The claims were measured in fp32 whatever the training ran in.
    assert!(!how.contains("convolutions"), "metrics.how: {how}");
}

#[test]
fn divergence_stops_the_run_without_output() {
    let Some(data) = cifar_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path());
    let run = tmp.path().join("run");
    let mut args = quick_args(&spec, &run, &data, 2);
    args.extend(["--set".into(), "optimizer.lr=1e30".into()]);
    let o = bin().args(&args).output().unwrap();
    assert!(!o.status.success());
    assert_ne!(o.status.code(), Some(101), "panicked:\n{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("diverged"), "{}", text(&o));
    assert!(
        !run.join("checkpoint.ot").exists(),
        "a diverged epoch was checkpointed"
    );
    let onnx = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .any(|e| e.path().extension().is_some_and(|x| x == "onnx"));
    assert!(!onnx, "an ONNX file was written for a diverged run");
}

#[test]
fn bad_inputs_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = bin().args(args).output().unwrap();
        assert!(!o.status.success(), "{}", text(&o));
        assert_ne!(o.status.code(), Some(101), "panicked:\n{}", text(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = run(&[
        "--model",
        "resnet9000",
        "--data-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(
        e.contains("No CIFAR-10")
            || e.contains("resnet9000")
            || e.contains(tmp.path().to_str().unwrap()),
        "{e}"
    );

    let Some(data) = cifar_dir() else { return };
    let d = data.to_str().unwrap();
    let e = run(&["--model", "resnet9000", "--data-dir", d]);
    assert!(
        e.contains("unknown model `resnet9000`") && e.contains("tpsnet"),
        "{e}"
    );
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, TINY.replace("\"pool\":8", "\"pool\":3")).unwrap();
    let e = run(&["--model", bad.to_str().unwrap(), "--data-dir", d]);
    assert!(e.contains("bad.json") && e.contains("pool size 3"), "{e}");
    // A misspelt key is refused, naming the key and the file, once.
    let typo = tmp.path().join("typo.json");
    std::fs::write(&typo, TINY.replace("\"dropout\"", "\"dropuot\"")).unwrap();
    let e = run(&["--model", typo.to_str().unwrap(), "--data-dir", d]);
    assert!(
        e.contains("typo.json") && e.contains("unknown field `dropuot`"),
        "{e}"
    );
    assert_eq!(e.matches("unknown field").count(), 1, "{e}");
    let e = run(&["--model", "tpsnet", "--recipe", "slow", "--data-dir", d]);
    assert!(e.contains("unknown recipe `slow`"), "{e}");
    let e = run(&[
        "--model",
        "tpsnet",
        "--set",
        "optimizer.nope=1",
        "--data-dir",
        d,
        "--device",
        "cpu",
    ]);
    assert!(e.contains("no field `optimizer.nope`"), "{e}");
    let e = run(&["--model", "tpsnet", "--device", "cuda:7", "--data-dir", d]);
    assert!(e.contains("cuda:7"), "{e}");
}
