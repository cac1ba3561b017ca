//! The page at `/` in a real browser: Debian's Chromium driven by playwright-core
//! (`web/test/page.mjs`), in server mode (the `tpsnet-serve` binary with `resnet20`, then
//! with `resnet20-int8`) and in browser mode (the static site of `scripts/site`, the same
//! models on onnxruntime-web). Real CIFAR-10 test images (PNG made at test time in a temp
//! folder, never in the repository), some resized to other sizes, must show the runtime's
//! top-1 and probabilities within 1e-4 in every mode, precision and test-time augmentation;
//! the browser's 32x32 input must equal the runtime's preprocessing byte for byte. The
//! script also checks bad files, the keyboard, a phone-sized screen, a model file that does
//! not match its sha256, and that no console error appears.
//!
//! Needs `node`, `/usr/bin/chromium` and `web/node_modules` (`scripts/setup --browser`);
//! without them the test is skipped, unless CI=true or TPSNET_REQUIRE_DATA=1, where it fails.

mod common;

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tpsnet_runtime::{Classifier, InputImage, SessionOptions, TtaMode, preprocess};

const MODELS: [&str; 2] = ["resnet20", "resnet20-int8"];
/// 32x32 CIFAR-10 test images; two more are resized to other sizes.
const IMAGES: usize = 16;
const TOLERANCE: f32 = 1e-4;
/// The server's and the site's byte limit in this test (a larger file must be refused).
const MAX_BYTES: usize = 256 * 1024;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("TPSNET_REQUIRE_DATA").is_ok_and(|v| v == "1")
}

