//! The HTTP example served on 127.0.0.1: real CIFAR-10 test images uploaded as PNG must get
//! exactly the answers of a direct `Classifier` call; bad uploads get a 4xx.

use tpsnet_test_support::fixtures as common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runtime::{Classifier, SessionOptions};
use tpsnet_examples::{ClassifyResponse, router};

fn start(classifier: Arc<Classifier>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, router(classifier)).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("server starts")
}

/// A minimal HTTP/1.1 client: one request per connection, body read to EOF.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

const BOUNDARY: &str = "tpsnet-test-boundary-7d1c";

fn multipart(parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (file_name, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn post_images(addr: SocketAddr, query: &str, parts: &[(&str, Vec<u8>)]) -> (u16, String) {
    request(
        addr,
        "POST",
        &format!("/classify{query}"),
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        &multipart(parts),
    )
}

#[test]
fn uploads_get_the_same_answers_as_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::tiny_model(dir.path(), "tiny", 21, 10.0);
    let options = SessionOptions::builder().sessions(2).build();
    let classifier = Arc::new(Classifier::open(&manifest, &options).unwrap());
    let addr = start(Arc::clone(&classifier));

    let (status, body) = request(addr, "GET", "/health", "text/plain", b"");
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, body) = request(addr, "GET", "/model", "text/plain", b"");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["name"], "tiny");
    assert_eq!(info["provider"], "CPUExecutionProvider");

    // Real CIFAR-10 test images, encoded to PNG in a temp folder.
    let pngs: Vec<PathBuf> = common::write_cifar_pngs(&dir.path().join("png"), 6);
    let parts: Vec<(String, Vec<u8>)> = pngs
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(p).unwrap(),
            )
        })
        .collect();
    let borrowed: Vec<(&str, Vec<u8>)> =
        parts.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let (status, body) = post_images(addr, "?top_k=3", &borrowed);
    assert_eq!(status, 200, "{body}");
    let answer: ClassifyResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(answer.model, "tiny");
    assert_eq!(answer.predictions.len(), 6);
    for (p, path) in answer.predictions.iter().zip(&pngs) {
        let direct = classifier.classify_file(path, 3).unwrap();
        assert_eq!(p.name, path.file_name().unwrap().to_string_lossy());
        assert_eq!(p.index, direct.index);
        assert_eq!(p.class, direct.class);
        assert_eq!(p.top_k.len(), 3);
        for (a, b) in p.top_k.iter().zip(&direct.top_k) {
            assert_eq!(a.index, b.index);
            assert!((a.probability - b.probability).abs() < 1e-6);
        }
    }

    // Several clients at once share the classifier.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let part = borrowed[i].1.clone();
            let name = parts[i].0.clone();
            std::thread::spawn(move || {
                let (status, body) = post_images(addr, "", &[(name.as_str(), part)]);
                assert_eq!(status, 200, "{body}");
                serde_json::from_str::<ClassifyResponse>(&body)
                    .unwrap()
                    .predictions
                    .remove(0)
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let p = h.join().unwrap();
        assert_eq!(p.index, answer.predictions[i].index);
        assert!((p.probability - answer.predictions[i].probability).abs() < 1e-6);
    }
}

#[test]
fn bad_uploads_get_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::tiny_model(dir.path(), "tiny", 22, 10.0);
    let classifier = Arc::new(Classifier::open(&manifest, &SessionOptions::default()).unwrap());
    let addr = start(classifier);

    let (status, body) = post_images(addr, "", &[("notes.txt", b"this is not an image".to_vec())]);
    assert_eq!(status, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("notes.txt"), "{body}");

    let (status, _) = post_images(addr, "", &[("empty.png", Vec::new())]);
    assert_eq!(status, 422);
    let (status, body) = post_images(
        addr,
        "",
        &[("huge.png", common::png_with_dimensions(100_000, 100_000))],
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("too large"), "{body}");

    let (status, _) = post_images(addr, "", &[]);
    assert_eq!(status, 400);
    let (status, _) = request(addr, "POST", "/classify", "application/json", b"{}");
    assert!((400..500).contains(&status), "{status}");
    let (status, _) = request(
        addr,
        "POST",
        "/classify",
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        b"--garbage",
    );
    assert!((400..500).contains(&status), "{status}");
}
