//! `tpsnet-infer` run as a real process: outputs, exit codes and every kind of bad input.

use tpsnet_test_support::fixtures as common;
use tpsnet_test_support::output::text;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use tpsnet_runtime::{Classifier, SessionOptions};

fn infer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tpsnet-infer"));
    // Never fall back on the developer's real models folder.
    c.env("TPSNET_MODELS", "/nonexistent-models-dir");
    c
}

/// Runs with a deadline so that a hang fails the test instead of blocking CI.
fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            panic!("tpsnet-infer hung (killed after 120 s)");
        }
    }
}

fn assert_clean_failure(out: &Output, code: i32, stderr_has: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {err}\nstdout: {}",
        text(&out.stdout)
    );
    assert!(!err.contains("panicked"), "{err}");
    for s in stderr_has {
        assert!(err.contains(s), "stderr lacks {s:?}: {err}");
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    manifest: PathBuf,
    images: Vec<PathBuf>,
}

fn fixture(n_images: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let models = root.join("models");
    std::fs::create_dir(&models).unwrap();
    let manifest = common::tiny_model(&models, "tiny", 7, 10.0);
    let images = common::write_cifar_pngs(&root.join("images"), n_images);
    Fixture {
        _dir: dir,
        root,
        manifest,
        images,
    }
}

#[test]
fn folder_to_jsonl_matches_the_library() {
    let f = fixture(12);
    let out = run(infer()
        .arg("--model")
        .arg(&f.manifest)
        .args(["--format", "jsonl", "-k", "3", "--batch-size", "5"])
        .arg(f.root.join("images")));
    assert_clean_failure(&out, 0, &["12 image(s) classified, 0 failed"]);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    let c = Classifier::open(&f.manifest, &SessionOptions::default()).unwrap();
    for (line, path) in lines.iter().zip(&f.images) {
        assert_eq!(line["file"], path.display().to_string());
        let want = c.classify_file(path, 3).unwrap();
        assert_eq!(line["class"], want.class);
        assert_eq!(line["index"], want.index);
        assert_eq!(line["top_k"].as_array().unwrap().len(), 3);
        let p = line["probability"].as_f64().unwrap() as f32;
        assert!((p - want.probability).abs() < 1e-5);
    }
}

#[test]
fn table_and_csv_outputs() {
    let f = fixture(3);
    let out = run(infer().arg("-m").arg(&f.manifest).args(&f.images));
    assert_clean_failure(&out, 0, &[]);
    let table = text(&out.stdout);
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.lines().next().unwrap().starts_with("CLASS"));
    assert!(table.contains("test_00002.png"));

    let out = run(infer()
        .arg("-m")
        .arg(&f.manifest)
        .args(["--format", "csv", "--top-k", "2"])
        .args(&f.images));
    assert_clean_failure(&out, 0, &[]);
    let csv = text(&out.stdout);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "file,class,index,probability,top_k");
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[1].split(',').count(), 5);
    assert_eq!(rows[1].split(',').nth(4).unwrap().split(';').count(), 2);
}

#[cfg(unix)]
#[test]
fn bad_images_are_reported_and_skipped() {
    let f = fixture(2);
    let dir = f.root.join("images");
    std::fs::write(dir.join("zero.png"), b"").unwrap();
    std::fs::write(
        dir.join("corrupt.jpg"),
        b"\xff\xd8\xff\xe0 definitely not a jpeg",
    )
    .unwrap();
    let good = std::fs::read(&f.images[0]).unwrap();
    std::fs::write(dir.join("truncated.png"), &good[..good.len() / 2]).unwrap();
    std::fs::write(
        dir.join("huge.png"),
        common::png_with_dimensions(100_000, 100_000),
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.join("does-not-exist.png"), dir.join("broken.png")).unwrap();
    std::fs::create_dir(dir.join("folder.png")).unwrap();
    std::fs::write(dir.join("folder.png/inner.gif"), b"GIF89a broken").unwrap();
    let fifo = dir.join("pipe.png");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );

    let started = std::time::Instant::now();
    let out = run(infer()
        .arg("-m")
        .arg(&f.manifest)
        .args(["-f", "jsonl"])
        .arg(&dir));
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_clean_failure(
        &out,
        1,
        &[
            "zero.png",
            "empty",
            "corrupt.jpg",
            "truncated.png",
            "huge.png",
            "too large",
            "broken.png",
            "pipe.png",
            "not a regular file",
            "inner.gif",
            "2 image(s) classified, 7 failed",
        ],
    );
    let classified: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(classified.len(), 2);

    // A file named explicitly that is not an image at all, next to a good one.
    let notes = f.root.join("notes.txt");
    std::fs::write(&notes, "hello").unwrap();
    let out = run(infer()
        .arg("-m")
        .arg(&f.manifest)
        .arg(&notes)
        .arg(&f.images[1])
        .arg(f.root.join("missing.png")));
    assert_clean_failure(
        &out,
        1,
        &[
            "notes.txt",
            "missing.png",
            "1 image(s) classified, 2 failed",
        ],
    );
}

