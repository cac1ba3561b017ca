//! Quantizing real zoo models end to end: calibration on training images only, the pip
//! `onnx` checker, ONNX Runtime through the runtime's `Classifier`, and agreement with the
//! fp32 model on real test images.
//!
//! Needs `CIFAR10_DIR` (skipped with a notice otherwise; fails in CI, which sets
//! `TPSNET_REQUIRE_DATA=1`), ONNX Runtime (`ORT_DYLIB_PATH`) and the set-up's Python with
//! `onnx` (`TPSNET_PYTHON`), both set by .cargo/config.toml.

use std::path::{Path, PathBuf};
use std::process::Command;

use tpsnet_quantize::publish::{ClaimOptions, int8_manifest, publish};
use tpsnet_quantize::{QuantizeOptions, RangeMethod, TrainingImages, quantize};
use tpsnet_runtime::classify::{model_and_manifest_paths, read_verified};
use tpsnet_runtime::preprocess::InputImage;
use tpsnet_runtime::registry::Registry;
use tpsnet_runtime::{Classifier, SessionOptions};
use tpsnet_zoo::cifar::{self, Cifar10, Split, TRAIN_FILES};
use tpsnet_zoo::manifest::Precision;

/// `$CIFAR10_DIR`, or `None` (skip with a notice); with `TPSNET_REQUIRE_DATA=1` (CI) a
/// missing folder fails the test instead.
fn cifar_dir() -> Option<PathBuf> {
    tpsnet_test_support::data::cifar_dir_or_skip()
}

fn models_dir() -> PathBuf {
    tpsnet_test_support::shipped::models_dir()
}

/// A CIFAR-10 folder holding the training batches only: whatever reads from it cannot
/// have seen a test image.
fn training_only_copy(dir: &Path) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for f in TRAIN_FILES.iter().chain(&[cifar::META_FILE]) {
        std::os::unix::fs::symlink(dir.join(f).canonicalize().unwrap(), t.path().join(f)).unwrap();
    }
    assert!(!t.path().join(cifar::TEST_FILE).exists());
    t
}

fn logits(clf: &Classifier, data: &Cifar10) -> Vec<usize> {
    let images: Vec<InputImage> = (0..data.len())
        .map(|i| InputImage::from_planar_rgb8(data.image(i)))
        .collect();
    clf.classify(&images, 1)
        .unwrap()
        .iter()
        .map(|p| p.index)
        .collect()
}

