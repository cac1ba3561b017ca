//! `train-zoo` under faults, as a real process on real CIFAR-10: `kill -9` at seeded
//! moments and in the middle of a checkpoint or publication write, a full disk
//! (`RLIMIT_FSIZE`) and a read-only models folder. After each, the models folder holds
//! only whole files its manifests list (the version published before still matches its
//! sha256), the error named the cause and the file, and a rerun succeeds.

mod common;
use common::cifar_dir;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tpsnet_test_support::faults::{self, check_models_folder};
use tpsnet_test_support::output::describe;

/// A run small enough for seconds: the tests' tiny spec, 300 images, two epochs (so a
/// checkpoint is written and then replaced), 100 test images.
fn train(spec: &Path, run_dir: &Path, out: &Path, data: &Path, seed: u64) -> Command {
    let mut c = faults::command_honouring_permissions(Path::new(env!("CARGO_BIN_EXE_train-zoo")));
    c.env_remove("RUST_BACKTRACE")
        .args(["--model"])
        .arg(spec)
        .args(["--name", "tiny", "--device", "cpu", "--threads", "1"])
        .args([
            "--train-limit",
            "300",
            "--test-limit",
            "100",
            "--batch-size",
            "50",
        ])
        .args([
            "--epochs",
            "2",
            "--eval-test-every",
            "0",
            "--no-progress",
            "--resume",
        ])
        .args(["--seed", &seed.to_string()])
        .arg("--data-dir")
        .arg(data)
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--out")
        .arg(out);
    c
}

struct Setup {
    _tmp: tempfile::TempDir,
    spec: PathBuf,
    out: PathBuf,
    data: PathBuf,
    root: PathBuf,
}

fn setup(data: PathBuf) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let spec = root.join("tiny.json");
    let json = serde_json::to_string(&tpsnet_test_support::fixtures::tiny_spec()).unwrap();
    std::fs::write(&spec, json).unwrap();
    let out = root.join("models");
    std::fs::create_dir(&out).unwrap();
    Setup {
        _tmp: tmp,
        spec,
        out,
        data,
        root,
    }
}

fn run_ok(c: &mut Command) {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", describe(&o));
}

#[test]
fn kills_full_disk_and_read_only_folder_leave_the_published_model_whole() {
    let Some(data) = cifar_dir() else {
        return;
    };
    let s = setup(data);
    let started = Instant::now();
    run_ok(&mut train(
        &s.spec,
        &s.root.join("run1"),
        &s.out,
        &s.data,
        1,
    ));
    let one_run = started.elapsed();
    let before = check_models_folder(&s.out);
    assert_eq!(before.models.len(), 1, "{before:?}");

    // kill -9 at seeded moments of a second run (loading, training, checkpointing,
    // exporting, publishing), resuming each time from whatever checkpoint is left.
    let run2 = s.root.join("run2");
    for at in faults::moments(29, 2, one_run) {
        faults::kill_after(&mut train(&s.spec, &run2, &s.out, &s.data, 2), at);
        assert_whole(&s.out, &before.models);
    }
    // And in the middle of a checkpoint write and of a publication.
    for watched in [&run2, &s.out] {
        let cmd = &mut train(&s.spec, &run2, &s.out, &s.data, 2);
        let caught = faults::kill_while_writing(cmd, watched, one_run * 3);
        eprintln!("killed while writing into {}: {caught}", watched.display());
        assert_whole(&s.out, &before.models);
    }
    // A kill after the manifest's rename leaves the new version published.
    let current = check_models_folder(&s.out).models;

    // The models folder read-only: the publication fails naming the folder and why.
    let run3 = s.root.join("run3");
    faults::set_read_only(&s.out, true);
    let o = train(&s.spec, &run3, &s.out, &s.data, 3).output().unwrap();
    faults::set_read_only(&s.out, false);
    let (code, err) = faults::refusal(&o);
    assert_ne!(code, Some(0), "{}", describe(&o));
    assert!(err.contains("Permission denied"), "{}", describe(&o));
    assert!(
        err.contains(&s.out.display().to_string()),
        "{}",
        describe(&o)
    );
    assert!(!err.contains("panicked"), "{}", describe(&o));
    assert_eq!(check_models_folder(&s.out).models, current);

    // A full disk: the first checkpoint cannot be written; the error names it.
    let mut full = train(&s.spec, &s.root.join("run4"), &s.out, &s.data, 4);
    faults::limit_file_size(&mut full, 4096);
    let o = full.output().unwrap();
    let (code, err) = faults::refusal(&o);
    assert_ne!(code, Some(0), "{}", describe(&o));
    assert!(err.contains("File too large"), "{}", describe(&o));
    assert!(err.contains("checkpoint"), "{}", describe(&o));
    assert!(!err.contains("panicked"), "{}", describe(&o));
    assert_eq!(check_models_folder(&s.out).models, current);

    // The rerun of the killed run finishes and replaces the old version cleanly.
    run_ok(&mut train(&s.spec, &run2, &s.out, &s.data, 2));
    let after = check_models_folder(&s.out);
    assert_eq!(after.models.len(), 1, "{after:?}");
    assert!(after.temp_files.is_empty(), "{after:?}");
    assert!(after.unlisted_models.is_empty(), "{after:?}");
    assert!(
        faults::temp_files(&run2).is_empty(),
        "{:?}",
        faults::temp_files(&run2)
    );
}

/// The folder is consistent and the version published first is still listed, whole.
fn assert_whole(out: &Path, first: &[(String, String)]) {
    let now = check_models_folder(out);
    assert!(
        first.iter().all(|m| now.models.contains(m)) || now.models.len() == 1,
        "the published version went missing: {now:?}"
    );
}
