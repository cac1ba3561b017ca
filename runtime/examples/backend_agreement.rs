//! Predictions of the tract backend vs ONNX Runtime on the CIFAR-10 test set, per shipped
//! fp32 model: how many images the two engines classify differently, and how many of
//! those are near ties (ONNX Runtime's two largest logits within 1e-4 of the row's
//! scale, where a different summation order may swap them).
//!
//! ```text
//! cargo run --release -p tpsnet-runtime --features tract --example backend_agreement -- \
//!     [--images N] [--models-dir DIR] [MODEL ...]
//! ```
//!
//! Without MODEL arguments: every model in the models folder except the int8 ones (which
//! tract refuses). One model at a time, each engine with its default threads and batches
//! of 256. Prints one Markdown table row per model.

use std::time::Instant;

use tpsnet_runtime::classify::argmax;
use tpsnet_runtime::{Backend, Classifier, SessionOptions, registry};

fn near_tie(row: &[f32]) -> bool {
    let mut sorted = row.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let scale = row.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    sorted[0] - sorted[1] <= 1e-4 * scale
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut images = usize::MAX;
    let mut models_dir = None;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--images" => images = args.next().ok_or("--images needs a number")?.parse()?,
            "--models-dir" => models_dir = Some(args.next().ok_or("--models-dir needs a folder")?),
            _ => names.push(a),
        }
    }
    let dir = registry::locate_models_dir(models_dir.as_deref().map(std::path::Path::new))?.path;
    let reg = registry::Registry::scan(&dir)?;
    if names.is_empty() {
        names = reg
            .models
            .iter()
            .filter(|m| m.manifest.precision.is_fp32())
            .map(|m| m.manifest.name.clone())
            .collect();
    }
    let data = tpsnet_zoo::cifar::load(
        &tpsnet_zoo::cifar::resolve_dir(None)?,
        tpsnet_zoo::cifar::Split::Test,
    )?;
    let n = images.min(data.len());
    let mut chw = Vec::with_capacity(n * 3072);
    for i in 0..n {
        chw.extend(data.image(i).iter().map(|&b| b as f32 / 255.0));
    }
    println!(
        "load before: {}",
        std::fs::read_to_string("/proc/loadavg")?.trim()
    );
    println!(
        "| model | images | differing predictions | of which near ties | max abs logit diff | top-1 ort | top-1 tract | s ort | s tract |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for name in &names {
        let manifest = &reg.find(name)?.manifest_path;
        let mut logits = Vec::new();
        let mut seconds = Vec::new();
        for backend in [Backend::Ort, Backend::Tract] {
            let opts = SessionOptions::builder().backend(backend).build();
            let c = Classifier::open(manifest, &opts)?;
            let t = Instant::now();
            logits.push(c.logits_chw(&chw)?);
            seconds.push(t.elapsed().as_secs_f64());
        }
        let (a, b) = (&logits[0], &logits[1]);
        let (mut differ, mut ties) = (0, 0);
        let (mut right_a, mut right_b) = (0, 0);
        for (i, (ra, rb)) in a.chunks_exact(10).zip(b.chunks_exact(10)).enumerate() {
            let label = data.labels[i] as usize;
            right_a += usize::from(argmax(ra) == label);
            right_b += usize::from(argmax(rb) == label);
            if argmax(ra) != argmax(rb) {
                differ += 1;
                ties += usize::from(near_tie(ra));
            }
        }
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        println!(
            "| {name} | {n} | {differ} | {ties} | {worst:.2e} | {:.2} % | {:.2} % | {:.1} | {:.1} |",
            100.0 * right_a as f64 / n as f64,
            100.0 * right_b as f64 / n as f64,
            seconds[0],
            seconds[1]
        );
    }
    println!(
        "load after: {}",
        std::fs::read_to_string("/proc/loadavg")?.trim()
    );
    Ok(())
}
