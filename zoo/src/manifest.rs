//! The JSON manifest that sits beside every published ONNX file (docs/design-notes.md#conventions).
//!
//! A manifest pins the file by sha256 and size, and carries everything a user needs to
//! trust and use it: the architecture, the input contract, the measured metrics with how
//! they were measured, and how the model was trained.
//!
//! ```
//! use tpsnet_zoo::manifest::{Manifest, InputContract};
//! let json = serde_json::to_string(&InputContract::cifar10()).unwrap();
//! assert!(json.contains("\"value_range\":[0.0,1.0]"));
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::arch::ResNetSpec;
#[cfg(feature = "onnx")]
use crate::hashing::sha256_hex;
use crate::publish::is_plain_file_name;
#[cfg(feature = "onnx")]
use crate::publish::model_file_name;
use crate::tta::TtaMode;

/// Version of the manifest layout; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;
/// Largest manifest file [`Manifest::load`] reads: the zoo's are under 6 KB, so 1 MiB
/// leaves room while a multi-gigabyte `.json` in a models folder costs nothing.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// CIFAR-10 class names in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Per-channel mean the paper normalises with (applied inside the exported graph).
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// Per-channel std the paper normalises with (applied inside the exported graph).
pub const CIFAR10_STD: [f32; 3] = [0.2023, 0.1994, 0.2010];

/// Everything known about one published model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format version ([`SCHEMA_VERSION`]); readers refuse others.
    pub schema_version: u32,
    /// Short model name, e.g. `tpsnet`.
    pub name: String,
    /// File name of the ONNX model, `<name>-<sha256[:8]>.onnx`, in the manifest's folder:
    /// a plain file name, never a path ([`Manifest::load`] refuses anything else).
    pub file: String,
    /// Full lowercase hex sha256 of the ONNX file.
    pub sha256: String,
    /// Size of the ONNX file in bytes.
    pub bytes: u64,
    /// The architecture, enough to rebuild the network.
    pub spec: ResNetSpec,
    /// Exact trainable parameters.
    pub params: u64,
    /// Multiply-accumulates per image.
    pub macs: u64,
    /// What the graph takes as input.
    pub input: InputContract,
    /// What the graph returns.
    pub output: OutputContract,
    /// Class names in logit order.
    pub classes: Vec<String>,
    /// Claimed accuracies and how they were measured.
    pub metrics: Metrics,
    /// How the weights were trained.
    pub training: TrainingRecord,
    /// Facts of the ONNX encoding.
    pub onnx: OnnxInfo,
    /// Numeric format: `fp32` (left out of the JSON) or `int8` for a quantized variant.
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    /// How a quantized variant was made from its fp32 source (absent for fp32 models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantizationRecord>,
}

/// Numeric format of a published model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit float weights and activations (what the trainer exports).
    #[default]
    Fp32,
    /// 8-bit integer weights and activations (`tpsnet-quantize`, docs/quantization.md).
    Int8,
}

impl Precision {
    /// Whether this is [`Precision::Fp32`] (serde leaves the default out of the JSON).
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    /// `fp32` or `int8`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a quantized model was made: from which fp32 file, in which layout, calibrated on
/// which images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizationRecord {
    /// The fp32 model the variant was made from.
    pub source: SourceModel,
    /// The graph layout, e.g. `QOperator (QLinearConv, QLinearAdd)`.
    pub layout: String,
    /// How weights are stored, e.g. `int8, symmetric, per output channel`.
    pub weights: String,
    /// How activations are stored, e.g. `uint8, asymmetric, per tensor`.
    pub activations: String,
    /// Where the activation ranges came from.
    pub calibration: CalibrationRecord,
    /// Nodes of the source graph that were left in fp32, by name.
    pub float_nodes: Vec<String>,
    /// Tool and version, e.g. `tpsnet-quantize 0.1.0`.
    pub tool: String,
    /// Source commit of the tool (`-dirty` when modified).
    pub source_commit: String,
    /// UTC time the quantization finished (RFC 3339).
    pub finished_at: String,
}

/// The fp32 model a quantized variant was made from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceModel {
    /// The fp32 model's name.
    pub name: String,
    /// Its ONNX file name.
    pub file: String,
    /// Its sha256 (hex).
    pub sha256: String,
}

