//! Writes a zoo architecture with random weights for benchmarks and cross-checks:
//! `<name>-<sha8>.onnx` + manifest, plus the unfolded weights (`weights.bin`, little-endian
//! f32 in `weights.json` order) and `spec.json`, so PyTorch can rebuild the same network.
//!
//! `cargo run --release -p tpsnet-runtime --example export_bench_model -- OUT_DIR [PRESET] [SEED]`
use std::path::PathBuf;

use tpsnet_zoo::manifest::{Manifest, Metrics, TrainingRecord};
use tpsnet_zoo::publish::write_atomic;
use tpsnet_zoo::{ResNetSpec, Weights};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(args.first().map(String::as_str).unwrap_or("bench-model"));
    let preset = args.get(1).map(String::as_str).unwrap_or("tpsnet");
    let seed: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let spec = ResNetSpec::preset(preset)
        .ok_or_else(|| anyhow::anyhow!("unknown preset {preset}; use model1, model2 or tpsnet"))?;
    let weights = Weights::random(&spec, seed);
    let bytes =
        tpsnet_zoo::onnx::export(&spec, &weights, &tpsnet_zoo::onnx::ExportOptions::default())?;
    let name = format!("{preset}-random");
    let manifest = Manifest::describe(
        &name,
        &spec,
        &bytes,
        Metrics {
            dataset: "none".into(),
            images: 0,
            top1: 0.0,
            top1_flip_tta: None,
            top1_6view: None,
            claim: "single".into(),
            how: "untrained: random weights for benchmarking only".into(),
        },
        TrainingRecord::untrained(seed),
    );
    let model_path = out.join(&manifest.file);
    write_atomic(&model_path, &bytes)?;
    let manifest_path = Manifest::path_for_model(&model_path);
    write_atomic(&manifest_path, manifest.to_json().as_bytes())?;

    let mut blob = Vec::new();
    let mut index = Vec::new();
    for (name, t) in &weights.tensors {
        index.push(serde_json::json!({
            "name": name,
            "shape": t.shape,
            "offset": blob.len() / 4,
        }));
        for v in &t.data {
            blob.extend_from_slice(&v.to_le_bytes());
        }
    }
    write_atomic(&out.join("weights.bin"), &blob)?;
    write_atomic(
        &out.join("weights.json"),
        serde_json::to_string_pretty(&index)?.as_bytes(),
    )?;
    write_atomic(
        &out.join("spec.json"),
        serde_json::to_string_pretty(&spec)?.as_bytes(),
    )?;
    println!("{}", manifest_path.display());
    eprintln!(
        "{preset}: {} params, {} MACs/image -> {}",
        spec.params(),
        spec.macs(),
        model_path.display()
    );
    Ok(())
}