fn chromium() -> PathBuf {
    std::env::var_os("TPSNET_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// What is missing to run a browser, if anything.
fn missing_tools() -> Option<String> {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("node (Node.js 18 or newer) is not on PATH".into());
    }
    if !chromium().is_file() {
        return Some(format!("{} is missing", chromium().display()));
    }
    for package in ["playwright-core", "onnxruntime-web"] {
        if !repo()
            .join("web/node_modules")
            .join(package)
            .join("package.json")
            .is_file()
        {
            return Some(format!("web/node_modules/{package} is missing"));
        }
    }
    None
}

/// The test's images: (file name, PNG bytes).
fn test_images() -> Vec<(String, Vec<u8>)> {
    let mut images: Vec<(String, Vec<u8>)> = common::cifar_pngs(IMAGES + 2)
        .into_iter()
        .enumerate()
        .map(|(i, png)| (format!("cifar-test-{i:04}.png"), png))
        .collect();
    // Two images at other sizes, enlarged and shrunk by the runtime's Triangle resize.
    for (slot, (w, h)) in [(IMAGES, (45, 37)), (IMAGES + 1, (20, 26))] {
        let rgb = image::load_from_memory(&images[slot].1).unwrap().to_rgb8();
        let big = image::imageops::resize(&rgb, 96, 96, image::imageops::FilterType::Nearest);
        let resized = image::imageops::resize(&big, w, h, image::imageops::FilterType::Triangle);
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(resized)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        images[slot] = (format!("cifar-test-{slot:04}-{w}x{h}.png"), png);
    }
    images
}

/// Files the page must refuse: not an image, too many pixels, too many bytes.
fn bad_files(dir: &Path) -> Value {
    let wide = image::GrayImage::from_pixel(5000, 1, image::Luma([90]));
    let mut wide_png = Vec::new();
    image::DynamicImage::ImageLuma8(wide)
        .write_to(&mut Cursor::new(&mut wide_png), image::ImageFormat::Png)
        .unwrap();
    let mut heavy = b"\x89PNG\r\n\x1a\n".to_vec();
    heavy.resize(MAX_BYTES + 4096, 7);
    let mut out = serde_json::Map::new();
    for (key, name, bytes) in [
        (
            "not_image",
            "notes.txt",
            b"these are notes, not a picture\n".to_vec(),
        ),
        ("too_wide", "wide-5000x1.png", wide_png),
        ("too_heavy", "heavy.png", heavy),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        out.insert(key.into(), json!({ "name": name, "path": path }));
    }
    Value::Object(out)
}

/// A `tpsnet-serve` child process; killed when dropped.
struct ServeProcess {
    child: Child,
    url: String,
}

impl ServeProcess {
    fn start(model: &str) -> ServeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tpsnet-serve"))
            .arg("--models-dir")
            .arg(common::models_dir())
            .args(["--host", "127.0.0.1", "--port", "0", "--model", model])
            .args(["--max-body-bytes", &MAX_BYTES.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tpsnet-serve starts");
        let rx = common::process::stderr_lines(&mut child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!("tpsnet-serve --model {model} did not print its address within 60 s");
            };
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        ServeProcess {
            child,
            url: format!("http://{addr}/"),
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The runtime's softmax probabilities of every class, per image.
fn reference(model: &str, tta: TtaMode, images: &[InputImage]) -> Vec<Vec<f32>> {
    let options = SessionOptions::builder().batch_size(32).build();
    let clf = Classifier::open(common::shipped(model), &options)
        .unwrap()
        .with_tta(tta);
    let classes = clf.classes().len();
    clf.classify(images, classes)
        .unwrap()
        .into_iter()
        .map(|p| {
            let mut probs = vec![0.0; classes];
            for s in p.top_k {
                probs[s.index] = s.probability;
            }
            probs
        })
        .collect()
}

/// Runs the browser script; returns what it read off the page.
fn run_browser(job: &Path) -> Value {
    let mut child = Command::new("node")
        .arg(repo().join("web/test/page.mjs"))
        .arg(job)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser script did not finish within 600 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = reader.join().unwrap().unwrap();
    assert!(status.success(), "the browser script failed ({status})");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("browser script output is not JSON ({e}): {text}"))
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    digits
        .chunks(4)
        .flat_map(|q| {
            let n = q
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &d)| n | (d as u32) << (18 - 6 * i));
            let bytes = n.to_be_bytes();
            bytes[1..q.len()].to_vec()
        })
        .collect()
}

/// Checks one run's results against the runtime; returns how many images it compared.
fn judge_run(run: &Value, names: &[String], images: &[InputImage], expected: &[Vec<f32>]) -> usize {
    let (mode, model, tta) = (&run["mode"], &run["model"], &run["tta"]);
    let what = format!("{mode} {model} tta {tta}");
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), names.len(), "{what}: one result per image");
    for (r, (name, (image, probs))) in results
        .iter()
        .zip(names.iter().zip(images.iter().zip(expected)))
    {
        let what = format!("{what}, {name}");
        assert_eq!(r["file"], name.as_str(), "{what}: results in upload order");
        assert_eq!(r["state"], "done", "{what}: {}", r["message"]);
        assert_eq!(
            r["pictures"], 2,
            "{what}: the upload and the 32x32 picture are shown"
        );
        let preview = r["preview"].as_str();
        assert_eq!(
            preview.is_some(),
            run["mode"] == "browser",
            "{what}: browser mode draws its own 32x32 input"
        );
        if let Some(url) = preview {
            let png = base64_decode(url.split_once(',').unwrap().1);
            let seen = preprocess::load_bytes(&png, "preview").unwrap();
            assert_eq!(
                &seen, image,
                "{what}: the browser's 32x32 input is the runtime's"
            );
        }
        let rows: Vec<(usize, f32)> = r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                (
                    row[0].as_u64().unwrap() as usize,
                    row[1].as_f64().unwrap() as f32,
                )
            })
            .collect();
        assert_eq!(rows.len(), 5, "{what}: top-5 shown");
        let best = tpsnet_runtime::classify::argmax(probs);
        assert_eq!(
            rows[0].0, best,
            "{what}: top-1 {} vs the runtime's {best}",
            rows[0].0
        );
        for (i, &(index, p)) in rows.iter().enumerate() {
            assert!(
                (p - probs[index]).abs() <= TOLERANCE,
                "{what}: class {index} shows {p}, the runtime says {}",
                probs[index]
            );
            if i > 0 {
                assert!(p <= rows[i - 1].1, "{what}: bars sorted");
            }
        }
    }
    results.len()
}

