//! A crate outside the workspace embeds the runtime: `examples/standalone/`, copied into
//! a temporary folder, depends on the runtime by path with default features off, so it
//! must build without clap, indicatif or anyhow, and classify real CIFAR-10 test images
//! with a shipped model exactly as the library does here, with no environment variable
//! telling it where ONNX Runtime or the models are.
//!
//! Kept cheap: the copy gets this workspace's Cargo.lock (cargo keeps its versions and
//! drops the rest), builds offline into this workspace's target folder with the same
//! profile and the same cargo configuration (run from the checkout), so compiled
//! dependencies are reused wherever their features match those of the workspace build.
//! Under `cargo test --workspace` the other members unify more features into a few shared
//! crates, so the copies that are built also ask for those features ([`WORKSPACE_FEATURES`]);
//! without that, each flavour recompiled about 130 crates (tract included) and the file
//! took 397 s of a CI run, against 79 s for the tract flavour with them on a loaded machine.

use tpsnet_test_support::fixtures as common;
use tpsnet_test_support::output::text;

use std::path::{Path, PathBuf};
use std::process::Command;

use tpsnet_runtime::{Classifier, SessionOptions, registry};

fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Features that `cargo test --workspace` turns on in dependencies the standalone program
/// shares with the workspace (read off `cargo tree -f '{p} {f}'` for both), added to the
/// copies that are built so that cargo compiles those crates, and everything above them,
/// exactly as the workspace build did and reuses its artifacts. The features are additive
/// and the program calls none of them: it is the same program. Should a dependency update
/// change the sets, the builds get slower, never wrong.
const WORKSPACE_FEATURES: &str = r#"
digest = { version = "0.10", features = ["mac"] }
memchr = { version = "2", features = ["default"] }
rustix = { version = "1", features = ["default", "termios"] }
serde_core = { version = "1", features = ["default"] }
serde_json = { version = "1", features = ["raw_value"] }
smallvec = { version = "1", features = ["const_generics", "const_new"] }

[build-dependencies]
cc = { version = "1", features = ["parallel"] }
syn = { version = "2", features = ["visit-mut"] }
syn3 = { package = "syn", version = "3", features = ["full", "visit-mut"] }
"#;

/// `examples/standalone/` copied into a fresh folder, depending on this checkout's
/// runtime by absolute path, seeded with the workspace's Cargo.lock; returns the folder
/// (kept alive by the guard) and its manifest path. As the example is: for `cargo tree`.
fn standalone_copy() -> (tempfile::TempDir, PathBuf) {
    standalone_copy_named("tpsnet-standalone", "")
}

/// [`standalone_copy`] to build: with [`WORKSPACE_FEATURES`], and the package (and so the
/// executable) renamed, so that two flavours built into the same target folder by tests
/// running at once do not overwrite each other's executable.
fn standalone_copy_to_build(package: &str) -> (tempfile::TempDir, PathBuf) {
    standalone_copy_named(package, WORKSPACE_FEATURES)
}

fn standalone_copy_named(package: &str, extra_dependencies: &str) -> (tempfile::TempDir, PathBuf) {
    let source = checkout().join("examples/standalone");
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(source.join("Cargo.toml"))
        .unwrap()
        .replace(
            r#"name = "tpsnet-standalone""#,
            &format!("name = {package:?}"),
        );
    let runtime_dir = checkout().join("runtime");
    let relative = r#"path = "../../runtime""#;
    assert!(manifest.contains(relative), "{manifest}");
    let manifest = manifest.replace(
        relative,
        &format!("path = {:?}", runtime_dir.to_str().unwrap()),
    );
    let manifest = manifest.replacen(
        "\n[features]",
        &format!("{extra_dependencies}\n[features]"),
        1,
    );
    std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::copy(source.join("src/main.rs"), dir.path().join("src/main.rs")).unwrap();
    std::fs::copy(checkout().join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    let path = dir.path().join("Cargo.toml");
    (dir, path)
}

/// `target/` of this build: the test runs as `target/debug/deps/outside_crate-<hash>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// Cargo, run from the checkout so that its `.cargo/config.toml` applies as it does to
/// the workspace (the same environment, hence the same compiled dependencies).
fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(checkout()).arg("--color=never");
    c
}

#[test]
fn runtime_without_default_features_has_no_cli_dependencies() {
    let (_dir, manifest) = standalone_copy();
    let out = cargo()
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none"])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .unwrap();
    let tree = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(tree.contains("tpsnet-runtime v"), "{tree}");
    assert!(tree.contains("ort v"), "{tree}");
    for crate_name in ["clap", "indicatif", "anyhow", "ureq"] {
        assert!(
            !tree
                .lines()
                .any(|l| l.starts_with(&format!("{crate_name} v"))),
            "{crate_name} is in the tree of a default-features = false build:\n{tree}"
        );
    }
}

