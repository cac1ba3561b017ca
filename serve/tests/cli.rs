//! The `tpsnet-serve` binary: graceful shutdown on SIGTERM (queued requests are answered,
//! exit status 0), start-up errors (exit status 2 with a message), `--help`.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::http::{get, request};

fn serve_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tpsnet-serve"));
    c.arg("--models-dir").arg(common::models_dir());
    c
}

/// Starts the server on a free port; returns the child, its address and its stderr lines.
fn spawn(args: &[&str]) -> (Child, SocketAddr, mpsc::Receiver<String>) {
    let (child, addr, rx, _started) = spawn_logged(args);
    (child, addr, rx)
}

/// [`spawn`], and the lines the server printed up to its address.
fn spawn_logged(args: &[&str]) -> (Child, SocketAddr, mpsc::Receiver<String>, Vec<String>) {
    let mut child = serve_cmd()
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tpsnet-serve starts");
    let rx = common::process::stderr_lines(&mut child);
    let mut started = Vec::new();
    match listening_address(&rx, Duration::from_secs(60), &mut started) {
        Some(addr) => (child, addr, rx, started),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tpsnet-serve did not print its address within 60 s");
        }
    }
}

/// The address from the server's "listening on http://ADDR" line; the lines read on
/// the way, that one included, go to `started`.
fn listening_address(
    rx: &mpsc::Receiver<String>,
    within: Duration,
    started: &mut Vec<String>,
) -> Option<SocketAddr> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).ok()?;
        let addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
        started.push(line);
        if addr.is_some() {
            return addr;
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tpsnet-serve did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metric(addr: SocketAddr, sample: &str) -> Option<f64> {
    get(addr, "/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn sigterm_finishes_requests_in_flight_then_exits_0() {
    // A 20 s batching delay: the three requests sit in the queue when SIGTERM arrives,
    // and are answered at once (the shutdown flushes the queue), not after 20 s.
    let (mut child, addr, stderr) = spawn(&[
        "--model",
        "resnet20",
        "--max-delay-ms",
        "20000",
        "--shutdown-timeout-s",
        "60",
    ]);
    let pngs = common::cifar_pngs(3);
    let route = "/v2/models/resnet20/classify".to_string();
    let in_flight: Vec<_> = pngs
        .into_iter()
        .map(|png| {
            let route = route.clone();
            std::thread::spawn(move || request(addr, "POST", &route, &[], &png))
        })
        .collect();
    let t0 = Instant::now();
    while metric(addr, "tpsnet_queue_images{model=\"resnet20\"}") != Some(3.0) {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "requests never queued"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    for r in in_flight {
        let r = r.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["predictions"][0]["class"].is_string());
    }
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        took < Duration::from_secs(15),
        "shutdown took {took:?}: the queue was not flushed"
    );
    let log: Vec<String> = stderr.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("SIGTERM")), "{log:?}");
    assert!(
        log.iter().any(|l| l.contains("every request answered")),
        "{log:?}"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening after exit"
    );
}

/// `--warm-up`'s batch runs before the server listens and is not traffic: no batch and
/// no request in the metrics until a client sends one. Without it the server serves
/// the same.
#[test]
fn warm_up_is_not_counted_as_traffic() {
    let png = common::cifar_pngs(1).remove(0);
    for args in [
        &["--model", "resnet20", "--warm-up"][..],
        &["--model", "resnet20"],
    ] {
        let (mut child, addr, _stderr) = spawn(args);
        let batches = "tpsnet_batch_size_count{model=\"resnet20\"}";
        assert_eq!(metric(addr, batches), Some(0.0), "{args:?}");
        let r = request(addr, "POST", "/v2/models/resnet20/classify", &[], &png);
        assert_eq!(r.status, 200, "{args:?}: {}", r.text());
        assert_eq!(metric(addr, batches), Some(1.0), "{args:?}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// `--spin-us` (how long ONNX Runtime's idle threads spin) is on the startup line: 100 µs
/// by default, ONNX Runtime's own time with 0.
#[test]
fn spin_time_is_announced_at_start() {
    for (args, needle) in [
        (&["--model", "resnet20"][..], "idle threads spin 100 µs"),
        (
            &["--model", "resnet20", "--spin-us", "0"],
            "idle threads spin ONNX Runtime's default time",
        ),
        (&["--model", "resnet20", "--spin-us", "250"], "spin 250 µs"),
    ] {
        let (mut child, _addr, _rx, started) = spawn_logged(args);
        child.kill().unwrap();
        child.wait().unwrap();
        let started = started.join("\n");
        assert!(started.contains(needle), "{args:?}: {started}");
    }
}

#[test]
fn start_up_errors_exit_2_with_a_message() {
    let out = serve_cmd()
        .args(["--model", "no-such-model", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown model `no-such-model`"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = serve_cmd()
        .args(["--model", "resnet20", "--port", &port])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on 127.0.0.1:"), "{err}");

    for bad in [
        ["--max-body-bytes", "12X"],
        ["--max-batch", "0"],
        ["--max-delay-ms", "-1"],
        ["--body-timeout-s", "0"],
        ["--max-connections", "0"],
        ["--device", "tpu"],
    ] {
        let out = serve_cmd().args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!out.stderr.is_empty(), "{bad:?}");
    }
}

#[test]
fn help_teaches_endpoints_and_options() {
    let out = serve_cmd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "/v2/models/NAME/infer",
        "/v2/models/NAME/classify",
        "/metrics",
        "--max-batch",
        "--max-delay-ms",
        "--max-queue",
        "--max-body-bytes",
        "--max-image-side",
        "--header-timeout-s",
        "--body-timeout-s",
        "--keep-alive-timeout-s",
        "--max-connections",
        "SIGTERM",
        "Retry-After",
        "--all",
        "--cpu-threads",
        "/v2/repository/index",
        "--warm-up",
        "--spin-us",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn sigterm_with_hundreds_of_stalled_connections_answers_what_was_received_and_exits_0_at_once() {
    // Long header and body limits, so nothing but the shutdown closes the stalled
    // connections; a 20 s batching delay holds one complete request in the queue.
    let (mut child, addr, stderr) = spawn(&[
        "--model",
        "resnet20",
        "--max-delay-ms",
        "20000",
        "--header-timeout-s",
        "60",
        "--body-timeout-s",
        "60",
        "--shutdown-timeout-s",
        "60",
    ]);
    let route = "/v2/models/resnet20/classify";
    let mut stalled = Vec::new();
    for i in 0..300 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let head = if i % 3 == 0 {
            format!("POST {route} HTTP/1.1\r\nHost: {addr}\r\nContent-Le")
        } else {
            format!(
                "POST {route} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/png\r\nContent-Length: 1048576\r\n\r\nP"
            )
        };
        std::io::Write::write_all(&mut s, head.as_bytes()).unwrap();
        stalled.push(s);
    }
    let png = common::cifar_pngs(1).remove(0);
    let queued = std::thread::spawn(move || request(addr, "POST", route, &[], &png));
    let t0 = Instant::now();
    while metric(addr, "tpsnet_queue_images{model=\"resnet20\"}") != Some(1.0)
        || metric(addr, "tpsnet_open_connections").unwrap_or(0.0) < 301.0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the stalled connections and the queued request never all arrived"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let r = queued.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with stalled connections open"
    );
    let log: Vec<String> = stderr.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("every request answered")),
        "{log:?}"
    );
    drop(stalled);
}
