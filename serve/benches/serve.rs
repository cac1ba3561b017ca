//! Load benchmark of `tpsnet-serve`: closed-loop clients send single real CIFAR-10 test
//! images to the release binary on 127.0.0.1, as KServe FP32 JSON (`infer`), Triton's
//! binary tensors (`binary`) or PNG uploads (`classify`), at several client counts, with
//! dynamic batching on and off. Two servers run side by side (one per mode, fresh each
//! round) and every step (endpoint, clients) runs on both back to back, the order
//! alternating between rounds, so drifting machine load hits both alike. Prints a
//! table of medians over rounds: throughput, p50/p99 latency, on/off ratios, mean batch.
//!
//! ```text
//! CIFAR10_DIR=... cargo bench -p tpsnet-serve --bench serve -- [--model NAME] [--rounds 3]
//!     [--clients 1,4,16,64] [--seconds 2] [--endpoints infer,binary,classify]
//!     [--max-batch 64] [--max-delay-ms 0] [--device cpu|cuda:N] [--json FILE]
//!     [--server-arg ARG]...   (passed to both servers, e.g. `--server-arg --threads=1`)
//! ```
//! (`bench/serve.sh` runs it.) The load generator runs on the same machine as the
//! server, as real clients on one host would; both modes share that cost alike. Each
//! step warms every connection with one request, then times `--seconds`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Payload, ServerProcess, http, models_dir, payload, start_server};
use serde_json::json;
use tpsnet_runtime::registry;

struct Options {
    model: Option<String>,
    rounds: usize,
    clients: Vec<usize>,
    seconds: f64,
    endpoints: Vec<String>,
    max_batch: usize,
    max_delay_ms: f64,
    device: String,
    /// Extra options for both servers (`--server-arg=--threads=1`, repeatable).
    server_args: Vec<String>,
    json: Option<PathBuf>,
}

fn list<T: std::str::FromStr>(s: &str, what: &str) -> Vec<T> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{what}: bad value `{v}`"))
        })
        .collect()
}

fn parse_args() -> Options {
    let mut o = Options {
        model: None,
        rounds: 3,
        clients: vec![1, 4, 16, 64],
        seconds: 2.0,
        endpoints: vec!["infer".into(), "binary".into(), "classify".into()],
        max_batch: 64,
        max_delay_ms: 0.0,
        device: "cpu".into(),
        server_args: Vec::new(),
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if let Some(arg) = common::server_arg(&a) {
            o.server_args.push(arg);
            continue;
        }
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--model" => o.model = Some(value()),
            "--rounds" => o.rounds = value().parse().expect("--rounds N"),
            "--clients" => o.clients = list(&value(), "--clients N,N,..."),
            "--seconds" => o.seconds = value().parse().expect("--seconds S"),
            "--endpoints" | "--endpoint" => o.endpoints = list(&value(), "--endpoints"),
            "--max-batch" => o.max_batch = value().parse().expect("--max-batch N"),
            "--max-delay-ms" => o.max_delay_ms = value().parse().expect("--max-delay-ms MS"),
            "--device" => o.device = value(),
            "--json" => o.json = Some(value().into()),
            "--server-arg" => o.server_args.push(value()),
            // `cargo bench` passes --bench to every harness-less bench.
            "--bench" => {}
            other => panic!("unknown option {other}; see serve/benches/serve.rs"),
        }
    }
    for e in &o.endpoints {
        assert!(
            ["infer", "binary", "classify"].contains(&e.as_str()),
            "--endpoints: infer, binary, classify"
        );
    }
    assert!(o.rounds >= 1 && o.seconds > 0.0 && !o.clients.is_empty());
    o
}