/// The images activation ranges were calibrated on (always training images, never the
/// test set) and how the ranges were chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationRecord {
    /// Data split, `train`.
    pub split: String,
    /// Number of calibration images.
    pub images: u64,
    /// Seed of the permutation the images were taken from.
    pub seed: u64,
    /// Which images, in words (reproducible from `seed`).
    pub selection: String,
    /// sha256 of the comma-separated calibration indices.
    pub indices_sha256: String,
    /// How each activation's clipping range was chosen, e.g. `mse`.
    pub range_method: String,
    /// How that method was chosen, in words (on training images only).
    pub chosen_by: String,
}

/// What the graph expects as input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputContract {
    /// Graph input name.
    pub name: String,
    /// `[batch, channels, height, width]`; `-1` marks the dynamic batch dimension.
    pub shape: [i64; 4],
    /// Tensor layout, `NCHW`.
    pub layout: String,
    /// Element type, `float32`.
    pub dtype: String,
    /// Channel order, `RGB`.
    pub color: String,
    /// Pixel values the graph expects: RGB scaled to this range (`[0, 1]`).
    pub value_range: [f32; 2],
    /// Normalisation applied *inside* the graph; callers must not apply it again.
    pub normalization: Normalization,
}

/// Per-channel normalisation `(x - mean) / std`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Per-channel mean, RGB.
    pub mean: [f32; 3],
    /// Per-channel standard deviation, RGB.
    pub std: [f32; 3],
    /// Whether the graph applies it itself (always true for zoo models).
    pub in_graph: bool,
}

impl InputContract {
    /// The contract of every zoo model: NCHW float32 RGB in [0, 1], 32x32, normalised
    /// inside the graph with the paper's constants.
    pub fn cifar10() -> Self {
        InputContract {
            name: "input".into(),
            shape: [-1, 3, 32, 32],
            layout: "NCHW".into(),
            dtype: "float32".into(),
            color: "RGB".into(),
            value_range: [0.0, 1.0],
            normalization: Normalization {
                mean: CIFAR10_MEAN,
                std: CIFAR10_STD,
                in_graph: true,
            },
        }
    }
}

/// What the graph returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputContract {
    /// Graph output name.
    pub name: String,
    /// `[batch, classes]`, `-1` for the dynamic batch.
    pub shape: [i64; 2],
    /// `logits`: apply softmax for probabilities.
    pub kind: String,
}

impl OutputContract {
    /// The contract of a classifier with `classes` logits and a dynamic batch.
    pub fn logits(classes: usize) -> Self {
        OutputContract {
            name: "logits".into(),
            shape: [-1, classes as i64],
            kind: "logits".into(),
        }
    }
}

/// Measured quality, and how it was measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Data the accuracy was measured on, e.g. `cifar10-test` (10,000 images).
    pub dataset: String,
    /// Number of images evaluated.
    pub images: u64,
    /// Top-1 accuracy in percent, single view.
    pub top1: f64,
    /// Top-1 in percent averaging the logits of the image and its horizontal flip.
    pub top1_flip_tta: Option<f64>,
    /// Top-1 in percent with six-view test-time augmentation ([`crate::tta`]); measured
    /// when the recipe claims it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1_6view: Option<f64>,
    /// Which of these the model claims as its headline number: `single`, `flip_tta` or
    /// `6view` ([`TtaMode::claim_name`]).
    pub claim: String,
    /// How it was measured, in words (e.g. "final epoch, no checkpoint selection, tch eval mode").
    pub how: String,
}

impl Metrics {
    /// The headline accuracy the manifest claims (percent).
    /// A claim whose mode has no number falls back to the single-view `top1`.
    pub fn claimed_top1(&self) -> f64 {
        self.top1_for(self.claim_mode()).unwrap_or(self.top1)
    }

    /// The test-time augmentation the headline claim was measured with (an unknown claim
    /// name reads as single view, whose number is always present).
    pub fn claim_mode(&self) -> TtaMode {
        TtaMode::from_claim_name(&self.claim).unwrap_or(TtaMode::None)
    }