#[test]
fn standalone_crate_builds_and_classifies_with_a_shipped_model() {
    let (_crate_dir, manifest) = standalone_copy_to_build("tpsnet-standalone");
    let out = cargo()
        .args(["build", "--offline", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("TPSNET_CHECKOUT", checkout())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exe = target_dir().join("debug/tpsnet-standalone");

    let dir = tempfile::tempdir().unwrap();
    let images = common::write_cifar_pngs(&dir.path().join("png"), 8);
    // No variables, run from a folder without models/: the program finds ONNX Runtime
    // and the shipped models by itself.
    let out = Command::new(&exe)
        .args(&images)
        .current_dir(dir.path())
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("TPSNET_MODELS")
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");

    // The same model, opened here, gives the same answers.
    let shipped = checkout().join("models");
    let model = registry::find_model(None, Some(&shipped)).unwrap();
    let options = SessionOptions::builder().threads(1).build();
    let classifier = Classifier::open(&model, &options).unwrap();
    assert!(
        stderr.contains(&format!("model {} (", classifier.name())),
        "{stderr}"
    );
    assert!(stderr.contains("(the checkout's .venv)"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), images.len(), "{stdout}");
    for (line, image) in lines.iter().zip(&images) {
        let fields: Vec<&str> = line.split('\t').collect();
        let want = classifier.classify_file(image, 1).unwrap();
        assert_eq!(fields[0], image.display().to_string());
        assert_eq!(fields[1], want.class, "{line}");
        assert_eq!(fields[2], want.index.to_string(), "{line}");
        let p: f32 = fields[3].parse().unwrap();
        assert!(
            (p - want.probability).abs() < 1e-5,
            "{line}: {}",
            want.probability
        );
    }

    // A bad image is an error naming it, not a panic.
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let out = Command::new(&exe)
        .arg(&bad)
        .current_dir(dir.path())
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.png") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// The tract flavour of the same program (`--no-default-features --features tract`): no
/// `ort` in its dependency tree, no ONNX Runtime linked (`ldd`) or named anywhere in the
/// executable (so nothing can look it up at run time), and it classifies real images as
/// the tract backend does here, with `ORT_DYLIB_PATH` pointing nowhere.
#[cfg(feature = "tract")]
#[test]
fn standalone_crate_builds_and_classifies_on_tract_without_onnx_runtime() {
    let (_crate_dir, manifest) = standalone_copy_to_build("tpsnet-standalone-tract");
    let tract_only = ["--no-default-features", "--features", "tract"];
    let out = cargo()
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none"])
        .args(tract_only)
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .unwrap();
    let tree = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        tree.lines().any(|l| l.starts_with("tract-onnx v")),
        "{tree}"
    );
    assert!(!tree.lines().any(|l| l.starts_with("ort")), "{tree}");

    let out = cargo()
        .args(["build", "--offline"])
        .args(tract_only)
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("TPSNET_CHECKOUT", checkout())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exe = target_dir().join("debug/tpsnet-standalone-tract");

    let ldd = Command::new("ldd").arg(&exe).output().unwrap();
    let linked = text(&ldd.stdout);
    assert!(ldd.status.success(), "{}", text(&ldd.stderr));
    assert!(!linked.contains("onnxruntime"), "{linked}");
    let bytes = std::fs::read(&exe).unwrap();
    for needle in [&b"libonnxruntime"[..], b"OrtGetApiBase", b"ORT_DYLIB_PATH"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{} found in {}",
            String::from_utf8_lossy(needle),
            exe.display()
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let images = common::write_cifar_pngs(&dir.path().join("png"), 8);
    let out = Command::new(&exe)
        .args(&images)
        .current_dir(dir.path())
        .env("ORT_DYLIB_PATH", dir.path().join("no-onnxruntime-here.so"))
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("TPSNET_MODELS")
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("tract backend"), "{stderr}");

    let shipped = checkout().join("models");
    let model = registry::find_model(None, Some(&shipped)).unwrap();
    let options = SessionOptions::builder()
        .backend(tpsnet_runtime::Backend::Tract)
        .threads(1)
        .build();
    let classifier = Classifier::open(&model, &options).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), images.len(), "{stdout}");
    for (line, image) in lines.iter().zip(&images) {
        let fields: Vec<&str> = line.split('\t').collect();
        let want = classifier.classify_file(image, 1).unwrap();
        assert_eq!(fields[1], want.class, "{line}");
        let p: f32 = fields[3].parse().unwrap();
        assert!(
            (p - want.probability).abs() < 1e-5,
            "{line}: {}",
            want.probability
        );
    }
}
