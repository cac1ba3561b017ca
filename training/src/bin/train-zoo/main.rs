//! `train-zoo`: trains the TPSNet zoo's models and exports them to ONNX with manifests.
//!
//! This binary parses arguments and prints; the work lives in the `training` library
//! (docs/architecture.md). One module per command family: [`train_cmd`] (train, export,
//! publish), [`search_cmd`] (`search`, `trial`); [`args`] holds the shared flags,
//! [`console`] the progress display and [`advice`] the flags that fix an error.

mod advice;
mod args;
mod console;
mod search_cmd;
mod train_cmd;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tpsnet_training::device;
use tpsnet_training::recipe::{RECIPES, Recipe};
use tpsnet_training::spec_file;
use tpsnet_training::step_bench::benchmark_steps;
use tpsnet_zoo::arch::PRESETS;
use tpsnet_zoo::arch::group_thousands as group;

use crate::args::DeviceArgs;

const AFTER_HELP: &str = "\
Examples:
  train-zoo list                                  presets with exact parameters and MACs
  train-zoo --model tpsnet --recipe fast          train TPSNet with our fast recipe
  train-zoo --model model1 --recipe paper --epochs 30 --device cuda:0
  train-zoo --model my-spec.json --train-limit 5000 --epochs 2 --device cpu
  train-zoo --all                                 train and publish every zoo model into models/
  train-zoo --model tpsnet --resume               continue an interrupted run from its checkpoint
  train-zoo --model tpsnet --set label_smoothing=0 --set ema='{\"decay\":0.999,\"every_steps\":1}'

Data: --data-dir, else $CIFAR10_DIR, else the cache filled by `train-zoo download`.
Outputs (per model, in --run-dir, default runs/<name>/): checkpoint.ot (every epoch,
atomic), metrics.jsonl, metrics.csv, loss.png, accuracy.png, and <name>-<sha8>.onnx with
its manifest <name>-<sha8>.json. With --all (or --out DIR) the ONNX file, manifest,
curves and metrics are also published into models/ (or DIR).
Accuracy is always the final epoch's, on the full 10,000-image test set; the test set is
never used to pick anything.";

#[derive(Parser, Debug)]
#[command(
    name = "train-zoo",
    version,
    about = "Train the TPSNet zoo's compact ResNets on CIFAR-10 (libtorch) and export them to ONNX with hashed manifests.",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: train_cmd::TrainArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the architecture presets with exact trainable parameters and MACs.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the built-in recipes (all fields, as JSON) — the fields `--set` can change.
    Recipes,
    /// Download and verify CIFAR-10 into the cache directory.
    Download {
        /// Cache directory (default: $TPSNET_CACHE, else ~/.cache/tpsnet-zoo).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Archive URL (a mirror of the official one).
        #[arg(long)]
        url: Option<String>,
    },
    /// Measure training-step throughput (images/s, median of timed steps) on synthetic data.
    Bench {
        /// Preset names or spec JSON files.
        #[arg(long, short, num_args = 1.., default_values_t = ["tpsnet".to_string(), "model2".to_string(), "model1".to_string()])]
        model: Vec<String>,
        /// Recipe whose step is timed (augmentation, precision, optimizer).
        #[arg(long, short, default_value = "paper")]
        recipe: String,
        #[arg(long, default_value_t = 256)]
        batch_size: usize,
        /// Untimed warm-up steps (allocator, oneDNN/cuDNN autotuning).
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[command(flatten)]
        compute: DeviceArgs,
    },
    /// Random architecture search under a parameter budget (the paper's method).
    Search(search_cmd::SearchArgs),
    /// Run one search trial, streaming per-epoch metrics as JSON lines (Ray Tune driver).
    Trial(search_cmd::TrialArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The manifests' `source_commit` is this checkout's.
    tpsnet_zoo::provenance::set_source_tree(env!("CARGO_MANIFEST_DIR"));
    // Before libtorch allocates: CPU training steps reuse their pages (+10 % on 2 cores).
    tpsnet_training::cpu_memory::reuse_freed_memory();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match advice::advice(&e) {
                Some(fix) => eprintln!("train-zoo: error: {}; {fix}", error_chain(&e)),
                None => eprintln!("train-zoo: error: {}", error_chain(&e)),
            }
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-joined, leaving out a cause whose text the message
/// before it already quotes (the library's errors name their source in their own text,
/// so they read whole when printed alone).
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !text.contains(&c) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&c);
        }
    }
    text
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::List { json }) => {
            list_presets(json);
            Ok(())
        }
        Some(Command::Recipes) => {
            for (name, about) in RECIPES {
                let r = Recipe::by_name(name).expect("built-in recipe");
                println!("# {name}: {about}\n{}\n", serde_json::to_string_pretty(&r)?);
            }
            Ok(())
        }
        Some(Command::Download { cache_dir, url }) => download(cache_dir, url),
        Some(Command::Bench {
            model,
            recipe,
            batch_size,
            warmup,
            steps,
            compute,
        }) => bench(&model, &recipe, batch_size, warmup, steps, &compute),
        Some(Command::Search(a)) => search_cmd::search(a),
        Some(Command::Trial(a)) => search_cmd::trial(a),
        None => train_cmd::run(cli.train),
    }
}

