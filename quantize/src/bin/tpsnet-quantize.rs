//! `tpsnet-quantize`: int8 variants of zoo models, calibrated on training images.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use clap::builder::TypedValueParser as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use tpsnet_quantize::params::WeightClip;
use tpsnet_quantize::pipeline::Candidate;
use tpsnet_quantize::pipeline::{
    DEFAULT_CALIBRATION_IMAGES, DEFAULT_VALIDATION_IMAGES, FirstConv, default_methods, prepare,
};
use tpsnet_quantize::publish::{ClaimOptions, Published, int8_manifest, publish};
use tpsnet_quantize::{
    QuantizeOptions, Quantized, RangeMethod, Selection, Stage, TrainingImages, quantize,
};
use tpsnet_runtime::classify::{model_and_manifest_paths, read_verified};
use tpsnet_runtime::{SessionOptions, registry};
use tpsnet_zoo::cifar::{self, Split};
use tpsnet_zoo::manifest::Manifest;

const ABOUT: &str = "Quantize zoo models to int8: static quantization calibrated on CIFAR-10 \
training images, in the layout ONNX Runtime runs on integer kernels (QLinearConv/QLinearAdd, \
uint8 activations, int8 per-channel weights). Writes <name>-int8-<sha8>.onnx and its manifest, \
with accuracy claims measured on the test set by the runtime's verify code.";

const EXAMPLES: &str = "\
Examples:
  tpsnet-quantize tpsnet                        int8 variant of the zoo's tpsnet, into the models folder
  tpsnet-quantize --all                         every fp32 model in the models folder
  tpsnet-quantize models/resnet20-3dcf6d04.onnx --out /tmp/q --test-limit 1000 --json
  tpsnet-quantize airnet --method mse --validation-images 0      one range method, no comparison
  tpsnet-quantize tpsnet --fp32 stem.conv       keep the first convolution in fp32
  tpsnet-quantize tpsnet --list-nodes           which nodes --fp32 can name
  tpsnet-quantize --print-calibration-set       the training indices calibration uses (JSON)

Then use the int8 variant by name, like any model:
  tpsnet-infer --model tpsnet-int8 photos/
  verify --dataset cifar10-test --model tpsnet-int8

How it works: the fp32 graph runs on --calibration-images training images (a seeded
shuffle, never the test set) and every activation that becomes uint8 is histogrammed.
Each range method (--method) turns the histograms into clipping ranges; the int8 model
of each is compared with the fp32 model on --validation-images *other* training images,
and the one closest to fp32 (lowest mean KL divergence of the softmax) is kept. Only
then is the test set read, to measure the manifest's claims (single view and flip
TTA; six views too when the fp32 model has a six-view number).
Layout, measurements and limits: docs/quantization.md.

Range methods: minmax (onnxruntime's default), percentile-P (clip the (100-P) % most
extreme values on each side, e.g. percentile-99.99), mse (the range with the least
expected squared error). Default: try mse, percentile-99.999, percentile-99.99, minmax.

Data: --data-dir, else $CIFAR10_DIR, else the downloader's cache (train-zoo download).

Exit status: 0 every model was quantized and published; 2 an error (named, with the fix).";

/// Quantize TPSNet zoo models to int8.
#[derive(Parser, Debug)]
#[command(name = "tpsnet-quantize", version, about = ABOUT, after_help = EXAMPLES)]
struct Args {
    /// fp32 models: names in the models folder, .onnx files (manifest beside them) or
    /// manifest .json files.
    #[arg(value_name = "MODEL", required_unless_present_any = ["all", "print_calibration_set"])]
    models: Vec<String>,

    /// Quantize every fp32 model in the models folder.
    #[arg(long, conflicts_with = "models")]
    all: bool,

    /// Folder to publish into [default: the models folder].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Training images the activation ranges are calibrated on.
    #[arg(long, default_value_t = DEFAULT_CALIBRATION_IMAGES, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    calibration_images: usize,

