//! From trained tch variables to `<name>-<sha8>.onnx` plus its hashed manifest.

use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Device, Kind};
use tpsnet_zoo::manifest::{Manifest, Metrics, TrainingRecord};
use tpsnet_zoo::onnx::{self, ExportOptions};
use tpsnet_zoo::{ResNetSpec, WeightTensor, Weights};

pub use tpsnet_zoo::provenance::{source_commit, utc_now};

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
    /// The model's name (file names and the manifest).
    pub name: String,
    /// Its measured accuracies.
    pub metrics: Metrics,
    /// How it was trained (recipe, seed, data, time, commit).
    pub training: TrainingRecord,
}

/// Why a model could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The weights could not be written as an ONNX graph.
    #[error("export of {name}: {source}")]
    Onnx {
        /// The model's name.
        name: String,
        /// The ONNX writer's reason.
        source: tpsnet_zoo::onnx::ExportError,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// Exports the ONNX file and publishes it with its manifest into `out_dir`
/// ([`tpsnet_zoo::publish::publish`]: atomically, manifest last, earlier versions of the same
/// name removed); returns `(onnx_path, manifest_path)`.
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
    let published =
        tpsnet_zoo::publish::publish(out_dir, &m, &bytes).map_err(|e| ExportError::Io {
            path: e.path,
            source: e.source,
        })?;
    Ok((published.model, published.manifest))
}
