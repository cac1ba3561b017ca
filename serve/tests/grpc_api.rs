//! KServe v2 over gRPC (`tpsnet-serve --grpc-port`), checked from outside: two real
//! `tpsnet-serve` processes with the shipped `resnet20`, and Triton's Python gRPC client
//! (`serve/tests/kserve_grpc_client.py`) comparing answers with Python onnxruntime on
//! real CIFAR-10 test images and every error with its gRPC status code. The "busy"
//! server's queue is filled, then it gets SIGTERM: the queued gRPC requests are
//! answered and it exits 0.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const MODEL: &str = "resnet20";

/// A `tpsnet-serve` child process and the addresses it printed.
struct Served {
    child: Child,
    http: SocketAddr,
    grpc: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tpsnet-serve"))
            .arg("--models-dir")
            .arg(common::models_dir())
            .args(["--model", MODEL, "--host", "127.0.0.1", "--port", "0"])
            .args(["--grpc-port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tpsnet-serve starts");
        let (tx, log) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut http, mut grpc) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while http.is_none() || grpc.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = log.recv_timeout(left) else {
                let _ = child.kill();
                panic!("tpsnet-serve {args:?} did not print its HTTP and gRPC addresses");
            };
            http = http.or_else(|| address_after(&line, "listening on http://"));
            grpc = grpc.or_else(|| address_after(&line, "gRPC listening on "));
        }
        Served {
            child,
            http: http.unwrap(),
            grpc: grpc.unwrap(),
            log,
        }
    }

    /// Waits for the process to exit; returns its status and the rest of its stderr.
    fn wait(mut self, within: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The stderr reader ends once the pipe closes.
                std::thread::sleep(Duration::from_millis(50));
                return (status, self.log.try_iter().collect());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("tpsnet-serve did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    line.split(marker)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The ONNX file of a shipped model (named by its manifest's `file`).
fn onnx_of(model: &str) -> PathBuf {
    let manifest = common::shipped(model);
    let text = std::fs::read_to_string(&manifest).expect("manifest reads");
    let json: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    let file = json["file"].as_str().expect("manifest names its file");
    manifest.parent().unwrap().join(file)
}

#[test]
fn tritonclient_grpc_gets_onnxruntime_answers_and_status_codes() {
    let cifar = common::fixtures::cifar_dir();
    let server = Served::start(&["--max-body-bytes", "64K"]);
    let busy = Served::start(&["--max-queue", "4", "--max-delay-ms", "20000"]);
    let python = std::env::var("TPSNET_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kserve_grpc_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(server.grpc.to_string())
        .arg(MODEL)
        .arg(onnx_of(MODEL))
        .arg(&cifar)
        .arg(busy.grpc.to_string())
        .arg(busy.http.to_string())
        .arg(busy.child.id().to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}; run scripts/setup"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kserve_grpc_client.py failed (needs tritonclient[grpc] from requirements.txt; run scripts/setup):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
    eprintln!("{}", stdout.trim());

    // The busy server got SIGTERM from the client with four requests queued.
    let (status, log) = busy.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "busy server: {log:?}");
    assert!(
        log.iter().any(|l| l.contains("every request answered")),
        "{log:?}"
    );

    // The gRPC calls went through the batcher and its metrics.
    let metrics = common::http::get(server.http, "/metrics").text();
    let sample = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
    };
    let infers = sample("tpsnet_requests_total{endpoint=\"grpc_model_infer\"}");
    assert!(infers.is_some_and(|n| n >= 12.0), "{metrics}");
    let invalid = sample("tpsnet_request_errors_total{endpoint=\"grpc_model_infer\",code=\"400\"}");
    assert!(invalid.is_some_and(|n| n >= 8.0), "{metrics}");

    server.sigterm();
    let (status, log) = server.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{log:?}");
}

#[test]
fn a_grpc_port_in_use_is_a_start_up_error_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_tpsnet-serve"))
        .arg("--models-dir")
        .arg(common::models_dir())
        .args(["--model", MODEL, "--port", "0", "--grpc-port", &port])
        .output()
        .expect("tpsnet-serve runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--grpc-port"), "{stderr}");
}
