//! Load benchmark of `tpsnet-serve`: 64 concurrent clients send single real CIFAR-10
//! test images (PNG uploads, or FP32 JSON with `--endpoint infer`) to the release
//! binary on 127.0.0.1, with dynamic batching on and off in alternating rounds; prints
//! throughput, p50 and p99 latency and the batched/unbatched throughput ratio per round.
//!
//! ```text
//! CIFAR10_DIR=... cargo bench -p tpsnet-serve --bench serve -- [--model NAME] [--rounds 3]
//!     [--clients 64] [--requests 8] [--max-batch 64] [--max-delay-ms 2] [--endpoint classify|infer]
//!     [--device cpu|cuda:N]
//! ```
//! (`bench/serve.sh` runs it for the default model and `resnet20`.) The load generator
//! runs on the same machine as the server, as real clients on one host would; both modes
//! share that cost alike. Each round starts a fresh server per mode, warms every
//! connection with one request, then times the rest.

use tpsnet_test_support::http;

use std::io::{BufRead, BufReader, Cursor};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use runtime::registry;
use serde_json::json;

struct Options {
    model: Option<String>,
    rounds: usize,
    clients: usize,
    requests: usize,
    max_batch: usize,
    max_delay_ms: f64,
    endpoint: String,
    device: String,
    json: Option<PathBuf>,
}

fn parse_args() -> Options {
    let mut o = Options {
        model: None,
        rounds: 3,
        clients: 64,
        requests: 8,
        max_batch: 64,
        max_delay_ms: 2.0,
        endpoint: "classify".into(),
        device: "cpu".into(),
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--model" => o.model = Some(value()),
            "--rounds" => o.rounds = value().parse().expect("--rounds N"),
            "--clients" => o.clients = value().parse().expect("--clients N"),
            "--requests" => o.requests = value().parse().expect("--requests N"),
            "--max-batch" => o.max_batch = value().parse().expect("--max-batch N"),
            "--max-delay-ms" => o.max_delay_ms = value().parse().expect("--max-delay-ms MS"),
            "--endpoint" => o.endpoint = value(),
            "--device" => o.device = value(),
            "--json" => o.json = Some(value().into()),
            // `cargo bench` passes --bench to every harness-less bench.
            "--bench" => {}
            other => panic!("unknown option {other}; see serve/benches/serve.rs"),
        }
    }
    assert!(
        o.endpoint == "classify" || o.endpoint == "infer",
        "--endpoint classify|infer"
    );
    o
}

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