#[derive(Clone, Debug, serde::Serialize)]
struct Step {
    endpoint: String,
    clients: usize,
    mode: &'static str,
    round: usize,
    requests: usize,
    errors: usize,
    seconds: f64,
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_batch: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// One timed step: every client sends one warm-up request, then requests until
/// `seconds` have passed. Returns sorted latencies (ms), errors and the seconds taken.
fn load(
    addr: SocketAddr,
    payload: &Arc<Payload>,
    clients: usize,
    seconds: f64,
) -> (Vec<f64>, usize, f64) {
    let start = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (payload, start) = (payload.clone(), start.clone());
            std::thread::spawn(move || {
                let send = |conn: &mut http::Conn, i: usize| payload.send(conn, i);
                let mut conn = http::Conn::open(addr).expect("connect");
                let warm = send(&mut conn, c);
                assert_eq!(warm.expect("warm-up").status, 200);
                start.wait();
                let until = Instant::now() + Duration::from_secs_f64(seconds);
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut j = 0;
                while Instant::now() < until {
                    let t = Instant::now();
                    match send(&mut conn, c + j * 64) {
                        Ok(r) if r.status == 200 => {}
                        _ => errors += 1,
                    }
                    latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    j += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in threads {
        let (l, e) = t.join().unwrap();
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

fn run_step(
    server: &ServerProcess,
    payload: &Arc<Payload>,
    (endpoint, clients): (&str, usize),
    (mode, round): (&'static str, usize),
    seconds: f64,
) -> Step {
    let batches_before = server.metric_total("tpsnet_batch_size_count");
    let images_before = server.metric_total("tpsnet_batch_size_sum");
    let (lat, errors, took) = load(server.addr, payload, clients, seconds);
    let batches = server.metric_total("tpsnet_batch_size_count") - batches_before;
    let images = server.metric_total("tpsnet_batch_size_sum") - images_before;
    let step = Step {
        endpoint: endpoint.to_string(),
        clients,
        mode,
        round,
        requests: lat.len(),
        errors,
        seconds: took,
        requests_per_s: lat.len() as f64 / took,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        // Includes the warm-up requests: a property of the server, not the timing.
        mean_batch: images / batches.max(1.0),
    };
    eprintln!(
        "round {round} {endpoint:>8} {clients:>3} clients {mode:>12}: {:7.1} req/s  p50 {:7.2} ms  p99 {:7.2} ms  mean batch {:5.1}  errors {errors}",
        step.requests_per_s, step.p50_ms, step.p99_ms, step.mean_batch
    );
    step
}

/// The markdown table: one row per (endpoint, clients), medians over rounds.
fn report(name: &str, o: &Options, steps: &[Step]) -> Vec<serde_json::Value> {
    println!(
        "\n`{name}` on {}, batching on = `--max-batch {} --max-delay-ms {}`, off = `--max-batch 1`, both with {:?}; medians of {} rounds of {} s per step\n",
        o.device, o.max_batch, o.max_delay_ms, o.server_args, o.rounds, o.seconds
    );
    println!(
        "| endpoint | clients | req/s on | req/s off | on ÷ off | p50 on, ms | p50 off, ms | p50 on ÷ off | p99 on / off, ms | mean batch on | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for endpoint in &o.endpoints {
        for &clients in &o.clients {
            let of = |mode: &str| -> Vec<&Step> {
                steps
                    .iter()
                    .filter(|s| &s.endpoint == endpoint && s.clients == clients && s.mode == mode)
                    .collect()
            };
            let (on, off) = (of("batching on"), of("batching off"));
            let paired = |f: fn(&Step) -> f64| -> f64 {
                median(on.iter().zip(&off).map(|(a, b)| f(a) / f(b)).collect())
            };
            let med = |v: &[&Step], f: fn(&Step) -> f64| median(v.iter().map(|s| f(s)).collect());
            let tput_ratio = paired(|s| s.requests_per_s);
            let p50_ratio = paired(|s| s.p50_ms);
            let errors: usize = on.iter().chain(&off).map(|s| s.errors).sum();
            println!(
                "| {endpoint} | {clients} | {:.0} | {:.0} | {tput_ratio:.2}× | {:.2} | {:.2} | {p50_ratio:.2}× | {:.1} / {:.1} | {:.1} | {errors} |",
                med(&on, |s| s.requests_per_s),
                med(&off, |s| s.requests_per_s),
                med(&on, |s| s.p50_ms),
                med(&off, |s| s.p50_ms),
                med(&on, |s| s.p99_ms),
                med(&off, |s| s.p99_ms),
                med(&on, |s| s.mean_batch),
            );
            rows.push(json!({
                "endpoint": endpoint, "clients": clients,
                "throughput_ratio": tput_ratio, "p50_ratio": p50_ratio,
                "requests_per_s_on": med(&on, |s| s.requests_per_s),
                "requests_per_s_off": med(&off, |s| s.requests_per_s),
                "p50_ms_on": med(&on, |s| s.p50_ms), "p50_ms_off": med(&off, |s| s.p50_ms),
                "errors": errors,
            }));
        }
    }
    rows
}

fn server_args(o: &Options, model: &str, max_batch: usize) -> Vec<String> {
    [
        "--model",
        model,
        "--device",
        &o.device,
        "--max-batch",
        &max_batch.to_string(),
        "--max-delay-ms",
        &o.max_delay_ms.to_string(),
    ]
    .map(String::from)
    .into_iter()
    .chain(o.server_args.iter().cloned())
    .collect()
}

fn main() {
    let o = parse_args();
    let manifest_path = registry::resolve_model(o.model.as_deref(), &models_dir())
        .expect("model resolves (run from the workspace)");
    let manifest = tpsnet_zoo::Manifest::load(&manifest_path).unwrap();
    let name = manifest.name.clone();
    let payloads: Vec<Arc<Payload>> = o
        .endpoints
        .iter()
        .map(|e| {
            Arc::new(payload(
                e,
                &name,
                &manifest.input.name,
                &manifest.output.name,
            ))
        })
        .collect();
    eprintln!(
        "serve bench: model {name} on {}, clients {:?}, endpoints {:?}, {} s per step, {} rounds; load {}",
        o.device,
        o.clients,
        o.endpoints,
        o.seconds,
        o.rounds,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut steps: Vec<Step> = Vec::new();
    for round in 0..o.rounds {
        let on = start_server(&server_args(&o, &name, o.max_batch));
        let off = start_server(&server_args(&o, &name, 1));
        let mut k = round;
        for (endpoint, payload) in o.endpoints.iter().zip(&payloads) {
            for &clients in &o.clients {
                // Alternate which mode goes first, so drifting load hits both alike.
                k += 1;
                let order = if k % 2 == 0 {
                    [("batching on", &on), ("batching off", &off)]
                } else {
                    [("batching off", &off), ("batching on", &on)]
                };
                for (mode, server) in order {
                    let step = (endpoint.as_str(), clients);
                    steps.push(run_step(server, payload, step, (mode, round), o.seconds));
                }
            }
        }
        on.stop();
        off.stop();
    }
    let rows = report(&name, &o, &steps);
    let out = o.json.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/bench-serve")
            .join(format!("{name}.json"))
    });
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let report = json!({
        "model": name,
        "device": o.device,
        "clients": o.clients,
        "endpoints": o.endpoints,
        "seconds_per_step": o.seconds,
        "max_batch": o.max_batch,
        "max_delay_ms": o.max_delay_ms,
        "loadavg_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "summary": rows,
        "steps": steps,
    });
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
    eprintln!(
        "wrote {}; load {}",
        out.display(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let errors: usize = steps.iter().map(|s| s.errors).sum();
    if errors > 0 {
        eprintln!("error: {errors} request(s) failed");
        std::process::exit(1);
    }
}
