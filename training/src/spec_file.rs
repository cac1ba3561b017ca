//! Where a run's architecture comes from: a preset name, or a [`ResNetSpec`] as JSON
//! (a file, or inline text for `train-zoo trial --spec-json`).
//!
//! Specs refuse keys they do not know (`#[serde(deny_unknown_fields)]` on the spec and
//! its layers): a misspelt key would otherwise fall back to a default and train a
//! different network than the file describes.

use std::path::{Path, PathBuf};

use tpsnet_zoo::ResNetSpec;
use tpsnet_zoo::arch::PRESETS;

/// Why no spec could be had.
#[derive(Debug, thiserror::Error)]
pub enum SpecFileError {
    /// The name is neither a preset nor a `.json` file.
    #[error("unknown model `{model}`; use one of {known} or a spec .json file")]
    UnknownModel {
        /// The name given.
        model: String,
        /// The presets' names, comma-separated.
        known: String,
    },
    /// A spec file could not be read.
    #[error("cannot read spec file {path}: {source}")]
    Io {
        /// The spec file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The JSON is not a [`ResNetSpec`].
    #[error("{origin} is not a valid ResNetSpec JSON ({source})")]
    Invalid {
        /// Where the JSON came from (a file).
        origin: String,
        /// The parser's reason.
        source: serde_json::Error,
    },
    /// The spec is well-formed but not a valid network.
    #[error("spec {origin}: {source}")]
    Spec {
        /// Where the spec came from.
        origin: String,
        /// What is wrong with it.
        source: tpsnet_zoo::SpecError,
    },
}

/// A preset by name, or the spec in a `.json` file. Returns the name runs use by
/// default (the preset name or the file stem) with the checked spec.
pub fn resolve(model: &str) -> Result<(String, ResNetSpec), SpecFileError> {
    if let Some(spec) = ResNetSpec::preset(model) {
        return Ok((model.to_string(), spec));
    }
    let path = Path::new(model);
    if path.extension().is_some_and(|e| e == "json") {
        let spec = load(path)?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".into());
        return Ok((stem, spec));
    }
    Err(SpecFileError::UnknownModel {
        model: model.to_string(),
        known: PRESETS
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Reads and checks the spec in a JSON file.
pub fn load(path: &Path) -> Result<ResNetSpec, SpecFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and checks a spec given as JSON text; `origin` (a file name, or the flag that
/// carried the text) names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<ResNetSpec, SpecFileError> {
    let spec: ResNetSpec = serde_json::from_str(text).map_err(|source| SpecFileError::Invalid {
        origin: origin.to_string(),
        source,
    })?;
    spec.validate().map_err(|source| SpecFileError::Spec {
        origin: origin.to_string(),
        source,
    })?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_files_resolve_with_their_names() {
        let (name, spec) = resolve("tpsnet").unwrap();
        assert_eq!((name.as_str(), spec.params()), ("tpsnet", 4_959_770));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.json");
        let tiny = ResNetSpec::paper(&[1, 1, 1], 4, 2);
        std::fs::write(&path, serde_json::to_string(&tiny).unwrap()).unwrap();
        let (name, spec) = resolve(path.to_str().unwrap()).unwrap();
        assert_eq!((name.as_str(), spec), ("mine", tiny));
        let e = resolve("resnet9000").unwrap_err().to_string();
        assert!(
            e.contains("unknown model `resnet9000`") && e.contains("tpsnet"),
            "{e}"
        );
    }

    /// A misspelt key, at the top level or in a layer, is refused with the key and the
    /// file named; published manifests carry no such keys (runtime and zoo tests load them).
    #[test]
    fn unknown_keys_are_refused_naming_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.json");
        let good = serde_json::to_value(ResNetSpec::paper(&[1, 1, 1], 4, 2)).unwrap();
        for (in_layer, key) in [(false, "dropuot"), (true, "blokcs")] {
            let mut v = good.clone();
            let obj = if in_layer {
                v["layers"][1].as_object_mut().unwrap()
            } else {
                v.as_object_mut().unwrap()
            };
            obj.insert(key.into(), serde_json::json!(1));
            std::fs::write(&path, v.to_string()).unwrap();
            let e = load(&path).unwrap_err().to_string();
            assert!(
                e.contains("typo.json") && e.contains(&format!("unknown field `{key}`")),
                "{e}"
            );
        }
        let e = parse(r#"{"input_size": 32, "typo": 1}"#, "--spec-json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--spec-json") && e.contains("`typo`"), "{e}");
    }
}
