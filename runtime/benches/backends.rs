//! tract vs ONNX Runtime on every shipped fp32 model, batch 1 and batch 256, in one run
//! (`cargo bench -p tpsnet-runtime --features tract --bench backends`).
//!
//! Both backends load the same file and run the same 256 images (the first CIFAR-10 test
//! images when `$CIFAR10_DIR` has them, else deterministic pseudo-random pixels) through
//! `Classifier::logits_chw`, each with its default threading (ONNX Runtime: one intra-op
//! thread per core; tract: one image per run, one run per core at once). Per model, the
//! two backends alternate within each round (the order flips every round), so load from
//! other processes hits both alike; throughput ratios are taken per round and their
//! median reported. A plan's first run (tract builds and optimises one per batch size)
//! is a warm-up, never timed.
//!
//! Arguments (all optional): `--rounds 3`, `--repeats 3` (timed batch-256 runs per round),
//! `--latency-runs 20` (timed batch-1 runs per round), `--models-dir DIR` (default:
//! `$TPSNET_MODELS`, else the workspace's models/), `--json OUT`, `--tract-threads N`
//! (tract runs at once, `SessionOptions::threads`; default 0, one per core),
//! then model names (default: every model in the models folder except the int8 ones).
//! `TPSNET_TRACT_DIRECT_CONV=off` (or `avx2`) measures tract without its direct 3×3
//! convolution kernels (or with the AVX2 ones); the header names which ran.

use std::time::Instant;

use tpsnet_runtime::{Backend, Classifier, SessionOptions, registry};

const BATCH: usize = 256;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn time_runs(runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect()
}

fn images() -> (Vec<f32>, &'static str) {
    if let Ok(dir) = tpsnet_zoo::cifar::resolve_dir(None)
        && let Ok(data) = tpsnet_zoo::cifar::load(&dir, tpsnet_zoo::cifar::Split::Test)
    {
        let mut chw = Vec::with_capacity(BATCH * 3072);
        for i in 0..BATCH {
            chw.extend(data.image(i).iter().map(|&b| b as f32 / 255.0));
        }
        return (chw, "the first 256 CIFAR-10 test images");
    }
    let chw = (0..BATCH * 3072)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) % 1000) as f32 / 999.0)
        .collect();
    (chw, "256 pseudo-random images")
}

struct Options {
    rounds: usize,
    repeats: usize,
    latency_runs: usize,
    models_dir: Option<std::path::PathBuf>,
    json: Option<std::path::PathBuf>,
    /// tract runs at once (`SessionOptions::threads`; 0: one per core).
    tract_threads: usize,
    names: Vec<String>,
}

fn parse_args() -> Options {
    let mut o = Options {
        rounds: 3,
        repeats: 3,
        latency_runs: 20,
        models_dir: None,
        json: None,
        tract_threads: 0,
        names: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("flag needs a value");
        match a.as_str() {
            "--rounds" => o.rounds = val().parse().expect("--rounds N"),
            "--repeats" => o.repeats = val().parse().expect("--repeats N"),
            "--latency-runs" => o.latency_runs = val().parse().expect("--latency-runs N"),
            "--models-dir" => o.models_dir = Some(val().into()),
            "--json" => o.json = Some(val().into()),
            "--tract-threads" => o.tract_threads = val().parse().expect("--tract-threads N"),
            "--bench" => {} // passed by `cargo bench`
            name => o.names.push(name.to_string()),
        }
    }
    o
}

