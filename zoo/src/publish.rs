//! Publishing a model into a models folder: `<name>-<sha256[:8]>.onnx` beside its
//! manifest, both written atomically, the manifest last, and older versions of the same
//! name removed. The trainer (fp32) and `tpsnet-quantize` (int8) both publish through
//! [`publish`], so a folder looks the same whoever wrote it.

use std::path::{Path, PathBuf};

use crate::manifest::Manifest;

/// Where a published model and its manifest were written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedFiles {
    /// The ONNX file, `<out_dir>/<manifest.file>`.
    pub model: PathBuf,
    /// Its manifest, the model's path with the extension `json`.
    pub manifest: PathBuf,
}

/// A file of a publication could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct PublishError {
    /// The file (or folder) that could not be written.
    pub path: PathBuf,
    /// The operating system's reason.
    pub source: std::io::Error,
}

/// Writes `model_bytes` as `out_dir/<manifest.file>` and `manifest` beside it, each
/// atomically, the model first and the manifest last: a model a manifest lists is always
/// complete. Then removes older versions of `manifest.name` in `out_dir`, so a folder
/// holds one current version per model.
pub fn publish(
    out_dir: &Path,
    manifest: &Manifest,
    model_bytes: &[u8],
) -> Result<PublishedFiles, PublishError> {
    let write = |path: &Path, bytes: &[u8]| {
        write_atomic(path, bytes).map_err(|source| PublishError {
            path: path.to_path_buf(),
            source,
        })
    };
    let model = out_dir.join(&manifest.file);
    let manifest_path = Manifest::path_for_model(&model);
    write(&model, model_bytes)?;
    write(&manifest_path, manifest.to_json().as_bytes())?;
    remove_older_versions(out_dir, &manifest.name, &manifest.file);
    Ok(PublishedFiles {
        model,
        manifest: manifest_path,
    })
}

/// Whether `file` is one ordinary file name: not empty, no folder separator (`/` or `\`,
/// on any platform), not `.` or `..`, no NUL. A manifest's `file` must be one, so that
/// loading a model never reads outside the manifest's folder.
pub fn is_plain_file_name(file: &str) -> bool {
    !file.is_empty()
        && file != "."
        && file != ".."
        && !file.contains(['/', '\\', '\0'])
        && Path::new(file).file_name() == Some(std::ffi::OsStr::new(file))
}

/// File name of a published model: `<name>-<sha256[:8]>.onnx`.
pub fn model_file_name(name: &str, sha256_hex: &str) -> String {
    format!("{name}-{}.onnx", &sha256_hex[..8])
}

/// Writes `bytes` to `path` atomically: a temp file in the same folder, fsync, rename.
/// Readers never see a half-written file, and an interrupted write leaves the old one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let prefix = format!(".{file_name}.tmp-");
    let tmp = dir.join(format!("{prefix}{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        remove_stale_temp_files(dir, &prefix);
    }
    result
}

/// Deletes the temp files `<dir>/<prefix><pid>` that killed processes left behind (an
/// atomic write interrupted before its rename, or a staging folder, removed with what it
/// holds). A temp file whose process still runs is kept: it may be a concurrent write.
/// Only where `/proc` tells which processes run (Linux); elsewhere nothing is deleted.
pub fn remove_stale_temp_files(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.strip_prefix(prefix).is_some_and(writer_is_gone) {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            let _ = if is_dir {
                std::fs::remove_dir_all(e.path())
            } else {
                std::fs::remove_file(e.path())
            };
        }
    }
}

/// Whether `pid` (a temp file's suffix) names a process that no longer runs; `false`
/// where that cannot be known (no `/proc`) or it is not a PID.
fn writer_is_gone(pid: &str) -> bool {
    let proc_dir = Path::new("/proc");
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && pid != std::process::id().to_string()
        && proc_dir.join("self").exists()
        && !proc_dir.join(pid).exists()
}