#[test]
fn folder_without_images_is_an_error() {
    let f = fixture(1);
    let empty = f.root.join("empty");
    std::fs::create_dir_all(empty.join("sub")).unwrap();
    std::fs::write(empty.join("sub/readme.txt"), "no images here").unwrap();
    let out = run(infer().arg("-m").arg(&f.manifest).arg(&empty));
    assert_clean_failure(&out, 2, &["contains no images", "empty"]);
    assert!(out.stdout.is_empty());
}

#[test]
fn model_problems_are_clear_errors() {
    let f = fixture(1);
    let img = &f.images[0];

    let out = run(infer().args(["-m", "/no/such/model.onnx"]).arg(img));
    assert_clean_failure(&out, 2, &["/no/such/model.onnx", "not found"]);

    let out = run(infer()
        .args(["-m", "nosuchname"])
        .arg("--models-dir")
        .arg(f.root.join("models"))
        .arg(img));
    assert_clean_failure(&out, 2, &["unknown model `nosuchname`", "tiny"]);

    // One flipped byte.
    let onnx = common::model_of(&f.manifest);
    let mut bytes = std::fs::read(&onnx).unwrap();
    bytes[100] ^= 0x80;
    std::fs::write(&onnx, &bytes).unwrap();
    let out = run(infer().arg("-m").arg(&onnx).arg(img));
    assert_clean_failure(&out, 2, &["does not match its manifest", "sha256"]);
    assert!(out.stdout.is_empty());

    // Truncated file with a manifest that matches it.
    let full = common::tiny_onnx(1);
    let m = common::publish(
        &f.root,
        "cut",
        &common::tiny_spec(),
        &full[..full.len() - 200],
        1.0,
        None,
    );
    let out = run(infer().arg("-m").arg(&m).arg(img));
    assert_clean_failure(&out, 2, &["not a valid ONNX model"]);

    // Input of the wrong shape.
    let (spec, bytes) = common::onnx_64px();
    let m = common::publish(&f.root, "wide", &spec, &bytes, 1.0, None);
    let out = run(infer().arg("-m").arg(&m).arg(img));
    assert_clean_failure(&out, 2, &["does not fit its manifest", "64"]);
}

#[test]
fn default_model_is_the_best_shipped_one() {
    let f = fixture(1);
    let models = f.root.join("models");
    common::tiny_model(&models, "better", 8, 55.0);
    common::tiny_model(&models, "worse", 9, 20.0);
    let out = run(infer().env("TPSNET_MODELS", &models).arg(&f.images[0]));
    assert_clean_failure(&out, 0, &["model better"]);
    let out = run(infer()
        .arg("--models-dir")
        .arg(&models)
        .args(["-m", "worse"])
        .arg(&f.images[0]));
    assert_clean_failure(&out, 0, &["model worse"]);

    let none = f.root.join("no-models-yet");
    std::fs::create_dir(&none).unwrap();
    let out = run(infer().arg("--models-dir").arg(&none).arg(&f.images[0]));
    assert_clean_failure(&out, 2, &["no published models", "ships none yet"]);
}

#[test]
fn onnx_runtime_location_problems() {
    let f = fixture(1);
    let base = |c: &mut Command| {
        c.arg("-m").arg(&f.manifest).arg(&f.images[0]);
    };
    // Without the variable the runtime searches for the library itself (the search and
    // its failures are tested in cli_deploy.rs and the ort_library unit tests).
    let mut c = infer();
    base(&mut c);
    let out = run(c.env_remove("ORT_DYLIB_PATH"));
    assert_clean_failure(&out, 0, &["1 image(s) classified"]);

    let mut c = infer();
    base(&mut c);
    let out = run(c.env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so"));
    assert_clean_failure(&out, 2, &["/nonexistent/libonnxruntime.so", "no such file"]);

    let fake = f.root.join("libonnxruntime.so");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let mut c = infer();
    base(&mut c);
    let out = run(c.env("ORT_DYLIB_PATH", &fake));
    assert_clean_failure(&out, 2, &["cannot load ONNX Runtime", "libonnxruntime.so"]);
}

#[test]
fn cuda_without_cuda_is_an_error_and_fallback_is_announced() {
    if tpsnet_runtime::session::available_providers()
        .unwrap()
        .iter()
        .any(|p| p == "CUDAExecutionProvider")
    {
        return; // Covered by the library test on a GPU build.
    }
    let f = fixture(1);
    let out = run(infer()
        .arg("-m")
        .arg(&f.manifest)
        .args(["--device", "cuda:0"])
        .arg(&f.images[0]));
    assert_clean_failure(
        &out,
        2,
        &["CUDA execution provider (device 0) cannot start"],
    );
    let out = run(infer()
        .arg("-m")
        .arg(&f.manifest)
        .args(["--device", "cuda", "--allow-cpu-fallback"])
        .arg(&f.images[0]));
    assert_clean_failure(
        &out,
        0,
        &["warning: falling back to the CPU", "CPUExecutionProvider"],
    );
}

#[test]
fn help_teaches_and_bad_arguments_fail() {
    let out = run(infer().arg("--help"));
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(
        help.contains("Examples:") && help.contains("Exit status"),
        "{help}"
    );
    let out = run(infer().arg("--top-k").arg("0").arg("x.png"));
    assert_eq!(out.status.code(), Some(2));
    let out = run(&mut infer());
    assert_eq!(out.status.code(), Some(2));
}