    /// The top-1 measured in `mode`, if the manifest has one.
    pub fn top1_for(&self, mode: TtaMode) -> Option<f64> {
        match mode {
            TtaMode::None => Some(self.top1),
            TtaMode::Flip => self.top1_flip_tta,
            TtaMode::SixView => self.top1_6view,
        }
    }
}

/// How the weights were produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    /// Recipe name, e.g. `fast`.
    pub recipe: String,
    /// The recipe's full settings.
    pub recipe_config: serde_json::Value,
    /// Seed of the training run.
    pub seed: u64,
    /// Epochs trained.
    pub epochs: u32,
    /// Images the model trained on (train split size).
    pub train_images: u64,
    /// Training wall time in seconds (excluding evaluation and export).
    pub wall_time_s: f64,
    /// Mean training throughput.
    pub images_per_s: f64,
    /// Device description, e.g. `cuda:0 (NVIDIA H100 80GB HBM3)` or `cpu (2 threads)`.
    pub device: String,
    /// Digest of the training data (sha256 over the md5s of the CIFAR-10 files used).
    pub dataset_digest: String,
    /// Source commit of the trainer (`git rev-parse HEAD`, `-dirty` when modified).
    pub source_commit: String,
    /// UTC time the run finished (RFC 3339).
    pub finished_at: String,
    /// What a rerun of the same recipe should expect: its headline claim measured over
    /// seeds fixed in advance (absent where the recipe has no such measurement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_expectation: Option<SeedSpread>,
}

/// A recipe's headline claim over several seeds, each trained to its final epoch and
/// measured on the full test set: what one more run should land among.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSpread {
    /// The seeds, chosen before any of them ran.
    pub seeds: Vec<u64>,
    /// Each seed's claimed top-1 in percent, in the order of `seeds`.
    pub top1: Vec<f64>,
    /// The test-time augmentation of those numbers (as in [`Metrics::claim`]).
    pub claim: String,
    /// Where they were measured: the CPU or GPU and the precision of its convolutions.
    pub device: String,
}

impl SeedSpread {
    /// Mean of the seeds' top-1 (percent).
    pub fn mean(&self) -> f64 {
        self.top1.iter().sum::<f64>() / self.top1.len().max(1) as f64
    }

    /// Lowest and highest top-1 over the seeds (percent).
    pub fn range(&self) -> (f64, f64) {
        let lo = self.top1.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.top1.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    }
}

impl TrainingRecord {
    /// The record of weights that were never trained (benchmark models, test fixtures):
    /// every field says so.
    ///
    /// ```
    /// let r = tpsnet_zoo::manifest::TrainingRecord::untrained(7);
    /// assert_eq!((r.recipe.as_str(), r.seed, r.epochs), ("none", 7, 0));
    /// ```
    pub fn untrained(seed: u64) -> Self {
        TrainingRecord {
            recipe: "none".into(),
            recipe_config: serde_json::json!({}),
            seed,
            epochs: 0,
            train_images: 0,
            wall_time_s: 0.0,
            images_per_s: 0.0,
            device: "none".into(),
            dataset_digest: "none".into(),
            source_commit: "none".into(),
            finished_at: "1970-01-01T00:00:00Z".into(),
            rerun_expectation: None,
        }
    }
}

/// Facts of the ONNX encoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxInfo {
    /// ONNX default-domain operator set version.
    pub opset: i64,
    /// ONNX IR version.
    pub ir_version: i64,
    /// Whether BatchNorm was folded into the preceding convolutions.
    pub bn_folded: bool,
    /// Producer name and version recorded in the ONNX file.
    pub producer: String,
}

/// Errors reading or checking a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest cannot be read.
    #[error("cannot read manifest {path}: {source}")]
    Io {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Also covers unknown keys: serde's message names the key (`unknown field `x``).
    #[error("manifest {path} is not valid JSON for schema {SCHEMA_VERSION}: {source}")]
    Parse {
        /// The manifest file.
        path: PathBuf,
        /// serde's error (it names the line and key).
        source: serde_json::Error,
    },
    /// The manifest's `schema_version` is not [`SCHEMA_VERSION`].
    #[error(
        "manifest {path} has schema version {found}, this build reads {SCHEMA_VERSION}; update tpsnet-zoo or re-export the model"
    )]
    Schema {
        /// The manifest file.
        path: PathBuf,
        /// The version it declares.
        found: u32,
    },
    /// `file` is not a plain file name (it has folders, `..` or is absolute).
    #[error(
        "manifest {path} names the model file {file:?}, which is not a plain file name; `file` must name a file in the manifest's own folder (like `tpsnet-1a2b3c4d.onnx`), without folders, `..` or an absolute path: re-export the model or fix the manifest"
    )]
    FileNotPlain {
        /// The manifest file.
        path: PathBuf,
        /// The `file` value.
        file: String,
    },
}

