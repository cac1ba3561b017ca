//! The `Classifier` library API: loading checks, batching, threads, execution providers.

use tpsnet_test_support::fixtures as common;

use std::sync::Arc;

use tpsnet_runtime::{
    Classifier, Device, Error, InputImage, SessionOptions, SessionOptionsBuilder,
};

/// One thread per session; tests add what they vary.
fn opts() -> SessionOptionsBuilder {
    SessionOptions::builder().threads(1)
}

/// `n` varied inputs (real CIFAR-10 test images would need the data; these are enough to
/// exercise the numerics).
fn images(n: usize) -> Vec<InputImage> {
    (0..n)
        .map(|i| {
            let px = (0..3072)
                .map(|j| (((i * 7919 + j * 31) % 997) as f32) / 996.0)
                .collect();
            InputImage::from_chw(px).unwrap()
        })
        .collect()
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

#[test]
fn opens_from_manifest_or_onnx_and_reports_provider() {
    let d = tempfile::tempdir().unwrap();
    let manifest = common::tiny_model(d.path(), "tiny", 1, 10.0);
    let onnx = common::model_of(&manifest);
    let a = Classifier::open(&manifest, &opts().build()).unwrap();
    let b = Classifier::open(&onnx, &opts().build()).unwrap();
    assert_eq!(a.model_path(), onnx);
    assert_eq!(b.manifest_path(), manifest);
    assert_eq!(a.name(), "tiny");
    assert_eq!(a.classes().len(), 10);
    let x = images(3);
    assert_eq!(a.logits(&x).unwrap(), b.logits(&x).unwrap());
    let e = a.execution();
    assert_eq!(e.provider, "CPUExecutionProvider");
    assert_eq!(e.device, Device::Cpu);
    assert_eq!(e.fallback, None);

    let preds = a.classify(&x, 3).unwrap();
    assert_eq!(preds.len(), 3);
    for p in &preds {
        assert_eq!(p.top_k.len(), 3);
        assert_eq!(p.top_k[0].index, p.index);
        assert!(
            p.top_k
                .windows(2)
                .all(|w| w[0].probability >= w[1].probability)
        );
    }
    assert!(a.classify(&[], 1).unwrap().is_empty());
}

#[test]
fn any_batch_size_gives_the_same_answers() {
    let d = tempfile::tempdir().unwrap();
    let manifest = common::tiny_model(d.path(), "tiny", 2, 10.0);
    let x = images(37);
    let whole = Classifier::open(&manifest, &opts().build())
        .unwrap()
        .logits(&x)
        .unwrap();
    assert_eq!(whole.len(), 37 * 10);
    for batch_size in [1, 5, 36] {
        let c = Classifier::open(&manifest, &opts().batch_size(batch_size).build()).unwrap();
        let got = c.logits(&x).unwrap();
        assert!(close(&got, &whole, 1e-4), "batch size {batch_size}");
        // One image alone equals its row of the batch.
        let one = c.logits(&x[17..18]).unwrap();
        assert!(close(&one, &whole[170..180], 1e-4));
    }
    // Flat NCHW input must be whole images.
    let c = Classifier::open(&manifest, &opts().build()).unwrap();
    assert!(matches!(
        c.logits_chw(&[0.0; 3073]),
        Err(Error::InputLength { .. })
    ));
}

#[test]
fn eight_threads_agree_with_one() {
    let d = tempfile::tempdir().unwrap();
    let manifest = common::tiny_model(d.path(), "tiny", 3, 10.0);
    let x = Arc::new(images(64));
    for sessions in [1, 3] {
        let c = Arc::new(
            Classifier::open(&manifest, &opts().sessions(sessions).batch_size(8).build()).unwrap(),
        );
        let reference = c.classify(&x, 10).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (c, x) = (Arc::clone(&c), Arc::clone(&x));
                std::thread::spawn(move || {
                    // Each thread classifies a different rotation, several times.
                    let mut got = Vec::new();
                    for round in 0..4 {
                        let start = (t * 8 + round) % x.len();
                        let order: Vec<usize> =
                            (0..x.len()).map(|i| (start + i) % x.len()).collect();
                        let batch: Vec<InputImage> = order.iter().map(|&i| x[i].clone()).collect();
                        got.push((order, c.classify(&batch, 10).unwrap()));
                    }
                    got
                })
            })
            .collect();
        for h in handles {
            for (order, preds) in h.join().unwrap() {
                for (&i, p) in order.iter().zip(&preds) {
                    let r = &reference[i];
                    assert_eq!(p.index, r.index);
                    let pr: Vec<f32> = p.top_k.iter().map(|s| s.probability).collect();
                    let rr: Vec<f32> = r.top_k.iter().map(|s| s.probability).collect();
                    assert!(
                        close(&pr, &rr, 1e-5),
                        "sessions {sessions}: {pr:?} vs {rr:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn missing_model_and_missing_manifest() {
    let d = tempfile::tempdir().unwrap();
    let e = Classifier::open(d.path().join("nope.onnx"), &opts().build()).unwrap_err();
    assert!(matches!(e, Error::ModelMissing { .. }), "{e}");
    assert!(e.to_string().contains("nope.onnx"), "{e}");

    let lone = d.path().join("lone.onnx");
    std::fs::write(&lone, common::tiny_onnx(1)).unwrap();
    let e = Classifier::open(&lone, &opts().build()).unwrap_err();
    assert!(matches!(e, Error::ManifestMissing { .. }), "{e}");
    assert!(e.to_string().contains("lone.json"), "{e}");

    // A manifest whose model file is gone.
    let manifest = common::tiny_model(d.path(), "gone", 1, 10.0);
    std::fs::remove_file(common::model_of(&manifest)).unwrap();
    let e = Classifier::open(&manifest, &opts().build()).unwrap_err();
    assert!(matches!(e, Error::ModelMissing { .. }), "{e}");
}

/// A manifest may only name a file in its own folder: one whose `file` reaches elsewhere
/// is refused before the model file is read, even when that file exists and its hash
/// matches.
#[test]
fn a_manifest_naming_a_file_outside_its_folder_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let manifest = common::tiny_model(d.path(), "tiny", 1, 10.0);
    let onnx = common::model_of(&manifest);
    let sub = d.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let mut m = tpsnet_zoo::Manifest::load(&manifest).unwrap();
    for file in [format!("../{}", m.file), onnx.to_str().unwrap().to_string()] {
        m.file = file.clone();
        let bad = sub.join("escape.json");
        std::fs::write(&bad, m.to_json()).unwrap();
        let e = Classifier::open(&bad, &opts().build()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Manifest(tpsnet_zoo::manifest::ManifestError::FileNotPlain { .. })
            ),
            "{file}: {e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("escape.json") && msg.contains("not a plain file name"),
            "{msg}"
        );
        // The registry skips it with the same reason instead of listing it.
        let reg = tpsnet_runtime::registry::Registry::scan(&sub).unwrap_or_else(|e| panic!("{e}"));
        assert!(reg.models.is_empty());
        assert_eq!(reg.invalid.len(), 1, "{:?}", reg.invalid);
    }
}

#[test]
fn one_flipped_byte_is_refused_before_loading() {
    let d = tempfile::tempdir().unwrap();
    let manifest = common::tiny_model(d.path(), "tiny", 1, 10.0);
    let onnx = common::model_of(&manifest);
    let mut bytes = std::fs::read(&onnx).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&onnx, &bytes).unwrap();
    let e = Classifier::open(&manifest, &opts().build()).unwrap_err();
    assert!(matches!(e, Error::HashMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&*onnx.to_string_lossy()), "{msg}");
    assert!(msg.contains("sha256"), "{msg}");
}

#[test]
fn truncated_onnx_with_a_matching_manifest_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let full = common::tiny_onnx(1);
    let truncated = &full[..full.len() / 3];
    let manifest = common::publish(d.path(), "cut", &common::tiny_spec(), truncated, 10.0, None);
    let e = Classifier::open(&manifest, &opts().build()).unwrap_err();
    assert!(matches!(e, Error::ModelInvalid { .. }), "{e}");
    assert!(e.to_string().contains("cut-"), "{e}");
    assert!(e.to_string().contains("not a valid ONNX model"), "{e}");
}