fn download(cache_dir: Option<PathBuf>, url: Option<String>) -> Result<()> {
    let mut opts = tpsnet_zoo::download::DownloadOptions::default();
    if let Some(c) = cache_dir {
        opts.cache_dir = c;
    }
    if let Some(u) = url {
        opts.url = u;
    }
    opts.progress = std::io::stderr().is_terminal();
    let dir = tpsnet_zoo::download::download_cifar10(&opts)?;
    println!("{}", dir.display());
    eprintln!(
        "CIFAR-10 is ready in {}; set CIFAR10_DIR to it or pass --data-dir.",
        dir.display()
    );
    Ok(())
}

fn bench(
    models: &[String],
    recipe: &str,
    batch_size: usize,
    warmup: usize,
    steps: usize,
    compute: &DeviceArgs,
) -> Result<()> {
    let dev = compute.device()?;
    let mut r = Recipe::resolve(recipe)?;
    r.batch_size = batch_size;
    eprintln!("train-zoo bench: {} on {}", r.name, device::describe(dev));
    for m in models {
        let (name, spec) = spec_file::resolve(m)?;
        let (r, why) = r.clone().fit_to_spec(&spec);
        if let Some(why) = why {
            eprintln!("train-zoo bench: {name}: {why}");
        }
        let b = benchmark_steps(&spec, &r, dev, warmup, steps);
        let v = serde_json::json!({
            "bench": "train_step", "model": name, "params": spec.params(), "recipe": r.name,
            "batch_size": b.batch_size, "steps": b.steps, "step_seconds": b.step_seconds,
            "median_images_per_s": b.median_images_per_s,
            "device": tpsnet_training::pipeline::run_device(dev, r.cpu_bf16),
            "phase_seconds": b.phase_seconds.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{v}");
    }
    Ok(())
}

fn list_presets(json: bool) {
    if !json {
        println!(
            "{:<8} {:>12} {:>14} {:>7}  {:>10}  description",
            "name", "params", "MACs/image", "depth", "paper top1"
        );
    }
    for p in PRESETS {
        let s = p.spec();
        if json {
            let v = serde_json::json!({
                "name": p.name, "params": s.params(), "macs": s.macs(), "depth": s.depth(),
                "paper_top1": p.paper_top1, "description": p.description, "spec": s,
            });
            println!("{v}");
        } else {
            println!(
                "{:<8} {:>12} {:>14} {:>7}  {:>10}  {}",
                p.name,
                group(s.params()),
                group(s.macs()),
                s.depth(),
                p.paper_top1
                    .map(|a| format!("{a:.2} %"))
                    .unwrap_or_default(),
                p.description
            );
        }
    }
}
