//! `train-zoo`: trains the TPSNet zoo's models and exports them to ONNX with manifests.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use training::export::{
    ExportFacts, export_model, remove_older_versions, source_commit, utc_now, weights_from_varstore,
};
use training::recipe::{RECIPES, Recipe};
use training::train::{RunConfig, train};
use training::{device, zoo_models};
use zoo::ResNetSpec;
use zoo::arch::PRESETS;
use zoo::arch::group_thousands as group;
use zoo::manifest::{Metrics, TrainingRecord};

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
    train: TrainArgs,
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
        #[arg(long, short, default_value = "auto")]
        device: String,
        #[arg(long)]
        threads: Option<i32>,
    },
    /// Random architecture search under a parameter budget (the paper's method).
    Search(training::search::SearchArgs),
    /// Run one search trial, streaming per-epoch metrics as JSON lines (Ray Tune driver).
    Trial(training::search::TrialArgs),
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Train and publish every zoo model: tpsnet, model2 and model1 with the fast recipe,
    /// airnet with the cpu recipe, airnet-short (airnet, cpu-short), then airnet-wide (wide).
    #[arg(long, conflicts_with = "model")]
    all: bool,
    /// Preset name (`train-zoo list`: tpsnet, model1, model2, resnet20, airnet, airnet-wide,
    /// airnet-res, plainnet) or a spec JSON file.
    #[arg(long, short)]
    model: Option<String>,
    /// Name used for files and the manifest (default: the preset or spec file stem).
    #[arg(long)]
    name: Option<String>,
    /// Recipe: paper, fast, or a recipe JSON file.
    #[arg(long, short, default_value = "fast")]
    recipe: String,
    /// Override the recipe's epoch count.
    #[arg(long, short)]
    epochs: Option<u32>,
    /// Override the recipe's batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Change any recipe field: path=value, JSON value (repeatable; see `train-zoo recipes`).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    sets: Vec<String>,
    /// Random seed (weights, shuffling, augmentation).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto (CUDA if present), cpu, cuda or cuda:N.
    #[arg(long, short, default_value = "auto")]
    device: String,
    /// CPU threads for libtorch (default: all cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Folder with the CIFAR-10 binary files.
    #[arg(long, env = "CIFAR10_DIR")]
    data_dir: Option<PathBuf>,
    /// Folder for checkpoints, logs and curves (default runs/<name>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Also publish ONNX, manifest, curves and metrics into this folder (--all: models/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Train on the first N training images only (quick runs).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on the first N test images only (quick runs; the manifest says so).
    #[arg(long)]
    test_limit: Option<usize>,
    /// Hold out N training images as a validation split.
    #[arg(long, default_value_t = 0)]
    val_size: usize,
    /// Log test accuracy every N epochs for the curves (0: final epoch only).
    #[arg(long, default_value_t = 1)]
    eval_test_every: u32,
    /// Continue from the run's checkpoint (a finished run is only re-exported).
    #[arg(long, conflicts_with = "restart")]
    resume: bool,
    /// Discard an existing checkpoint and start over.
    #[arg(long)]
    restart: bool,
    /// Stop cleanly after N epochs in this invocation (resume later with --resume).
    #[arg(long)]
    stop_after: Option<u32>,
    /// No progress bar (one line per epoch instead).
    #[arg(long)]
    no_progress: bool,
    /// Print a JSON summary line per model on stdout.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before libtorch allocates: CPU training steps reuse their pages (+10 % on 2 cores).
    training::cpu_memory::reuse_freed_memory();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("train-zoo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
        Some(Command::Download { cache_dir, url }) => {
            let mut opts = zoo::download::DownloadOptions::default();
            if let Some(c) = cache_dir {
                opts.cache_dir = c;
            }
            if let Some(u) = url {
                opts.url = u;
            }
            opts.progress = std::io::stderr().is_terminal();
            let dir = zoo::download::download_cifar10(&opts)?;
            println!("{}", dir.display());
            eprintln!(
                "CIFAR-10 is ready in {}; set CIFAR10_DIR to it or pass --data-dir.",
                dir.display()
            );
            Ok(())
        }
        Some(Command::Bench {
            model,
            recipe,
            batch_size,
            warmup,
            steps,
            device: dev,
            threads,
        }) => {
            let dev = device::parse(&dev).map_err(|e| anyhow!(e))?;
            if let Some(t) = threads {
                tch::set_num_threads(t);
            }
            let mut r = load_recipe(&recipe)?;
            r.batch_size = batch_size;
            eprintln!("train-zoo bench: {} on {}", r.name, device::describe(dev));
            for m in model {
                let (name, spec) = load_spec(&m)?;
                let (r, why) = r.clone().fit_to_spec(&spec);
                if let Some(why) = why {
                    eprintln!("train-zoo bench: {name}: {why}");
                }
                let b = training::train::benchmark_steps(&spec, &r, dev, warmup, steps);
                let v = serde_json::json!({
                    "bench": "train_step", "model": name, "params": spec.params(), "recipe": r.name,
                    "batch_size": b.batch_size, "steps": b.steps, "step_seconds": b.step_seconds,
                    "median_images_per_s": b.median_images_per_s, "device": device::describe(dev),
                    "phase_seconds": b.phase_seconds.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                });
                println!("{v}");
            }
            Ok(())
        }
        Some(Command::Search(a)) => training::search::run_search(a),
        Some(Command::Trial(a)) => training::search::run_trial(a),
        None => train_command(cli.train),
    }
}

