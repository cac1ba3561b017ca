//! Soak test of `tpsnet-serve`: 64 closed-loop clients for N minutes against the release
//! binary on 127.0.0.1, each request a real CIFAR-10 test image sent as FP32 JSON,
//! Triton binary tensors, a PNG upload or a gRPC `ModelInfer` with raw contents (the
//! server listens on both protocols) in turn, to each of the served models in turn
//! (`--model` repeated: one server serves them all). Every answer is checked against
//! Python onnxruntime's logits for the same image (`bench/soak_reference.py`); the
//! server's resident memory is sampled every 2 s. Prints one row per minute (requests,
//! errors, wrong answers, p50/p99 latency, RSS) and fails (exit 1) on any error, any
//! wrong answer, or RSS after warm-up varying by more than 5 %.
//!
//! ```text
//! CIFAR10_DIR=... cargo bench -p tpsnet-serve --bench soak -- [--model NAME]...
//!     [--minutes 10] [--clients 64] [--python PYTHON] [--json FILE]
//!     [--server-arg=ARG]...   (added to the server's, e.g. `--server-arg=--spin-us=0`)
//! ```
//! (`bench/soak.sh` runs it.)

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::grpc::GrpcConn;
use common::{Payload, http, models_dir, payload, start_server};
use serde_json::json;

const IMAGES: usize = 1024;
/// REST JSON, REST binary tensors, PNG uploads and gRPC `ModelInfer` (raw contents).
const ENDPOINTS: [&str; 4] = ["infer", "binary", "classify", "grpc"];

struct Options {
    /// One server serves them all; each client turns through them.
    models: Vec<String>,
    minutes: f64,
    clients: usize,
    python: String,
    json: Option<PathBuf>,
    /// Extra options for the server, after the soak's own.
    server_args: Vec<String>,
}

fn parse_args() -> Options {
    let mut o = Options {
        models: Vec::new(),
        minutes: 10.0,
        clients: 64,
        python: std::env::var("TPSNET_PYTHON").unwrap_or_else(|_| {
            let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
            venv.to_string_lossy().into_owned()
        }),
        json: None,
        server_args: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if let Some(arg) = common::server_arg(&a) {
            o.server_args.push(arg);
            continue;
        }
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--model" => o.models.push(value()),
            "--minutes" => o.minutes = value().parse().expect("--minutes M"),
            "--clients" => o.clients = value().parse().expect("--clients N"),
            "--python" => o.python = value(),
            "--json" => o.json = Some(value().into()),
            "--bench" => {}
            other => panic!("unknown option {other}; see serve/benches/soak.rs"),
        }
    }
    assert!(o.minutes > 0.0 && o.clients > 0);
    if o.models.is_empty() {
        o.models.push("resnet20".into());
    }
    o
}

/// One served model: its requests and Python onnxruntime's logits for them.
struct Served {
    name: String,
    payloads: Vec<Payload>,
    reference: Vec<f32>,
}

fn served(o: &Options, model: &str) -> Served {
    let manifest_path = tpsnet_runtime::registry::resolve_model(Some(model), &models_dir())
        .expect("model resolves (run from the workspace)");
    let manifest = tpsnet_zoo::Manifest::load(&manifest_path).unwrap();
    let onnx = manifest_path.parent().unwrap().join(&manifest.file);
    let reference = reference(o, &manifest_path, &onnx);
    let name = manifest.name.clone();
    let payloads = ENDPOINTS
        .iter()
        .map(|e| payload(e, &name, &manifest.input.name, &manifest.output.name))
        .collect();
    Served {
        name,
        payloads,
        reference,
    }
}

