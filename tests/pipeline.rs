//! The whole product on CPU with real data: train a small spec for one short epoch,
//! export it, load it with the inference runtime (ONNX Runtime) and check that it
//! predicts what libtorch predicts, well above chance, on held-out test images.

use tch::Device;
use tpsnet_runtime::Classifier;
use tpsnet_runtime::preprocess::InputImage;
use tpsnet_runtime::session::SessionOptions;
use tpsnet_training::export::{ExportFacts, export_model, weights_from_varstore};
use tpsnet_training::recipe::Recipe;
use tpsnet_training::{RunConfig, train};
use tpsnet_zoo::ResNetSpec;
use tpsnet_zoo::cifar::{self, Split};

/// Manifest facts for a quick run measured on the first `held_out` test images.
fn quick_facts(
    name: &str,
    recipe: &Recipe,
    result: &tpsnet_training::RunResult,
    held_out: usize,
) -> ExportFacts {
    let fm = result.final_metrics.clone().unwrap();
    ExportFacts {
        name: name.into(),
        metrics: tpsnet_zoo::manifest::Metrics {
            dataset: format!("cifar10-test[:{held_out}]"),
            images: held_out as u64,
            top1: fm.top1,
            top1_flip_tta: Some(fm.top1_flip_tta),
            top1_6view: fm.top1_6view,
            claim: "single".into(),
            how: "final epoch, e2e test".into(),
        },
        training: tpsnet_zoo::manifest::TrainingRecord {
            recipe: recipe.name.clone(),
            recipe_config: serde_json::to_value(recipe).unwrap(),
            seed: 1,
            epochs: result.epochs_done,
            train_images: result.train_images as u64,
            wall_time_s: result.train_time_s,
            images_per_s: result.images_per_s,
            device: "cpu".into(),
            dataset_digest: result.dataset_digest.clone(),
            source_commit: tpsnet_training::export::source_commit(),
            finished_at: tpsnet_training::export::utc_now(),
            rerun_expectation: None,
        },
    }
}

#[test]
fn train_export_and_serve_on_cpu() {
    let Some(data) = tpsnet_e2e::cifar10_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let spec = ResNetSpec::paper(&[1, 1, 1], 8, 2);
    let mut recipe = Recipe::fast();
    recipe.epochs = 1;
    recipe.batch_size = 64;
    recipe.optimizer.lr = 0.1;
    recipe.schedule.warmup_epochs = 0.1;
    let held_out = 1000;
    let cfg = RunConfig {
        name: "e2e".into(),
        spec: spec.clone(),
        recipe: recipe.clone(),
        seed: 1,
        device: Device::Cpu,
        data_dir: data.clone(),
        run_dir: tmp.path().join("run"),
        train_limit: Some(8000),
        test_limit: Some(held_out),
        val_size: 0,
        eval_test_every: 0,
        resume: false,
        stop_after: None,
    };
    let result = train(&cfg).unwrap();
    let fm = result.final_metrics.clone().unwrap();
    eprintln!(
        "one epoch on 8,000 images: {:.1} % on {held_out} test images",
        fm.top1
    );
    assert!(
        fm.top1 > 25.0,
        "barely above chance (10 %): {:.1} %",
        fm.top1
    );

    let facts = quick_facts("e2e", &recipe, &result, held_out);
    let (onnx, _) =
        export_model(&spec, &weights_from_varstore(&result.vs), facts, tmp.path()).unwrap();

    // Same images through libtorch and through the runtime's ONNX Runtime session.
    let test = cifar::load(&data, Split::Test).unwrap().subset(0..held_out);
    let images = tch::Tensor::from_slice(&test.images).view([held_out as i64, 3, 32, 32]);
    let want = tpsnet_training::predict::predict_logits(
        &result.model,
        &images,
        Device::Cpu,
        250,
        tpsnet_zoo::TtaMode::None,
    );
    let want = Vec::<f32>::try_from(&want.view([-1])).unwrap();

    let clf = Classifier::open(&onnx, &SessionOptions::default()).unwrap();
    let inputs = runtime_inputs(&test);
    assert_runtime_matches(&clf, &inputs, &want, "paper spec");

    let preds = clf.classify(&inputs, 1).unwrap();
    let correct = preds
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| p.index == **l as usize)
        .count();
    let acc = 100.0 * correct as f64 / held_out as f64;
    assert!(
        (acc - fm.top1).abs() < 0.2,
        "runtime accuracy {acc} vs tch {}",
        fm.top1
    );

    // `verify` checks the claim on the images it was measured on (the first 1,000).
    let full = cifar::load(&data, Split::Test).unwrap();
    let report = tpsnet_runtime::verify::verify_model(
        &clf,
        &full,
        &tpsnet_runtime::verify::VerifyOptions {
            tta: Some(tpsnet_runtime::TtaMode::Flip),
            ..Default::default()
        },
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(report.single.images, held_out as u64);
    assert!(report.passed, "{:?}", report.checks);
}

/// The CPU model's whole recipe (whitened frozen stem, identity init, frozen BN scales,
/// 64x BN-shift rate, logits scaled by 1/9, lookahead over weights and BN statistics,
/// alternating flips, reflect crops) for a few steps, then export: the ONNX file that
/// the runtime loads computes what libtorch computes.
#[test]
fn cpu_recipe_trains_and_exports_airnet_faithfully() {
    let Some(data) = tpsnet_e2e::cifar10_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let spec = ResNetSpec::preset("airnet").unwrap();
    let mut recipe = Recipe::cpu();
    recipe.epochs = 2;
    recipe.schedule.warmup_epochs = 0.5;
    let n_test = 200;
    let cfg = RunConfig {
        name: "airnet-e2e".into(),
        spec: spec.clone(),
        recipe,
        seed: 3,
        device: Device::Cpu,
        data_dir: data.clone(),
        run_dir: tmp.path().join("run"),
        train_limit: Some(1024),
        test_limit: Some(n_test),
        val_size: 0,
        eval_test_every: 0,
        resume: false,
        stop_after: None,
    };
    let recipe = cfg.recipe.clone();
    let result = train(&cfg).unwrap();
    let facts = quick_facts("airnet-e2e", &recipe, &result, n_test);
    let (onnx, _) =
        export_model(&spec, &weights_from_varstore(&result.vs), facts, tmp.path()).unwrap();
    let test = cifar::load(&data, Split::Test).unwrap().subset(0..n_test);
    let images = tch::Tensor::from_slice(&test.images).view([n_test as i64, 3, 32, 32]);
    let want = tpsnet_training::predict::predict_logits(
        &result.model,
        &images,
        Device::Cpu,
        100,
        tpsnet_zoo::TtaMode::None,
    );
    let want = Vec::<f32>::try_from(&want.view([-1])).unwrap();
    let clf = Classifier::open(&onnx, &SessionOptions::default()).unwrap();
    assert_runtime_matches(&clf, &runtime_inputs(&test), &want, "airnet, cpu recipe");
}

fn runtime_inputs(test: &cifar::Cifar10) -> Vec<InputImage> {
    (0..test.len())
        .map(|i| InputImage::from_planar_rgb8(test.image(i)))
        .collect()
}

/// The runtime's logits for `inputs` equal libtorch's `want` within 1e-4.
fn assert_runtime_matches(clf: &Classifier, inputs: &[InputImage], want: &[f32], what: &str) {
    let got = clf.logits(inputs).unwrap();
    let diff = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("{what}: max |tch - runtime| logits {diff:e}");
    assert!(
        diff < 1e-4,
        "{what}: runtime logits differ from tch by {diff}"
    );
}
