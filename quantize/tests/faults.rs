//! `tpsnet-quantize` publishing under faults, as a real process on real CIFAR-10 with the
//! zoo's resnet20: `kill -9` at a seeded moment and in the middle of the publication, a
//! full disk (`RLIMIT_FSIZE`) and a read-only output folder. After each, the folder
//! holds only whole files its manifests list, the version published before still
//! matches its sha256 and opens in ONNX Runtime, the error named the cause and the file,
//! and a rerun succeeds.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tpsnet_runtime::{Classifier, SessionOptions};
use tpsnet_test_support::faults::{self, check_models_folder};
use tpsnet_test_support::output::describe;

/// resnet20 to int8 on few images: one range method, 32 calibration images, no
/// comparison, claims on 100 test images. `seed` picks the calibration images, so each
/// seed publishes a different version.
fn quantize_cmd(out: &Path, data: &Path, seed: u64) -> Command {
    let exe = Path::new(env!("CARGO_BIN_EXE_tpsnet-quantize"));
    let mut c = faults::command_honouring_permissions(exe);
    c.arg("resnet20")
        .arg("--models-dir")
        .arg(tpsnet_test_support::shipped::models_dir())
        .arg("--out")
        .arg(out)
        .args(["--method", "minmax", "--calibration-images", "32"])
        .args([
            "--validation-images",
            "0",
            "--test-limit",
            "100",
            "--threads",
            "1",
        ])
        .args(["--seed", &seed.to_string()])
        .arg("--data-dir")
        .arg(data);
    c
}

fn assert_loads(out: &Path) -> Vec<(String, String)> {
    let state = check_models_folder(out);
    for (manifest, _) in &state.models {
        Classifier::open(out.join(manifest), &SessionOptions::default())
            .unwrap_or_else(|e| panic!("{manifest} does not open: {e}"));
    }
    state.models
}

#[test]
fn kills_full_disk_and_read_only_folder_leave_the_int8_model_whole() {
    let Some(data) = tpsnet_test_support::data::cifar_dir_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("models");
    std::fs::create_dir(&out).unwrap();
    let started = Instant::now();
    let o = quantize_cmd(&out, &data, 1).output().unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    let one_run = started.elapsed();
    let before = assert_loads(&out);
    assert_eq!(before.len(), 1, "{before:?}");

    for at in faults::moments(29, 1, one_run) {
        faults::kill_after(&mut quantize_cmd(&out, &data, 2), at);
        let now = assert_loads(&out);
        assert!(now == before || now.len() == 1, "{now:?}");
    }
    let caught = faults::kill_while_writing(&mut quantize_cmd(&out, &data, 2), &out, one_run * 3);
    eprintln!("killed while publishing: {caught}");
    let now = assert_loads(&out);
    assert!(now == before || now.len() == 1, "{now:?}");
    let current = now;

    faults::set_read_only(&out, true);
    let o = quantize_cmd(&out, &data, 3).output().unwrap();
    faults::set_read_only(&out, false);
    faults::assert_refused(&o, 2, &["Permission denied", &out.display().to_string()]);
    assert_eq!(assert_loads(&out), current);

    // The int8 resnet20 is about 300 KB: a 64 KiB file limit stops its write.
    let mut full = quantize_cmd(&out, &data, 3);
    faults::limit_file_size(&mut full, 64 * 1024);
    let o = full.output().unwrap();
    faults::assert_refused(&o, 2, &["File too large", &out.display().to_string()]);
    assert_eq!(assert_loads(&out), current);

    let o = quantize_cmd(&out, &data, 3).output().unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    let after = check_models_folder(&out);
    assert_eq!(after.models.len(), 1, "{after:?}");
    assert_ne!(after.models, current);
    assert!(after.temp_files.is_empty(), "{after:?}");
    assert!(after.unlisted_models.is_empty(), "{after:?}");
}