/// Python onnxruntime's logits for the first `IMAGES` test images.
fn reference(o: &Options, manifest: &std::path::Path, onnx: &std::path::Path) -> Vec<f32> {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-serve")
        .join(format!(
            "{}-reference.f32",
            manifest.file_stem().unwrap().to_string_lossy()
        ));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let cifar = tpsnet_zoo::cifar::resolve_dir(None).expect("set CIFAR10_DIR");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/soak_reference.py");
    let status = std::process::Command::new(&o.python)
        .arg(script)
        .arg(onnx)
        .arg(cifar)
        .arg(IMAGES.to_string())
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run scripts/setup", o.python));
    assert!(status.success(), "soak_reference.py failed");
    std::fs::read(&out)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

/// `Err` unless `got` holds `want`'s logits within 1e-4.
fn close(endpoint: &str, got: &[f32], want: &[f32]) -> Result<(), String> {
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    if got.len() == want.len() && diff < 1e-4 {
        Ok(())
    } else {
        Err(format!(
            "{endpoint}: logits differ by {diff} ({} values)",
            got.len()
        ))
    }
}

/// Checks one answer against the reference logits `want`; `Err` says what differs.
fn check(endpoint: &str, r: &http::Response, want: &[f32]) -> Result<(), String> {
    let close = |got: &[f32]| close(endpoint, got, want);
    match endpoint {
        "infer" => {
            let got: Vec<f32> = serde_json::from_value(r.json()["outputs"][0]["data"].clone())
                .map_err(|e| format!("infer: {e}"))?;
            close(&got)
        }
        "binary" => {
            let split: usize = r
                .header("inference-header-content-length")
                .and_then(|v| v.parse().ok())
                .ok_or("binary: no Inference-Header-Content-Length")?;
            let got: Vec<f32> = r.body[split..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            close(&got)
        }
        _ => {
            let p = &r.json()["predictions"][0];
            let max = want.iter().copied().fold(f32::MIN, f32::max);
            let sum: f32 = want.iter().map(|v| (v - max).exp()).sum();
            let prob = p["probability"].as_f64().unwrap_or(-1.0) as f32;
            if p["index"].as_u64() != Some(argmax(want) as u64) || (prob - 1.0 / sum).abs() > 1e-4 {
                return Err(format!(
                    "classify: got {p}, want class {} p {}",
                    argmax(want),
                    1.0 / sum
                ));
            }
            Ok(())
        }
    }
}

#[derive(Default)]
struct Tally {
    /// Latencies (ms) by minute since the start.
    latencies: Mutex<Vec<Vec<f64>>>,
    errors: Mutex<Vec<usize>>,
    wrong: Mutex<Vec<usize>>,
    reported: AtomicUsize,
}

impl Tally {
    fn add(v: &Mutex<Vec<usize>>, minute: usize) {
        let mut v = v.lock().unwrap();
        if v.len() <= minute {
            v.resize(minute + 1, 0);
        }
        v[minute] += 1;
    }

    fn latency(&self, minute: usize, ms: f64) {
        let mut v = self.latencies.lock().unwrap();
        if v.len() <= minute {
            v.resize(minute + 1, Vec::new());
        }
        v[minute].push(ms);
    }

    fn problem(&self, what: &str) {
        if self.reported.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("soak: {what}");
        }
    }
}

/// What became of one request.
enum Outcome {
    Right,
    Wrong(String),
    Failed(String),
}

/// Sends image `image` of model `m` by `endpoint` (HTTP on `conn`, gRPC on `grpc`) and
/// checks the answer against the reference. A broken connection is reopened.
fn request(
    m: &Served,
    e: usize,
    image: usize,
    conn: &mut http::Conn,
    grpc: &mut GrpcConn,
    (addr, grpc_addr): (std::net::SocketAddr, std::net::SocketAddr),
) -> Outcome {
    let classes = m.reference.len() / IMAGES;
    let want = &m.reference[image * classes..(image + 1) * classes];
    if ENDPOINTS[e] == "grpc" {
        let body = &m.payloads[e].bodies[image % IMAGES];
        let request = prost::Message::decode(&body[..]).expect("encoded by common::payload");
        return match grpc.infer(request) {
            Ok(answer) => {
                match common::grpc::logits(&answer).and_then(|got| close("grpc", &got, want)) {
                    Ok(()) => Outcome::Right,
                    Err(what) => Outcome::Wrong(what),
                }
            }
            Err(status) => {
                if let Ok(fresh) = GrpcConn::open(grpc_addr) {
                    *grpc = fresh;
                }
                Outcome::Failed(format!("grpc: {status}"))
            }
        };
    }
    match m.payloads[e].send(conn, image) {
        Ok(r) if r.status == 200 => match check(ENDPOINTS[e], &r, want) {
            Ok(()) => Outcome::Right,
            Err(what) => Outcome::Wrong(what),
        },
        Ok(r) => Outcome::Failed(format!("{} {}: {}", ENDPOINTS[e], r.status, r.text())),
        Err(err) => {
            *conn = http::Conn::open(addr).expect("reconnect");
            Outcome::Failed(format!("{}: {err}", ENDPOINTS[e]))
        }
    }
}

fn client(
    c: usize,
    addrs: (std::net::SocketAddr, std::net::SocketAddr),
    models: Arc<Vec<Served>>,
    (start, until): (Instant, Instant),
    tally: Arc<Tally>,
) {
    let mut conn = http::Conn::open(addrs.0).expect("connect");
    let mut grpc = GrpcConn::open(addrs.1).expect("gRPC connect");
    let mut k = 0;
    while Instant::now() < until {
        // Each client turns through the protocols, and after each round of them, the models.
        let e = (c + k) % ENDPOINTS.len();
        let m = &models[(c + k / ENDPOINTS.len()) % models.len()];
        let image = (c * 16 + k * 7) % IMAGES;
        let t = Instant::now();
        let outcome = request(m, e, image, &mut conn, &mut grpc, addrs);
        let minute = (t.duration_since(start).as_secs() / 60) as usize;
        tally.latency(minute, t.elapsed().as_secs_f64() * 1e3);
        match outcome {
            Outcome::Right => {}
            Outcome::Wrong(what) => {
                Tally::add(&tally.wrong, minute);
                tally.problem(&format!("{}, image {image}: {what}", m.name));
            }
            Outcome::Failed(what) => {
                Tally::add(&tally.errors, minute);
                tally.problem(&format!("{}: {what}", m.name));
            }
        }
        k += 1;
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let o = parse_args();
    let models: Arc<Vec<Served>> = Arc::new(o.models.iter().map(|m| served(&o, m)).collect());
    let name = models
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join("+");
    let server_args: Vec<String> = models
        .iter()
        .flat_map(|m| ["--model".to_string(), m.name.clone()])
        .collect();
    // A long-running server's settings: warmed up, so its arenas start full-sized.
    let server_args: Vec<String> = ["--grpc-port", "0", "--warm-up"]
        .into_iter()
        .map(String::from)
        .chain(server_args)
        .chain(o.server_args.iter().cloned())
        .collect();
    let server = start_server(&server_args);
    let grpc_addr = server.grpc.expect("the server announces its gRPC address");
    let pid = server.child.id();
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "soak: {name}, {} clients, {} min, JSON + binary + upload + gRPC; server options {}; load {}",
        o.clients,
        o.minutes,
        server_args.join(" "),
        load().trim()
    );
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(o.minutes * 60.0);
    let clients: Vec<_> = (0..o.clients)
        .map(|c| {
            let (models, tally) = (models.clone(), tally.clone());
            let addrs = (server.addr, grpc_addr);
            std::thread::spawn(move || client(c, addrs, models, (start, until), tally))
        })
        .collect();
    let mut rss: Vec<(f64, u64)> = Vec::new();
    while Instant::now() < until {
        if let Some(kib) = rss_kib(pid) {
            rss.push((start.elapsed().as_secs_f64(), kib));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    for c in clients {
        c.join().unwrap();
    }
    server.stop();
    summarize(&o, &name, &tally, &rss, &load());
}

fn summarize(o: &Options, name: &str, tally: &Tally, rss: &[(f64, u64)], load: &str) {
    // Warm-up: the first minute, or the first quarter of a shorter run.
    let warm = (o.minutes * 60.0 / 4.0).min(60.0);
    let steady: Vec<u64> = rss
        .iter()
        .filter(|(t, _)| *t >= warm)
        .map(|s| s.1)
        .collect();
    let (lo, hi) = (
        steady.iter().copied().min().unwrap_or(0),
        steady.iter().copied().max().unwrap_or(0),
    );
    let spread = (hi as f64 - lo as f64) / (lo.max(1) as f64);
    let mut latencies = tally.latencies.lock().unwrap().clone();
    let (errors, wrong) = (
        tally.errors.lock().unwrap().clone(),
        tally.wrong.lock().unwrap().clone(),
    );
    println!(
        "\n`{name}`, {} clients, JSON + binary + PNG upload + gRPC in turn, {} min; load at the end {}\n",
        o.clients,
        o.minutes,
        load.trim()
    );
    println!(
        "| minute | requests | req/s | errors | wrong answers | p50, ms | p99, ms | RSS, MiB (min–max) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for (m, lat) in latencies.iter_mut().enumerate() {
        let in_minute: Vec<u64> = rss
            .iter()
            .filter(|(t, _)| (*t / 60.0) as usize == m)
            .map(|s| s.1)
            .collect();
        let seconds = (o.minutes * 60.0 - m as f64 * 60.0).clamp(1.0, 60.0);
        let (e, w) = (
            errors.get(m).copied().unwrap_or(0),
            wrong.get(m).copied().unwrap_or(0),
        );
        let (p50, p99) = (percentile(lat, 0.5), percentile(lat, 0.99));
        let mib = |v: Option<&u64>| v.map(|k| *k as f64 / 1024.0).unwrap_or(f64::NAN);
        println!(
            "| {} | {} | {:.0} | {e} | {w} | {p50:.1} | {p99:.1} | {:.1}–{:.1} |",
            m + 1,
            lat.len(),
            lat.len() as f64 / seconds,
            mib(in_minute.iter().min()),
            mib(in_minute.iter().max()),
        );
        rows.push(json!({ "minute": m + 1, "requests": lat.len(), "errors": e, "wrong": w, "p50_ms": p50, "p99_ms": p99 }));
    }
    let total_errors: usize = errors.iter().sum::<usize>() + wrong.iter().sum::<usize>();
    println!(
        "\nRSS after {warm:.0} s of warm-up: {:.1}–{:.1} MiB, spread {:.1} % (limit 5 %); errors + wrong answers: {total_errors}",
        lo as f64 / 1024.0,
        hi as f64 / 1024.0,
        spread * 100.0
    );
    let out = o.json.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/bench-serve")
            .join(format!("soak-{name}.json"))
    });
    let report = json!({ "model": name, "models": o.models, "clients": o.clients, "minutes": o.minutes,
        "minutes_table": rows, "rss_kib": rss, "rss_spread": spread, "load_end": load.trim() });
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    eprintln!("wrote {}", out.display());
    if total_errors > 0 || spread > 0.05 || steady.is_empty() {
        eprintln!("soak FAILED");
        std::process::exit(1);
    }
}
