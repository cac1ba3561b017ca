//! train → export → publish: one model from a [`RunConfig`] to an ONNX file with its
//! manifest, and (optionally) into a published-models folder such as `models/`.
//!
//! `train-zoo` runs every model through [`run`], and so does the search's
//! `--retrain-top`, so retrained search winners are checkpointed, exported and published
//! exactly like zoo models.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tpsnet_zoo::manifest::{Metrics, TrainingRecord};

use crate::checkpoint::checkpoint_path;
use crate::config::RunConfig;
use crate::dataset::Cifar10Tensors;
use crate::device;
use crate::error::TrainError;
use crate::evaluation::FinalMetrics;
use crate::export::{
    ExportError, ExportFacts, export_model, source_commit, utc_now, weights_from_varstore,
};
use crate::recipe::Recipe;
use crate::trainer::{RunResult, TrainEvent, fit};

/// One model to train and export.
#[derive(Clone, Debug)]
pub struct TrainJob {
    /// The run to train.
    pub run: RunConfig,
    /// Discard an existing checkpoint and start over.
    pub restart: bool,
    /// Also copy the ONNX file, manifest, curves and logs into this folder.
    pub publish_to: Option<PathBuf>,
}

/// Why a model was not exported.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Writing the ONNX file or its manifest failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Reading or publishing a manifest failed.
    #[error(transparent)]
    Manifest(#[from] tpsnet_zoo::manifest::ManifestError),
    /// Copying a file (publishing) failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError + '_ {
    move |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How a [`run`] ended.
#[derive(Debug)]
pub enum Outcome {
    /// `stop_after` ended the run early; its checkpoint waits for a resume.
    Stopped {
        /// Epochs trained so far.
        epochs_done: u32,
        /// Epochs in the run.
        epochs: u32,
    },
    /// Trained to the end and exported.
    Exported(Box<ExportedModel>),
}

/// A trained and exported model (what `train-zoo --json` prints per model).
#[derive(Clone, Debug, Serialize)]
pub struct ExportedModel {
    /// The model's name.
    pub name: String,
    /// Single-view top-1 accuracy (%) on the test images.
    pub top1: f64,
    /// Top-1 accuracy (%) with flip TTA (each image and its mirror).
    pub top1_flip_tta: f64,
    /// Six-view TTA top-1, when the recipe claims it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1_6view: Option<f64>,
    /// Test images the accuracies were measured on.
    pub test_images: usize,
    /// Epochs trained.
    pub epochs: u32,
    /// Wall-clock seconds of training steps.
    pub train_time_s: f64,
    /// Training throughput, in images per second.
    pub images_per_s: f64,
    /// The exported ONNX file in the run folder.
    pub onnx: PathBuf,
    /// Its manifest (JSON) beside it.
    pub manifest: PathBuf,
    /// The ONNX file's sha256 (hex).
    pub sha256: String,
    /// The published ONNX file, with `publish_to`.
    pub published: Option<PathBuf>,
}

/// Trains (or resumes) `job.run` on `data`, exports the final weights into the run
/// folder, and publishes them when asked. A finished run is only re-exported.
pub fn run(
    job: &TrainJob,
    data: &Cifar10Tensors,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<Outcome, PipelineError> {
    let cfg = &job.run;
    if job.restart {
        let ck = checkpoint_path(&cfg.run_dir);
        if ck.exists() {
            std::fs::remove_file(&ck).map_err(io_err(&ck))?;
        }
    }
    let result = fit(cfg, data, on_event)?;
    let Some(fm) = result.final_metrics.clone() else {
        return Ok(Outcome::Stopped {
            epochs_done: result.epochs_done,
            epochs: cfg.recipe.epochs,
        });
    };
    // Evaluation runs in fp32 whatever the training step's convolutions ran in.
    let facts = ExportFacts {
        name: cfg.name.clone(),
        metrics: manifest_metrics(&fm, &cfg.recipe, &device::describe(cfg.device)),
        training: training_record(cfg, &result, &run_device(cfg.device, cfg.recipe.cpu_bf16)),
    };
    let weights = weights_from_varstore(&result.vs);
    let (onnx, manifest) = export_model(&cfg.spec, &weights, facts, &cfg.run_dir)?;
    let published = match &job.publish_to {
        Some(out) => Some(publish(&cfg.name, &cfg.run_dir, &onnx, &manifest, out)?),
        None => None,
    };
    let sha256 = tpsnet_zoo::Manifest::load(&manifest)?.sha256;
    Ok(Outcome::Exported(Box::new(ExportedModel {
        name: cfg.name.clone(),
        top1: fm.top1,
        top1_flip_tta: fm.top1_flip_tta,
        top1_6view: fm.top1_6view,
        test_images: fm.test_images,
        epochs: result.epochs_done,
        train_time_s: result.train_time_s,
        images_per_s: result.images_per_s,
        onnx,
        manifest,
        sha256,
        published,
    })))
}

/// The manifest's accuracy claim: final epoch, no checkpoint selection, single view and
/// flip TTA both recorded (and six-view TTA when the recipe claims it), the recipe's
/// choice as the claim.
fn manifest_metrics(fm: &FinalMetrics, recipe: &Recipe, device: &str) -> Metrics {
    let ema_note = if recipe.ema.is_some() {
        " (EMA weights)"
    } else {
        ""
    };
    Metrics {
        dataset: if fm.test_images == 10_000 {
            "cifar10-test".into()
        } else {
            format!("cifar10-test[:{}]", fm.test_images)
        },
        images: fm.test_images as u64,
        top1: fm.top1,
        top1_flip_tta: Some(fm.top1_flip_tta),
        top1_6view: fm.top1_6view,
        claim: recipe.tta_mode().claim_name().into(),
        how: format!(
            "final epoch{ema_note}, no checkpoint selection; fp32 eval mode in libtorch on {device}; flip_tta averages the logits of each image and its mirror{}",
            if fm.top1_6view.is_some() {
                "; 6view averages mirror x {no shift, 1 px down-right, 1 px up-left} (reflect padding), weights 1/4 for the unshifted pair and 1/8 for each shifted view"
            } else {
                ""
            }
        ),
    }
}

fn training_record(cfg: &RunConfig, result: &RunResult, device: &str) -> TrainingRecord {
    TrainingRecord {
        recipe: cfg.recipe.name.clone(),
        recipe_config: serde_json::to_value(&cfg.recipe).expect("recipe serialises"),
        seed: cfg.seed,
        epochs: result.epochs_done,
        train_images: result.train_images as u64,
        wall_time_s: result.train_time_s,
        images_per_s: result.images_per_s,
        device: device.to_string(),
        dataset_digest: result.dataset_digest.clone(),
        source_commit: source_commit(),
        finished_at: utc_now(),
        rerun_expectation: crate::expectations::for_run(cfg),
    }
}

/// Copies a finished model and its curves/logs into a published-models folder; returns
/// the published ONNX file. Older versions of the same model there are removed.
pub fn publish(
    name: &str,
    run_dir: &Path,
    onnx: &Path,
    manifest: &Path,
    out: &Path,
) -> Result<PathBuf, PipelineError> {
    let m = tpsnet_zoo::Manifest::load(manifest)?;
    let bytes = std::fs::read(onnx).map_err(io_err(onnx))?;
    let published_model = tpsnet_zoo::publish::publish(out, &m, &bytes)
        .map_err(|e| io_err(&e.path)(e.source))?
        .model;
    for (src, dst) in [
        ("loss.png", format!("{name}-loss.png")),
        ("accuracy.png", format!("{name}-accuracy.png")),
        ("metrics.csv", format!("{name}-metrics.csv")),
        ("metrics.jsonl", format!("{name}-metrics.jsonl")),
    ] {
        let s = run_dir.join(src);
        if s.exists() {
            let b = std::fs::read(&s).map_err(io_err(&s))?;
            let d = out.join(dst);
            tpsnet_zoo::publish::write_atomic(&d, &b).map_err(io_err(&d))?;
        }
    }
    Ok(published_model)
}

/// The device as a manifest records it: [`device::describe`], plus the convolutions'
/// precision where the recipe asked for bf16 on a CPU (whether this CPU honoured it).
pub fn run_device(dev: tch::Device, cpu_bf16: bool) -> String {
    match crate::conv_precision::describe(cpu_bf16, dev) {
        Some(precision) => format!("{}, {precision}", device::describe(dev)),
        None => device::describe(dev),
    }
}
