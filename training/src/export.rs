//! From trained tch variables to `<name>-<sha8>.onnx` plus its hashed manifest.

use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Device, Kind};
use zoo::manifest::{self, Manifest, Metrics, TrainingRecord};
use zoo::onnx::{self, ExportOptions};
use zoo::{ResNetSpec, WeightTensor, Weights};

// Shared with `tpsnet-quantize`, which publishes into the same folders.
pub use zoo::manifest::remove_older_versions;
pub use zoo::provenance::{source_commit, utc_now};

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