#[test]
fn the_page_shows_the_runtimes_answers_in_chromium_in_server_and_browser_mode() {
    if let Some(what) = missing_tools() {
        assert!(
            !required(),
            "{what}: install the browser test's tools with scripts/setup --browser"
        );
        eprintln!("skipped: {what} (scripts/setup --browser installs the browser test's tools)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let named = test_images();
    let names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
    let inputs: Vec<InputImage> = named
        .iter()
        .map(|(n, png)| preprocess::load_bytes(png, n).unwrap())
        .collect();
    let image_files: Vec<Value> = named
        .iter()
        .map(|(name, png)| {
            let path = tmp.path().join(name);
            std::fs::write(&path, png).unwrap();
            json!({ "name": name, "path": path })
        })
        .collect();

    let site = tmp.path().join("site");
    let built = Command::new(repo().join("scripts/site"))
        .arg(&site)
        .args(MODELS.iter().flat_map(|m| ["--model", m]))
        .args(["--max-file-bytes", &MAX_BYTES.to_string()])
        .status()
        .unwrap();
    assert!(built.success(), "scripts/site failed");

    let servers: Vec<ServeProcess> = MODELS.iter().map(|m| ServeProcess::start(m)).collect();
    // Browser mode: the manifest's claim first (the page's default), then the others.
    let runs = [
        ("resnet20", TtaMode::Flip),
        ("resnet20", TtaMode::None),
        ("resnet20", TtaMode::SixView),
        ("resnet20-int8", TtaMode::Flip),
        ("resnet20-int8", TtaMode::None),
    ];
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let job = json!({
        "chromium": chromium(),
        "out_dir": shots,
        "images": image_files,
        "bad": bad_files(tmp.path()),
        "servers": MODELS.iter().zip(&servers).map(|(m, s)| json!({ "url": s.url, "model": m })).collect::<Vec<_>>(),
        "site": {
            "dir": site,
            "runs": runs.iter().map(|(m, t)| json!({ "model": m, "tta": t.as_str() })).collect::<Vec<_>>(),
        },
    });
    let job_path = tmp.path().join("job.json");
    std::fs::write(&job_path, job.to_string()).unwrap();
    let observed = run_browser(&job_path);
    drop(servers);

    let failed: Vec<&Value> = observed["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] != true)
        .collect();
    assert!(failed.is_empty(), "page checks failed: {failed:#?}");
    assert_eq!(observed["console"], json!([]), "console errors or warnings");

    let mut references: HashMap<(String, String), Vec<Vec<f32>>> = HashMap::new();
    let mut compared = 0;
    let mut seen_runs = Vec::new();
    for run in observed["runs"].as_array().unwrap() {
        let model = run["model"].as_str().unwrap().to_string();
        let tta = run["tta"].as_str().unwrap().to_string();
        let expected = references
            .entry((model.clone(), tta.clone()))
            .or_insert_with(|| reference(&model, tta.parse().unwrap(), &inputs));
        compared += judge_run(run, &names, &inputs, expected);
        seen_runs.push(format!("{} {model} {tta}", run["mode"].as_str().unwrap()));
    }
    let mut wanted: Vec<String> = MODELS.iter().map(|m| format!("server {m} none")).collect();
    wanted.extend(runs.iter().map(|(m, t)| format!("browser {m} {t}")));
    assert_eq!(seen_runs, wanted, "every mode, model and TTA was run");
    eprintln!(
        "page: {compared} results in {} runs match the runtime within {TOLERANCE}; screenshots in {}",
        seen_runs.len(),
        shots.display()
    );
}

/// The page's own endpoints over HTTP, without a browser (so they are tested wherever
/// the server's tests run).
#[test]
fn the_page_and_its_endpoints_are_served() {
    let clf = common::classifier("resnet20", 8);
    let manifest = clf.manifest().clone();
    let server = common::TestServer::start(clf, tpsnet_serve::ServerConfig::default());
    let addr = server.addr;

    let index = common::http::get(addr, "/");
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        index
            .text()
            .contains("<script type=\"module\" src=\"app.js\">")
    );
    let csp = index.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    for (path, kind) in [("/app.js", "text/javascript"), ("/style.css", "text/css")] {
        let r = common::http::get(addr, path);
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
    }

    let models = common::http::get(addr, "/models.json").json();
    assert_eq!(models["mode"], "server");
    assert_eq!(
        models["limits"]["max_body_bytes"],
        tpsnet_serve::ServerConfig::default().max_body_bytes
    );
    let card = &models["models"][0];
    assert_eq!(card["name"], manifest.name.as_str());
    assert_eq!(card["sha256"], manifest.sha256.as_str());
    assert_eq!(card["params"], manifest.params);
    assert_eq!(card["precision"], "fp32");
    assert_eq!(card["metrics"]["claim"], manifest.metrics.claim.as_str());
    assert_eq!(card["classes"].as_array().unwrap().len(), 10);

    // The preview is the runtime's input, byte for byte, for an image of another size.
    let png = &test_images()[IMAGES].1;
    let r = common::http::request(addr, "POST", "/page/preview", &[], png);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/png"));
    let seen = preprocess::load_bytes(&r.body, "preview").unwrap();
    assert_eq!(seen, preprocess::load_bytes(png, "upload").unwrap());
    let timing = r.header("server-timing").unwrap_or_default();
    assert!(timing.starts_with("app;dur="), "{timing}");

    let bad = common::http::request(addr, "POST", "/page/preview", &[], b"not an image");
    assert_eq!(bad.status, 422);
    assert!(
        bad.json()["error"]
            .as_str()
            .unwrap()
            .contains("not a readable image")
    );
    server.stop().unwrap();
}
