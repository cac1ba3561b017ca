//! `tpsnet-serve`: an HTTP inference server (KServe v2 REST, image uploads, dynamic
//! batching, Prometheus metrics) over one TPSNet zoo model, several, or all of them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tpsnet_runtime::{Backend, Classifier, Device, SessionOptions, registry};
use tpsnet_serve::repository::{CpuBudget, Repository};
use tpsnet_serve::{ServeError, Server, ServerConfig};

const EXAMPLES: &str = "\
Endpoints (KServe v2 / Open Inference Protocol REST, plus uploads and metrics):
  GET  /v2                                server metadata
  GET  /v2/health/live, /v2/health/ready  liveness, readiness (503 while shutting down)
  GET  /v2/models/NAME[/versions/V]       model metadata: input FP32 [-1,3,32,32], output
  GET  /v2/models/NAME/ready              model readiness
  POST /v2/models/NAME/infer              FP32 tensors in JSON (flat or nested data) or
                                          Triton's binary tensor extension
  POST /v2/models/NAME/classify[?top_k=K] an image as the body, or multipart/form-data
                                          files; answers classes and probabilities
  GET  /metrics                           Prometheus text format
  POST /v2/repository/index               every model served or in the models folder, with
                                          its state (READY, UNAVAILABLE)
  POST /v2/repository/models/NAME/load    load a model; .../unload answers what is queued,
                                          then frees it (later requests get 503)
With --grpc-port P, also KServe v2 over gRPC (inference.GRPCInferenceService: ServerLive,
ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer with fp32_contents or
raw_input_contents) on port P, through the same batcher.

Examples:
  tpsnet-serve                                   best shipped model on 127.0.0.1:8000
  tpsnet-serve --model resnet20 --port 8080 --max-batch 32
  tpsnet-serve --model resnet20 --grpc-port 8001   REST on 8000, gRPC on 8001
  tpsnet-serve --model resnet20 --model resnet20-int8   two models, one queue each
  tpsnet-serve --all --threads 1 --cpu-threads 4   every model; 4 one-thread batches at once
  tpsnet-serve --max-connections 4096 --body-timeout-s 10 --keep-alive-timeout-s 30
  tpsnet-serve --host 0.0.0.0 --device cuda:0 --max-batch 256
  curl -s localhost:8000/v2/models/airnet-wide
  curl -s --data-binary @cat.png 'localhost:8000/v2/models/airnet-wide/classify?top_k=3'
  curl -s localhost:8000/metrics | grep tpsnet_batch_size

Batching: concurrent requests wait in one queue; a free worker runs whatever is queued
at once as one ONNX Runtime call of up to --max-batch images, so batches grow while the
previous one runs and a lone request never waits. --max-delay-ms (off by default) makes
a batch that is not full wait for company. --max-batch 1 turns batching off. A full
queue (--max-queue images) answers 503 with Retry-After.

