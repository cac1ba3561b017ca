//! The int8 variants shipped in `models/` keep issue 16's promises, read from the
//! manifests (no inference: `tests/published.rs` re-measures every claim, int8 included,
//! on the full test set with the runtime's `verify` code):
//!
//! * every fp32 zoo model has an int8 variant, made from the fp32 file shipped now (the
//!   sha256 in `quantization.source`), calibrated on training images;
//! * its top-1 is within 0.3 pp of its fp32 model in every mode both claim (single view,
//!   flip TTA, six views), on the full test set;
//! * the pip `onnx` checker (`full_check=True`) passes on each file.
//!
//! After an fp32 model is replaced, `tpsnet-quantize NAME` remakes its variant.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use tpsnet_runtime::registry::{ModelEntry, Registry};
use tpsnet_zoo::TtaMode;
use tpsnet_zoo::tta::TTA_MODES;

/// Issue 16's accuracy target: the largest top-1 drop allowed against fp32, in pp.
const MAX_DROP_PP: f64 = 0.3;

fn shipped() -> (Vec<ModelEntry>, Vec<ModelEntry>) {
    let registry = Registry::scan(&tpsnet_test_support::shipped::models_dir()).unwrap();
    assert!(registry.invalid.is_empty(), "{:?}", registry.invalid);
    registry
        .models
        .into_iter()
        .partition(|m| m.manifest.precision.is_fp32())
}

#[test]
fn every_fp32_model_has_an_int8_variant_of_its_current_file_within_the_target() {
    let (fp32, int8) = shipped();
    assert!(!fp32.is_empty(), "the zoo ships no fp32 model");
    let by_name: HashMap<&str, &ModelEntry> =
        int8.iter().map(|m| (m.manifest.name.as_str(), m)).collect();
    let mut problems = Vec::new();
    for f in &fp32 {
        let src = &f.manifest;
        let name = tpsnet_quantize::publish::int8_name(&src.name);
        let Some(q) = by_name.get(name.as_str()) else {
            problems.push(format!(
                "{}: no int8 variant (run `tpsnet-quantize {}`)",
                src.name, src.name
            ));
            continue;
        };
        let m = &q.manifest;
        let record = m
            .quantization
            .as_ref()
            .expect("int8 manifest without record");
        if record.source.sha256 != src.sha256 {
            problems.push(format!(
                "{name} was made from {} (sha256 {}), but models/ ships {} now (run `tpsnet-quantize {}`)",
                record.source.file, record.source.sha256, src.file, src.name
            ));
        }
        assert_eq!(record.calibration.split, "train", "{name}");
        assert!(record.calibration.images > 0, "{name}");
        assert_eq!(
            m.metrics.images, 10_000,
            "{name}: claims on the full test set"
        );
        assert_eq!(m.spec, src.spec, "{name}");
        assert_eq!(
            m.metrics.claim, src.metrics.claim,
            "{name}: same headline mode"
        );
        for mode in TTA_MODES {
            if let (Some(a), Some(b)) = (src.metrics.top1_for(mode), m.metrics.top1_for(mode)) {
                eprintln!(
                    "{name} {}: {b:.2} % vs fp32 {a:.2} % ({:+.2} pp)",
                    mode.claim_name(),
                    b - a
                );
                if a - b > MAX_DROP_PP + 1e-9 {
                    problems.push(format!(
                        "{name} {}: {b:.2} % is more than {MAX_DROP_PP} pp below fp32's {a:.2} %",
                        mode.claim_name()
                    ));
                }
            } else if mode != TtaMode::SixView {
                problems.push(format!("{name}: no {} claim", mode.claim_name()));
            }
        }
    }
    for q in &int8 {
        let record = q.manifest.quantization.as_ref().unwrap();
        if !fp32.iter().any(|f| f.manifest.name == record.source.name) {
            problems.push(format!(
                "{}: its source {} is not shipped",
                q.manifest.name, record.source.name
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_onnx_checker_passes_on_every_int8_model() {
    let (_, int8) = shipped();
    let files: Vec<PathBuf> = int8
        .iter()
        .map(|m| m.manifest_path.with_file_name(&m.manifest.file))
        .collect();
    if files.is_empty() {
        return; // The test above reports the missing variants.
    }
    let python = std::env::var("TPSNET_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .args([
            "-c",
            "import sys, onnx\n\
             for p in sys.argv[1:]:\n    onnx.checker.check_model(onnx.load(p), full_check=True)",
        ])
        .args(&files)
        .output()
        .expect("run python (did scripts/setup run?)");
    assert!(
        out.status.success(),
        "onnx checker: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