impl Manifest {
    /// The manifest of the ONNX file `onnx_bytes` written by [`crate::onnx::export`] for
    /// `spec`: everything derivable (sha256, file name, size, parameter and MAC counts,
    /// input/output contracts, classes, ONNX facts) is computed here, so no caller can
    /// get it out of step with the file. (Feature `onnx`.)
    #[cfg(feature = "onnx")]
    pub fn describe(
        name: &str,
        spec: &ResNetSpec,
        onnx_bytes: &[u8],
        metrics: Metrics,
        training: TrainingRecord,
    ) -> Self {
        let sha256 = sha256_hex(onnx_bytes);
        Manifest {
            schema_version: SCHEMA_VERSION,
            name: name.to_string(),
            file: model_file_name(name, &sha256),
            sha256,
            bytes: onnx_bytes.len() as u64,
            spec: spec.clone(),
            params: spec.params(),
            macs: spec.macs(),
            input: InputContract::cifar10(),
            output: OutputContract::logits(spec.num_classes),
            classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
            metrics,
            training,
            onnx: OnnxInfo {
                opset: crate::onnx::OPSET,
                ir_version: crate::onnx::IR_VERSION,
                bn_folded: true,
                producer: format!("tpsnet-zoo {}", env!("CARGO_PKG_VERSION")),
            },
            precision: Precision::Fp32,
            quantization: None,
        }
    }

