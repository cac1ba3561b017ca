//! The server on 127.0.0.1 with the shipped `resnet20` (small, so CI stays cheap):
//! KServe v2 endpoints checked from the specification and by an outside client
//! (Triton's Python HTTP client), 64 concurrent clients getting exactly the offline
//! classifier's answers on real CIFAR-10 test images, and bad requests getting the right
//! 4xx/503 while the server stays healthy. Speed is not measured here (see
//! `cargo bench -p tpsnet-serve`).

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::TestServer;
use common::http::{self, Conn, get, infer_json, request};
use serde_json::{Value, json};
use tpsnet_runtime::{InputImage, preprocess};
use tpsnet_serve::ServerConfig;

const MODEL: &str = "resnet20";

fn config(max_batch: usize, max_delay_ms: u64) -> ServerConfig {
    ServerConfig {
        max_batch,
        max_delay: Duration::from_millis(max_delay_ms),
        ..ServerConfig::default()
    }
}

#[test]
fn health_and_metadata_follow_the_protocol() {
    let clf = common::classifier(MODEL, 64);
    let m = clf.manifest().clone();
    let server = TestServer::start(clf, config(64, 2));
    let a = server.addr;
    let version = &m.sha256[..8];

    let r = get(a, "/v2/health/live");
    assert_eq!((r.status, r.json()), (200, json!({ "live": true })));
    let r = get(a, "/v2/health/ready");
    assert_eq!((r.status, r.json()), (200, json!({ "ready": true })));

    let r = get(a, "/v2");
    assert_eq!(r.status, 200);
    let meta = r.json();
    assert_eq!(meta["name"], "tpsnet-serve");
    assert!(meta["version"].is_string() && meta["extensions"].is_array());

    let want = json!({
        "name": MODEL,
        "versions": [version],
        "platform": "onnxruntime_onnx",
        "inputs": [{ "name": m.input.name, "datatype": "FP32", "shape": [-1, 3, 32, 32] }],
        "outputs": [{ "name": m.output.name, "datatype": "FP32", "shape": [-1, 10] }],
    });
    for path in [
        format!("/v2/models/{MODEL}"),
        format!("/v2/models/{MODEL}/versions/{version}"),
    ] {
        let r = get(a, &path);
        assert_eq!((r.status, r.json()), (200, want.clone()), "{path}");
        let r = get(a, &format!("{path}/ready"));
        assert_eq!(
            (r.status, r.json()),
            (200, json!({ "name": MODEL, "ready": true })),
            "{path}/ready"
        );
    }
    for path in [
        "/v2/models/nope".to_string(),
        "/v2/models/nope/ready".to_string(),
        format!("/v2/models/{MODEL}/versions/00000000"),
    ] {
        let r = get(a, &path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["error"].is_string(), "{path}");
    }

    // An infer request from the specification's example shape: nested data, an id,
    // the output named; the answer has the logits of the model's own contract.
    let img = vec![0.5f32; 3 * 32 * 32];
    let nested: Vec<Vec<Vec<f32>>> = img
        .chunks(1024)
        .map(|p| p.chunks(32).map(|r| r.to_vec()).collect())
        .collect();
    let body = json!({
        "id": "abc",
        "inputs": [{ "name": m.input.name, "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [nested] }],
        "outputs": [{ "name": m.output.name }],
    });
    let r = request(
        a,
        "POST",
        &server.route("infer"),
        &[],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["model_name"], MODEL);
    assert_eq!(v["model_version"], version);
    assert_eq!(v["id"], "abc");
    assert_eq!(v["outputs"][0]["name"], m.output.name.as_str());
    assert_eq!(v["outputs"][0]["datatype"], "FP32");
    assert_eq!(v["outputs"][0]["shape"], json!([1, 10]));
    let got: Vec<f32> = serde_json::from_value(v["outputs"][0]["data"].clone()).unwrap();
    let want = common::classifier(MODEL, 64)
        .logits(&[InputImage::from_chw(img).unwrap()])
        .unwrap();
    assert_eq!(got, want, "JSON floats round-trip exactly");

    let text = get(a, "/metrics");
    assert_eq!(text.status, 200);
    assert!(
        text.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4"))
    );
    // Requests naming the served model carry its label; those naming an unknown
    // model (`nope`) carry none, and the name appears nowhere.
    assert_eq!(
        server.metric(&format!(
            "tpsnet_requests_total{{endpoint=\"infer\",model=\"{MODEL}\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        server.metric("tpsnet_requests_total{endpoint=\"infer\"}"),
        None
    );
    assert_eq!(
        server.metric("tpsnet_request_errors_total{endpoint=\"model_metadata\",code=\"404\"}"),
        Some(1.0)
    );
    assert_eq!(
        server.metric(&format!(
            "tpsnet_request_errors_total{{endpoint=\"model_metadata\",model=\"{MODEL}\",code=\"404\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        server.metric("tpsnet_request_errors_total{endpoint=\"model_ready\",code=\"404\"}"),
        Some(1.0)
    );
    assert!(!text.text().contains("nope"));
    server.stop().unwrap();
}

#[test]
fn sixty_four_concurrent_clients_get_the_offline_answers() {
    const CLIENTS: usize = 64;
    const PER_CLIENT: usize = 4;
    let n = CLIENTS * PER_CLIENT;
    let clf = common::classifier(MODEL, 64);
    let input_name = clf.manifest().input.name.clone();
    let pngs = Arc::new(common::cifar_pngs(n));
    // The offline answers: the same decoding, one direct classifier call.
    let images: Vec<InputImage> = pngs
        .iter()
        .map(|p| preprocess::load_bytes(p, "png").unwrap())
        .collect();
    let offline_logits = clf.logits(&images).unwrap();
    let offline = clf.predictions(&offline_logits, 3);
    let images = Arc::new(images);
    let server = TestServer::start(Arc::clone(&clf), config(64, 5));
    let (addr, classify, infer) = (server.addr, server.route("classify"), server.route("infer"));

    // Each client keeps one connection and sends single images, alternating between the
    // upload endpoint (PNG bytes) and KServe infer (FP32 JSON).
    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (pngs, images, start) = (pngs.clone(), images.clone(), start.clone());
            let (classify, infer, input_name) =
                (classify.clone(), infer.clone(), input_name.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr).unwrap();
                start.wait();
                (0..PER_CLIENT)
                    .map(|j| {
                        let i = c + CLIENTS * j;
                        let r = if j % 2 == 0 {
                            conn.send("POST", &format!("{classify}?top_k=3"), &[], &pngs[i])
                        } else {
                            let body = infer_json(&input_name, &[images[i].as_slice()]);
                            conn.send("POST", &infer, &[], &body)
                        };
                        (i, j % 2 == 0, r.unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut answered = 0;
    for client in clients {
        for (i, upload, r) in client.join().unwrap() {
            assert_eq!(r.status, 200, "image {i}: {}", r.text());
            let v = r.json();
            if upload {
                let p = &v["predictions"][0];
                let want = &offline[i];
                assert_eq!(p["index"], want.index, "image {i}");
                assert_eq!(p["class"], want.class.as_str(), "image {i}");
                let prob = p["probability"].as_f64().unwrap() as f32;
                assert!(
                    (prob - want.probability).abs() < 1e-5,
                    "image {i}: {prob} vs {}",
                    want.probability
                );
                let top: Vec<u64> = p["top_k"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["index"].as_u64().unwrap())
                    .collect();
                let want_top: Vec<u64> = want.top_k.iter().map(|s| s.index as u64).collect();
                assert_eq!(top, want_top, "image {i}");
            } else {
                let got: Vec<f32> =
                    serde_json::from_value(v["outputs"][0]["data"].clone()).unwrap();
                let want = &offline_logits[i * 10..(i + 1) * 10];
                let diff = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(diff < 1e-4, "image {i}: logits differ by {diff}");
                assert_eq!(
                    tpsnet_runtime::classify::argmax(&got),
                    offline[i].index,
                    "image {i}"
                );
            }
            answered += 1;
        }
    }
    assert_eq!(answered, n);

    // Every image went through the batcher exactly once, in fewer calls than images.
    let images_run = server
        .metric("tpsnet_batch_size_sum{model=\"resnet20\"}")
        .unwrap();
    let batches = server
        .metric("tpsnet_batch_size_count{model=\"resnet20\"}")
        .unwrap();
    assert_eq!(images_run, n as f64);
    assert!(
        batches < n as f64,
        "{batches} batches for {n} images: nothing was merged"
    );
    eprintln!("{n} images in {batches} batches");
    let metrics = get(addr, "/metrics").text();
    assert!(
        !metrics.contains("tpsnet_request_errors_total{endpoint=\"infer\""),
        "{metrics}"
    );
    assert!(
        !metrics.contains("tpsnet_request_errors_total{endpoint=\"classify\""),
        "{metrics}"
    );
    server.stop().unwrap();
}

/// Checks an error answer: status, a JSON `{"error": ...}` containing `needle`.
fn assert_error(r: &http::Response, status: u16, needle: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    let v: Value = r.json();
    let msg = v["error"].as_str().unwrap_or_else(|| panic!("{what}: {v}"));
    assert!(msg.contains(needle), "{what}: `{msg}` lacks `{needle}`");
}

#[test]
fn bad_requests_get_4xx_json_and_the_server_stays_healthy() {
    let clf = common::classifier(MODEL, 64);
    let input = clf.manifest().input.name.clone();
    let cfg = ServerConfig {
        max_body_bytes: 256 * 1024,
        max_image_side: 64,
        ..config(64, 2)
    };
    let server = TestServer::start(clf, cfg);
    let a = server.addr;
    let infer = server.route("infer");
    let classify = server.route("classify");
    let one = vec![0.25f32; 3072];
    let tensor = |shape: Value, datatype: &str, data: Value| {
        json!({ "inputs": [{ "name": input, "shape": shape, "datatype": datatype, "data": data }] })
            .to_string()
    };
    // (method, path, extra headers, body, expected status, expected words in the error)
    type Case<'a> = (
        &'a str,
        String,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("POST", infer.clone(), vec![], b"{\"inputs\": [".to_vec(), 400, "malformed"),
        ("POST", infer.clone(), vec![], b"not json".to_vec(), 400, "malformed"),
        ("POST", infer.clone(), vec![], b"".to_vec(), 400, "empty request body"),
        ("POST", infer.clone(), vec![], tensor(json!([1, 3, 28, 28]), "FP32", json!(vec![0.0; 3 * 28 * 28])).into_bytes(), 400, "shape"),
        ("POST", infer.clone(), vec![], tensor(json!([3, 32, 32]), "FP32", json!(one)).into_bytes(), 400, "shape"),
        ("POST", infer.clone(), vec![], tensor(json!([2, 3, 32, 32]), "FP32", json!(one)).into_bytes(), 400, "needs 6144"),
        ("POST", infer.clone(), vec![], tensor(json!([1, 3, 32, 32]), "INT32", json!(vec![0; 3072])).into_bytes(), 400, "datatype `INT32`"),
        ("POST", infer.clone(), vec![], tensor(json!([1, 3, 32, 32]), "BYTES", json!(["a"])).into_bytes(), 400, "datatype `BYTES`"),
        ("POST", infer.clone(), vec![], tensor(json!([1, 3, 32, 32]), "FP32", json!(vec!["x"; 3072])).into_bytes(), 400, "data"),
        ("POST", infer.clone(), vec![], json!({ "inputs": [{ "name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": one }] }).to_string().into_bytes(), 400, "unknown input `image`"),
        ("POST", infer.clone(), vec![("Inference-Header-Content-Length", "12345")], b"{}".to_vec(), 400, "holds only"),
        ("POST", infer.clone(), vec![], tensor(json!([12, 3, 32, 32]), "FP32", json!(vec![0.123_456_79f32; 12 * 3072])).into_bytes(), 413, "--max-body-bytes"),
        ("POST", "/v2/models/nope/infer".into(), vec![], tensor(json!([1, 3, 32, 32]), "FP32", json!(one)).into_bytes(), 404, "unknown model `nope`"),
        ("POST", format!("/v2/models/{MODEL}/versions/1/infer"), vec![], tensor(json!([1, 3, 32, 32]), "FP32", json!(one)).into_bytes(), 404, "no version `1`"),
        ("GET", infer.clone(), vec![], vec![], 405, "not allowed"),
        ("GET", "/v3/whatever".into(), vec![], vec![], 404, "no route"),
        ("POST", classify.clone(), vec![], b"hello, not an image".to_vec(), 422, "not a readable image"),
        ("POST", classify.clone(), vec![], vec![], 400, "empty"),
        ("POST", classify.clone(), vec![], common::fixtures::png_with_dimensions(100_000, 100_000), 413, "100000x100000"),
        ("POST", classify.clone(), vec![], png(65, 10), 413, "--max-image-side"),
        ("POST", format!("{classify}?top_k=0"), vec![], png(8, 8), 400, "top_k"),
        ("POST", format!("{classify}?topk=3"), vec![], png(8, 8), 400, "top_k"),
        ("POST", classify.clone(), vec![("Content-Type", "multipart/form-data; boundary=xyz")], b"--xyz--\r\n".to_vec(), 400, "no files"),
        ("POST", classify.clone(), vec![("Content-Type", "multipart/form-data")], b"junk".to_vec(), 400, "multipart"),
    ];
    for (method, path, headers, body, status, needle) in &cases {
        let r = request(a, method, path, headers, body);
        assert_error(
            &r,
            *status,
            needle,
            &format!("{method} {path} ({} bytes)", body.len()),
        );
    }

    // Still healthy, still right.
    assert_eq!(get(a, "/v2/health/ready").status, 200);
    let r = request(a, "POST", &classify, &[], &png(40, 40));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(
        a,
        "POST",
        &infer,
        &[],
        tensor(json!([1, 3, 32, 32]), "FP32", json!(one)).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // `model` is the served model's name, or none for a request naming no model or
    // an unknown one.
    let errors = |endpoint: &str, model: Option<&str>, code: u16| {
        let model = model.map_or(String::new(), |m| format!(",model=\"{m}\""));
        server
            .metric(&format!(
                "tpsnet_request_errors_total{{endpoint=\"{endpoint}\"{model},code=\"{code}\"}}"
            ))
            .unwrap_or(0.0)
    };
    let served = Some(MODEL);
    assert_eq!(errors("infer", served, 400), 11.0);
    assert_eq!(errors("infer", None, 400), 0.0);
    assert_eq!(errors("infer", served, 413), 1.0);
    assert_eq!(errors("infer", served, 404), 1.0, "a version it lacks");
    assert_eq!(errors("infer", None, 404), 1.0, "the unknown model `nope`");
    assert_eq!(errors("classify", served, 413), 2.0);
    assert_eq!(errors("unmatched", None, 404), 1.0);
    server.stop().unwrap();
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[test]
fn a_flood_past_the_queue_limit_gets_503_and_the_queued_requests_still_finish() {
    // A queue of 4 images and a long batching delay: four requests fill the queue and
    // wait there, so everything sent meanwhile must be refused.
    let clf = common::classifier(MODEL, 64);
    let input = clf.manifest().input.name.clone();
    let cfg = ServerConfig {
        max_queue: 4,
        retry_after_s: 2,
        ..config(64, 4000)
    };
    let server = TestServer::start(clf, cfg);
    let (a, classify, infer) = (server.addr, server.route("classify"), server.route("infer"));
    let pngs = Arc::new(common::cifar_pngs(4));
    let queued: Vec<_> = (0..4)
        .map(|i| {
            let (pngs, classify) = (pngs.clone(), classify.clone());
            std::thread::spawn(move || request(a, "POST", &classify, &[], &pngs[i]))
        })
        .collect();
    let t0 = Instant::now();
    while server.metric("tpsnet_queue_images{model=\"resnet20\"}") != Some(4.0) {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the 4 requests never filled the queue"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let flood: Vec<_> = (0..16)
        .map(|i| {
            let (pngs, classify) = (pngs.clone(), classify.clone());
            std::thread::spawn(move || request(a, "POST", &classify, &[], &pngs[i % 4]))
        })
        .collect();
    for r in flood {
        let r = r.join().unwrap();
        assert_error(&r, 503, "busy", "flood");
        assert_eq!(r.header("retry-after"), Some("2"));
    }
    // More images than the whole queue can ever hold: 413, not 503.
    let five = vec![0.5f32; 3072];
    let body = infer_json(&input, &[&five, &five, &five, &five, &five]);
    assert_error(
        &request(a, "POST", &infer, &[], &body),
        413,
        "split it",
        "5 images",
    );
    for r in queued {
        let r = r.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(get(a, "/v2/health/ready").status, 200);
    let r = request(a, "POST", &classify, &[], &pngs[0]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        server.metric(&format!(
            "tpsnet_request_errors_total{{endpoint=\"classify\",model=\"{MODEL}\",code=\"503\"}}"
        )),
        Some(16.0)
    );
    assert_eq!(
        server.metric("tpsnet_queue_images{model=\"resnet20\"}"),
        Some(0.0)
    );
    server.stop().unwrap();
}

#[test]
fn tritonclient_speaks_kserve_v2_with_the_server() {
    let clf = common::classifier(MODEL, 64);
    let onnx = clf.model_path().to_path_buf();
    let server = TestServer::start(clf, config(64, 2));
    let python = std::env::var("TPSNET_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kserve_client.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(server.addr.to_string())
        .arg(MODEL)
        .arg(&onnx)
        .arg(common::fixtures::cifar_dir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}; run scripts/setup"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kserve_client.py failed (needs tritonclient[http] from requirements.txt; run scripts/setup):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
    eprintln!("{}", stdout.trim());
    server.stop().unwrap();
}

#[test]
fn by_default_a_lone_request_runs_at_once_without_waiting_for_company() {
    // The default batching never waits: each of these sequential requests finds a free
    // worker and runs at once. With any wait of a millisecond or more (the old default
    // was 2 ms), none could start its batch within a millisecond of arriving.
    let clf = common::classifier(MODEL, 64);
    let input = clf.manifest().input.name.clone();
    assert_eq!(ServerConfig::default().max_delay, Duration::ZERO);
    let server = TestServer::start(clf, ServerConfig::default());
    let infer = server.route("infer");
    let image = vec![0.5f32; 3072];
    let body = infer_json(&input, &[&image]);
    let mut conn = Conn::open(server.addr).unwrap();
    const LONE: usize = 20;
    for _ in 0..LONE {
        let r = conn.send("POST", &infer, &[], &body).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        server.metric("tpsnet_batch_size_count{model=\"resnet20\"}"),
        Some(LONE as f64)
    );
    let within_1ms = server
        .metric("tpsnet_queue_duration_seconds_bucket{model=\"resnet20\",le=\"0.001\"}")
        .unwrap();
    // Scheduling noise on a busy machine may delay a few; most run at once.
    assert!(
        within_1ms > LONE as f64 / 2.0,
        "only {within_1ms} of {LONE} lone requests started within 1 ms of arriving"
    );
    server.stop().unwrap();
}

#[test]
fn an_opt_in_delay_merges_concurrent_requests_and_a_full_batch_does_not_wait() {
    // A 30 s delay and batches of 8: eight concurrent requests wait for one another,
    // run as one batch as soon as it is full, and are answered long before the delay.
    const N: usize = 8;
    let clf = common::classifier(MODEL, N);
    let input = clf.manifest().input.name.clone();
    let server = TestServer::start(Arc::clone(&clf), config(N, 30_000));
    let (addr, infer) = (server.addr, server.route("infer"));
    let images: Vec<Vec<f32>> = (0..N).map(|i| vec![i as f32 / N as f32; 3072]).collect();
    let start = Arc::new(Barrier::new(N));
    let t0 = Instant::now();
    let clients: Vec<_> = images
        .iter()
        .map(|image| {
            let body = infer_json(&input, &[image]);
            let (start, infer) = (start.clone(), infer.clone());
            std::thread::spawn(move || {
                start.wait();
                request(addr, "POST", &infer, &[], &body)
            })
        })
        .collect();
    for (client, image) in clients.into_iter().zip(&images) {
        let r = client.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let got: Vec<f32> = serde_json::from_value(r.json()["outputs"][0]["data"].clone()).unwrap();
        let want = clf
            .logits(&[InputImage::from_chw(image.clone()).unwrap()])
            .unwrap();
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "logits differ by {diff}");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "a full batch waited for the delay"
    );
    assert_eq!(
        server.metric("tpsnet_batch_size_count{model=\"resnet20\"}"),
        Some(1.0)
    );
    assert_eq!(
        server.metric("tpsnet_batch_size_sum{model=\"resnet20\"}"),
        Some(N as f64)
    );
    server.stop().unwrap();
}
