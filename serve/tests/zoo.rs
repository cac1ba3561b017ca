//! Several models in one server: two shipped models (`resnet20` and its int8 variant,
//! whose logits differ) served at once on 127.0.0.1, each answering concurrent clients
//! with exactly its own offline classifier's logits on real CIFAR-10 test images; the
//! page's model list, the metrics' `model` label (on the request families only for
//! models the server knows), and the KServe v2 model repository extension (index, load,
//! unload with requests still queued); and
//! `tpsnet-serve --all` with every model of the folder, answering Triton's gRPC client
//! per model (`zoo_grpc_client.py`, against Python onnxruntime).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestServer;
use common::http::{get, infer_json, request};
use common::process::{Served, onnx_of};
use serde_json::{Value, json};
use tpsnet_runtime::registry::Registry;
use tpsnet_runtime::{Classifier, InputImage};
use tpsnet_serve::ServerConfig;

const FP32: &str = "resnet20";
const INT8: &str = "resnet20-int8";

/// The first `n` CIFAR-10 test images as the models' input (3x32x32 floats each).
fn cifar_images(n: usize) -> Vec<Vec<f32>> {
    let data = common::fixtures::cifar_test();
    (0..n)
        .map(|i| {
            let rgb = image::DynamicImage::ImageRgb8(common::fixtures::cifar_rgb(&data, i));
            InputImage::from_dynamic(&rgb).as_slice().to_vec()
        })
        .collect()
}

/// POSTs `image` to `model`'s infer route; the logits, or the status and body.
fn infer(addr: std::net::SocketAddr, model: &str, image: &[f32]) -> Result<Vec<f32>, String> {
    let r = request(
        addr,
        "POST",
        &format!("/v2/models/{model}/infer"),
        &[],
        &infer_json("input", &[image]),
    );
    if r.status != 200 {
        return Err(format!("{} {}", r.status, r.text()));
    }
    let v = r.json();
    assert_eq!(v["model_name"], model);
    Ok(serde_json::from_value(v["outputs"][0]["data"].clone()).unwrap())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn offline(clf: &Classifier, image: &[f32]) -> Vec<f32> {
    clf.logits(&[InputImage::from_chw(image.to_vec()).unwrap()])
        .unwrap()
}

/// The names of the models in the shipped models folder, sorted.
fn folder_names() -> Vec<String> {
    let mut names: Vec<String> = Registry::scan(&common::models_dir())
        .unwrap()
        .models
        .iter()
        .map(|m| m.manifest.name.clone())
        .collect();
    names.dedup();
    names
}

fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let r = request(addr, "POST", path, &[], body.as_bytes());
    (r.status, r.json())
}