    /// Reads and parses a manifest, checking its schema version.
    /// Only regular files of at most [`MAX_MANIFEST_BYTES`] are read (a FIFO named
    /// `x.json` would block a models-folder scan forever).
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let io = |source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "it is {} bytes, over the {MAX_MANIFEST_BYTES} a manifest may have; it is not a zoo manifest",
                    meta.len()
                ),
            )));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ManifestError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let found = value
            .get("schema_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as u32;
        if found != SCHEMA_VERSION {
            return Err(ManifestError::Schema {
                path: path.to_path_buf(),
                found,
            });
        }
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|source| ManifestError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        if !is_plain_file_name(&manifest.file) {
            return Err(ManifestError::FileNotPlain {
                path: path.to_path_buf(),
                file: manifest.file,
            });
        }
        Ok(manifest)
    }

    /// Path of the ONNX file this manifest describes, given the manifest's own path.
    pub fn model_path(&self, manifest_path: &Path) -> PathBuf {
        manifest_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(&self.file)
    }

    /// The conventional manifest file name for a model file: `x.onnx` → `x.json`.
    pub fn path_for_model(model: &Path) -> PathBuf {
        model.with_extension("json")
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("manifest serialises");
        s.push('\n');
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::publish::write_atomic;

    pub(crate) fn sample() -> Manifest {
        let spec = ResNetSpec::paper(&[1, 1, 1], 4, 2);
        Manifest {
            schema_version: SCHEMA_VERSION,
            name: "tiny".into(),
            file: "tiny-0123abcd.onnx".into(),
            sha256: "0123abcd".repeat(8),
            bytes: 1234,
            params: spec.params(),
            macs: spec.macs(),
            spec,
            input: InputContract::cifar10(),
            output: OutputContract::logits(10),
            classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
            metrics: Metrics {
                dataset: "cifar10-test".into(),
                images: 10_000,
                top1: 50.0,
                top1_flip_tta: Some(51.0),
                top1_6view: None,
                claim: "flip_tta".into(),
                how: "final epoch".into(),
            },
            training: TrainingRecord {
                recipe: "fast".into(),
                recipe_config: serde_json::json!({"lr": 0.1}),
                seed: 0,
                epochs: 1,
                train_images: 100,
                wall_time_s: 1.0,
                images_per_s: 100.0,
                device: "cpu".into(),
                dataset_digest: "x".into(),
                source_commit: "y".into(),
                finished_at: "2026-11-26T00:00:00Z".into(),
                rerun_expectation: None,
            },
            onnx: OnnxInfo {
                opset: 17,
                ir_version: 8,
                bn_folded: true,
                producer: "tpsnet-zoo".into(),
            },
            precision: Precision::Fp32,
            quantization: None,
        }
    }

    #[test]
    fn roundtrip_and_schema_check() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tiny.json");
        let m = sample();
        write_atomic(&p, m.to_json().as_bytes()).unwrap();
        assert_eq!(Manifest::load(&p).unwrap(), m);
        assert_eq!(m.metrics.claimed_top1(), 51.0);
        assert_eq!(m.model_path(&p), dir.path().join("tiny-0123abcd.onnx"));

        let mut v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
        v["schema_version"] = 99.into();
        std::fs::write(&p, v.to_string()).unwrap();
        let e = Manifest::load(&p).unwrap_err().to_string();
        assert!(e.contains("schema version 99"), "{e}");

        std::fs::write(&p, "{not json").unwrap();
        assert!(matches!(
            Manifest::load(&p),
            Err(ManifestError::Parse { .. })
        ));
    }

    #[test]
    fn fp32_manifests_keep_their_json_and_int8_round_trips() {
        let m = sample();
        let json = m.to_json();
        assert!(!json.contains("precision") && !json.contains("quantization"));
        let mut q = sample();
        q.precision = Precision::Int8;
        q.quantization = Some(QuantizationRecord {
            source: SourceModel {
                name: "tiny".into(),
                file: "tiny-0123abcd.onnx".into(),
                sha256: "0123abcd".repeat(8),
            },
            layout: "QOperator".into(),
            weights: "int8".into(),
            activations: "uint8".into(),
            calibration: CalibrationRecord {
                split: "train".into(),
                images: 512,
                seed: 0,
                selection: "first 512".into(),
                indices_sha256: "ab".repeat(32),
                range_method: "mse".into(),
                chosen_by: "fixed".into(),
            },
            float_nodes: vec!["head.fc".into()],
            tool: "tpsnet-quantize".into(),
            source_commit: "x".into(),
            finished_at: "2026-11-30T00:00:00Z".into(),
        });
        let json = q.to_json();
        assert!(json.contains("\"precision\": \"int8\""), "{json}");
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, q);
    }

    #[test]
    fn unknown_keys_are_refused_naming_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tiny.json");
        let base: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        // A misspelt key at the top level and one inside each nested part.
        for pointer in [
            "",
            "/input",
            "/input/normalization",
            "/output",
            "/metrics",
            "/training",
            "/onnx",
        ] {
            let mut v = base.clone();
            v.pointer_mut(pointer)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert("top_1".into(), 1.into());
            std::fs::write(&p, v.to_string()).unwrap();
            let e = Manifest::load(&p).unwrap_err();
            assert!(matches!(e, ManifestError::Parse { .. }), "{pointer}: {e}");
            let msg = e.to_string();
            assert!(msg.contains("unknown field `top_1`"), "{pointer}: {msg}");
            assert!(msg.contains(&*p.to_string_lossy()), "{pointer}: {msg}");
        }
        // The untouched manifest still loads.
        std::fs::write(&p, base.to_string()).unwrap();
        assert_eq!(Manifest::load(&p).unwrap(), sample());
    }

    #[test]
    fn a_model_file_outside_the_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tiny.json");
        for bad in ["../tiny-0123abcd.onnx", "/tmp/tiny-0123abcd.onnx", ""] {
            let mut m = sample();
            m.file = bad.into();
            write_atomic(&p, m.to_json().as_bytes()).unwrap();
            let e = Manifest::load(&p).unwrap_err();
            assert!(matches!(e, ManifestError::FileNotPlain { .. }), "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains(&*p.to_string_lossy()), "{msg}");
        }
    }

    /// Every manifest the zoo ships reads with this build (no unknown keys, plain files).
    #[test]
    fn shipped_manifests_load() {
        tpsnet_test_support::shipped::manifests();
    }
}
