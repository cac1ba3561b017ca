//! The models folder: finding published zoo models by name, and the best one.
//!
//! Published models live in one folder as `<name>-<sha8>.onnx` plus `<name>-<sha8>.json`.
//! The folder is found at run time ([`crate::models_dir`]): an explicit `--models-dir`,
//! else `$TPSNET_MODELS`, else the first that exists of `./models`, `models/` beside the
//! executable and the checkout's `models/` (when the program names one).

use std::path::{Path, PathBuf};

use tpsnet_zoo::Manifest;

use crate::error::{Error, Result};
pub use crate::models_dir::{ModelsDir, ModelsDirOrigin, locate_models_dir, models_dir};

/// Environment variable naming the models folder.
pub const MODELS_ENV: &str = "TPSNET_MODELS";

/// [`resolve_model`] with the models folder found at run time ([`locate_models_dir`]),
/// and only when it is needed: a model given as a file never looks for the folder.
pub fn find_model(model: Option<&str>, models_dir: Option<&Path>) -> Result<PathBuf> {
    match model {
        Some(arg) if names_a_file(arg) => resolve_model(model, Path::new(".")),
        _ => resolve_model(model, &locate_models_dir(models_dir)?.path),
    }
}

/// Whether a `--model` argument is a file path rather than a model name: an existing
/// path, or anything ending in `.onnx`/`.json` or containing a folder separator.
fn names_a_file(arg: &str) -> bool {
    let as_path = Path::new(arg);
    as_path.exists()
        || as_path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx") || e.eq_ignore_ascii_case("json"))
        || arg.contains(std::path::MAIN_SEPARATOR)
}

/// One published model: its manifest and where it is.
#[derive(Clone, Debug)]
pub struct ModelEntry {
    /// The manifest `.json` (the ONNX file is named in it and sits beside it).
    pub manifest_path: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
}

impl ModelEntry {
    /// The headline top-1 the manifest claims (percent).
    pub fn claimed_top1(&self) -> f64 {
        self.manifest.metrics.claimed_top1()
    }
}

/// The manifests found in a models folder.
#[derive(Clone, Debug)]
pub struct Registry {
    /// The models folder that was scanned.
    pub dir: PathBuf,
    /// Valid manifests, sorted by name then file.
    pub models: Vec<ModelEntry>,
    /// `.json` files that are not readable manifests, with the reason.
    pub invalid: Vec<(PathBuf, String)>,
}

