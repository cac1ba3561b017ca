//! The built commands as people deploy them: no environment variables, a binary moved
//! out of the checkout with ONNX Runtime and the models beside it, and `--version`
//! telling which library and models folder are in use.

use tpsnet_test_support::fixtures as common;
use tpsnet_test_support::output::text;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ok(out: &Output) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

/// A command with none of the runtime's variables set, run in `cwd`.
fn bare(exe: &Path, cwd: &Path) -> Command {
    let mut c = Command::new(exe);
    c.current_dir(cwd)
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("TPSNET_MODELS");
    c
}

/// The ONNX Runtime library the tests run with (cargo sets ORT_DYLIB_PATH for them from
/// .cargo/config.toml), resolved to the real versioned file.
fn real_ort_library() -> PathBuf {
    let configured = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| tpsnet_runtime::ort_library::checkout_venv_library(&checkout()));
    std::fs::canonicalize(&configured)
        .unwrap_or_else(|e| panic!("ONNX Runtime at {}: {e}", configured.display()))
}

fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn version_names_the_library_and_models_folder_in_use() {
    let exe = Path::new(env!("CARGO_BIN_EXE_tpsnet-infer"));
    let dir = tempfile::tempdir().unwrap();

    // Nothing set, run from a folder without models/: the checkout's .venv and models/.
    let (stdout, _) = ok(&bare(exe, dir.path()).arg("--version").output().unwrap());
    let venv_lib = tpsnet_runtime::ort_library::checkout_venv_library(&checkout());
    assert!(stdout.starts_with("tpsnet-infer "), "{stdout}");
    assert!(
        stdout.contains(&format!("at {} (the checkout's .venv)", venv_lib.display())),
        "{stdout}"
    );
    let models = checkout().join("models");
    assert!(
        stdout.contains(&format!(
            "models folder {} (the checkout)",
            models.display()
        )),
        "{stdout}"
    );

    // The variables win, and say so.
    let lib = real_ort_library();
    let (stdout, _) = ok(&bare(exe, dir.path())
        .arg("--version")
        .env("ORT_DYLIB_PATH", &lib)
        .env("TPSNET_MODELS", dir.path())
        .output()
        .unwrap());
    assert!(
        stdout.contains(&format!("at {} (ORT_DYLIB_PATH)", lib.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "models folder {} (TPSNET_MODELS)",
            dir.path().display()
        )),
        "{stdout}"
    );
    let version = lib
        .file_name()
        .unwrap()
        .to_string_lossy()
        .rsplit(".so.")
        .next()
        .unwrap()
        .to_string();
    assert!(
        stdout.contains(&format!("ONNX Runtime {version} at")),
        "{stdout}"
    );

    // verify reports the same way.
    let (stdout, _) = ok(&bare(Path::new(env!("CARGO_BIN_EXE_verify")), dir.path())
        .arg("--version")
        .output()
        .unwrap());
    assert!(stdout.contains("(the checkout's .venv)"), "{stdout}");
}

#[test]
fn a_moved_binary_finds_the_library_and_models_beside_it() {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir_all(bin.join("models")).unwrap();
    let exe = bin.join("tpsnet-infer");
    std::fs::copy(env!("CARGO_BIN_EXE_tpsnet-infer"), &exe).unwrap();
    let lib = real_ort_library();
    std::os::unix::fs::symlink(&lib, bin.join(lib.file_name().unwrap())).unwrap();
    common::tiny_model(&bin.join("models"), "beside", 3, 20.0);
    let images = common::write_cifar_pngs(&root.path().join("images"), 2);
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();

    let (stdout, _) = ok(&bare(&exe, &elsewhere).arg("--version").output().unwrap());
    assert!(
        stdout.contains(&format!(
            "at {} (beside the executable)",
            bin.join(lib.file_name().unwrap()).display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "models folder {} (beside the executable)",
            bin.join("models").display()
        )),
        "{stdout}"
    );
    let (stdout, stderr) = ok(&bare(&exe, &elsewhere).args(&images).output().unwrap());
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(
        stderr.contains("2 image(s) classified, 0 failed; model beside"),
        "{stderr}"
    );

    // ./models in the current folder comes before the folder beside the executable.
    common::tiny_model(&elsewhere.join("models"), "here", 4, 10.0);
    let (_, stderr) = ok(&bare(&exe, &elsewhere).args(&images).output().unwrap());
    assert!(stderr.contains("model here"), "{stderr}");
    // A name is looked up in the folder found; a file path needs no folder at all.
    let (_, stderr) = ok(&bare(&exe, &elsewhere)
        .args(["-m", "here"])
        .args(&images)
        .output()
        .unwrap());
    assert!(stderr.contains("model here"), "{stderr}");
}

#[test]
fn a_bad_library_beside_the_binary_is_skipped() {
    let root = tempfile::tempdir().unwrap();
    let exe = root.path().join("tpsnet-infer");
    std::fs::copy(env!("CARGO_BIN_EXE_tpsnet-infer"), &exe).unwrap();
    // A file with the library's name that is not a library: skipped, the search goes on
    // to the checkout's .venv.
    std::fs::write(
        root.path()
            .join(tpsnet_runtime::ort_library::library_file_name()),
        b"not a library",
    )
    .unwrap();
    let (stdout, _) = ok(&bare(&exe, root.path()).arg("--version").output().unwrap());
    assert!(stdout.contains("(the checkout's .venv)"), "{stdout}");
}