/// Per backend (ort, tract): batch-256 img/s and batch-1 ms per round.
fn measure(manifest: &std::path::Path, pixels: &[f32], o: &Options) -> [(Vec<f64>, Vec<f64>); 2] {
    let open = |backend| {
        let threads = if backend == Backend::Tract {
            o.tract_threads
        } else {
            0
        };
        let opts = SessionOptions::builder()
            .backend(backend)
            .batch_size(BATCH)
            .threads(threads)
            .build();
        let c = Classifier::open(manifest, &opts).unwrap_or_else(|e| panic!("{e}"));
        // Warm-up: tract optimises its plans for both shapes here.
        c.logits_chw(pixels).unwrap();
        c.logits_chw(&pixels[..3072]).unwrap();
        c
    };
    let engines = [open(Backend::Ort), open(Backend::Tract)];
    let mut out: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    for round in 0..o.rounds {
        for k in 0..2 {
            let i = (k + round) % 2;
            let c = &engines[i];
            let batch_s = median(time_runs(o.repeats, || {
                c.logits_chw(pixels).unwrap();
            }));
            let one_s = median(time_runs(o.latency_runs, || {
                c.logits_chw(&pixels[..3072]).unwrap();
            }));
            out[i].0.push(BATCH as f64 / batch_s);
            out[i].1.push(1000.0 * one_s);
        }
    }
    out
}

fn main() {
    let o = parse_args();
    // `cargo bench` runs in runtime/, where no models/ folder is: default to the
    // workspace's (TPSNET_MODELS, if set, still wins inside locate_models_dir).
    let workspace_models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let fallback = (std::env::var_os("TPSNET_MODELS").is_none()).then_some(workspace_models);
    let dir = registry::locate_models_dir(o.models_dir.as_deref().or(fallback.as_deref()))
        .unwrap_or_else(|e| panic!("{e}"))
        .path;
    let reg = registry::Registry::scan(&dir).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = if o.names.is_empty() {
        let mut n: Vec<String> = reg
            .models
            .iter()
            .filter(|m| m.manifest.precision.is_fp32())
            .map(|m| m.manifest.name.clone())
            .collect();
        n.sort();
        n
    } else {
        o.names.clone()
    };
    let (pixels, source) = images();
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "input: {source}; rounds {}, {} batch runs and {} single-image runs per round",
        o.rounds, o.repeats, o.latency_runs
    );
    // What computes tract's 3×3 convolutions (`TPSNET_TRACT_DIRECT_CONV` picks).
    let direct = tpsnet_runtime::tract_engine::direct_conv::Isa::chosen()
        .map_or("tract's own im2col".to_string(), |isa| {
            format!("direct {isa:?} kernels")
        });
    println!("tract 3x3 convolutions: {direct}");
    println!("load before: {}", load().trim());
    println!(
        "| model | ort img/s (b256) | tract img/s (b256) | tract/ort (b256, median of rounds) | ort ms (b1) | tract ms (b1) | tract/ort speed (b1) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for name in &names {
        let manifest = reg
            .find(name)
            .unwrap_or_else(|e| panic!("{e}"))
            .manifest_path
            .clone();
        let [(ort_ips, ort_ms), (tract_ips, tract_ms)] = measure(&manifest, &pixels, &o);
        let ratio_b256 = median(tract_ips.iter().zip(&ort_ips).map(|(t, r)| t / r).collect());
        let ratio_b1 = median(ort_ms.iter().zip(&tract_ms).map(|(r, t)| r / t).collect());
        let (oi, ti, om, tm) = (
            median(ort_ips.clone()),
            median(tract_ips.clone()),
            median(ort_ms.clone()),
            median(tract_ms.clone()),
        );
        println!(
            "| {name} | {oi:.0} | {ti:.0} | {ratio_b256:.2} | {om:.2} | {tm:.2} | {ratio_b1:.2} |"
        );
        rows.push(serde_json::json!({
            "model": name,
            "ort_b256_images_per_s": ort_ips, "tract_b256_images_per_s": tract_ips,
            "ort_b1_ms": ort_ms, "tract_b1_ms": tract_ms,
            "tract_over_ort_b256": ratio_b256, "tract_over_ort_b1": ratio_b1,
        }));
    }
    println!("load after: {}", load().trim());
    if let Some(p) = &o.json {
        let text = serde_json::to_string_pretty(
            &serde_json::json!({"input": source, "tract_convolutions": direct, "models": rows}),
        )
        .unwrap();
        std::fs::write(p, text + "\n").unwrap();
    }
}