    /// Further training images the range methods are compared on (0: no comparison, give
    /// one --method).
    #[arg(long, default_value_t = DEFAULT_VALIDATION_IMAGES, value_name = "N")]
    validation_images: usize,

    /// Seed of the shuffle the calibration and validation images are drawn from.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Range method(s) to try: minmax, mse, percentile-P (comma-separated or repeated)
    /// [default: mse, percentile-99.999, percentile-99.99, minmax].
    #[arg(long, value_name = "METHOD", value_delimiter = ',', value_parser = parse_method)]
    method: Vec<RangeMethod>,

    /// How each conv's per-channel weight range is chosen: max-abs or mse.
    #[arg(long, default_value = "max-abs", value_parser = parse_weight_clip)]
    weight_clip: WeightClip,

    /// Keep this Conv, Add or average-pool node in fp32 (comma-separated or repeated; see
    /// --list-nodes).
    #[arg(long = "fp32", value_name = "NODE", value_delimiter = ',')]
    keep_fp32: Vec<String>,

    /// The first convolution (reading the normalised image): int8, fp32, or choose (try
    /// both on the validation images: int8 where its output feeds integer ops directly
    /// (lower batch-1 latency), unless its validation top-1 falls over 0.3 pp below fp32's;
    /// elsewhere whichever is closer to fp32).
    #[arg(long, default_value = "choose", value_parser = parse_first_conv)]
    first_conv: FirstConv,

    /// Measure the claims on the first N test images only (quick runs; the manifest
    /// records N, and `verify` checks on the same N).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    test_limit: Option<usize>,

    /// Folder with the CIFAR-10 binary files [default: $CIFAR10_DIR, else the cache].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Folder of published models [default: $TPSNET_MODELS, else the workspace's models/].
    #[arg(long, value_name = "DIR")]
    models_dir: Option<PathBuf>,

    /// ONNX Runtime intra-op threads (0: one per physical core).
    #[arg(long, default_value_t = 0)]
    threads: usize,

    /// Images per ONNX Runtime call when measuring the claims.
    #[arg(short, long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    batch_size: usize,

    /// Print a JSON report on stdout (human-readable lines go to stderr).
    #[arg(long)]
    json: bool,

    /// Print the nodes of each model that --fp32 can name, and exit.
    #[arg(long)]
    list_nodes: bool,

    /// Print the calibration and validation training indices (JSON) for --seed,
    /// --calibration-images and --validation-images, and exit.
    #[arg(long)]
    print_calibration_set: bool,
}

fn parse_method(s: &str) -> Result<RangeMethod, String> {
    RangeMethod::parse(s).ok_or_else(|| {
        format!("unknown range method `{s}`; use minmax, mse or percentile-P with 50 < P <= 100")
    })
}

fn parse_first_conv(s: &str) -> Result<FirstConv, String> {
    match s {
        "int8" => Ok(FirstConv::Int8),
        "fp32" => Ok(FirstConv::Fp32),
        "choose" => Ok(FirstConv::Choose),
        _ => Err(format!("unknown choice `{s}`; use int8, fp32 or choose")),
    }
}

fn parse_weight_clip(s: &str) -> Result<WeightClip, String> {
    match s {
        "max-abs" => Ok(WeightClip::MaxAbs),
        "mse" => Ok(WeightClip::Mse),
        _ => Err(format!("unknown weight clip `{s}`; use max-abs or mse")),
    }
}

/// Advice for a missing or damaged CIFAR-10, which the data reader's errors leave to the
/// commands.
const DATA_HINT: &str = "`train-zoo download` fetches CIFAR-10 into the cache and checks every file; --data-dir DIR or CIFAR10_DIR names a folder that holds `cifar-10-batches-bin`";

