//! Publishing an int8 variant: `<name>-int8-<sha8>.onnx` beside its manifest, whose
//! accuracy claims are measured with the runtime's `verify` code on the test set after
//! every choice has been made.

use std::path::{Path, PathBuf};

use tpsnet_runtime::verify::{Evaluation, evaluate_modes};
use tpsnet_runtime::{Classifier, SessionOptions};
use tpsnet_zoo::Manifest;
use tpsnet_zoo::TtaMode;
use tpsnet_zoo::cifar::Cifar10;
use tpsnet_zoo::hashing::sha256_hex;
use tpsnet_zoo::manifest::{
    CalibrationRecord, Metrics, OnnxInfo, Precision, QuantizationRecord, SourceModel,
};
use tpsnet_zoo::publish::{model_file_name, write_atomic};

use crate::error::{Error, Result};
use crate::images::indices_sha256;
use crate::pipeline::Quantized;

/// Suffix of an int8 variant's name: `tpsnet` → `tpsnet-int8`.
pub const INT8_SUFFIX: &str = "-int8";

/// The name of `source`'s int8 variant.
pub fn int8_name(source: &str) -> String {
    format!("{source}{INT8_SUFFIX}")
}

/// The layout, in the manifest's words.
pub const LAYOUT: &str = "ONNX QOperator: QLinearConv and com.microsoft QLinearAdd (ReLU fused into their output range), MaxPool on uint8, average pools as com.microsoft QLinearAveragePool, QuantizeLinear/DequantizeLinear around the fp32 rest";
/// How weights are stored.
pub const WEIGHTS: &str = "int8, symmetric (zero point 0, codes -127..127; -64..64 where the conv's input zero point is 64 or more, so that no two uint8-int8 products overflow int16 on x86 CPUs without VNNI), one scale per output channel; biases int32";
/// How activations are stored.
pub const ACTIVATIONS: &str = "uint8, asymmetric, one scale and zero point per tensor";

/// Where the claims are measured.
#[derive(Clone, Debug)]
pub struct ClaimOptions {
    /// Test images (the full split for a published claim; fewer for a quick run).
    pub images_total: usize,
    /// Session settings for the measurement.
    pub session: SessionOptions,
}

/// The published files.
#[derive(Clone, Debug)]
pub struct Published {
    /// The int8 ONNX file written.
    pub onnx: PathBuf,
    /// Its manifest, written beside it.
    pub manifest_path: PathBuf,
    /// The manifest's contents.
    pub manifest: Manifest,
    /// The single-view measurement on the test images.
    pub single: Evaluation,
    /// The flip-TTA measurement on the test images.
    pub flip_tta: Evaluation,
    /// Six-view TTA, measured when the source model has a six-view number.
    pub six_view: Option<Evaluation>,
}

/// The int8 manifest of `q` made from `source` (claims still to be measured: zero).
pub fn int8_manifest(source: &Manifest, q: &Quantized, total_train: usize) -> Manifest {
    let sha = sha256_hex(&q.bytes);
    let name = int8_name(&source.name);
    let mut m = source.clone();
    // A seed spread measured the fp32 model's claim; this variant's claims are its own.
    m.training.rerun_expectation = None;
    m.file = model_file_name(&name, &sha);
    m.name = name;
    m.sha256 = sha;
    m.bytes = q.bytes.len() as u64;
    m.precision = Precision::Int8;
    m.onnx = OnnxInfo {
        opset: source.onnx.opset,
        ir_version: source.onnx.ir_version,
        bn_folded: true,
        producer: format!("tpsnet-quantize {}", env!("CARGO_PKG_VERSION")),
    };
    m.quantization = Some(QuantizationRecord {
        source: SourceModel {
            name: source.name.clone(),
            file: source.file.clone(),
            sha256: source.sha256.clone(),
        },
        layout: LAYOUT.into(),
        weights: WEIGHTS.into(),
        activations: ACTIVATIONS.into(),
        calibration: CalibrationRecord {
            split: "train".into(),
            images: q.selection.calibration.len() as u64,
            seed: q.selection.seed,
            selection: q.selection.describe(total_train),
            indices_sha256: indices_sha256(&q.selection.calibration),
            range_method: q.method.label(),
            chosen_by: q.chosen_by.to_string(),
        },
        float_nodes: q.float_nodes.clone(),
        tool: format!("tpsnet-quantize {}", env!("CARGO_PKG_VERSION")),
        source_commit: tpsnet_zoo::provenance::source_commit(),
        finished_at: tpsnet_zoo::provenance::utc_now(),
    });
    m
}

