//! Shared by the serving benchmarks: the release server as a child process and the
//! request bodies (real CIFAR-10 test images) of each protocol.
#![allow(dead_code)]

pub mod grpc;

pub use tpsnet_test_support::http;

use std::io::{BufRead, BufReader, Cursor};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::json;

pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// The server option in a bench argument `--server-arg=ARG` (joined with `=`, since ARG
/// starts with `--` itself), or None for any other argument.
pub fn server_arg(bench_arg: &str) -> Option<String> {
    bench_arg.strip_prefix("--server-arg=").map(String::from)
}

pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// The gRPC address, when `args` held `--grpc-port`.
    pub grpc: Option<SocketAddr>,
}

/// Starts the release server on a free port with `args` (after the host and port);
/// with `--grpc-port` in `args`, also waits for its gRPC address.
pub fn start_server(args: &[String]) -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tpsnet-serve"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .arg("--models-dir")
        .arg(models_dir())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tpsnet-serve starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let wants_grpc = args.iter().any(|a| a == "--grpc-port");
    let (mut addr, mut grpc) = (None, None);
    while addr.is_none() || (wants_grpc && grpc.is_none()) {
        let line = lines
            .next()
            .expect("tpsnet-serve prints its address")
            .unwrap();
        let after = |marker: &str| -> Option<SocketAddr> {
            let rest = line.split(marker).nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        };
        addr = addr.or_else(|| after("listening on http://"));
        grpc = grpc.or_else(|| after("gRPC listening on "));
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    ServerProcess {
        child,
        addr: addr.unwrap(),
        grpc,
    }
}

impl ServerProcess {
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("server exits");
        assert!(status.success(), "tpsnet-serve exited with {status}");
    }

    /// The sum of every sample of `name` whatever its labels (e.g. over all models).
    pub fn metric_total(&self, name: &str) -> f64 {
        http::get(self.addr, "/metrics")
            .text()
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let value = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                value.parse::<f64>().ok()
            })
            .sum()
    }

    pub fn metric(&self, sample: &str) -> f64 {
        http::get(self.addr, "/metrics")
            .text()
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// What one endpoint sends: its path, one body per image, and extra headers. For
/// `grpc`, each body is an encoded `ModelInferRequest` (and the path is unused).
pub struct Payload {
    pub path: String,
    pub bodies: Vec<Vec<u8>>,
    /// `Inference-Header-Content-Length` per body (binary tensors only).
    pub header_lengths: Vec<Option<String>>,
}

pub fn payload(endpoint: &str, name: &str, input: &str, output: &str) -> Payload {
    let dir = tpsnet_zoo::cifar::resolve_dir(None)
        .expect("the benchmark sends real CIFAR-10 test images: set CIFAR10_DIR");
    let data =
        tpsnet_zoo::cifar::load(&dir, tpsnet_zoo::cifar::Split::Test).expect("CIFAR-10 test set");
    let mut p = Payload {
        path: format!(
            "/v2/models/{name}/{}",
            if endpoint == "binary" {
                "infer"
            } else {
                endpoint
            }
        ),
        bodies: Vec::new(),
        header_lengths: Vec::new(),
    };
    for i in 0..1024 {
        let planar = data.image(i);
        let floats: Vec<f32> = planar.iter().map(|&v| v as f32 / 255.0).collect();
        let (body, header) = match endpoint {
            "infer" => (
                serde_json::to_vec(&json!({
                    "inputs": [{ "name": input, "shape": [1, 3, 32, 32], "datatype": "FP32", "data": floats }]
                }))
                .unwrap(),
                None,
            ),
            "binary" => {
                let mut body = serde_json::to_vec(&json!({
                    "inputs": [{ "name": input, "shape": [1, 3, 32, 32], "datatype": "FP32",
                                 "parameters": { "binary_data_size": floats.len() * 4 } }],
                    "outputs": [{ "name": output, "parameters": { "binary_data": true } }],
                }))
                .unwrap();
                let header = body.len().to_string();
                body.extend(floats.iter().flat_map(|f| f.to_le_bytes()));
                (body, Some(header))
            }
            // A ModelInfer request with raw_input_contents, encoded; GrpcConn sends it.
            "grpc" => (
                prost::Message::encode_to_vec(&grpc::infer_request(name, input, output, &floats)),
                None,
            ),
            _ => {
                let img = image::RgbImage::from_fn(32, 32, |x, y| {
                    let p = (y * 32 + x) as usize;
                    image::Rgb([planar[p], planar[1024 + p], planar[2048 + p]])
                });
                let mut out = Vec::new();
                image::DynamicImage::ImageRgb8(img)
                    .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
                    .unwrap();
                (out, None)
            }
        };
        p.bodies.push(body);
        p.header_lengths.push(header);
    }
    p
}

impl Payload {
    /// Sends body `i` (modulo their number) on `conn`.
    pub fn send(&self, conn: &mut http::Conn, i: usize) -> std::io::Result<http::Response> {
        let i = i % self.bodies.len();
        let header = self.header_lengths[i]
            .as_deref()
            .map(|v| ("Inference-Header-Content-Length", v));
        let headers: Vec<(&str, &str)> = header.into_iter().collect();
        conn.send("POST", &self.path, &headers, &self.bodies[i])
    }
}