fn main() -> ExitCode {
    // The checkout this command was built in: its models/ and .venv/ are searched last.
    tpsnet_runtime::models_dir::SearchPlaces::for_workspace_member(env!("CARGO_MANIFEST_DIR"))
        .install();
    // The manifests' `source_commit` is this checkout's.
    tpsnet_zoo::provenance::set_source_tree(env!("CARGO_MANIFEST_DIR"));
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match advice(&e) {
                Some(fix) => eprintln!("error: {e:#}; {fix}"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(2)
        }
    }
}

/// Which flags fix an error the library reports (it knows no flags).
fn advice(e: &anyhow::Error) -> Option<&'static str> {
    if e.chain().any(|cause| cause.is::<cifar::CifarError>()) {
        return Some(DATA_HINT);
    }
    if let Some(fix) = runtime_advice(e) {
        return Some(fix);
    }
    let q = e
        .chain()
        .find_map(|c| c.downcast_ref::<tpsnet_quantize::Error>())?;
    match q {
        tpsnet_quantize::Error::UnknownNode { .. } => {
            Some("--fp32 names nodes to keep in fp32 (--list-nodes prints them)")
        }
        tpsnet_quantize::Error::NotEnoughImages { .. } => {
            Some("lower --calibration-images / --validation-images")
        }
        tpsnet_quantize::Error::Decode { .. } => {
            Some("pass a zoo model (.onnx with its manifest, or the manifest .json)")
        }
        tpsnet_quantize::Error::MethodsNeedValidation { .. } => {
            Some("pass --validation-images > 0, or give exactly one --method")
        }
        _ => None,
    }
}

/// Which flags or setup fix an error of the runtime (finding ONNX Runtime and models),
/// whether it came directly or inside the quantizer's error.
fn runtime_advice(e: &anyhow::Error) -> Option<&'static str> {
    use tpsnet_runtime::Error as R;
    let r = e.chain().find_map(|c| {
        c.downcast_ref::<R>()
            .or_else(|| match c.downcast_ref::<tpsnet_quantize::Error>() {
                Some(tpsnet_quantize::Error::Runtime(r)) => Some(r),
                _ => None,
            })
    })?;
    match r {
        R::OrtNotFound { .. } | R::OrtLoad { .. } => Some(
            "`scripts/setup --runtime` installs ONNX Runtime into the checkout's .venv; or set \
             ORT_DYLIB_PATH to the libonnxruntime.so.1.x.y that `pip install onnxruntime` puts \
             in site-packages/onnxruntime/capi/",
        ),
        R::ModelMissing { .. } => {
            Some("name an existing .onnx or .json file, or a model in the models folder")
        }
        R::NoModels { .. } | R::ModelsDirNotFound { .. } => {
            Some("pass --models-dir DIR (or set TPSNET_MODELS), or name model files")
        }
        _ => None,
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.print_calibration_set {
        return print_calibration_set(args);
    }
    let models_dir = registry::models_dir(args.models_dir.as_deref());
    let checked = check_models(args, &sources(args, &models_dir)?)?;
    if args.list_nodes {
        return Ok(());
    }

    let methods = if args.method.is_empty() {
        default_methods()
    } else {
        args.method.clone()
    };
    if methods.len() > 1 && args.validation_images == 0 {
        bail!(
            "--validation-images 0 leaves nothing to choose between {} range methods with; give one --method or some validation images",
            methods.len()
        );
    }
    let opts = QuantizeOptions {
        calibration_images: args.calibration_images,
        validation_images: args.validation_images,
        seed: args.seed,
        methods,
        weight_clip: args.weight_clip,
        keep_fp32: args.keep_fp32.clone(),
        first_conv: args.first_conv,
        batch_size: 64,
        threads: args.threads,
    };
    let data_dir = cifar::resolve_dir(args.data_dir.as_deref())?;
    let out_dir = args.out.clone().unwrap_or_else(|| models_dir.clone());
    say(&format!(
        "reading CIFAR-10 training images from {}",
        data_dir.display()
    ));
    let train = TrainingImages::load(&data_dir)?;

    let mut reports = Vec::new();
    for path in &checked {
        let report = quantize_one(args, path, &train, &data_dir, &out_dir, &opts)
            .with_context(|| format!("quantizing {}", path.display()))?;
        reports.push(report);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "models": reports }))?
        );
    }
    Ok(())
}