/// Deletes `<name>-<8 hex>.onnx` / `.json` files in `dir` other than `keep` (and its
/// manifest), so a folder holds one current version per model, and the temp files of
/// publications of `name` whose process was killed. Only exact
/// `<name>-<8 hex>` files go: `tpsnet`'s cleanup leaves `tpsnet-int8-*` alone.
pub fn remove_older_versions(dir: &Path, name: &str, keep: &str) {
    let keep_json = Manifest::path_for_model(Path::new(keep));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        // `.<name>-<8 hex>.onnx.tmp-<pid>`: a publication of any version that a killed
        // process left behind.
        let stale_temp = n
            .strip_prefix('.')
            .and_then(|t| t.split_once(".tmp-"))
            .is_some_and(|(file, pid)| is_version_of(file, name) && writer_is_gone(pid));
        let older = is_version_of(&n, name) && n != keep && Path::new(&n) != keep_json;
        if stale_temp || older {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether `file` is `<name>-<8 hex>.onnx` or `.json`.
fn is_version_of(file: &str, name: &str) -> bool {
    let Some(rest) = file.strip_prefix(name).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let Some((hash, ext)) = rest.split_once('.') else {
        return false;
    };
    hash.len() == 8
        && hash.chars().all(|c| c.is_ascii_hexdigit())
        && (ext == "onnx" || ext == "json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn file_names_carry_the_hash_prefix() {
        let h = crate::hashing::sha256_hex(b"abc");
        assert_eq!(model_file_name("tpsnet", &h), "tpsnet-ba7816bf.onnx");
    }

    #[test]
    fn plain_file_names() {
        for ok in ["tiny-0123abcd.onnx", "a b.onnx", ".hidden.onnx", "x"] {
            assert!(is_plain_file_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../tiny.onnx",
            "sub/tiny.onnx",
            "/etc/passwd",
            "..\\tiny.onnx",
            "tiny.onnx/",
            "nul\0.onnx",
        ] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn publish_writes_model_and_manifest_and_replaces_the_older_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = crate::manifest::tests::sample();
        m.name = "tiny".into();
        m.file = "tiny-00000000.onnx".into();
        let first = publish(dir.path(), &m, b"old").unwrap();
        assert_eq!(std::fs::read(&first.model).unwrap(), b"old");
        m.file = "tiny-11111111.onnx".into();
        let second = publish(dir.path(), &m, b"new").unwrap();
        assert_eq!(second.model, dir.path().join("tiny-11111111.onnx"));
        assert_eq!(second.manifest, dir.path().join("tiny-11111111.json"));
        assert_eq!(Manifest::load(&second.manifest).unwrap(), m);
        assert_eq!(
            left(dir.path()),
            ["tiny-11111111.json", "tiny-11111111.onnx"]
        );
    }

    #[test]
    fn a_write_removes_the_temp_files_of_killed_writers_only() {
        let dir = tempfile::tempdir().unwrap();
        // No process has a PID this large (the kernel's limit is 2^22).
        let dead = dir.path().join(".m.onnx.tmp-4999999999");
        // PID 1 always runs: its write may still be under way.
        let alive = dir.path().join(".m.onnx.tmp-1");
        let other = dir.path().join(".n.onnx.tmp-4999999999");
        for p in [&dead, &alive, &other] {
            std::fs::write(p, b"partial").unwrap();
        }
        write_atomic(&dir.path().join("m.onnx"), b"whole").unwrap();
        assert!(!dead.exists() || !Path::new("/proc/self").exists());
        assert!(alive.exists(), "a running writer's temp file stays");
        assert!(other.exists(), "another file's temp file stays");
    }

    #[test]
    fn a_killed_writer_s_staging_folder_goes_with_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(".stage.tmp-4999999999");
        let alive = dir.path().join(".stage.tmp-1");
        for d in [&dead, &alive] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("m.onnx"), b"partial").unwrap();
        }
        remove_stale_temp_files(dir.path(), ".stage.tmp-");
        assert!(!dead.exists() || !Path::new("/proc/self").exists());
        assert!(
            alive.join("m.onnx").exists(),
            "a running writer's folder stays"
        );
    }

    #[test]
    fn older_versions_of_the_int8_model_only_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "tpsnet-2d1cc128.onnx",
            "tpsnet-2d1cc128.json",
            "tpsnet-int8-00000000.onnx",
            "tpsnet-int8-00000000.json",
            "tpsnet-int8-11111111.onnx",
            "tpsnet-int8-11111111.json",
            "tpsnet-int8-notes.txt",
            ".tpsnet-int8-22222222.onnx.tmp-4999999999",
            ".tpsnet-33333333.onnx.tmp-4999999999",
        ] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        remove_older_versions(dir.path(), "tpsnet-int8", "tpsnet-int8-11111111.onnx");
        let after_int8 = left(dir.path());
        // The fp32 model's own cleanup keeps every int8 file (and removes its own
        // killed publication's temp file).
        remove_older_versions(dir.path(), "tpsnet", "tpsnet-2d1cc128.onnx");
        assert_eq!(left(dir.path()), after_int8[1..]);
        assert_eq!(
            after_int8,
            [
                ".tpsnet-33333333.onnx.tmp-4999999999",
                "tpsnet-2d1cc128.json",
                "tpsnet-2d1cc128.onnx",
                "tpsnet-int8-11111111.json",
                "tpsnet-int8-11111111.onnx",
                "tpsnet-int8-notes.txt"
            ]
        );
    }
}