Several models (--model repeated, or --all) each get their own queue and batcher and
share one CPU budget: with --threads 0 (ONNX Runtime's default, every core) only
--workers batches run at once across all models; with --threads T, --cpu-threads / T.

Connections: headers must arrive within --header-timeout-s, bodies within
--body-timeout-s (else 408), idle keep-alive connections close after
--keep-alive-timeout-s; beyond --max-connections a connection gets 503 and is closed.

On SIGTERM or Ctrl-C the server stops accepting connections, closes those with no
request or a request still arriving, runs what is queued at once, answers every request
received and exits 0 (1 if --shutdown-timeout-s passes first). Errors are JSON {\"error\": ...} with a 4xx/5xx status. ONNX Runtime is found
at ORT_DYLIB_PATH if set, else beside the executable, else the checkout's .venv, else
the system library path (--version shows the one in use). Exit status: 0 clean shutdown, 1 shutdown timed out, 2 could not
start (bad model, port in use, bad option). Details: docs/serving.md.";

/// Serve a TPSNet zoo model over HTTP: KServe v2 REST inference, image uploads, dynamic
/// batching and Prometheus metrics.
#[derive(Parser, Debug)]
#[command(name = "tpsnet-serve", version, after_help = EXAMPLES)]
struct Args {
    /// Address to listen on (0.0.0.0 or :: for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,

    /// Port to listen on (0: any free port, printed at start).
    #[arg(short, long, default_value_t = 8000)]
    port: u16,

    /// Model: an .onnx file (with its manifest beside it), a manifest .json, or a model
    /// name in the models folder; repeat to serve several [default: the shipped model
    /// with the best claimed top-1].
    #[arg(short, long, value_name = "NAME|FILE")]
    model: Vec<String>,

    /// Serve every model in the models folder (fp32 and int8), each with its own queue.
    #[arg(long, conflicts_with = "model")]
    all: bool,

    /// Folder of published models [default: $TPSNET_MODELS, else the first of ./models,
    /// models/ beside the executable and the checkout's models/ that exists].
    #[arg(long, value_name = "DIR")]
    models_dir: Option<PathBuf>,

    /// Inference engine: ort (ONNX Runtime) or tract (pure Rust, CPU only).
    #[arg(long, value_name = "ort|tract", default_value_t = Backend::default())]
    backend: Backend,

    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: Device,

    /// If CUDA cannot start, run on the CPU instead of failing (announced on stderr).
    #[arg(long)]
    allow_cpu_fallback: bool,

    /// ONNX Runtime intra-op threads per batch (0: one per physical core, and then only
    /// --workers batches run at once across all models).
    #[arg(long, default_value_t = 0)]
    threads: usize,

    /// Microseconds an idle ONNX Runtime thread spins for work before it sleeps (0: ONNX
    /// Runtime's default). 100 keeps a lone request about as fast and leaves the CPU to
    /// request handling and other models under load: resnet20 at 64 clients +10 %,
    /// three models in one server +75 % (docs/benchmarks.md).
    #[arg(long, value_name = "US", default_value_t = 100)]
    spin_us: u32,

    /// CPU threads shared by all models: with --threads T, at most CPU_THREADS / T
    /// batches run at once across every model, so busy models take turns instead of
    /// oversubscribing the cores [default: the logical cores].
    #[arg(long, value_name = "CPU_THREADS", value_parser = clap::value_parser!(u32).range(1..=4096))]
    cpu_threads: Option<u32>,

    /// Most images in one ONNX Runtime call; 1 turns dynamic batching off.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_batch: u32,

    /// Opt-in wait (milliseconds, fractions allowed) for others to join a batch that is
    /// not full, counted from its oldest request. 0 never waits: a free worker runs
    /// whatever is queued at once.
    #[arg(long, default_value_t = 0.0, value_parser = parse_millis)]
    max_delay_ms: f64,

    /// Turn dynamic batching off (same as --max-batch 1).
    #[arg(long, conflicts_with = "max_batch")]
    no_batching: bool,

    /// Most images waiting in the queue; beyond it requests get 503 + Retry-After.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_queue: u32,

    /// Largest request body (bytes; suffixes K, M, G = KiB, MiB, GiB): larger gets 413.
    #[arg(long, default_value = "32M", value_parser = parse_bytes)]
    max_body_bytes: usize,

    /// Largest uploaded image width or height in pixels: larger gets 413, undecoded.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_image_side: u32,

    /// Batches run at the same time (each with its own ONNX Runtime session); 1 suits a
    /// CPU, where one batch already uses every core.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,

    /// Seconds in-flight requests may take to finish after SIGTERM/Ctrl-C.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout_s: u64,

    /// Seconds a client is told to wait (Retry-After) when the queue is full.
    #[arg(long, default_value_t = 1)]
    retry_after_s: u32,

    /// Print one line per request to stderr (method, path, status, milliseconds).
    #[arg(long)]
    access_log: bool,

    /// Also serve KServe v2 over gRPC (inference.GRPCInferenceService) on this port of
    /// --host, through the same batcher (0: any free port, printed at start) [default: off].
    #[arg(long, value_name = "PORT")]
    grpc_port: Option<u16>,

    /// Seconds a client may take to send a request's headers (from their first byte, or
    /// from the connection's start); past it the connection is closed.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    header_timeout_s: f64,

    /// Seconds a request's body may take to arrive after its headers; past it the
    /// request gets 408 and the connection is closed.
    #[arg(long, default_value_t = 30.0, value_parser = parse_seconds)]
    body_timeout_s: f64,

    /// Seconds an idle keep-alive connection is kept open between requests.
    #[arg(long, default_value_t = 60.0, value_parser = parse_seconds)]
    keep_alive_timeout_s: f64,

    /// Most connections open at once; beyond it a connection gets 503 + Retry-After and
    /// is closed. Keep `ulimit -n` above it.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,

    /// Before serving a model (at start and on each load), run one full batch of blank
    /// images (--max-batch of them) through it: the first requests are then as fast as
    /// later ones, and memory is at its full-load size from the start instead of growing
    /// under load (it costs that much memory at once: 667 MiB instead of 227 for --all).
    #[arg(long)]
    warm_up: bool,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.001..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{s}` is not a time in seconds between 0.001 and 86400"
        )),
    }
}

fn parse_millis(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=60_000.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{s}` is not a delay in milliseconds between 0 and 60000"
        )),
    }
}

fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let scale: usize = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("`{s}`: unknown unit; use bytes or K, M, G")),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n >= 1024)
        .ok_or_else(|| format!("`{s}` is not a size of at least 1024 bytes (e.g. 32M)"))
}

fn main() -> ExitCode {
    // Before any thread starts: one malloc arena per core keeps RSS flat under load.
    tpsnet_serve::malloc_arenas::cap_malloc_arenas(
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    );
    // The checkout this command was built in: its models/ and .venv/ are searched last.
    tpsnet_runtime::models_dir::SearchPlaces::for_workspace_member(env!("CARGO_MANIFEST_DIR"))
        .install();
    let args: Args = tpsnet_runtime::cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match rt.block_on(start(&args)) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(server.run(shutdown_signal())) {
        Ok(()) => {
            eprintln!("tpsnet-serve: every request answered; stopped");
            ExitCode::SUCCESS
        }
        Err(e @ ServeError::ShutdownTimeout { .. }) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn config(args: &Args) -> ServerConfig {
    ServerConfig {
        max_batch: if args.no_batching {
            1
        } else {
            args.max_batch as usize
        },
        max_delay: Duration::from_secs_f64(args.max_delay_ms / 1e3),
        max_queue: args.max_queue as usize,
        max_body_bytes: args.max_body_bytes,
        max_image_side: args.max_image_side,
        workers: args.workers as usize,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout_s),
        retry_after_s: args.retry_after_s,
        access_log: args.access_log,
        header_timeout: Duration::from_secs_f64(args.header_timeout_s),
        body_timeout: Duration::from_secs_f64(args.body_timeout_s),
        keep_alive_timeout: Duration::from_secs_f64(args.keep_alive_timeout_s),
        max_connections: args.max_connections as usize,
        warm_up: args.warm_up,
    }
}

/// The manifests to serve: every model of the folder (`--all`), each `--model`, or the
/// best shipped model.
fn chosen_models(args: &Args) -> anyhow::Result<Vec<PathBuf>> {
    if args.all {
        let dir = registry::locate_models_dir(args.models_dir.as_deref())?.path;
        let found = registry::Registry::scan(&dir)?;
        let mut names: Vec<&str> = found
            .models
            .iter()
            .map(|m| m.manifest.name.as_str())
            .collect();
        names.dedup();
        anyhow::ensure!(
            !names.is_empty(),
            "--all: the models folder {} holds no model; publish one or pass --models-dir",
            dir.display()
        );
        return names
            .into_iter()
            .map(|name| Ok(found.find(name)?.manifest_path.clone()))
            .collect();
    }
    if args.model.is_empty() {
        return Ok(vec![registry::find_model(
            None,
            args.models_dir.as_deref(),
        )?]);
    }
    args.model
        .iter()
        .map(|m| Ok(registry::find_model(Some(m), args.models_dir.as_deref())?))
        .collect()
}

async fn start(args: &Args) -> anyhow::Result<Server> {
    let config = config(args);
    let cpu_threads = args.cpu_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n as usize,
    );
    let budget = CpuBudget::new(cpu_threads, args.threads, config.workers);
    let options = SessionOptions::builder()
        .backend(args.backend)
        .device(args.device)
        .threads(args.threads)
        .spin_us(args.spin_us)
        .allow_cpu_fallback(args.allow_cpu_fallback)
        .sessions(config.workers)
        .batch_size(config.max_batch)
        .build();
    let mut classifiers = Vec::new();
    for model in chosen_models(args)? {
        let classifier = Classifier::open(&model, &options)
            .with_context(|| format!("opening model {}", model.display()))?;
        tpsnet_runtime::cli::announce_fallback(&classifier);
        eprintln!(
            "tpsnet-serve: model {} version {} ({}) on {}",
            classifier.name(),
            classifier.manifest().sha256.get(..8).unwrap_or(""),
            classifier.model_path().display(),
            classifier.execution().provider
        );
        classifiers.push(Arc::new(classifier));
    }
    // `load` finds models in the folder; with every model given as a file there may be none.
    let models_dir = registry::locate_models_dir(args.models_dir.as_deref())
        .ok()
        .map(|d| d.path);
    let repository = Repository::new(models_dir, options, &config, budget);
    let addr = SocketAddr::new(args.host, args.port);
    let mut server = Server::bind_models(addr, repository, classifiers, config.clone()).await?;
    if let Some(port) = args.grpc_port {
        server = server.bind_grpc(SocketAddr::new(args.host, port)).await?;
    }
    announce(args, &server, &config);
    Ok(server)
}

