//! The whole product on CPU with real data: train a small spec for one short epoch,
//! export it, load it with the inference runtime (ONNX Runtime) and check that it
//! predicts what libtorch predicts, well above chance, on held-out test images.

use runtime::Classifier;
use runtime::preprocess::InputImage;
use runtime::session::SessionOptions;
use tch::Device;
use training::export::{ExportFacts, export_model, weights_from_varstore};
use training::recipe::Recipe;
use training::train::{RunConfig, train};
use zoo::ResNetSpec;
use zoo::cifar::{self, Split};

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
        progress: false,
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

    let facts = ExportFacts {
        name: "e2e".into(),
        metrics: zoo::manifest::Metrics {
            dataset: format!("cifar10-test[:{held_out}]"),
            images: held_out as u64,
            top1: fm.top1,
            top1_flip_tta: Some(fm.top1_flip_tta),
            claim: "single".into(),
            how: "final epoch, e2e test".into(),
        },
        training: zoo::manifest::TrainingRecord {
            recipe: recipe.name.clone(),
            recipe_config: serde_json::to_value(&recipe).unwrap(),
            seed: 1,
            epochs: 1,
            train_images: 8000,
            wall_time_s: result.train_time_s,
            images_per_s: result.images_per_s,
            device: "cpu".into(),
            dataset_digest: result.dataset_digest.clone(),
            source_commit: training::export::source_commit(),
            finished_at: training::export::utc_now(),
        },
    };
    let (onnx, _) =
        export_model(&spec, &weights_from_varstore(&result.vs), facts, tmp.path()).unwrap();

    // Same images through libtorch and through the runtime's ONNX Runtime session.
    let test = cifar::load(&data, Split::Test).unwrap().subset(0..held_out);
    let images = tch::Tensor::from_slice(&test.images).view([held_out as i64, 3, 32, 32]);
    let want = training::model::predict_logits(&result.model, &images, Device::Cpu, 250, false);
    let want = Vec::<f32>::try_from(&want.view([-1])).unwrap();

    let clf = Classifier::open(&onnx, &SessionOptions::default()).unwrap();
    let inputs: Vec<InputImage> = (0..held_out)
        .map(|i| InputImage::from_planar_rgb8(test.image(i)))
        .collect();
    let got = clf.logits(&inputs).unwrap();
    let diff = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("max |tch - runtime| logits: {diff:e}");
    assert!(diff < 1e-4, "runtime logits differ from tch by {diff}");

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
}
