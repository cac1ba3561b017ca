//! `tpsnet-infer`: classify image files and folders with a TPSNet zoo model.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tpsnet_runtime::cli::ExecutionArgs;
use tpsnet_runtime::report::{OutputFormat, PredictionWriter};
use tpsnet_runtime::{Classifier, TtaMode, infer, registry};

const EXAMPLES: &str = "\
Examples:
  tpsnet-infer photos/                      best shipped model, table output
  tpsnet-infer --model tpsnet cat.jpg dog.png
  tpsnet-infer --model models/tpsnet-1a2b3c4d.onnx -k 3 --format jsonl images/ > out.jsonl
  tpsnet-infer --format csv --device cuda:0 --allow-cpu-fallback images/
  tpsnet-infer --tta 6view photos/          average six views of each image (6x the work)
  tpsnet-infer --backend tract photos/      pure-Rust engine, no ONNX Runtime needed

Test-time augmentation (--tta): none (one view), flip (the image and its mirror, 2x the
work), 6view (mirror x {no shift, 1 px down-right, 1 px up-left}, reflect-padded; weights
1/4 for the unshifted pair, 1/8 for each shifted view; 6x the work, one batched call).
A manifest's claim (metrics.claim) says which mode its accuracy was measured with.

Images: PNG, JPEG, BMP, GIF, WebP, TIFF of any size and colour type; they are converted
to RGB and resized to 32x32 (Triangle filter). Folders are searched recursively for
files with those extensions; files named on the command line are always tried.

The model's sha256 is checked against its manifest (<model>.json beside the .onnx)
before it is loaded. Backends (--backend): ort, ONNX Runtime, found at run time:
ORT_DYLIB_PATH if set, else libonnxruntime.so* beside the executable, else the checkout's
.venv, else the system library path; tract, a pure-Rust engine built in with the `tract`
cargo feature (CPU only; the int8 models need ort). --version shows the backends, the
library and the models folder in use.

Exit status: 0 every image classified; 1 some inputs could not be read (each one is
reported on stderr and skipped); 2 nothing could be done (no model, bad model, empty
folder, bad arguments).";

/// Classify images with a TPSNet zoo model on ONNX Runtime or tract.
#[derive(Parser, Debug)]
#[command(name = "tpsnet-infer", version, after_help = EXAMPLES)]
struct Args {
    /// Image files and folders (searched recursively).
    #[arg(required = true, value_name = "PATH")]
    inputs: Vec<PathBuf>,

    /// Model: an .onnx file (with its manifest beside it), a manifest .json, or a model
    /// name in the models folder [default: the shipped model with the best claimed top-1].
    #[arg(short, long, value_name = "NAME|FILE")]
    model: Option<String>,

    /// Folder of published models [default: $TPSNET_MODELS, else the first of ./models,
    /// models/ beside the executable and the checkout's models/ that exists].
    #[arg(long, value_name = "DIR")]
    models_dir: Option<PathBuf>,

    /// How many of the most likely classes to report per image.
    #[arg(short = 'k', long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    top_k: u16,

    /// Output format on stdout.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,

    /// Test-time augmentation: none, flip or 6view (see below).
    #[arg(long, value_name = "MODE", default_value_t = TtaMode::None)]
    tta: TtaMode,

    #[command(flatten)]
    execution: ExecutionArgs,

    /// Never show a progress bar (it is only shown on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

fn main() -> ExitCode {
    // The checkout this command was built in: its models/ and .venv/ are searched last.
    tpsnet_runtime::models_dir::SearchPlaces::for_workspace_member(env!("CARGO_MANIFEST_DIR"))
        .install();
    let args: Args = tpsnet_runtime::cli::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            if let Some(hint) = tpsnet_runtime::cli::hint(&e) {
                eprintln!("{hint}");
            }
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let inputs = infer::collect_inputs(&args.inputs)?;
    let model = registry::find_model(args.model.as_deref(), args.models_dir.as_deref())?;
    let options = args.execution.session_options();
    let classifier = Classifier::open(&model, &options)?.with_tta(args.tta);
    tpsnet_runtime::cli::announce_fallback(&classifier);

    let mut failed = 0usize;
    for e in &inputs.rejected {
        eprintln!("skipped: {e}");
        failed += 1;
    }

    let total = inputs.files.len() as u64;
    let bar = if !args.no_progress && std::io::stderr().is_terminal() && total > 256 {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, eta {eta}")
                .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let stdout = std::io::stdout().lock();
    let mut writer = PredictionWriter::new(std::io::BufWriter::new(stdout), args.format);
    let mut classified = 0usize;
    let mut write_error: Option<std::io::Error> = None;
    infer::classify_files(
        &classifier,
        &inputs.files,
        args.top_k as usize,
        |path, result| {
            bar.inc(1);
            match result {
                Ok(p) => {
                    classified += 1;
                    if write_error.is_none()
                        && let Err(e) = writer.write(path, &p)
                    {
                        write_error = Some(e);
                    }
                }
                Err(e) => {
                    failed += 1;
                    bar.suspend(|| eprintln!("skipped: {e}"));
                }
            }
        },
    )
    .with_context(|| format!("classifying with {}", classifier.model_path().display()))?;
    bar.finish_and_clear();
    if let Some(e) = write_error {
        return Err(e.into());
    }
    writer.flush()?;
    drop(writer);
    std::io::stdout().flush()?;

    eprintln!(
        "{classified} image(s) classified, {failed} failed; model {} ({}) on {}, tta {}",
        classifier.name(),
        classifier.model_path().display(),
        classifier.execution().provider,
        classifier.tta()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
