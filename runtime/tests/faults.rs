//! `verify --report` under faults, as a real process on the real CIFAR-10 test set:
//! `kill -9` at seeded moments, a full disk (`RLIMIT_FSIZE`) and a read-only folder.
//! The report written before stays whole (byte for byte), no partial report or visible
//! temporary file appears, the error names the report file and the cause, and a rerun
//! writes a new report.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tpsnet_test_support::faults;
use tpsnet_test_support::fixtures;
use tpsnet_test_support::output::describe;

fn verify_cmd(model: &Path, report: &Path) -> Command {
    let mut c = faults::command_honouring_permissions(Path::new(env!("CARGO_BIN_EXE_verify")));
    c.env("TPSNET_MODELS", "/nonexistent-models-dir")
        .env("CIFAR10_DIR", fixtures::cifar_dir())
        .args(["--dataset", "cifar10-test", "--tolerance", "100", "--model"])
        .arg(model)
        .arg("--report")
        .arg(report);
    c
}

fn run_ok(c: &mut Command) {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", describe(&o));
}

#[test]
fn kills_full_disk_and_read_only_folder_leave_the_report_whole() {
    if tpsnet_test_support::data::cifar_dir_or_skip().is_none() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let model = fixtures::tiny_model(&d.path().join("models"), "tiny", 7, 10.0);
    let reports = d.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    let report = reports.join("verify.json");
    let started = Instant::now();
    run_ok(&mut verify_cmd(&model, &report));
    let one_run = started.elapsed();
    let first = std::fs::read(&report).unwrap();
    serde_json::from_slice::<serde_json::Value>(&first).unwrap();

    let unchanged = || {
        let now = std::fs::read(&report).unwrap();
        let visible: Vec<_> = std::fs::read_dir(&reports)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        assert_eq!(visible, ["verify.json"]);
        now
    };
    for at in faults::moments(29, 2, one_run) {
        faults::kill_after(&mut verify_cmd(&model, &report), at);
        // Killed before the rename: the old report; after it: a whole new one.
        let now = unchanged();
        assert!(serde_json::from_slice::<serde_json::Value>(&now).is_ok());
    }
    let first = unchanged();

    faults::set_read_only(&reports, true);
    let o = verify_cmd(&model, &report).output().unwrap();
    faults::set_read_only(&reports, false);
    faults::assert_refused(&o, 2, &["Permission denied", &report.display().to_string()]);
    assert_eq!(unchanged(), first);

    let mut full = verify_cmd(&model, &report);
    faults::limit_file_size(&mut full, 256);
    let o = full.output().unwrap();
    faults::assert_refused(&o, 2, &["File too large", &report.display().to_string()]);
    assert_eq!(unchanged(), first);

    run_ok(&mut verify_cmd(&model, &report));
    serde_json::from_slice::<serde_json::Value>(&unchanged()).unwrap();
    // The rerun's write removed what the killed runs' writes left.
    assert!(faults::temp_files(&reports).is_empty());
}