impl Registry {
    /// Scans `dir` for manifests. A missing folder is an empty registry (the zoo may not
    /// ship any model yet); an unreadable one is an error.
    pub fn scan(dir: &Path) -> Result<Self> {
        let mut reg = Registry {
            dir: dir.to_path_buf(),
            models: Vec::new(),
            invalid: Vec::new(),
        };
        if !dir.exists() {
            return Ok(reg);
        }
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Registry {
            dir: dir.to_path_buf(),
            reason: format!("cannot list it: {e}"),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") || !path.is_file() {
                continue;
            }
            match Manifest::load(&path) {
                Ok(manifest) => reg.models.push(ModelEntry {
                    manifest_path: path,
                    manifest,
                }),
                Err(e) => reg.invalid.push((path, e.to_string())),
            }
        }
        reg.models.sort_by(|a, b| {
            (a.manifest.name.as_str(), &a.manifest_path)
                .cmp(&(b.manifest.name.as_str(), &b.manifest_path))
        });
        reg.invalid.sort();
        Ok(reg)
    }

    /// The fp32 model with the highest claimed top-1 (ties: the first by name).
    ///
    /// Quantized variants (`<name>-int8`, docs/quantization.md) are only picked when the
    /// folder holds nothing else: they trade a little accuracy for speed, a choice a user
    /// makes by name (`--model tpsnet-int8`), and their accuracy can come out a hair
    /// above the fp32 source's on the test set without being the better model.
    pub fn best(&self) -> Result<&ModelEntry> {
        let mut best: Option<&ModelEntry> = None;
        let has_fp32 = self.models.iter().any(|m| m.manifest.precision.is_fp32());
        for m in &self.models {
            if has_fp32 && !m.manifest.precision.is_fp32() {
                continue;
            }
            if best.is_none_or(|b| m.claimed_top1() > b.claimed_top1()) {
                best = Some(m);
            }
        }
        best.ok_or_else(|| Error::NoModels {
            dir: self.dir.clone(),
        })
    }

    /// The model called `name` (if several share it, the one with the highest claim).
    pub fn find(&self, name: &str) -> Result<&ModelEntry> {
        let mut found: Option<&ModelEntry> = None;
        for m in self.models.iter().filter(|m| m.manifest.name == name) {
            if found.is_none_or(|b| m.claimed_top1() > b.claimed_top1()) {
                found = Some(m);
            }
        }
        found.ok_or_else(|| {
            if self.models.is_empty() {
                Error::NoModels {
                    dir: self.dir.clone(),
                }
            } else {
                Error::UnknownModel {
                    name: name.to_string(),
                    dir: self.dir.clone(),
                    known: self
                        .models
                        .iter()
                        .map(|m| m.manifest.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            }
        })
    }
}

/// Resolves a `--model` argument to a model or manifest path: `None` → the best model in
/// the folder; an existing path or anything ending in `.onnx`/`.json` → that path; else
/// a model name looked up in the folder.
pub fn resolve_model(model: Option<&str>, dir: &Path) -> Result<PathBuf> {
    let Some(arg) = model else {
        return Ok(Registry::scan(dir)?.best()?.manifest_path.clone());
    };
    let as_path = Path::new(arg);
    if names_a_file(arg) {
        if !as_path.exists() {
            return Err(Error::ModelMissing {
                path: as_path.to_path_buf(),
            });
        }
        return Ok(as_path.to_path_buf());
    }
    Ok(Registry::scan(dir)?.find(arg)?.manifest_path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tpsnet_zoo::manifest::{Metrics, Precision, TrainingRecord};
    use tpsnet_zoo::publish::write_atomic;

    fn write_manifest(dir: &Path, name: &str, top1: f64, precision: Precision) {
        let spec = tpsnet_zoo::ResNetSpec::paper(&[1, 1, 1], 4, 2);
        let mut m = Manifest::describe(
            name,
            &spec,
            name.as_bytes(),
            Metrics {
                dataset: "cifar10-test".into(),
                images: 10_000,
                top1,
                top1_flip_tta: None,
                top1_6view: None,
                claim: "single".into(),
                how: "test".into(),
            },
            TrainingRecord::untrained(0),
        );
        m.precision = precision;
        let path = dir.join(Manifest::path_for_model(Path::new(&m.file)));
        write_atomic(&path, m.to_json().as_bytes()).unwrap();
    }

    #[test]
    fn best_skips_quantized_variants_which_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        write_manifest(dir.path(), "tiny", 90.0, Precision::Fp32);
        write_manifest(dir.path(), "tiny-int8", 90.1, Precision::Int8);
        let reg = Registry::scan(dir.path()).unwrap();
        assert_eq!(reg.best().unwrap().manifest.name, "tiny");
        let int8 = reg.find("tiny-int8").unwrap();
        assert_eq!(int8.manifest.precision, Precision::Int8);
        let path = resolve_model(Some("tiny-int8"), dir.path()).unwrap();
        assert_eq!(path, int8.manifest_path);

        // A folder of quantized models only still has a best model.
        let only = tempfile::tempdir().unwrap();
        write_manifest(only.path(), "tiny-int8", 90.1, Precision::Int8);
        let reg = Registry::scan(only.path()).unwrap();
        assert_eq!(reg.best().unwrap().manifest.name, "tiny-int8");
    }
}