fn list_presets(json: bool) {
    if !json {
        println!(
            "{:<11} {:>12} {:>14} {:>7}  {:>10}  description",
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
                "{:<11} {:>12} {:>14} {:>7}  {:>10}  {}",
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

fn load_spec(model: &str) -> Result<(String, ResNetSpec)> {
    if let Some(spec) = ResNetSpec::preset(model) {
        return Ok((model.to_string(), spec));
    }
    let path = Path::new(model);
    if path.extension().is_some_and(|e| e == "json") {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read spec file {}", path.display()))?;
        let spec: ResNetSpec = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid ResNetSpec JSON (see `train-zoo list --json`)",
                path.display()
            )
        })?;
        spec.validate()
            .with_context(|| format!("spec {}", path.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".into());
        return Ok((stem, spec));
    }
    let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
    bail!(
        "unknown model `{model}`; use one of {} or a spec .json file",
        names.join(", ")
    )
}

fn load_recipe(name: &str) -> Result<Recipe> {
    Recipe::resolve(name).map_err(|e| anyhow!(e))
}

fn train_command(args: TrainArgs) -> Result<()> {
    let dev = device::parse(&args.device).map_err(|e| anyhow!(e))?;
    if let Some(t) = args.threads {
        tch::set_num_threads(t);
    }
    let data_dir = zoo::cifar::resolve_dir(args.data_dir.as_deref())?;
    let jobs: Vec<(String, ResNetSpec, Recipe)> = if args.all {
        zoo_models::PUBLISHED
            .iter()
            .map(|(name, preset, recipe)| {
                Ok((
                    name.to_string(),
                    ResNetSpec::preset(preset).expect("preset"),
                    load_recipe(recipe)?,
                ))
            })
            .collect::<Result<_>>()?
    } else {
        let (stem, spec) = load_spec(args.model.as_deref().unwrap_or("tpsnet"))?;
        vec![(
            args.name.clone().unwrap_or(stem),
            spec,
            load_recipe(&args.recipe)?,
        )]
    };
    let out = args
        .out
        .clone()
        .or_else(|| args.all.then(zoo_models::models_dir));
    eprintln!("train-zoo: training on {}", device::describe(dev));
    eprintln!("train-zoo: CIFAR-10 from {}", data_dir.display());
    for (name, spec, base_recipe) in jobs {
        let mut recipe = base_recipe
            .with_overrides(&args.sets)
            .map_err(|e| anyhow!(e))?;
        if let Some(e) = args.epochs {
            recipe.epochs = e;
        }
        if let Some(b) = args.batch_size {
            recipe.batch_size = b;
        }
        let (recipe, why) = recipe.fit_to_spec(&spec);
        if let Some(why) = why.filter(|_| dev.is_cuda()) {
            eprintln!("train-zoo: {name}: {why}");
        }
        let run_dir = match (&args.run_dir, args.all) {
            (Some(d), false) => d.clone(),
            (Some(d), true) => d.join(&name),
            (None, _) => PathBuf::from("runs").join(&name),
        };
        if args.restart {
            let ck = training::train::checkpoint_path(&run_dir);
            if ck.exists() {
                std::fs::remove_file(&ck)
                    .with_context(|| format!("cannot remove {}", ck.display()))?;
            }
        }
        eprintln!(
            "train-zoo: {name}: {} ({} params, {} MACs), recipe {} for {} epochs, batch {}",
            spec.summary(),
            group(spec.params()),
            group(spec.macs()),
            recipe.name,
            recipe.epochs,
            recipe.batch_size
        );
        let cfg = RunConfig {
            name: name.clone(),
            spec: spec.clone(),
            recipe: recipe.clone(),
            seed: args.seed,
            device: dev,
            data_dir: data_dir.clone(),
            run_dir: run_dir.clone(),
            train_limit: args.train_limit,
            test_limit: args.test_limit,
            val_size: args.val_size,
            eval_test_every: args.eval_test_every,
            resume: args.resume,
            progress: !args.no_progress && std::io::stderr().is_terminal(),
            stop_after: args.stop_after,
        };
        let result = train(&cfg)?;
        let Some(fm) = result.final_metrics else {
            eprintln!(
                "train-zoo: {name}: stopped after epoch {}/{} as asked; continue with --resume",
                result.epochs_done, recipe.epochs
            );
            continue;
        };
        let ema_note = if recipe.ema.is_some() {
            " (EMA weights)"
        } else {
            ""
        };
        let metrics = Metrics {
            dataset: if fm.test_images == 10_000 {
                "cifar10-test".into()
            } else {
                format!("cifar10-test[:{}]", fm.test_images)
            },
            images: fm.test_images as u64,
            top1: fm.top1,
            top1_flip_tta: Some(fm.top1_flip_tta),
            top1_6view: fm.top1_6view,
            claim: recipe.tta_mode().claim_name().into(),
            how: format!(
                "final epoch{ema_note}, no checkpoint selection; fp32 eval mode in libtorch on {}; flip_tta averages the logits of each image and its mirror{}",
                device::describe(dev),
                if fm.top1_6view.is_some() {
                    "; 6view averages mirror x {no shift, 1 px down-right, 1 px up-left} (reflect padding), weights 1/4 for the unshifted pair and 1/8 for each shifted view"
                } else {
                    ""
                }
            ),
        };
        let training = TrainingRecord {
            recipe: recipe.name.clone(),
            recipe_config: serde_json::to_value(&recipe)?,
            seed: args.seed,
            epochs: result.epochs_done,
            train_images: result.train_images as u64,
            wall_time_s: result.train_time_s,
            images_per_s: result.images_per_s,
            device: device::describe(dev),
            dataset_digest: result.dataset_digest.clone(),
            source_commit: source_commit(),
            finished_at: utc_now(),
        };
        let weights = weights_from_varstore(&result.vs);
        let facts = ExportFacts {
            name: name.clone(),
            metrics,
            training,
        };
        let (onnx_path, manifest_path) =
            export_model(&spec, &weights, facts, &run_dir).map_err(|e| anyhow!(e))?;
        let mut published = None;
        if let Some(out) = &out {
            published = Some(publish(&name, &run_dir, &onnx_path, &manifest_path, out)?);
        }
        let manifest = zoo::Manifest::load(&manifest_path)?;
        eprintln!(
            "train-zoo: {name}: test top-1 {:.2} % (flip TTA {:.2} %{}) after {} epochs, {:.1} s training at {:.0} img/s",
            fm.top1,
            fm.top1_flip_tta,
            fm.top1_6view
                .map(|t| format!(", 6-view TTA {t:.2} %"))
                .unwrap_or_default(),
            result.epochs_done,
            result.train_time_s,
            result.images_per_s
        );
        eprintln!(
            "train-zoo: {name}: wrote {} (sha256 {})",
            onnx_path.display(),
            manifest.sha256
        );
        if let Some(p) = &published {
            eprintln!("train-zoo: {name}: published into {}", p.display());
        }
        if args.json {
            let v = serde_json::json!({
                "name": name, "top1": fm.top1, "top1_flip_tta": fm.top1_flip_tta, "top1_6view": fm.top1_6view, "test_images": fm.test_images,
                "epochs": result.epochs_done, "train_time_s": result.train_time_s, "images_per_s": result.images_per_s,
                "onnx": onnx_path, "manifest": manifest_path, "sha256": manifest.sha256, "published": published,
            });
            println!("{v}");
        }
    }
    Ok(())
}

/// Copies a finished model and its curves/logs into a published-models folder.
fn publish(
    name: &str,
    run_dir: &Path,
    onnx: &Path,
    manifest: &Path,
    out: &Path,
) -> Result<PathBuf> {
    let m = zoo::Manifest::load(manifest)?;
    let bytes = std::fs::read(onnx).with_context(|| format!("cannot read {}", onnx.display()))?;
    let published_model = out.join(&m.file);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    remove_older_versions(out, name, &m.file);
    zoo::manifest::write_atomic(&published_model, &bytes)?;
    zoo::manifest::write_atomic(
        &zoo::Manifest::path_for_model(&published_model),
        m.to_json().as_bytes(),
    )?;
    for (src, dst) in [
        ("loss.png", format!("{name}-loss.png")),
        ("accuracy.png", format!("{name}-accuracy.png")),
        ("metrics.csv", format!("{name}-metrics.csv")),
        ("metrics.jsonl", format!("{name}-metrics.jsonl")),
    ] {
        let s = run_dir.join(src);
        if s.exists() {
            let b = std::fs::read(&s)?;
            zoo::manifest::write_atomic(&out.join(dst), &b)?;
        }
    }
    Ok(published_model)
}
