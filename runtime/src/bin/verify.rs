//! `verify`: measure zoo models on the real CIFAR-10 test set and check their manifests.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tpsnet_runtime::cli::ExecutionArgs;
use tpsnet_runtime::verify::{self, DEFAULT_TOLERANCE_PP, VerifyOptions, VerifyReport};
use tpsnet_runtime::{Classifier, TtaMode, registry};
use tpsnet_zoo::cifar::{self, Split};

const EXAMPLES: &str = "\
Examples:
  verify --dataset cifar10-test                    best shipped model
  verify --dataset cifar10-test --all --tta        every model in the models folder, also flip TTA
  verify --model airnet-short --tta 6view          also six-view TTA
  verify --all --backend tract                     every model on the pure-Rust engine
  verify --dataset cifar10-test --model tpsnet --tolerance 0.05 --report tpsnet-verify.json
  verify --dataset cifar10-test --model models/tpsnet-1a2b3c4d.onnx --data-dir ~/data/cifar-10-batches-bin

Data: --data-dir, else $CIFAR10_DIR, else the downloader's cache; --download fetches
CIFAR-10 into the cache when none of these has it. Every file is checked against the
official md5.

Checks: every accuracy the manifest states is re-measured the same way (metrics.top1
single-view; metrics.top1_flip_tta averaging the logits of each image and its horizontal
mirror; metrics.top1_6view over six views: mirror x {no shift, 1 px down-right, 1 px
up-left}, reflect-padded, weights 1/4 for the unshifted pair and 1/8 for the others).
Single view and the headline claim's mode (metrics.claim) are always measured; --tta adds
a mode. Each measured mode the manifest has a number for is checked. A check fails when
|measured - claimed| > --tolerance percentage points.

Backends (--backend): ort, ONNX Runtime, found at run time: ORT_DYLIB_PATH if set, else
libonnxruntime.so* beside the executable, else the checkout's .venv, else the system
library path; tract, a pure-Rust engine built in with the `tract` cargo feature (CPU
only; the int8 models need ort). --version shows the backends, the library and the
models folder in use.

Exit status: 0 every claim holds; 1 a claim does not hold; 2 nothing could be verified
(no model, bad model, missing or corrupt data).";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Dataset {
    /// The official 10,000-image CIFAR-10 test set (test_batch.bin).
    #[value(name = "cifar10-test")]
    Cifar10Test,
}

/// Measure TPSNet zoo models on the CIFAR-10 test set and check their manifests' claims.
#[derive(Parser, Debug)]
#[command(name = "verify", version, after_help = EXAMPLES)]
struct Args {
    /// Data set to measure on.
    #[arg(long, value_enum, default_value = "cifar10-test")]
    dataset: Dataset,

    /// Model: an .onnx file (with its manifest beside it), a manifest .json, or a model
    /// name in the models folder [default: the shipped model with the best claimed top-1].
    #[arg(short, long, value_name = "NAME|FILE", conflicts_with = "all")]
    model: Option<String>,

    /// Verify every model in the models folder.
    #[arg(long)]
    all: bool,

    /// Also measure this test-time augmentation: flip (image and mirror), 6view (airbench's
    /// six views) or none; `--tta` alone means flip.
    #[arg(long, value_name = "MODE", num_args = 0..=1, default_missing_value = "flip")]
    tta: Option<TtaMode>,

    /// Largest allowed |measured - claimed| top-1 difference, in percentage points.
    #[arg(long, default_value_t = DEFAULT_TOLERANCE_PP, value_name = "PP")]
    tolerance: f64,

    /// Folder with the CIFAR-10 binary files [default: $CIFAR10_DIR, else the cache].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Download CIFAR-10 into the cache if no copy is found.
    #[arg(long)]
    download: bool,

    /// Folder of published models [default: $TPSNET_MODELS, else the first of ./models,
    /// models/ beside the executable and the checkout's models/ that exists].
    #[arg(long, value_name = "DIR")]
    models_dir: Option<PathBuf>,

    /// Where to write the JSON report.
    #[arg(long, default_value = "verify-report.json", value_name = "FILE")]
    report: PathBuf,

    #[command(flatten)]
    execution: ExecutionArgs,
}

