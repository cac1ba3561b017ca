//! The server's size limits (docs/limits.md) at their defaults, each fed a request just
//! over it against the real `tpsnet-serve` process: a clean `413` naming the limit and
//! its flag, the server healthy after, and its peak resident set (`VmHWM`) far below
//! what believing the requests would cost.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tpsnet_serve::ServerConfig;
use tpsnet_test_support::fixtures;
use tpsnet_test_support::http::{self, Response};
use tpsnet_test_support::rss::{mib, peak_rss_of};

mod common;

/// resnet20 served, after requests worth over 100 MB refused: well under this.
const SERVER_RSS_CEILING: u64 = 300 << 20;

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start() -> (Served, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tpsnet-serve"))
        .arg("--models-dir")
        .arg(common::models_dir())
        .args(["--model", "resnet20", "--host", "127.0.0.1", "--port", "0"])
        .args(["--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tpsnet-serve starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let served = Served(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/');
            // Keep draining stderr so the server never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (served, addr.parse().unwrap());
        }
    }
    panic!("tpsnet-serve did not print its address");
}

/// Sends `body` with `content_type`; the server may answer and close before reading it
/// all, so a failed write is not an error, only the response counts.
fn post(addr: SocketAddr, path: &str, content_type: &str, extra: &str, body: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body));
    http::read_response(&mut BufReader::new(s)).unwrap()
}

fn assert_413(r: &Response, needle: &str) {
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains(needle), "{}", r.text());
}

#[test]
fn requests_just_over_each_limit_are_refused_and_cost_little_memory() {
    let defaults = ServerConfig::default();
    let (served, addr) = start();
    let classify = "/v2/models/resnet20/classify";
    let infer = "/v2/models/resnet20/infer";

    let body = vec![0u8; defaults.max_body_bytes + 1];
    let r = post(addr, classify, "image/png", "", &body);
    assert_413(&r, "--max-body-bytes");

    let side = defaults.max_image_side + 1;
    let r = post(
        addr,
        classify,
        "image/png",
        "",
        &fixtures::png_with_dimensions(side, 1),
    );
    assert_413(&r, "--max-image-side");

    // One image more than the queue holds, as binary tensor data (12 KiB an image).
    let images = defaults.max_queue + 1;
    let header = serde_json::json!({"inputs": [{"name": "input", "shape": [images, 3, 32, 32],
        "datatype": "FP32", "parameters": {"binary_data_size": images * 3072 * 4}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.resize(header.len() + images * 3072 * 4, 0);
    let length = format!("Inference-Header-Content-Length: {}\r\n", header.len());
    let r = post(addr, infer, "application/octet-stream", &length, &body);
    assert_413(&r, &images.to_string());

    assert_eq!(http::get(addr, "/v2/health/ready").status, 200);
    let peak = peak_rss_of(served.0.id()).expect("/proc/PID/status");
    eprintln!(
        "tpsnet-serve peak RSS after the refusals: {:.0} MiB",
        mib(peak)
    );
    assert!(
        peak < SERVER_RSS_CEILING,
        "{:.0} MiB over the {:.0} MiB ceiling",
        mib(peak),
        mib(SERVER_RSS_CEILING)
    );
}