/// Measures `manifest`'s model (bytes `q`) on `test` — single view and flip TTA, and six
/// views when the source manifest has a six-view number, with the runtime's `verify`
/// code — and publishes `<name>-int8-<sha8>.onnx` with its manifest into `out_dir`
/// ([`tpsnet_zoo::publish::publish`]: atomically, manifest last, older versions of the same
/// int8 model removed). `progress(view, done)` reports test images done (`evaluate_modes`).
pub fn publish(
    mut manifest: Manifest,
    bytes: &[u8],
    test: &Cifar10,
    claims: &ClaimOptions,
    out_dir: &Path,
    progress: &dyn Fn(&str, u64),
) -> Result<Published> {
    let write = |p: &Path, b: &[u8]| {
        write_atomic(p, b).map_err(|source| Error::Write {
            path: p.to_path_buf(),
            source,
        })
    };
    // Measure through the same door users take (a manifest + model on disk, opened by
    // `Classifier`), from a private folder so no half-measured model is ever visible.
    // Hidden and named like an atomic write's temp file, so that the next run clears a
    // staging folder a killed run left behind, and no reader mistakes it for a model.
    let prefix = ".tpsnet-quantize.tmp-";
    tpsnet_zoo::publish::remove_stale_temp_files(out_dir, prefix);
    let staging = out_dir.join(format!("{prefix}{}", std::process::id()));
    let six_view_wanted =
        manifest.metrics.top1_6view.is_some() || manifest.metrics.claim_mode() == TtaMode::SixView;
    type Measured = (Evaluation, Evaluation, Option<Evaluation>);
    let measured = (|| -> Result<Measured> {
        let onnx = staging.join(&manifest.file);
        write(&onnx, bytes)?;
        let mut provisional = manifest.clone();
        provisional.metrics = placeholder_metrics(test.len());
        write(
            &Manifest::path_for_model(&onnx),
            provisional.to_json().as_bytes(),
        )?;
        let clf = Classifier::open(&onnx, &claims.session)?;
        let mut modes = vec![TtaMode::None, TtaMode::Flip];
        if six_view_wanted {
            modes.push(TtaMode::SixView);
        }
        let mut evaluations = evaluate_modes(&clf, test, &modes, progress)?.into_iter();
        let single = evaluations.next().expect("one evaluation per mode");
        let flip = evaluations.next().expect("one evaluation per mode");
        let six = evaluations.next();
        Ok((single, flip, six))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    let (single, flip_tta, six_view) = measured?;

    let full = test.len() == claims.images_total;
    manifest.metrics = Metrics {
        dataset: "cifar10-test".into(),
        images: test.len() as u64,
        top1: single.top1,
        top1_flip_tta: Some(flip_tta.top1),
        top1_6view: six_view.as_ref().map(|e| e.top1),
        claim: manifest.metrics.claim.clone(),
        how: format!(
            "int8 model measured after quantization by tpsnet-runtime's verify code (ONNX Runtime, \
             CPU execution provider, batch {}) on {}; flip_tta averages the logits of each \
             image and its mirror, 6view those of six views (tpsnet_zoo::tta); nothing was chosen on \
             the test set",
            claims.session.batch_size,
            if full {
                format!("the full {}-image test set", test.len())
            } else {
                format!("the first {} test images (a quick run)", test.len())
            }
        ),
    };
    let files =
        tpsnet_zoo::publish::publish(out_dir, &manifest, bytes).map_err(|e| Error::Write {
            path: e.path,
            source: e.source,
        })?;
    Ok(Published {
        onnx: files.model,
        manifest_path: files.manifest,
        manifest,
        single,
        flip_tta,
        six_view,
    })
}

fn placeholder_metrics(images: usize) -> Metrics {
    Metrics {
        dataset: "cifar10-test".into(),
        images: images as u64,
        top1: 0.0,
        top1_flip_tta: None,
        top1_6view: None,
        claim: "single".into(),
        how: "not yet measured".into(),
    }
}
