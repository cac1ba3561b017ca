//! KServe v2 over gRPC (`tpsnet-serve --grpc-port`), checked from outside: two real
//! `tpsnet-serve` processes with the shipped `resnet20`, and Triton's Python gRPC client
//! (`serve/tests/kserve_grpc_client.py`) comparing answers with Python onnxruntime on
//! real CIFAR-10 test images and every error with its gRPC status code. The "busy"
//! server's queue is filled, then it gets SIGTERM: the queued gRPC requests are
//! answered and it exits 0.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::process::{Served, onnx_of};

const MODEL: &str = "resnet20";

#[test]
fn tritonclient_grpc_gets_onnxruntime_answers_and_status_codes() {
    let cifar = common::fixtures::cifar_dir();
    let server = Served::start(&["--model", MODEL, "--max-body-bytes", "64K"]);
    let busy = Served::start(&[
        "--model",
        MODEL,
        "--max-queue",
        "4",
        "--max-delay-ms",
        "20000",
    ]);
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
    // Calls naming the served model carry its label: 12 answered, 8 invalid tensors, one
    // version it lacks. The unknown model `nope` and the message over the body limit
    // (never decoded) carry none, and `nope` appears nowhere.
    let served = format!("endpoint=\"grpc_model_infer\",model=\"{MODEL}\"");
    let unnamed = "endpoint=\"grpc_model_infer\"";
    for (sample_name, want) in [
        (format!("tpsnet_requests_total{{{served}}}"), 21.0),
        (
            format!("tpsnet_request_errors_total{{{served},code=\"400\"}}"),
            8.0,
        ),
        (
            format!("tpsnet_request_errors_total{{{served},code=\"404\"}}"),
            1.0,
        ),
        (format!("tpsnet_requests_total{{{unnamed}}}"), 2.0),
        (
            format!("tpsnet_request_errors_total{{{unnamed},code=\"404\"}}"),
            1.0,
        ),
        (
            format!("tpsnet_request_errors_total{{{unnamed},code=\"413\"}}"),
            1.0,
        ),
        (
            "tpsnet_request_errors_total{endpoint=\"grpc_model_ready\",code=\"404\"}".into(),
            1.0,
        ),
        (
            "tpsnet_request_errors_total{endpoint=\"grpc_model_metadata\",code=\"404\"}".into(),
            1.0,
        ),
    ] {
        assert_eq!(
            sample(&sample_name),
            Some(want),
            "{sample_name} in\n{metrics}"
        );
    }
    for endpoint in ["grpc_model_ready", "grpc_model_metadata"] {
        let known = format!("tpsnet_requests_total{{endpoint=\"{endpoint}\",model=\"{MODEL}\"}}");
        assert!(
            sample(&known).is_some_and(|n| n >= 1.0),
            "{known} in\n{metrics}"
        );
    }
    assert!(!metrics.contains("nope"), "{metrics}");

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
