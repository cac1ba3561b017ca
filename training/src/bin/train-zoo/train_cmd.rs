//! `train-zoo [--model M | --all]`: train, export and publish through
//! [`tpsnet_training::pipeline`]; this module turns flags into jobs and prints.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use tpsnet_training::config::RunConfig;
use tpsnet_training::dataset::Cifar10Tensors;
use tpsnet_training::pipeline::{self, Outcome, TrainJob};
use tpsnet_training::recipe::Recipe;
use tpsnet_training::{device, spec_file, zoo_models};
use tpsnet_zoo::ResNetSpec;
use tpsnet_zoo::arch::group_thousands as group;

use crate::args::RunArgs;
use crate::console::Console;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Train and publish every zoo model: tpsnet, model2 and model1 with the fast recipe,
    /// airnet with the cpu recipe, airnet-short (airnet, cpu-short), then airnet-wide (wide).
    #[arg(long, conflicts_with = "model")]
    all: bool,
    /// Preset name (`train-zoo list`: tpsnet, model1, model2, resnet20, airnet, airnet-wide,
    /// plainnet) or a spec JSON file.
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
    #[command(flatten)]
    run: RunArgs,
    /// Folder for checkpoints, logs and curves (default `runs/<name>`).
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

/// The model, its default name and the recipe of every run the flags ask for.
fn jobs(args: &TrainArgs) -> Result<Vec<(String, ResNetSpec, Recipe)>> {
    if args.all {
        return zoo_models::PUBLISHED
            .iter()
            .map(|(name, preset, recipe)| {
                Ok((
                    name.to_string(),
                    ResNetSpec::preset(preset).expect("preset"),
                    Recipe::resolve(recipe)?,
                ))
            })
            .collect();
    }
    let (stem, spec) = spec_file::resolve(args.model.as_deref().unwrap_or("tpsnet"))?;
    Ok(vec![(
        args.name.clone().unwrap_or(stem),
        spec,
        Recipe::resolve(&args.recipe)?,
    )])
}

/// Where `--all` publishes: the `models/` of the checkout this command was built in.
fn checkout_models_dir() -> std::path::PathBuf {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().unwrap_or(crate_dir).join("models")
}

pub fn run(args: TrainArgs) -> Result<()> {
    let dev = args.run.compute.device()?;
    let data_dir = tpsnet_zoo::cifar::resolve_dir(args.run.data_dir.as_deref())?;
    let jobs = jobs(&args)?;
    let out = args
        .out
        .clone()
        .or_else(|| args.all.then(checkout_models_dir));
    eprintln!("train-zoo: training on {}", device::describe(dev));
    eprintln!("train-zoo: CIFAR-10 from {}", data_dir.display());
    let mut jobs_ready = Vec::new();
    for (name, spec, base_recipe) in jobs {
        let mut recipe = base_recipe.with_overrides(&args.sets)?;
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
        jobs_ready.push(TrainJob {
            run: RunConfig {
                name,
                spec,
                recipe,
                seed: args.seed,
                device: dev,
                data_dir: data_dir.clone(),
                run_dir,
                train_limit: args.train_limit,
                test_limit: args.test_limit,
                val_size: args.val_size,
                eval_test_every: args.eval_test_every,
                resume: args.resume,
                stop_after: args.stop_after,
            },
            restart: args.restart,
            publish_to: out.clone(),
        });
    }
    let data = Cifar10Tensors::load(&data_dir, dev)?;
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    for job in &jobs_ready {
        let cfg = &job.run;
        eprintln!(
            "train-zoo: {}: {} ({} params, {} MACs), recipe {} for {} epochs, batch {}",
            cfg.name,
            cfg.spec.summary(),
            group(cfg.spec.params()),
            group(cfg.spec.macs()),
            cfg.recipe.name,
            cfg.recipe.epochs,
            cfg.recipe.batch_size
        );
        if let Some(precision) =
            tpsnet_training::conv_precision::describe(cfg.recipe.cpu_bf16, cfg.device)
        {
            eprintln!("train-zoo: {}: {precision}", cfg.name);
        }
        let mut console = Console::new(progress);
        let outcome = pipeline::run(job, &data, &mut |e| console.show(e))?;
        console.finish();
        print_outcome(&cfg.name, &outcome, args.json)?;
    }
    Ok(())
}

/// What `train-zoo` says about a finished (or stopped) model: lines on stderr, and the
/// JSON summary on stdout with `--json`.
pub fn print_outcome(name: &str, outcome: &Outcome, json: bool) -> Result<()> {
    let m = match outcome {
        Outcome::Stopped {
            epochs_done,
            epochs,
        } => {
            eprintln!(
                "train-zoo: {name}: stopped after epoch {epochs_done}/{epochs} as asked; continue with --resume"
            );
            return Ok(());
        }
        Outcome::Exported(m) => m,
    };
    eprintln!(
        "train-zoo: {}: test top-1 {:.2} % (flip TTA {:.2} %{}) after {} epochs, {:.1} s training at {:.0} img/s",
        m.name,
        m.top1,
        m.top1_flip_tta,
        m.top1_6view
            .map(|t| format!(", 6-view TTA {t:.2} %"))
            .unwrap_or_default(),
        m.epochs,
        m.train_time_s,
        m.images_per_s
    );
    eprintln!(
        "train-zoo: {}: wrote {} (sha256 {})",
        m.name,
        m.onnx.display(),
        m.sha256
    );
    if let Some(p) = &m.published {
        eprintln!("train-zoo: {}: published into {}", m.name, p.display());
    }
    if json {
        println!("{}", serde_json::to_string(m)?);
    }
    Ok(())
}
