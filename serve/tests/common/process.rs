//! A real `tpsnet-serve` process for the tests that need one (gRPC, several models).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The lines of a child's piped stderr as it writes them, read on a thread of their own
/// (so a full pipe never blocks the child).
pub fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// A `tpsnet-serve` child process and the addresses it printed.
pub struct Served {
    pub child: Child,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// The lines of its stderr not yet read.
    pub log: mpsc::Receiver<String>,
    /// The lines it printed up to its addresses.
    pub started: Vec<String>,
}

impl Served {
    /// Starts `tpsnet-serve` with the shipped models folder, HTTP and gRPC on free
    /// ports of 127.0.0.1, and `args`; waits until it prints both addresses.
    pub fn start(args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tpsnet-serve"))
            .arg("--models-dir")
            .arg(super::models_dir())
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--grpc-port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tpsnet-serve starts");
        let log = stderr_lines(&mut child);
        let (mut http, mut grpc) = (None, None);
        let mut started = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while http.is_none() || grpc.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = log.recv_timeout(left) else {
                let _ = child.kill();
                panic!("tpsnet-serve {args:?} did not print its HTTP and gRPC addresses");
            };
            http = http.or_else(|| address_after(&line, "listening on http://"));
            grpc = grpc.or_else(|| address_after(&line, "gRPC listening on "));
            started.push(line);
        }
        Served {
            child,
            http: http.unwrap(),
            grpc: grpc.unwrap(),
            log,
            started,
        }
    }

    /// Waits for the process to exit; returns its status and the rest of its stderr.
    pub fn wait(mut self, within: Duration) -> (std::process::ExitStatus, Vec<String>) {
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

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
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

/// The address printed after `marker` in `line`.
pub fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    line.split(marker)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The ONNX file of a shipped model (named by its manifest's `file`).
pub fn onnx_of(model: &str) -> PathBuf {
    let manifest = super::shipped(model);
    let text = std::fs::read_to_string(&manifest).expect("manifest reads");
    let json: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    let file = json["file"].as_str().expect("manifest names its file");
    manifest.parent().unwrap().join(file)
}