fn onnx_checker(path: &Path) {
    let python = std::env::var("TPSNET_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .args([
            "-c",
            "import sys, onnx; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)",
        ])
        .arg(path)
        .output()
        .expect("run python (did scripts/setup run?)");
    assert!(
        out.status.success(),
        "onnx checker rejected {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A published fp32 zoo model, its hash checked against its manifest.
struct ZooModel {
    model: PathBuf,
    manifest_path: PathBuf,
    source: tpsnet_zoo::manifest::Manifest,
    bytes: Vec<u8>,
}

fn zoo_fp32(name: &str) -> ZooModel {
    let registry = Registry::scan(&models_dir()).unwrap();
    let entry = registry
        .models
        .iter()
        .find(|m| m.manifest.name == name && m.manifest.precision.is_fp32())
        .unwrap_or_else(|| panic!("the zoo ships no fp32 {name}"));
    let (model, manifest_path, source) = model_and_manifest_paths(&entry.manifest_path).unwrap();
    let bytes = read_verified(&model, &manifest_path, &source).unwrap();
    ZooModel {
        model,
        manifest_path,
        source,
        bytes,
    }
}

/// Quantizes zoo model `name` from training images only, publishes it with claims on the
/// first `test_images` test images, and checks it against the fp32 model (and, if given,
/// whether the first conv ended up in int8).
fn quantize_zoo_model(
    name: &str,
    opts: &QuantizeOptions,
    test_images: usize,
    min_agreement: f64,
    first_conv_int8: Option<bool>,
) {
    let Some(dir) = cifar_dir() else {
        return;
    };
    let ZooModel {
        model,
        manifest_path,
        source,
        bytes,
    } = zoo_fp32(name);

    // Calibration and the choice of range method see training images only.
    let train_dir = training_only_copy(&dir);
    let images = TrainingImages::load(train_dir.path()).unwrap();
    let q = quantize(&model, &bytes, &images, opts, &|_| {}).unwrap();
    assert_eq!(q.selection.calibration.len(), opts.calibration_images);
    assert_eq!(q.selection.validation.len(), opts.validation_images);
    if let Some(int8) = first_conv_int8 {
        assert_eq!(
            !q.kept_fp32.contains(&"stem.conv".to_string()),
            int8,
            "{name}: first conv chosen by: {}",
            q.chosen_by
        );
    }

    let test = cifar::load(&dir, Split::Test)
        .unwrap()
        .subset(0..test_images);
    let out = tempfile::tempdir().unwrap();
    let claims = ClaimOptions {
        images_total: 10_000,
        session: SessionOptions::default(),
    };
    let published = publish(
        int8_manifest(&source, &q, images.len()),
        &q.bytes,
        &test,
        &claims,
        out.path(),
        &|_, _| {},
    )
    .unwrap();
    let m = &published.manifest;
    assert_eq!(m.name, format!("{name}-int8"));
    assert_eq!(m.precision, Precision::Int8);
    assert!(m.file.starts_with(&format!("{name}-int8-")) && m.file.ends_with(".onnx"));
    let record = m.quantization.as_ref().unwrap();
    assert_eq!(record.source.sha256, source.sha256);
    assert_eq!(record.calibration.split, "train");
    assert_eq!(record.calibration.images as usize, opts.calibration_images);
    assert_eq!(m.metrics.images as usize, test_images);
    assert_eq!(m.spec, source.spec);

    onnx_checker(&published.onnx);

    // ONNX Runtime runs it through the runtime, found by name like any model.
    let found = Registry::scan(out.path()).unwrap();
    let int8_path = tpsnet_runtime::registry::resolve_model(Some(&m.name), out.path()).unwrap();
    assert_eq!(int8_path, published.manifest_path);
    assert_eq!(found.best().unwrap().manifest.name, m.name);
    let fp32 = Classifier::open(&manifest_path, &SessionOptions::default()).unwrap();
    let int8 = Classifier::open(&int8_path, &SessionOptions::default()).unwrap();
    let (a, b) = (logits(&fp32, &test), logits(&int8, &test));
    let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
    let top1 = |p: &[usize]| {
        100.0
            * p.iter()
                .zip(&test.labels)
                .filter(|(x, y)| **x == **y as usize)
                .count() as f64
            / p.len() as f64
    };
    eprintln!(
        "{name}: int8 agrees with fp32 on {:.1} % of {test_images} test images; top-1 {:.2} % vs {:.2} %",
        100.0 * agree,
        top1(&b),
        top1(&a)
    );
    assert!(agree >= min_agreement, "{name}: agreement {agree}");
    assert!((top1(&a) - top1(&b)).abs() <= 3.0);
    // The claim in the manifest is what the runtime measures on the same images.
    assert!((m.metrics.top1 - top1(&b)).abs() < 1e-9);
}

#[test]
fn resnet20_quantizes_end_to_end() {
    quantize_zoo_model(
        "resnet20",
        // The defaults (512 calibration, 2,000 validation images), as `tpsnet-quantize
        // resnet20` runs: the first-conv budget (0.3 pp) needs the 2,000 validation
        // images to resolve it (on 500, one image is 0.2 pp).
        &QuantizeOptions::default(),
        500,
        0.95,
        // A plain ResNet's stem feeds integer ops: `choose` runs it in int8, as in the
        // shipped resnet20-int8.
        Some(true),
    );
}

#[test]
fn airnet_with_gelu_and_pooled_batchnorm_quantizes_end_to_end() {
    quantize_zoo_model(
        "airnet",
        &QuantizeOptions {
            calibration_images: 128,
            validation_images: 0,
            methods: vec![RangeMethod::Percentile { percentile: 99.999 }],
            ..QuantizeOptions::default()
        },
        300,
        0.95,
        None,
    );
}

/// Padding channels for ONNX Runtime's direct int8 convolution (the stem's 3 input
/// channels to 4 with the zero point, its 8 filters to 16 with zero filters, zero weights
/// for the extra channels; speed-ups measured in docs/quantization.md) leaves every integer
/// sum, hence every logit, exactly as it was: ONNX Runtime gives bit-identical outputs on
/// real images.
#[test]
fn padding_channels_changes_no_logit() {
    use prost::Message;
    use tpsnet_quantize::calibrate::{CalibrationRun, Measure, calibrate};
    use tpsnet_quantize::emit::{EmitOptions, emit};
    use tpsnet_quantize::engine::Engine;
    use tpsnet_quantize::pipeline::prepare;

    let Some(dir) = cifar_dir() else {
        return;
    };
    let ZooModel { model, bytes, .. } = zoo_fp32("resnet20");
    let images = TrainingImages::load(&dir).unwrap();
    let p = prepare(&model, &bytes, &[]).unwrap();
    let tensors: Vec<(String, String)> = p
        .plan
        .calibrate
        .iter()
        .map(|t| (t.clone(), p.plan.measured[t].clone()))
        .collect();
    let indices: Vec<usize> = (0..128).collect();
    let measure = Measure {
        tensors: &tensors,
        non_negative: &p.plan.non_negative,
    };
    let run = CalibrationRun {
        images: &images,
        indices: &indices,
        batch: 64,
        threads: 0,
    };
    let calibration = calibrate(&p.graph, &measure, &run, &|_, _| {}).unwrap();
    let params = calibration.params(RangeMethod::MinMax);
    let run = |pad: bool| {
        let opts = EmitOptions {
            pad_channels: pad,
            ..EmitOptions::default()
        };
        let m = emit(&p.graph, &p.plan, &params, &opts).unwrap();
        let graph = m.graph.as_ref().unwrap();
        let pads = graph.node.iter().filter(|n| n.op_type == "Pad").count();
        assert_eq!(pads, usize::from(pad));
        let stem = graph
            .initializer
            .iter()
            .find(|t| t.name == "stem.conv.weight_quantized")
            .unwrap();
        let want: [i64; 4] = if pad { [16, 4, 3, 3] } else { [8, 3, 3, 3] };
        assert_eq!(stem.dims, want);
        let b = m.encode_to_vec();
        let held_out: Vec<usize> = (1000..1512).collect();
        Engine::new(&model, &b, &p.graph.input.name, &p.graph.output.name, 0)
            .unwrap()
            .logits(&images, &held_out, 128)
            .unwrap()
    };
    let (padded, plain) = (run(true), run(false));
    assert_eq!(padded.len(), 512 * 10);
    assert!(padded.iter().any(|&v| v != padded[0]));
    assert!(
        padded
            .iter()
            .zip(&plain)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "padding changed a logit"
    );
}

/// The zoo's heads pool with `AveragePool` over the whole 8×8 map; a model that writes the
/// same pool as `GlobalAveragePool` gets `com.microsoft.QLinearGlobalAveragePool`, which
/// ONNX Runtime runs, with the same predictions.
#[test]
fn a_global_average_pool_head_runs_on_uint8_too() {
    use prost::Message;
    use tpsnet_quantize::engine::Engine;
    use tpsnet_zoo::onnx::proto::ModelProto;

    let Some(dir) = cifar_dir() else {
        return;
    };
    let ZooModel { model, bytes, .. } = zoo_fp32("resnet20");
    let mut global = ModelProto::decode(&bytes[..]).unwrap();
    let pool = global
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "AveragePool")
        .unwrap();
    pool.op_type = "GlobalAveragePool".into();
    pool.attribute.clear();
    let global = global.encode_to_vec();

    let images = TrainingImages::load(&dir).unwrap();
    let opts = QuantizeOptions {
        calibration_images: 128,
        validation_images: 0,
        methods: vec![RangeMethod::MinMax],
        ..QuantizeOptions::default()
    };
    let ops = |b: &[u8]| -> Vec<String> {
        ModelProto::decode(b)
            .unwrap()
            .graph
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.clone())
            .collect()
    };
    let q_avg = quantize(&model, &bytes, &images, &opts, &|_| {}).unwrap();
    let q_global = quantize(&model, &global, &images, &opts, &|_| {}).unwrap();
    assert!(ops(&q_avg.bytes).contains(&"QLinearAveragePool".to_string()));
    let global_ops = ops(&q_global.bytes);
    assert!(
        global_ops.contains(&"QLinearGlobalAveragePool".to_string()),
        "{global_ops:?}"
    );
    assert!(
        !global_ops
            .iter()
            .any(|o| o.ends_with("AveragePool") && !o.starts_with("QLinear"))
    );

    let held_out: Vec<usize> = (2000..2512).collect();
    let predictions = |b: &[u8]| -> Vec<usize> {
        let logits = Engine::new(&model, b, "input", "logits", 0)
            .unwrap()
            .logits(&images, &held_out, 128)
            .unwrap();
        logits
            .chunks(10)
            .map(tpsnet_runtime::classify::argmax)
            .collect()
    };
    let (a, g) = (predictions(&q_avg.bytes), predictions(&q_global.bytes));
    let same = a.iter().zip(&g).filter(|(x, y)| x == y).count();
    eprintln!("AveragePool and GlobalAveragePool heads agree on {same} of 512 images");
    assert!(same >= 507, "only {same} of 512 predictions agree");
}
