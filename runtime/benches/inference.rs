//! Inference benchmark of this runtime (run by `cargo bench -p tpsnet-runtime`, or by
//! `bench/inference.sh`, which also times Python onnxruntime and PyTorch eager on the
//! same model and images).
//!
//! Batch-1 latency: median over single-image runs. Batch throughput: images divided by the
//! median time of whole-batch runs (the classifier's own chunking is set to the batch).
//! The timed call is `Classifier::logits_chw`: preprocessed floats in, logits out, as the
//! peers are timed. Test-time augmentation's cost: the same batch through
//! `Classifier::logits_chw_tta` in every mode (`none`, `flip`, `6view`), the modes
//! alternating within each repeat so that their ratios come from the same minutes.
//!
//! Arguments (all optional): `--model M.json` (default: export TPSNet with random
//! weights to a temp folder), `--input X.f32` (N x 3 x 32 x 32 little-endian floats;
//! default: deterministic pseudo-random pixels), `--batch 256`, `--repeats 5`,
//! `--latency-runs 100`, `--threads 0`, `--device cpu|cuda|cuda:N` (no CPU fallback: a
//! CUDA provider that cannot start is an error), `--json OUT`.

use std::path::PathBuf;
use std::time::Instant;

use tpsnet_runtime::{Classifier, Device, SessionOptions};
use tpsnet_zoo::tta::TTA_MODES;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn timed(runs: usize, warmup: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn export_tpsnet(dir: &std::path::Path) -> PathBuf {
    let spec = tpsnet_zoo::ResNetSpec::preset("tpsnet").unwrap();
    let w = tpsnet_zoo::Weights::random(&spec, 0);
    let bytes =
        tpsnet_zoo::onnx::export(&spec, &w, &tpsnet_zoo::onnx::ExportOptions::default()).unwrap();
    let manifest = tpsnet_zoo::Manifest::describe(
        "tpsnet-random",
        &spec,
        &bytes,
        tpsnet_zoo::manifest::Metrics {
            dataset: "none".into(),
            images: 0,
            top1: 0.0,
            top1_flip_tta: None,
            top1_6view: None,
            claim: "single".into(),
            how: "random weights".into(),
        },
        tpsnet_zoo::manifest::TrainingRecord::untrained(0),
    );
    let model = dir.join(&manifest.file);
    std::fs::write(&model, &bytes).unwrap();
    let path = tpsnet_zoo::Manifest::path_for_model(&model);
    std::fs::write(&path, manifest.to_json()).unwrap();
    path
}

fn main() {
    let mut model: Option<PathBuf> = None;
    let mut input: Option<PathBuf> = None;
    let (mut batch, mut repeats, mut latency_runs, mut threads) =
        (256usize, 5usize, 100usize, 0usize);
    let mut json: Option<PathBuf> = None;
    let mut device = Device::Cpu;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("flag needs a value");
        match a.as_str() {
            "--model" => model = Some(val().into()),
            "--input" => input = Some(val().into()),
            "--batch" => batch = val().parse().unwrap(),
            "--repeats" => repeats = val().parse().unwrap(),
            "--latency-runs" => latency_runs = val().parse().unwrap(),
            "--threads" => threads = val().parse().unwrap(),
            "--json" => json = Some(val().into()),
            "--device" => device = val().parse().unwrap_or_else(|e: String| panic!("{e}")),
            _ => {} // `cargo bench` passes `--bench`.
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = model.unwrap_or_else(|| export_tpsnet(tmp.path()));
    let pixels: Vec<f32> = match &input {
        Some(p) => std::fs::read(p)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .take(batch * 3072)
            .collect(),
        None => (0..batch * 3072)
            .map(|i| ((i as u64).wrapping_mul(2_654_435_761) % 1000) as f32 / 999.0)
            .collect(),
    };
    assert_eq!(
        pixels.len(),
        batch * 3072,
        "input holds fewer than {batch} images"
    );

    let c = Classifier::open(
        &model,
        &SessionOptions::builder()
            .threads(threads)
            .batch_size(batch)
            .device(device)
            .build(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let batch_s = timed(repeats, 1, || {
        c.logits_chw(&pixels).unwrap();
    });
    let one = &pixels[..3072];
    let lat_s = timed(latency_runs, 10, || {
        c.logits_chw(one).unwrap();
    });
    let mut tta_times: Vec<Vec<f64>> = vec![Vec::new(); TTA_MODES.len()];
    for round in 0..repeats {
        // Rotate the order each round so no mode always runs first.
        for k in 0..TTA_MODES.len() {
            let i = (k + round) % TTA_MODES.len();
            let t = Instant::now();
            c.logits_chw_tta(&pixels, TTA_MODES[i]).unwrap();
            tta_times[i].push(t.elapsed().as_secs_f64());
        }
    }
    let tta_ips: serde_json::Map<String, serde_json::Value> = TTA_MODES
        .iter()
        .zip(tta_times)
        .map(|(m, t)| (m.to_string(), (batch as f64 / median(t)).into()))
        .collect();
    let macs = c.manifest().macs as f64;
    let ips = batch as f64 / batch_s;
    let out = serde_json::json!({
        "model": c.name(),
        "macs_per_image": c.manifest().macs,
        "batch": batch,
        "provider": c.execution().provider,
        "batch_images_per_s": ips,
        "batch1_ms": 1000.0 * lat_s,
        "gflops": 2.0 * macs * ips / 1e9,
        "tta_images_per_s": tta_ips,
    });
    let text = serde_json::to_string_pretty(&out).unwrap();
    println!("{text}");
    if let Some(p) = json {
        std::fs::write(p, text + "\n").unwrap();
    }
}