#[test]
fn graph_that_breaks_the_contract_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (spec, bytes) = common::onnx_64px();
    let manifest = common::publish(d.path(), "wide", &spec, &bytes, 10.0, None);
    let e = Classifier::open(&manifest, &opts().build()).unwrap_err();
    assert!(matches!(e, Error::Contract { .. }), "{e}");
    assert!(e.to_string().contains("64"), "{e}");

    // Same graph, input renamed by editing the protobuf by hand.
    use prost::Message;
    let spec = common::tiny_spec();
    let w = tpsnet_zoo::Weights::random(&spec, 1);
    let mut m =
        tpsnet_zoo::onnx::build_model(&spec, &w, &tpsnet_zoo::onnx::ExportOptions::default())
            .unwrap();
    let g = m.graph.as_mut().unwrap();
    g.input[0].name = "image".into();
    for n in &mut g.node {
        for i in &mut n.input {
            if i == "input" {
                *i = "image".into();
            }
        }
    }
    let bytes = m.encode_to_vec();
    let manifest = common::publish(d.path(), "renamed", &spec, &bytes, 10.0, None);
    let e = Classifier::open(&manifest, &opts().build()).unwrap_err();
    assert!(matches!(e, Error::Contract { .. }), "{e}");
    assert!(e.to_string().contains("`input`"), "{e}");
}