/// `--print-calibration-set`: the training indices calibration and validation use.
fn print_calibration_set(args: &Args) -> anyhow::Result<()> {
    let total_train = Split::Train.official_len();
    let s = Selection::new(
        total_train,
        args.seed,
        args.calibration_images,
        args.validation_images,
    )
    .context("--calibration-images + --validation-images exceed the 50,000 training images")?;
    println!(
        "{}",
        json!({
            "split": "train",
            "seed": s.seed,
            "selection": s.describe(total_train),
            "calibration": s.calibration,
            "calibration_sha256": tpsnet_quantize::images::indices_sha256(&s.calibration),
            "validation": s.validation,
        })
    );
    Ok(())
}

/// Reads and checks every model before any image, so that a model the quantizer cannot
/// handle is refused at once; with `--list-nodes`, prints the nodes `--fp32` can name.
fn check_models(args: &Args, sources: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut checked = Vec::new();
    for path in sources {
        let (model, manifest_path, manifest) = model_and_manifest_paths(path)?;
        if !manifest.precision.is_fp32() {
            bail!(
                "{} is already {}; quantize its fp32 source{}",
                manifest_path.display(),
                manifest.precision,
                manifest
                    .quantization
                    .as_ref()
                    .map(|q| format!(" ({})", q.source.name))
                    .unwrap_or_default()
            );
        }
        let bytes = read_verified(&model, &manifest_path, &manifest)?;
        let prepared = prepare(&model, &bytes, &args.keep_fp32)?;
        if args.list_nodes {
            println!("{}:", manifest.name);
            for n in tpsnet_quantize::plan::quantizable_nodes(&prepared.graph) {
                println!("  {n}");
            }
        }
        checked.push(path.clone());
    }
    Ok(checked)
}

/// The manifests or model files to quantize.
fn sources(args: &Args, models_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !args.all {
        return args
            .models
            .iter()
            .map(|m| Ok(registry::resolve_model(Some(m), models_dir)?))
            .collect();
    }
    let reg = registry::Registry::scan(models_dir)?;
    for (path, why) in &reg.invalid {
        eprintln!("warning: skipping {}: {why}", path.display());
    }
    let fp32: Vec<PathBuf> = reg
        .models
        .iter()
        .filter(|m| m.manifest.precision.is_fp32())
        .map(|m| m.manifest_path.clone())
        .collect();
    if fp32.is_empty() {
        return Err(tpsnet_runtime::Error::NoModels {
            dir: models_dir.to_path_buf(),
        }
        .into());
    }
    Ok(fp32)
}

/// Human-readable progress: always on stderr, so `--json` output stays clean.
fn say(line: &str) {
    eprintln!("{line}");
}

fn bar(len: u64, prefix: String) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{prefix} {bar:40} {pos}/{len} images, {per_sec}")
            .expect("valid template"),
    );
    b.set_prefix(prefix);
    b
}