fn main() -> ExitCode {
    // The checkout this command was built in: its models/ and .venv/ are searched last.
    tpsnet_runtime::models_dir::SearchPlaces::for_workspace_member(env!("CARGO_MANIFEST_DIR"))
        .install();
    let args: Args = tpsnet_runtime::cli::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = tpsnet_runtime::cli::hint(&e) {
                eprintln!("{hint}");
            }
            ExitCode::from(2)
        }
    }
}

fn data_dir(args: &Args) -> anyhow::Result<PathBuf> {
    match cifar::resolve_dir(args.data_dir.as_deref()) {
        Ok(dir) => Ok(dir),
        Err(e) if args.download && args.data_dir.is_none() => {
            eprintln!("{e}\ndownloading CIFAR-10 (--download) ...");
            let opts = tpsnet_zoo::download::DownloadOptions::default();
            Ok(tpsnet_zoo::download::download_cifar10(&opts)?)
        }
        // main adds the advice (`--download`, `--data-dir`) for data errors.
        Err(e) => Err(e.into()),
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    if !(args.tolerance.is_finite() && args.tolerance >= 0.0) {
        bail!(
            "--tolerance {} is not a non-negative number of percentage points",
            args.tolerance
        );
    }
    let Dataset::Cifar10Test = args.dataset;

    let models = models_to_check(args)?;

    let dir = data_dir(args)?;
    let data = cifar::load(&dir, Split::Test)?;
    verify::check_test_set(&data).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;

    let options = args.execution.session_options();
    let vopts = VerifyOptions {
        tta: args.tta,
        tolerance_pp: args.tolerance,
    };
    let show_bar = std::io::stderr().is_terminal();
    let mut reports = Vec::new();
    let mut fallback_announced = false;
    for model in &models {
        let classifier = Classifier::open(model, &options)?;
        if !fallback_announced {
            fallback_announced = tpsnet_runtime::cli::announce_fallback(&classifier);
        }
        let bar = progress_bar(show_bar, data.len());
        let report = verify::verify_model(&classifier, &data, &vopts, &|view, done| {
            bar.set_prefix(format!("{} {view}", classifier.name()));
            bar.set_position(done);
        })
        .with_context(|| format!("verifying {}", classifier.model_path().display()))?;
        bar.finish_and_clear();
        print!("{}", verify::summary_text(&report, classifier.classes()));
        reports.push(report);
    }

    let passed = reports.iter().all(|r| r.passed);
    let report = VerifyReport {
        dataset: "cifar10-test".into(),
        data_dir: dir.display().to_string(),
        images: data.len() as u64,
        tolerance_pp: args.tolerance,
        tta_requested: args.tta,
        models: reports,
        passed,
        runtime_version: env!("CARGO_PKG_VERSION").into(),
    };
    write_report(&report, &args.report)?;
    Ok(passed)
}

/// The manifests to check: every model of the models folder (`--all`), else the one
/// `--model` names (or the folder's only model).
fn models_to_check(args: &Args) -> anyhow::Result<Vec<PathBuf>> {
    if !args.all {
        let model = registry::find_model(args.model.as_deref(), args.models_dir.as_deref())?;
        return Ok(vec![model]);
    }
    let models_dir = registry::locate_models_dir(args.models_dir.as_deref())?.path;
    let reg = registry::Registry::scan(&models_dir)?;
    for (path, why) in &reg.invalid {
        eprintln!("warning: skipping {}: {why}", path.display());
    }
    if reg.models.is_empty() {
        return Err(tpsnet_runtime::Error::NoModels { dir: models_dir }.into());
    }
    Ok(reg.models.iter().map(|m| m.manifest_path.clone()).collect())
}

/// A progress bar over `images` test images on a terminal, else a hidden one.
fn progress_bar(show: bool, images: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(images as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} {bar:40} {pos}/{len} images, {per_sec}")
            .expect("valid template"),
    );
    bar
}

/// Writes the JSON report atomically and says where, and whether every claim held.
fn write_report(report: &VerifyReport, path: &std::path::Path) -> anyhow::Result<()> {
    let mut json = serde_json::to_string_pretty(report)?;
    json.push('\n');
    tpsnet_zoo::publish::write_atomic(path, json.as_bytes())
        .with_context(|| format!("cannot write the report {}", path.display()))?;
    println!(
        "{}: report written to {}",
        if report.passed {
            "all claims hold"
        } else {
            "FAILED: a claim does not hold"
        },
        path.display()
    );
    Ok(())
}