#[test]
fn cuda_request_errors_unless_fallback_is_allowed() {
    let d = tempfile::tempdir().unwrap();
    let manifest = common::tiny_model(d.path(), "tiny", 1, 10.0);
    let providers = tpsnet_runtime::session::available_providers().unwrap();
    if providers.iter().any(|p| p == "CUDAExecutionProvider") {
        // A GPU build of ONNX Runtime: CUDA must start and report itself.
        let c = Classifier::open(
            &manifest,
            &opts().device(Device::Cuda { device: 0 }).build(),
        )
        .unwrap();
        assert_eq!(c.execution().provider, "CUDAExecutionProvider");
        return;
    }
    let cuda = opts().device(Device::Cuda { device: 0 });
    let e = Classifier::open(&manifest, &cuda.clone().build()).unwrap_err();
    assert!(matches!(e, Error::CudaUnavailable { device: 0, .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("without the CUDA execution provider"), "{msg}");
    assert!(msg.contains("SessionOptions::allow_cpu_fallback"), "{msg}");

    let c = Classifier::open(&manifest, &cuda.allow_cpu_fallback(true).build()).unwrap();
    let e = c.execution();
    assert_eq!(e.requested, Device::Cuda { device: 0 });
    assert_eq!(e.device, Device::Cpu);
    assert_eq!(e.provider, "CPUExecutionProvider");
    assert!(
        e.fallback.as_deref().unwrap().contains("CUDA device 0"),
        "{e:?}"
    );
    assert_eq!(c.logits(&images(2)).unwrap().len(), 20);
}

#[test]
fn devices_parse() {
    assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
    assert_eq!(
        "cuda".parse::<Device>().unwrap(),
        Device::Cuda { device: 0 }
    );
    assert_eq!(
        "cuda:2".parse::<Device>().unwrap(),
        Device::Cuda { device: 2 }
    );
    assert!("cuda:-1".parse::<Device>().is_err());
    assert!("tpu".parse::<Device>().is_err());
    assert_eq!(Device::Cuda { device: 1 }.to_string(), "cuda:1");
}

#[test]
fn matches_python_onnxruntime() {
    // The same file through the pip onnxruntime must give the same logits.
    let python = std::env::var("TPSNET_PYTHON").expect("TPSNET_PYTHON (set by .cargo/config.toml)");
    let d = tempfile::tempdir().unwrap();
    let manifest = common::tiny_model(d.path(), "tiny", 4, 10.0);
    let onnx = common::model_of(&manifest);
    let x = images(4);
    let flat: Vec<f32> = x.iter().flat_map(|i| i.as_slice().to_vec()).collect();
    let input = d.path().join("x.bin");
    std::fs::write(
        &input,
        flat.iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let script = r#"
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.fromfile(sys.argv[2], dtype="<f4").reshape(-1, 3, 32, 32)
print(" ".join(repr(float(v)) for v in s.run(["logits"], {"input": x})[0].ravel()))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(&onnx)
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: Vec<f32> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let ours = Classifier::open(&manifest, &opts().build())
        .unwrap()
        .logits(&x)
        .unwrap();
    assert!(close(&ours, &py, 1e-4), "{ours:?}\n{py:?}");
}

/// Test-time augmentation in one batched call equals classifying each view on its own and
/// averaging the logits with the shared weights (`tpsnet_zoo::tta`), at any batch size.
#[test]
fn tta_averages_each_view_with_its_weight() {
    use tpsnet_runtime::TtaMode;
    use tpsnet_zoo::tta::{TTA_MODES, apply_view};
    let d = tempfile::tempdir().unwrap();
    let manifest = common::tiny_model(d.path(), "tiny", 4, 10.0);
    let x = images(7);
    for batch_size in [1, 3, 64] {
        let clf = Classifier::open(&manifest, &opts().batch_size(batch_size).build()).unwrap();
        for mode in TTA_MODES {
            let mut want = vec![0.0f32; 7 * 10];
            for v in mode.views() {
                let viewed: Vec<InputImage> = x
                    .iter()
                    .map(|img| {
                        let mut out = vec![0.0; 3072];
                        apply_view(img.as_slice(), 3, 32, 32, *v, &mut out);
                        InputImage::from_chw(out).unwrap()
                    })
                    .collect();
                for (w, l) in want.iter_mut().zip(clf.logits(&viewed).unwrap()) {
                    *w += v.weight * l;
                }
            }
            let got = clf.logits_tta(&x, mode).unwrap();
            assert!(close(&got, &want, 1e-5), "{mode} at batch {batch_size}");
            let chw: Vec<f32> = x.iter().flat_map(|i| i.as_slice().to_vec()).collect();
            assert!(close(&clf.logits_chw_tta(&chw, mode).unwrap(), &want, 1e-5));
        }
        // `with_tta` makes it the default of `logits` and `classify`.
        let six = clf.with_tta(TtaMode::SixView);
        assert_eq!(six.tta(), TtaMode::SixView);
        assert_eq!(
            six.logits(&x).unwrap(),
            six.logits_tta(&x, TtaMode::SixView).unwrap()
        );
    }
    // The views differ: six-view logits are not the single-view ones.
    let clf = Classifier::open(&manifest, &opts().build()).unwrap();
    assert_ne!(
        clf.logits(&x).unwrap(),
        clf.logits_tta(&x, TtaMode::SixView).unwrap()
    );
}