fn start_server(o: &Options, model: &str, max_batch: usize) -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tpsnet-serve"))
        .args(["--host", "127.0.0.1", "--port", "0", "--model", model])
        .args(["--device", &o.device])
        .arg("--models-dir")
        .arg(models_dir())
        .args(["--max-batch", &max_batch.to_string()])
        .args(["--max-delay-ms", &o.max_delay_ms.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tpsnet-serve starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("tpsnet-serve prints its address")
            .unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    ServerProcess { child, addr }
}

impl ServerProcess {
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("server exits");
        assert!(status.success(), "tpsnet-serve exited with {status}");
    }

    fn metric(&self, sample: &str) -> f64 {
        http::get(self.addr, "/metrics")
            .text()
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

#[derive(Clone, Debug, serde::Serialize)]
struct Run {
    mode: &'static str,
    round: usize,
    requests: usize,
    errors: usize,
    seconds: f64,
    images_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_batch: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// One timed run: every client sends one warm-up request, then `requests` timed ones.
fn load(
    server: &ServerProcess,
    path: &str,
    bodies: &Arc<Vec<Vec<u8>>>,
    o: &Options,
) -> (Vec<f64>, usize, f64) {
    let start = Arc::new(Barrier::new(o.clients + 1));
    let clients: Vec<_> = (0..o.clients)
        .map(|c| {
            let (bodies, start, path, addr) =
                (bodies.clone(), start.clone(), path.to_string(), server.addr);
            let requests = o.requests;
            std::thread::spawn(move || {
                let mut conn = http::Conn::open(addr).expect("connect");
                let warm = conn.send("POST", &path, &[], &bodies[c % bodies.len()]);
                assert_eq!(warm.expect("warm-up").status, 200);
                start.wait();
                let mut latencies = Vec::with_capacity(requests);
                let mut errors = 0;
                for j in 0..requests {
                    let body = &bodies[(c + j * 64) % bodies.len()];
                    let t = Instant::now();
                    match conn.send("POST", &path, &[], body) {
                        Ok(r) if r.status == 200 => {}
                        _ => errors += 1,
                    }
                    latencies.push(t.elapsed().as_secs_f64() * 1e3);
                }
                (latencies, errors)
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for c in clients {
        let (l, e) = c.join().unwrap();
        latencies.extend(l);
        errors += e;
    }
    let seconds = t0.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    (latencies, errors, seconds)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let o = parse_args();
    let manifest = registry::resolve_model(o.model.as_deref(), &models_dir())
        .expect("model resolves (run from the workspace)");
    let name = zoo::Manifest::load(&manifest).unwrap().name;
    let input = zoo::Manifest::load(&manifest).unwrap().input.name;
    let dir = zoo::cifar::resolve_dir(None)
        .expect("the benchmark sends real CIFAR-10 test images: set CIFAR10_DIR");
    let data = zoo::cifar::load(&dir, zoo::cifar::Split::Test).expect("CIFAR-10 test set");
    let bodies: Vec<Vec<u8>> = (0..1024)
        .map(|i| {
            let planar = data.image(i);
            if o.endpoint == "infer" {
                let floats: Vec<f32> = planar.iter().map(|&v| v as f32 / 255.0).collect();
                return serde_json::to_vec(&json!({
                    "inputs": [{ "name": input, "shape": [1, 3, 32, 32], "datatype": "FP32", "data": floats }]
                }))
                .unwrap();
            }
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                let p = (y * 32 + x) as usize;
                image::Rgb([planar[p], planar[1024 + p], planar[2048 + p]])
            });
            let mut out = Vec::new();
            image::DynamicImage::ImageRgb8(img)
                .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
                .unwrap();
            out
        })
        .collect();
    let bodies = Arc::new(bodies);
    let path = format!("/v2/models/{name}/{}", o.endpoint);
    eprintln!(
        "serve bench: model {name} on {}, {} clients x {} requests, endpoint {}, {} rounds; batching on = --max-batch {} --max-delay-ms {}",
        o.device, o.clients, o.requests, o.endpoint, o.rounds, o.max_batch, o.max_delay_ms
    );

    let mut runs: Vec<Run> = Vec::new();
    for round in 0..o.rounds {
        // Alternate which mode goes first, so drifting machine load hits both alike.
        let modes: [(&'static str, usize); 2] = if round % 2 == 0 {
            [("batching on", o.max_batch), ("batching off", 1)]
        } else {
            [("batching off", 1), ("batching on", o.max_batch)]
        };
        for (mode, max_batch) in modes {
            let server = start_server(&o, &name, max_batch);
            let batches_before = server.metric("tpsnet_batch_size_count");
            let images_before = server.metric("tpsnet_batch_size_sum");
            let (lat, errors, seconds) = load(&server, &path, &bodies, &o);
            let batches = server.metric("tpsnet_batch_size_count") - batches_before;
            let images = server.metric("tpsnet_batch_size_sum") - images_before;
            server.stop();
            let run = Run {
                mode,
                round,
                requests: lat.len(),
                errors,
                seconds,
                images_per_s: lat.len() as f64 / seconds,
                p50_ms: percentile(&lat, 0.50),
                p99_ms: percentile(&lat, 0.99),
                // Includes the warm-up requests: a property of the server, not the timing.
                mean_batch: images / batches.max(1.0),
            };
            eprintln!(
                "round {round} {mode:>12}: {:7.1} img/s  p50 {:7.2} ms  p99 {:7.2} ms  mean batch {:5.1}  errors {errors}",
                run.images_per_s, run.p50_ms, run.p99_ms, run.mean_batch
            );
            runs.push(run);
        }
    }

    let pick = |mode: &str| -> Vec<&Run> { runs.iter().filter(|r| r.mode == mode).collect() };
    let ratios: Vec<f64> = (0..o.rounds)
        .map(|round| {
            let get = |mode: &str| {
                runs.iter()
                    .find(|r| r.round == round && r.mode == mode)
                    .unwrap()
                    .images_per_s
            };
            get("batching on") / get("batching off")
        })
        .collect();
    println!(
        "\n| `{name}`, {} clients, `{}` | throughput, img/s: median (min–max) | p50 latency, ms | p99 latency, ms | mean batch | errors |",
        o.clients, o.endpoint
    );
    println!("|---|---|---|---|---|---|");
    for mode in ["batching on", "batching off"] {
        let rs = pick(mode);
        let tput: Vec<f64> = rs.iter().map(|r| r.images_per_s).collect();
        let min = tput.iter().copied().fold(f64::INFINITY, f64::min);
        let max = tput.iter().copied().fold(0.0, f64::max);
        let label = if mode == "batching on" {
            format!(
                "batching on (`--max-batch {} --max-delay-ms {}`)",
                o.max_batch, o.max_delay_ms
            )
        } else {
            "batching off (`--max-batch 1`)".to_string()
        };
        println!(
            "| {label} | {:.0} ({:.0}–{:.0}) | {:.1} | {:.1} | {:.1} | {} |",
            median(tput.clone()),
            min,
            max,
            median(rs.iter().map(|r| r.p50_ms).collect()),
            median(rs.iter().map(|r| r.p99_ms).collect()),
            median(rs.iter().map(|r| r.mean_batch).collect()),
            rs.iter().map(|r| r.errors).sum::<usize>(),
        );
    }
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "\nbatching on / off throughput per round: {} — median {:.2}",
        shown.join(", "),
        median(ratios.clone())
    );
    let out = o.json.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/bench-serve")
            .join(format!("{name}-{}.json", o.endpoint))
    });
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let report = json!({
        "model": name,
        "device": o.device,
        "endpoint": o.endpoint,
        "clients": o.clients,
        "requests_per_client": o.requests,
        "max_batch": o.max_batch,
        "max_delay_ms": o.max_delay_ms,
        "runs": runs,
        "ratios": ratios,
        "median_ratio": median(ratios.clone()),
    });
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
    eprintln!("wrote {}", out.display());
    let errors: usize = runs.iter().map(|r| r.errors).sum();
    if errors > 0 {
        eprintln!("error: {errors} request(s) failed");
        std::process::exit(1);
    }
}