#[test]
fn two_models_answer_independently_with_their_own_metrics() {
    let (fp32, int8) = (common::classifier(FP32, 64), common::classifier(INT8, 64));
    let server = TestServer::start_models(
        vec![Arc::clone(&fp32), Arc::clone(&int8)],
        ServerConfig::default(),
    );
    let a = server.addr;
    for (name, clf) in [(FP32, &fp32), (INT8, &int8)] {
        let r = get(a, &format!("/v2/models/{name}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["versions"], json!([&clf.manifest().sha256[..8]]));
    }

    // Four clients per model at once, each image to both models.
    const N: usize = 16;
    let images = Arc::new(cifar_images(N));
    let clients: Vec<_> = [FP32, INT8]
        .into_iter()
        .flat_map(|model| (0..4).map(move |c| (model, c)))
        .map(|(model, c)| {
            let images = Arc::clone(&images);
            std::thread::spawn(move || {
                (c..N)
                    .step_by(4)
                    .map(|i| (model, i, infer(a, model, &images[i])))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for client in clients {
        for (model, i, got) in client.join().unwrap() {
            let got = got.unwrap_or_else(|e| panic!("{model} image {i}: {e}"));
            let (own, other) = if model == FP32 {
                (&fp32, &int8)
            } else {
                (&int8, &fp32)
            };
            let diff = max_diff(&got, &offline(own, &images[i]));
            assert!(diff < 1e-4, "{model} image {i}: logits differ by {diff}");
            // The other model's answer differs: the request reached the model it named.
            assert!(max_diff(&got, &offline(other, &images[i])) > 1e-3);
        }
    }

    for name in [FP32, INT8] {
        let images_run = server.metric(&format!("tpsnet_batch_size_sum{{model=\"{name}\"}}"));
        assert_eq!(images_run, Some(N as f64), "{name}");
        // Concurrent requests, each counted once under the model it named.
        let requests = format!("tpsnet_requests_total{{endpoint=\"infer\",model=\"{name}\"}}");
        assert_eq!(server.metric(&requests), Some(N as f64), "{name}");
        assert_eq!(
            server.metric(&format!("tpsnet_queue_images{{model=\"{name}\"}}")),
            Some(0.0)
        );
    }
    let text = get(a, "/metrics").text();
    assert!(text.contains(&format!("tpsnet_model_info{{model=\"{INT8}\"")));
    let listed: Vec<Value> = get(a, "/models.json").json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].clone())
        .collect();
    assert_eq!(listed, vec![json!(FP32), json!(INT8)]);
    server.stop().unwrap();
}

/// The samples of the family `name` (lines `name{labels} value`): labels and value.
fn samples(metrics: &str, name: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter_map(|l| {
            let (labels, value) = l.strip_prefix(name)?.strip_prefix('{')?.split_once("} ")?;
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The request families carry `model` when a request names a model the server knows
/// (loaded now, or loaded before and unloaded) and no model label otherwise: a name
/// the server does not know creates no series, and each request is counted once, so
/// summing over `model` gives every request of an endpoint.
#[test]
fn request_metrics_are_labelled_with_known_models_only() {
    let (fp32, int8) = (common::classifier(FP32, 64), common::classifier(INT8, 64));
    let server = TestServer::start_models(vec![fp32, int8], ServerConfig::default());
    let a = server.addr;
    let image = &cifar_images(1)[0];
    const UNKNOWN: &str = "nosuch-7f3a";

    for _ in 0..3 {
        infer(a, FP32, image).unwrap();
    }
    for _ in 0..2 {
        infer(a, INT8, image).unwrap();
    }
    let wrong_version = request(
        a,
        "POST",
        &format!("/v2/models/{FP32}/versions/00000000/infer"),
        &[],
        &infer_json("input", &[image]),
    );
    assert_eq!(wrong_version.status, 404, "{}", wrong_version.text());
    let unknown = infer(a, UNKNOWN, image).unwrap_err();
    assert!(unknown.starts_with("404"), "{unknown}");
    assert_eq!(get(a, &format!("/v2/models/{UNKNOWN}")).status, 404);
    assert_eq!(get(a, &format!("/v2/models/{UNKNOWN}/ready")).status, 404);
    let load_unknown = format!("/v2/repository/models/{UNKNOWN}/load");
    assert_eq!(post(a, &load_unknown, "").0, 404);
    // Unloaded, INT8 is still known: its refusals keep its label.
    let unload = format!("/v2/repository/models/{INT8}/unload");
    assert_eq!(post(a, &unload, "").0, 200);
    assert!(infer(a, INT8, image).unwrap_err().starts_with("503"));
    assert_eq!(get(a, "/v2/health/live").status, 200);

    let metrics = get(a, "/metrics").text();
    assert!(!metrics.contains(UNKNOWN), "{metrics}");
    let fp32 = format!("model=\"{FP32}\"");
    let int8 = format!("model=\"{INT8}\"");
    let labels = |endpoint: &str, model: Option<&str>| match model {
        None => format!("endpoint=\"{endpoint}\""),
        Some(model) => format!("endpoint=\"{endpoint}\",{model}"),
    };
    let requests = samples(&metrics, "tpsnet_requests_total");
    let want: Vec<(String, f64)> = vec![
        (labels("health_live", None), 1.0),
        (labels("infer", None), 1.0),
        (labels("infer", Some(&fp32)), 4.0),
        (labels("infer", Some(&int8)), 3.0),
        (labels("model_metadata", None), 1.0),
        (labels("model_ready", None), 1.0),
        (labels("repository_load", None), 1.0),
        (labels("repository_unload", Some(&int8)), 1.0),
    ];
    assert_eq!(requests, want, "{metrics}");
    let errors = samples(&metrics, "tpsnet_request_errors_total");
    let want: Vec<(String, f64)> = vec![
        (format!("{},code=\"404\"", labels("infer", None)), 1.0),
        (
            format!("{},code=\"404\"", labels("infer", Some(&fp32))),
            1.0,
        ),
        (
            format!("{},code=\"503\"", labels("infer", Some(&int8))),
            1.0,
        ),
        (
            format!("{},code=\"404\"", labels("model_metadata", None)),
            1.0,
        ),
        (format!("{},code=\"404\"", labels("model_ready", None)), 1.0),
        (
            format!("{},code=\"404\"", labels("repository_load", None)),
            1.0,
        ),
    ];
    assert_eq!(errors, want, "{metrics}");
    // The latency histogram has the same series, each with every request once.
    let durations = samples(&metrics, "tpsnet_request_duration_seconds_count");
    assert_eq!(durations, requests, "{metrics}");
    let infers: f64 = requests
        .iter()
        .filter(|(l, _)| l.starts_with("endpoint=\"infer\""))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(infers, 8.0, "every infer request, summed over model");
    server.stop().unwrap();
}

#[test]
fn the_repository_lists_loads_and_unloads_models() {
    let (fp32, int8) = (common::classifier(FP32, 64), common::classifier(INT8, 64));
    // A long opt-in delay keeps requests queued until the unload flushes them.
    let config = ServerConfig {
        max_delay: Duration::from_millis(3000),
        ..ServerConfig::default()
    };
    let server = TestServer::start_models(vec![Arc::clone(&fp32), Arc::clone(&int8)], config);
    let a = server.addr;

    // The index: every model of the folder, the two served READY, the rest not loaded.
    let (status, index) = post(a, "/v2/repository/index", "{}");
    assert_eq!(status, 200, "{index}");
    let names = folder_names();
    let listed: Vec<&str> = index
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, names);
    for e in index.as_array().unwrap() {
        let served = e["name"] == FP32 || e["name"] == INT8;
        assert_eq!(
            e["state"],
            if served { "READY" } else { "UNAVAILABLE" },
            "{e}"
        );
    }
    let (_, ready) = post(a, "/v2/repository/index", r#"{"ready": true}"#);
    assert_eq!(ready.as_array().unwrap().len(), 2, "{ready}");
    assert_eq!(post(a, "/v2/repository/index", r#"{"ready": 1}"#).0, 400);

    // Unload with three requests queued: they are answered, later ones get 503.
    let images = Arc::new(cifar_images(3));
    let queued: Vec<_> = (0..3)
        .map(|i| {
            let images = Arc::clone(&images);
            std::thread::spawn(move || infer(a, INT8, &images[i]))
        })
        .collect();
    let sample = format!("tpsnet_queue_images{{model=\"{INT8}\"}}");
    let t0 = Instant::now();
    while server.metric(&sample) != Some(3.0) {
        assert!(t0.elapsed() < Duration::from_secs(2), "never queued");
        std::thread::sleep(Duration::from_millis(10));
    }
    let unload = format!("/v2/repository/models/{INT8}/unload");
    assert_eq!(post(a, &unload, "").0, 200);
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "unload waited for the delay"
    );
    for (i, q) in queued.into_iter().enumerate() {
        let got = q.join().unwrap().expect("a queued request is answered");
        assert!(max_diff(&got, &offline(&int8, &images[i])) < 1e-4);
    }
    let refused = infer(a, INT8, &images[0]).unwrap_err();
    assert!(
        refused.starts_with("503") && refused.contains("/load"),
        "{refused}"
    );
    let r = get(a, &format!("/v2/models/{INT8}/ready"));
    assert_eq!((r.status, r.json()["ready"].clone()), (503, json!(false)));
    let (_, index) = post(a, "/v2/repository/index", r#"{"ready": false}"#);
    assert!(index.as_array().unwrap().iter().any(|e| e["name"] == INT8));
    // The other model is untouched.
    assert!(infer(a, FP32, &images[0]).is_ok());

    // Load it again, and load a model that was never served; unknown names are 404.
    let (status, loaded) = post(a, &format!("/v2/repository/models/{INT8}/load"), "");
    assert_eq!((status, loaded["state"].clone()), (200, json!("READY")));
    let got = infer(a, INT8, &images[1]).unwrap();
    assert!(max_diff(&got, &offline(&int8, &images[1])) < 1e-4);
    let (status, loaded) = post(a, "/v2/repository/models/airnet-short-int8/load", "");
    assert_eq!(status, 200, "{loaded}");
    assert_eq!(get(a, "/v2/models/airnet-short-int8/ready").status, 200);
    let (status, body) = post(a, "/v2/repository/models/nope/load", "");
    let dir = common::models_dir().display().to_string();
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains(&dir), "{body}");
    assert_eq!(post(a, "/v2/repository/models/nope/unload", "").0, 404);
    server.stop().unwrap();
}

/// `tpsnet-serve --all`: every model of the folder served by one process, with a shared
/// CPU budget; Triton's gRPC client gets each model's own onnxruntime answers.
#[test]
fn all_serves_every_model_and_grpc_routes_by_model_name() {
    let served = Served::start(&["--all", "--threads", "1", "--cpu-threads", "2"]);
    let (a, log) = (served.http, served.started.join("\n"));
    assert!(log.contains("at most 2 batch(es) at once"), "{log}");
    let names = folder_names();
    let (status, index) = post(a, "/v2/repository/index", "");
    assert_eq!(status, 200);
    let entries = index.as_array().unwrap();
    assert_eq!(entries.len(), names.len(), "{index}");
    for (entry, name) in entries.iter().zip(&names) {
        assert_eq!(
            (&entry["name"], &entry["state"]),
            (&json!(name), &json!("READY"))
        );
    }
    let page = get(a, "/models.json").json();
    assert_eq!(page["models"].as_array().unwrap().len(), names.len());
    assert_eq!(
        post(a, "/v2/repository/models/airnet-short/unload", "").0,
        200
    );

    let grpc_models = ["resnet20", "resnet20-int8", "airnet-short-int8"];
    let python = std::env::var("TPSNET_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/zoo_grpc_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(served.grpc.to_string())
        .arg(common::fixtures::cifar_dir())
        .arg("airnet-short")
        .args(
            grpc_models
                .iter()
                .map(|m| format!("{m}={}", onnx_of(m).display())),
        )
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}; run scripts/setup"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("passed, 0 failed"),
        "zoo_grpc_client.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = get(a, "/metrics").text();
    for m in grpc_models {
        let sample = format!("tpsnet_batch_size_sum{{model=\"{m}\"}} 8");
        assert!(metrics.contains(&sample), "no `{sample}` in\n{metrics}");
        // Eight ModelInfer calls per model, each under the model it named.
        let calls =
            format!("tpsnet_requests_total{{endpoint=\"grpc_model_infer\",model=\"{m}\"}} 8");
        assert!(metrics.contains(&calls), "no `{calls}` in\n{metrics}");
    }
    // The unloaded model keeps its label; the unknown one has none, and no series.
    let infer_errors = samples(&metrics, "tpsnet_request_errors_total")
        .into_iter()
        .filter(|(labels, _)| labels.starts_with("endpoint=\"grpc_model_infer\""))
        .collect::<Vec<_>>();
    assert_eq!(
        infer_errors,
        vec![
            (
                "endpoint=\"grpc_model_infer\",code=\"404\"".to_string(),
                1.0
            ),
            (
                "endpoint=\"grpc_model_infer\",model=\"airnet-short\",code=\"503\"".to_string(),
                1.0
            ),
        ],
        "{metrics}"
    );
    assert!(!metrics.contains("no-such-model"), "{metrics}");
    served.sigterm();
    let (status, log) = served.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{log:?}");
}
