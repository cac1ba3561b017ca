//! From trained tch variables to `<name>-<sha8>.onnx` plus its hashed manifest.

use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Device, Kind};
use zoo::manifest::{self, Manifest, Metrics, TrainingRecord};
use zoo::onnx::{self, ExportOptions};
use zoo::{ResNetSpec, WeightTensor, Weights};

/// Copies every variable of `vs` (parameters and BN statistics) to plain f32 tensors.
pub fn weights_from_varstore(vs: &VarStore) -> Weights {
    let mut w = Weights::default();
    for (name, t) in vs.variables() {
        let t = t
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let data = Vec::<f32>::try_from(&t.view([-1])).expect("float tensor converts");
        w.insert(name, WeightTensor::new(shape, data));
    }
    w
}

/// Facts of the run that go into the manifest.
#[derive(Debug)]
pub struct ExportFacts {
    pub name: String,
    pub metrics: Metrics,
    pub training: TrainingRecord,
}

/// Why a model could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export of {name}: {source}")]
    Onnx {
        name: String,
        source: zoo::onnx::ExportError,
    },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes the ONNX file and its manifest into `out_dir` atomically and returns
/// `(onnx_path, manifest_path)`. Earlier exports of the same name in `out_dir` are
/// removed, so a folder holds one current version per model.
pub fn export_model(
    spec: &ResNetSpec,
    weights: &Weights,
    facts: ExportFacts,
    out_dir: &Path,
) -> Result<(PathBuf, PathBuf), ExportError> {
    let opts = ExportOptions {
        metadata: vec![("name".into(), facts.name.clone())],
        ..Default::default()
    };
    let bytes = onnx::export(spec, weights, &opts).map_err(|source| ExportError::Onnx {
        name: facts.name.clone(),
        source,
    })?;
    let m = Manifest::describe(&facts.name, spec, &bytes, facts.metrics, facts.training);
    let file = m.file.clone();
    std::fs::create_dir_all(out_dir).map_err(|source| ExportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let onnx_path = out_dir.join(&file);
    let manifest_path = Manifest::path_for_model(&onnx_path);
    remove_older_versions(out_dir, &facts.name, &file);
    let write = |p: &Path, b: &[u8]| {
        manifest::write_atomic(p, b).map_err(|source| ExportError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    // Model first, manifest last: a manifest never points at a missing file.
    write(&onnx_path, &bytes)?;
    write(&manifest_path, m.to_json().as_bytes())?;
    Ok((onnx_path, manifest_path))
}

/// Deletes `<name>-<8 hex>.onnx` / `.json` files in `dir` other than `keep` (and its
/// manifest), so a folder holds one current version per model.
pub fn remove_older_versions(dir: &Path, name: &str, keep: &str) {
    let keep_json = Manifest::path_for_model(Path::new(keep));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = n.strip_prefix(name).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        let Some((hash, ext)) = rest.split_once('.') else {
            continue;
        };
        let versioned = hash.len() == 8 && hash.chars().all(|c| c.is_ascii_hexdigit());
        if versioned && (ext == "onnx" || ext == "json") && n != keep && Path::new(&n) != keep_json
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// `git rev-parse HEAD` of the source tree, with `-dirty` when it has changes.
pub fn source_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(h) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{h}-dirty") } else { h }
        }
        None => option_env!("TPSNET_COMMIT")
            .unwrap_or("unknown")
            .to_string(),
    }
}

/// Current UTC time as RFC 3339 (seconds), without a date-time dependency.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (proleptic Gregorian), H. Hinnant's algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}