/// Says how the server batches and where it listens.
fn announce(args: &Args, server: &Server, config: &ServerConfig) {
    let batching = if config.max_batch > 1 && config.max_delay.is_zero() {
        format!(
            "batches of up to {} images, run as soon as a worker is free",
            config.max_batch
        )
    } else if config.max_batch > 1 {
        format!(
            "batches of up to {} images, waiting up to {} ms for a full one",
            config.max_batch, args.max_delay_ms
        )
    } else {
        "batching off".to_string()
    };
    let budget = server.repository().budget();
    let threads = match budget.threads {
        0 => "ONNX Runtime's default threads".to_string(),
        t => format!("{t} threads"),
    };
    // tract has no spinning pool; ONNX Runtime's idle threads spin --spin-us.
    let spin = match (args.backend, args.spin_us) {
        (Backend::Tract, _) => String::new(),
        (_, 0) => ", idle threads spin ONNX Runtime's default time".to_string(),
        (_, us) => format!(", idle threads spin {us} µs"),
    };
    eprintln!(
        "tpsnet-serve: {batching}; queue {} images per model; at most {} batch(es) at once across all models, {threads} each{spin}",
        config.max_queue, budget.permits
    );
    let m = server.model();
    let served = server.repository().loaded().len();
    eprintln!(
        "tpsnet-serve: listening on http://{} ({served} model(s); POST /v2/models/{}/infer, /v2/models/{}/classify; POST /v2/repository/index; GET /metrics)",
        server.local_addr(),
        m.name,
        m.name
    );
    if let Some(grpc) = server.grpc_addr() {
        eprintln!(
            "tpsnet-serve: gRPC listening on {grpc} (KServe v2 inference.GRPCInferenceService; proto: serve/proto/grpc_predict_v2.proto)"
        );
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => eprintln!("tpsnet-serve: interrupt; finishing requests in flight"),
        () = term => eprintln!("tpsnet-serve: SIGTERM; finishing requests in flight"),
    }
}