/// Quantizes one fp32 model, measures its claims on the test set and publishes it.
fn quantize_one(
    args: &Args,
    path: &Path,
    train: &TrainingImages,
    data_dir: &Path,
    out_dir: &Path,
    opts: &QuantizeOptions,
) -> anyhow::Result<ModelReport> {
    let (model, manifest_path, source) = model_and_manifest_paths(path)?;
    let bytes = read_verified(&model, &manifest_path, &source)?;
    let start = Instant::now();
    say(&format!(
        "{}: calibrating on {} training images (seed {}), choosing among {}",
        source.name,
        opts.calibration_images,
        opts.seed,
        opts.methods
            .iter()
            .map(|m| m.label())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let cal_bar = bar(
        2 * opts.calibration_images as u64,
        format!("{} calibrate", source.name),
    );
    let q = quantize(&model, &bytes, train, opts, &|stage| {
        show_stage(stage, &cal_bar)
    })?;
    cal_bar.finish_and_clear();
    let quantize_s = start.elapsed().as_secs_f64();
    say(&format!(
        "  ranges: {} ({}); {} integer nodes, fp32: {}",
        q.method.label(),
        q.chosen_by,
        q.integer_nodes,
        if q.float_nodes.is_empty() {
            "none".to_string()
        } else {
            q.float_nodes.join(", ")
        }
    ));
    let published = measure_and_publish(args, &source, &q, train.len(), data_dir, out_dir)?;
    say_claims(&source, &published, start.elapsed().as_secs_f64());
    Ok(ModelReport::new(
        &source,
        &manifest_path,
        &q,
        &published,
        Seconds {
            quantize: quantize_s,
            total: start.elapsed().as_secs_f64(),
        },
    ))
}

/// A quantization's progress: the calibration bar, then one line per candidate.
fn show_stage(stage: Stage, cal_bar: &ProgressBar) {
    match stage {
        Stage::Calibrate { pass, done, total } => {
            cal_bar.set_position(((pass - 1) * total + done) as u64);
        }
        Stage::Reference { images } => {
            cal_bar.finish_and_clear();
            eprintln!("  fp32 reference on {images} validation images");
        }
        Stage::Validated {
            candidate,
            agreement,
        } => eprintln!(
            "  {:<18} {:<22} mean KL {:.5}, same top-1 {:.2} %, top-1 {:.2} % (fp32 {:.2} %)",
            candidate.method,
            if candidate.fp32_nodes.is_empty() {
                "all convs int8".to_string()
            } else {
                format!("fp32: {}", candidate.fp32_nodes.join(","))
            },
            agreement.mean_kl,
            agreement.same_top1,
            agreement.top1_int8,
            agreement.top1_fp32
        ),
    }
}

/// Measures the int8 model's claims on the (first `--test-limit`) test images and
/// publishes it into `out_dir`.
fn measure_and_publish(
    args: &Args,
    source: &Manifest,
    q: &Quantized,
    train_images: usize,
    data_dir: &Path,
    out_dir: &Path,
) -> anyhow::Result<Published> {
    let test = cifar::load(data_dir, Split::Test)?;
    let test = match args.test_limit {
        Some(n) if n < test.len() => test.subset(0..n),
        _ => test,
    };
    let manifest = int8_manifest(source, q, train_images);
    let claims = ClaimOptions {
        images_total: Split::Test.official_len(),
        session: SessionOptions::builder()
            .threads(args.threads)
            .batch_size(args.batch_size)
            .build(),
    };
    say(&format!(
        "  measuring claims on {} test images (single view, flip TTA{})",
        test.len(),
        if manifest.metrics.top1_6view.is_some() {
            ", six-view TTA"
        } else {
            ""
        }
    ));
    let test_bar = bar(test.len() as u64, format!("{} test", manifest.name));
    let published = publish(
        manifest,
        &q.bytes,
        &test,
        &claims,
        out_dir,
        &|view, done| {
            test_bar.set_message(view.to_string());
            test_bar.set_position(done);
        },
    )?;
    test_bar.finish_and_clear();
    Ok(published)
}

/// The published model's measured claims against its fp32 source's.
fn say_claims(source: &Manifest, published: &Published, seconds: f64) {
    let claimed = |t: Option<f64>| {
        t.map(|t| format!("{t:.2} %"))
            .unwrap_or_else(|| "nothing".into())
    };
    let m = &published.manifest;
    say(&format!(
        "{} -> {} ({:.1} MB, fp32 {:.1} MB): top-1 {:.2} % (fp32 claims {:.2} %), flip TTA {:.2} % (fp32 claims {}); {:.0} s",
        source.name,
        published.onnx.display(),
        m.bytes as f64 / 1e6,
        source.bytes as f64 / 1e6,
        published.single.top1,
        source.metrics.top1,
        published.flip_tta.top1,
        claimed(source.metrics.top1_flip_tta),
        seconds
    ));
    if let Some(six) = &published.six_view {
        say(&format!(
            "  six-view TTA {:.2} % (fp32 claims {})",
            six.top1,
            claimed(source.metrics.top1_6view)
        ));
    }
}

/// One model's entry in the `--json` report.
#[derive(Debug, Serialize)]
struct ModelReport {
    name: String,
    source: SourceReport,
    onnx: String,
    manifest: String,
    sha256: String,
    bytes: u64,
    range_method: String,
    chosen_by: String,
    candidates: Vec<Candidate>,
    calibration: CalibrationReport,
    integer_nodes: usize,
    kept_fp32: Vec<String>,
    float_nodes: Vec<String>,
    pool_batchnorm_folded: Vec<String>,
    claims: ClaimsReport,
    seconds: Seconds,
}

/// The fp32 model a report's int8 model was made from.
#[derive(Debug, Serialize)]
struct SourceReport {
    name: String,
    manifest: String,
    sha256: String,
    bytes: u64,
    claims: Claims,
}

/// Top-1 claims (percent) of a model.
#[derive(Debug, Serialize)]
struct Claims {
    top1: f64,
    top1_flip_tta: Option<f64>,
    top1_6view: Option<f64>,
}

/// The training images a report's model was calibrated and chosen on.
#[derive(Debug, Serialize)]
struct CalibrationReport {
    split: &'static str,
    images: usize,
    seed: u64,
    indices_sha256: String,
    validation_images: usize,
}

/// The int8 model's measured claims.
#[derive(Debug, Serialize)]
struct ClaimsReport {
    images: u64,
    #[serde(flatten)]
    top1: Claims,
    single_images_per_s: f64,
}

/// Wall time of the quantization alone and of the whole model (claims included).
#[derive(Debug, Serialize)]
struct Seconds {
    quantize: f64,
    total: f64,
}

impl ModelReport {
    fn new(
        source: &Manifest,
        manifest_path: &Path,
        q: &Quantized,
        published: &Published,
        seconds: Seconds,
    ) -> Self {
        let m = &published.manifest;
        ModelReport {
            name: m.name.clone(),
            source: SourceReport {
                name: source.name.clone(),
                manifest: manifest_path.display().to_string(),
                sha256: source.sha256.clone(),
                bytes: source.bytes,
                claims: Claims {
                    top1: source.metrics.top1,
                    top1_flip_tta: source.metrics.top1_flip_tta,
                    top1_6view: source.metrics.top1_6view,
                },
            },
            onnx: published.onnx.display().to_string(),
            manifest: published.manifest_path.display().to_string(),
            sha256: m.sha256.clone(),
            bytes: m.bytes,
            range_method: q.method.label(),
            chosen_by: q.chosen_by.to_string(),
            candidates: q.candidates.clone(),
            calibration: CalibrationReport {
                split: "train",
                images: q.selection.calibration.len(),
                seed: q.selection.seed,
                indices_sha256: tpsnet_quantize::images::indices_sha256(&q.selection.calibration),
                validation_images: q.selection.validation.len(),
            },
            integer_nodes: q.integer_nodes,
            kept_fp32: q.kept_fp32.clone(),
            float_nodes: q.float_nodes.clone(),
            pool_batchnorm_folded: q.folded.folded.clone(),
            claims: ClaimsReport {
                images: m.metrics.images,
                top1: Claims {
                    top1: published.single.top1,
                    top1_flip_tta: Some(published.flip_tta.top1),
                    top1_6view: published.six_view.as_ref().map(|e| e.top1),
                },
                single_images_per_s: published.single.images_per_s,
            },
            seconds,
        }
    }
}
