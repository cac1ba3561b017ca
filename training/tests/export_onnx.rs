//! The exported ONNX graph computes what the tch model computes.
//!
//! Outside clients only: the pip `onnx` checker (`full_check=True`) and Python
//! onnxruntime, fed real CIFAR-10 test images. Needs `CIFAR10_DIR` and the set-up's
//! Python (`TPSNET_PYTHON`, set by .cargo/config.toml).

mod common;
use common::cifar_dir;

use std::path::Path;
use std::process::Command;

use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};
use tpsnet_training::export::{ExportFacts, export_model, weights_from_varstore};
use tpsnet_training::model::ResNet;
use tpsnet_training::predict::predict_logits;
use tpsnet_zoo::ResNetSpec;
use tpsnet_zoo::cifar::{self, Split};

fn python() -> String {
    std::env::var("TPSNET_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// First `n` real test images as float N×3×32×32 in [0, 1].
fn test_images(dir: &Path, n: usize) -> Tensor {
    let data = cifar::load(dir, Split::Test).unwrap().subset(0..n);
    Tensor::from_slice(&data.images)
        .view([n as i64, 3, 32, 32])
        .to_kind(Kind::Float)
        / 255.0
}

/// Gives BN non-trivial affine terms and data-calibrated running statistics (a few
/// train-mode passes over real images), so folding is exercised at realistic scales.
/// The BatchNorms behind a max-pool (`plain_pool_first` and `pool_residual` blocks) get
/// about a quarter of their scales negative: a max-pool does not commute with a negative
/// scale, which export must survive by keeping those BNs out of the conv.
fn randomize_batchnorm(
    vs: &VarStore,
    model: &ResNet,
    images: &Tensor,
    seed: i64,
    spec: &ResNetSpec,
) {
    tch::manual_seed(seed);
    let _g = tch::no_grad_guard();
    let behind_pool: Vec<String> = spec
        .blocks()
        .iter()
        .filter(|b| {
            matches!(
                b.kind,
                tpsnet_zoo::BlockKind::PlainPoolFirst | tpsnet_zoo::BlockKind::PoolResidual
            )
        })
        .map(|b| format!("{}.bn1.weight", b.prefix()))
        .collect();
    for (name, t) in vs.variables() {
        let mut t = t.shallow_clone();
        let s = t.size();
        if name.contains(".bn") && name.ends_with(".weight") {
            let opts = (Kind::Float, Device::Cpu);
            let scale = Tensor::rand(s.as_slice(), opts) * 0.4 + 0.8;
            let scale = if behind_pool.contains(&name) {
                let sign = Tensor::rand(s.as_slice(), opts)
                    .lt(0.25)
                    .to_kind(Kind::Float)
                    * -2.0
                    + 1.0;
                scale * sign
            } else {
                scale
            };
            t.copy_(&scale);
        } else if name.contains(".bn") && name.ends_with(".bias") {
            t.copy_(&(Tensor::randn(s.as_slice(), (Kind::Float, Device::Cpu)) * 0.1));
        }
        let _ = &mut t;
    }
    for _ in 0..12 {
        let _ = model.forward_t(images, true);
    }
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Runs ONNX Runtime (Python) on `images`; returns (batched logits, one-by-one logits).
fn ort_logits(onnx_path: &Path, images: &Tensor, tmp: &Path) -> (Vec<f32>, Vec<f32>) {
    let n = images.size()[0];
    let img_path = tmp.join("images.f32");
    let flat = Vec::<f32>::try_from(&images.contiguous().view([-1])).unwrap();
    let bytes: Vec<u8> = flat.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&img_path, bytes).unwrap();
    let (ob, os) = (tmp.join("batch.f32"), tmp.join("single.f32"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ort_logits.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(onnx_path)
        .arg(&img_path)
        .arg(n.to_string())
        .arg(&ob)
        .arg(&os)
        .output()
        .expect("run python (did scripts/setup run?)");
    assert!(
        out.status.success(),
        "onnx checker / onnxruntime failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (read_f32(&ob), read_f32(&os))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_spec(name: &str, spec: &ResNetSpec, dir: &Path, n: usize) {
    tch::manual_seed(11);
    let vs = VarStore::new(Device::Cpu);
    let model = ResNet::new(&vs.root(), spec);
    let images = test_images(dir, n);
    randomize_batchnorm(&vs, &model, &images, 12, spec);
    let weights = weights_from_varstore(&vs);
    let bytes = tpsnet_zoo::onnx::export(spec, &weights, &Default::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let onnx_path = tmp.path().join(format!("{name}.onnx"));
    std::fs::write(&onnx_path, bytes).unwrap();

    let want = predict_logits(&model, &images, Device::Cpu, 16, tpsnet_zoo::TtaMode::None);
    let want = Vec::<f32>::try_from(&want.view([-1])).unwrap();
    let (batch, single) = ort_logits(&onnx_path, &images, tmp.path());
    let d = max_abs_diff(&want, &batch);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!("{name}: max |tch - onnxruntime| = {d:e} (max |logit| {scale})");
    assert!(
        d < 1e-4,
        "{name}: ONNX Runtime logits differ from tch by {d}"
    );
    let d1 = max_abs_diff(&batch, &single);
    eprintln!("{name}: max |batch {n} - batch 1| = {d1:e}");
    assert_eq!(d1, 0.0, "{name}: batch 1 and batch {n} differ by {d1}");
}

#[test]
fn presets_match_tch_in_onnxruntime() {
    let Some(dir) = cifar_dir() else { return };
    for p in tpsnet_zoo::arch::PRESETS {
        check_spec(p.name, &p.spec(), &dir, 8);
    }
}

#[test]
fn unusual_specs_match_tch_in_onnxruntime() {
    let Some(dir) = cifar_dir() else { return };
    // 5x5 convs, 3x3 skips, a non-global pool, four layers, dropout (identity at eval).
    let mut spec = ResNetSpec::paper(&[1, 2, 1, 1], 4, 2);
    spec.layers[1].conv_kernel = 5;
    spec.layers[2].skip_kernel = 3;
    spec.pool = 2;
    spec.dropout = 0.3;
    spec.validate().unwrap();
    check_spec("unusual", &spec, &dir, 16);
}

#[test]
fn mixed_plain_and_residual_specs_match_tch_in_onnxruntime() {
    let Some(dir) = cifar_dir() else { return };
    // An unpadded 5x5 stem (32 -> 28), a residual layer, then plain layers (one with
    // two blocks, one pooling by 3 with flooring: 14 -> 4), a max-pool head.
    let mut spec = ResNetSpec::paper(&[1, 1, 1], 4, 2);
    spec.stem_kernel = 5;
    spec.stem_padding = Some(0);
    spec.layers[1].kind = tpsnet_zoo::BlockKind::Plain;
    spec.layers[1].blocks = 2;
    spec.layers[2].kind = tpsnet_zoo::BlockKind::Plain;
    spec.layers[2].stride = 3;
    spec.pool = 2;
    spec.head_pool = tpsnet_zoo::HeadPool::Max;
    spec.validate().unwrap();
    assert_eq!(spec.final_size(), 4);
    check_spec("mixed", &spec, &dir, 8);
}

#[test]
fn gelu_and_pool_first_specs_match_tch_in_onnxruntime() {
    let Some(dir) = cifar_dir() else { return };
    // GELU everywhere, an even 4x4 stem padded by 1 (32 -> 31), a residual layer, a
    // two-block pool-first layer pooling by 3 (31 -> 10), a plain layer (10 -> 5); the
    // randomised BN scales include negative ones, which pool-first export must survive.
    let mut spec = ResNetSpec::paper(&[1, 2, 1], 4, 2);
    spec.activation = tpsnet_zoo::Activation::Gelu;
    spec.stem_kernel = 4;
    spec.stem_padding = Some(1);
    spec.layers[0].stride = 1;
    spec.layers[1].kind = tpsnet_zoo::BlockKind::PlainPoolFirst;
    spec.layers[1].stride = 3;
    spec.layers[2].kind = tpsnet_zoo::BlockKind::Plain;
    spec.pool = 5;
    spec.head_pool = tpsnet_zoo::HeadPool::Max;
    spec.validate().unwrap();
    assert_eq!(spec.final_size(), 5);
    check_spec("gelu-pool-first", &spec, &dir, 8);
}

#[test]
fn pool_residual_specs_match_tch_in_onnxruntime() {
    let Some(dir) = cifar_dir() else { return };
    // airbench96's three-conv blocks with what the preset does not exercise: ReLU, a
    // 3x3 stem padded as usual (32 -> 32), a two-block layer (the second block keeps
    // the map, pool 1), 5x5 convs, pooling by 3 with flooring (16 -> 5), next to a
    // residual and a plain_pool_first layer, an average-pool head, dropout (identity at
    // eval); the BN scales behind the max-pools include negative ones.
    let mut spec = ResNetSpec::paper(&[1, 2, 1, 1], 4, 2);
    spec.layers[1].kind = tpsnet_zoo::BlockKind::PoolResidual;
    spec.layers[1].conv_kernel = 5;
    spec.layers[2].kind = tpsnet_zoo::BlockKind::PoolResidual;
    spec.layers[2].stride = 3;
    spec.layers[3].kind = tpsnet_zoo::BlockKind::PlainPoolFirst;
    spec.layers[3].stride = 1;
    spec.pool = 5;
    spec.dropout = 0.2;
    spec.validate().unwrap();
    assert_eq!(spec.final_size(), 5);
    check_spec("pool-residual", &spec, &dir, 8);
}

#[test]
fn export_model_writes_hashed_file_and_manifest() {
    let spec = ResNetSpec::paper(&[1, 1, 1], 4, 2);
    let vs = VarStore::new(Device::Cpu);
    let _m = ResNet::new(&vs.root(), &spec);
    let tmp = tempfile::tempdir().unwrap();
    // An older version of the same model is replaced, another model is left alone.
    std::fs::write(tmp.path().join("tiny-00000000.onnx"), b"old").unwrap();
    std::fs::write(tmp.path().join("tiny-00000000.json"), b"{}").unwrap();
    std::fs::write(tmp.path().join("tinier-00000000.onnx"), b"other").unwrap();
    let facts = ExportFacts {
        name: "tiny".into(),
        metrics: tpsnet_zoo::manifest::Metrics {
            dataset: "cifar10-test".into(),
            images: 10_000,
            top1: 10.0,
            top1_flip_tta: Some(10.0),
            top1_6view: None,
            claim: "single".into(),
            how: "test".into(),
        },
        training: tpsnet_zoo::manifest::TrainingRecord {
            recipe: "fast".into(),
            recipe_config: serde_json::json!({}),
            seed: 0,
            epochs: 0,
            train_images: 0,
            wall_time_s: 0.0,
            images_per_s: 0.0,
            device: "cpu".into(),
            dataset_digest: "none".into(),
            source_commit: tpsnet_training::export::source_commit(),
            finished_at: tpsnet_training::export::utc_now(),
            rerun_expectation: None,
        },
    };
    let (onnx, manifest) =
        export_model(&spec, &weights_from_varstore(&vs), facts, tmp.path()).unwrap();
    let m = tpsnet_zoo::Manifest::load(&manifest).unwrap();
    let (sha, size) = tpsnet_zoo::hashing::sha256_file(&onnx).unwrap();
    assert_eq!((m.sha256.as_str(), m.bytes), (sha.as_str(), size));
    assert_eq!(
        onnx.file_name().unwrap().to_str().unwrap(),
        format!("tiny-{}.onnx", &sha[..8])
    );
    assert_eq!(m.params, spec.params());
    assert!(m.input.normalization.in_graph);
    assert!(!tmp.path().join("tiny-00000000.onnx").exists());
    assert!(!tmp.path().join("tiny-00000000.json").exists());
    assert!(tmp.path().join("tinier-00000000.onnx").exists());
    assert!(
        m.training.finished_at.starts_with("20"),
        "{}",
        m.training.finished_at
    );
}
