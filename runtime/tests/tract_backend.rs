//! The tract backend behind the same `Classifier`: it agrees with ONNX Runtime on real
//! CIFAR-10 images with shipped models, batches, thread counts and TTA give the same
//! answers, and graphs it cannot run (the int8 files' contrib operators, hand-made bad
//! graphs) are errors naming the file, the node and the operator, never panics.

use tpsnet_test_support::fixtures as common;

use std::path::PathBuf;

use prost::Message;
use tpsnet_runtime::classify::argmax;
use tpsnet_runtime::{Backend, Classifier, Device, Error, SessionOptions, TtaMode, registry};

fn shipped(name: &str) -> PathBuf {
    let reg = registry::Registry::scan(&tpsnet_test_support::shipped::models_dir()).unwrap();
    reg.find(name)
        .unwrap_or_else(|e| panic!("shipped model {name}: {e}"))
        .manifest_path
        .clone()
}

fn options(backend: Backend, threads: usize, batch: usize) -> SessionOptions {
    SessionOptions::builder()
        .backend(backend)
        .threads(threads)
        .batch_size(batch)
        .build()
}

/// The first `n` CIFAR-10 test images as NCHW floats in [0, 1].
fn test_images(n: usize) -> (Vec<f32>, Vec<u8>) {
    let data = common::cifar_test();
    let mut chw = Vec::with_capacity(n * 3072);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        chw.extend(data.image(i).iter().map(|&b| b as f32 / 255.0));
        labels.push(data.labels[i]);
    }
    (chw, labels)
}

/// Whether the two largest logits of `row` are so close that float rounding (different
/// summation orders in two engines) may swap them: within 1e-4 of the row's scale.
fn near_tie(row: &[f32]) -> bool {
    let mut sorted = row.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let scale = row.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    sorted[0] - sorted[1] <= 1e-4 * scale
}

/// Counts images whose predicted class differs between the two logit sets, and how many
/// of those are near ties in ONNX Runtime's logits.
fn disagreements(ort: &[f32], tract: &[f32], classes: usize) -> (usize, usize) {
    let mut differ = 0;
    let mut ties = 0;
    for (a, b) in ort.chunks_exact(classes).zip(tract.chunks_exact(classes)) {
        if argmax(a) != argmax(b) {
            differ += 1;
            if near_tie(a) {
                ties += 1;
            }
        }
    }
    (differ, ties)
}

/// Shipped models, 256 real test images: tract (two threads) predicts what ONNX
/// Runtime predicts, except where ONNX Runtime's top two logits are a near tie, and the
/// logits themselves agree to float rounding.
#[test]
fn tract_agrees_with_onnx_runtime_on_shipped_models() {
    let (chw, labels) = test_images(256);
    for name in ["resnet20", "airnet-short"] {
        let manifest = shipped(name);
        let ort = Classifier::open(&manifest, &options(Backend::Ort, 2, 256)).unwrap();
        let tract = Classifier::open(&manifest, &options(Backend::Tract, 2, 256)).unwrap();
        assert_eq!(tract.execution().backend, Backend::Tract);
        assert_eq!(tract.execution().provider, "tract");
        let a = ort.logits_chw(&chw).unwrap();
        let b = tract.logits_chw(&chw).unwrap();
        assert_eq!(a.len(), b.len());
        let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-3 * scale,
            "{name}: largest logit difference {worst} (logits up to {scale})"
        );
        let (differ, ties) = disagreements(&a, &b, 10);
        assert_eq!(
            differ, ties,
            "{name}: {differ} predictions differ, only {ties} of them near ties"
        );
        // The model really classifies (else agreement proves little).
        let correct = b
            .chunks_exact(10)
            .zip(&labels)
            .filter(|(row, l)| argmax(row) == **l as usize)
            .count();
        assert!(correct > 200, "{name}: {correct}/256 correct on tract");
    }
}

/// Every batch size, a lone image, thread counts and each TTA mode give the logits ONNX
/// Runtime gives (a tiny random model: only the numerics matter).
#[test]
fn batching_threads_and_tta_match_onnx_runtime() {
    let d = tempfile::tempdir().unwrap();
    let manifest = common::tiny_model(d.path(), "tiny", 3, 10.0);
    let (chw, _) = test_images(37);
    let reference = Classifier::open(&manifest, &options(Backend::Ort, 1, 256)).unwrap();
    let close = |a: &[f32], b: &[f32]| {
        let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * scale)
    };
    for tta in [TtaMode::None, TtaMode::Flip, TtaMode::SixView] {
        let want = reference.logits_chw_tta(&chw, tta).unwrap();
        for (threads, batch) in [(1, 256), (2, 256), (3, 5), (2, 1)] {
            let c = Classifier::open(&manifest, &options(Backend::Tract, threads, batch)).unwrap();
            let got = c.logits_chw_tta(&chw, tta).unwrap();
            assert!(
                close(&want, &got),
                "tta {tta}, {threads} threads, batch {batch}"
            );
        }
    }
    let c = Classifier::open(&manifest, &options(Backend::Tract, 2, 16)).unwrap();
    let all = c.logits_chw(&chw).unwrap();
    let one = c.logits_chw(&chw[17 * 3072..18 * 3072]).unwrap();
    assert!(close(&all[170..180], &one));
    assert!(c.logits_chw(&[]).unwrap().is_empty());
    assert!(matches!(
        c.logits_chw(&chw[..100]),
        Err(Error::InputLength { .. })
    ));
    // Shared between threads like the ONNX Runtime classifier.
    let c = std::sync::Arc::new(c);
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (c, chw) = (c.clone(), chw.clone());
            std::thread::spawn(move || c.logits_chw(&chw).unwrap())
        })
        .collect();
    for h in handles {
        assert!(close(&all, &h.join().unwrap()));
    }
}

/// `warm_up` runs on every session of a pool (and on tract) and changes no answer.
#[test]
fn warm_up_runs_on_both_backends_and_changes_no_answer() {
    let d = tempfile::tempdir().unwrap();
    let manifest = common::tiny_model(d.path(), "tiny", 3, 10.0);
    let (chw, _) = test_images(9);
    let cold = Classifier::open(&manifest, &options(Backend::Ort, 1, 4)).unwrap();
    let want = cold.logits_chw(&chw).unwrap();
    let pool = SessionOptions::builder()
        .sessions(3)
        .threads(1)
        .batch_size(4)
        .build();
    for opts in [pool, options(Backend::Tract, 2, 4)] {
        let c = Classifier::open(&manifest, &opts).unwrap();
        c.warm_up().unwrap();
        let got = c.logits_chw(&chw).unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in want.iter().zip(&got) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{a} vs {b}");
        }
    }
}

/// The int8 files use ONNX Runtime's com.microsoft operators: refused before tract
/// builds anything, naming the file, the node, the operator and the ort backend.
#[test]
fn int8_models_are_refused_naming_the_operator_and_the_ort_backend() {
    for (name, op) in [
        ("resnet20-int8", "QLinearAdd"),
        ("airnet-short-int8", "Gelu"),
    ] {
        let manifest = shipped(name);
        let e = Classifier::open(&manifest, &options(Backend::Tract, 1, 8)).unwrap_err();
        let Error::TractUnsupportedOp {
            path,
            node,
            op: got,
            domain,
        } = &e
        else {
            panic!("{name}: {e}");
        };
        assert_eq!(got, op);
        assert_eq!(domain, "com.microsoft");
        let msg = e.to_string();
        for part in [
            path.to_str().unwrap(),
            node.as_str(),
            &format!("com.microsoft.{op}"),
            "ONNX Runtime backend (Backend::Ort)",
        ] {
            assert!(msg.contains(part), "{part:?} not in {msg}");
        }
    }
}

/// Publishes a hand-edited tiny model; returns its manifest.
fn publish_edited(
    dir: &std::path::Path,
    name: &str,
    edit: impl FnOnce(&mut tpsnet_zoo::onnx::proto::GraphProto),
) -> PathBuf {
    let spec = common::tiny_spec();
    let w = tpsnet_zoo::Weights::random(&spec, 1);
    let mut m =
        tpsnet_zoo::onnx::build_model(&spec, &w, &tpsnet_zoo::onnx::ExportOptions::default())
            .unwrap();
    edit(m.graph.as_mut().unwrap());
    common::publish(dir, name, &spec, &m.encode_to_vec(), 10.0, None)
}

/// Graphs tract cannot run are errors that name the file, the node and the operator.
#[test]
fn hand_made_bad_graphs_are_clear_errors_not_panics() {
    let d = tempfile::tempdir().unwrap();
    let tract = options(Backend::Tract, 1, 8);

    // An operator nobody implements.
    let manifest = publish_edited(d.path(), "unknown-op", |g| {
        let n = g.node.iter_mut().find(|n| n.op_type == "Relu").unwrap();
        n.op_type = "Frobnicate".into();
        n.name = "frob_1".into();
    });
    let e = Classifier::open(&manifest, &tract).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::TractUnsupportedOp { .. }), "{msg}");
    for part in [
        "unknown-op-",
        "`frob_1`",
        "Frobnicate",
        "ONNX Runtime backend (Backend::Ort)",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }

    // A convolution whose weights do not fit its input: tract fails while typing the
    // graph, and its error names the node.
    let mut conv_name = String::new();
    let manifest = publish_edited(d.path(), "bad-conv", |g| {
        let conv = g.node.iter().find(|n| n.op_type == "Conv").unwrap();
        conv_name = conv.name.clone();
        let weight = conv.input[1].clone();
        let t = g.initializer.iter_mut().find(|t| t.name == weight).unwrap();
        // [out, in, kh, kw] -> in + 2 channels, with matching data.
        t.dims[1] += 2;
        let n: i64 = t.dims.iter().product();
        t.float_data = vec![0.5; n as usize];
        t.raw_data.clear();
    });
    let e = Classifier::open(&manifest, &tract).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::TractModel { .. }), "{msg}");
    for part in ["bad-conv-", &conv_name, "Conv"] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }

    // Not ONNX at all, with a manifest that matches the bytes.
    let full = common::tiny_onnx(1);
    let manifest = common::publish(
        d.path(),
        "cut",
        &common::tiny_spec(),
        &full[..full.len() / 3],
        10.0,
        None,
    );
    let e = Classifier::open(&manifest, &tract).unwrap_err();
    assert!(matches!(e, Error::TractModel { stage: "read", .. }), "{e}");
    assert!(e.to_string().contains("cut-"), "{e}");

    // The same contract checks as on ONNX Runtime.
    let (spec, bytes) = common::onnx_64px();
    let manifest = common::publish(d.path(), "wide", &spec, &bytes, 10.0, None);
    let e = Classifier::open(&manifest, &tract).unwrap_err();
    assert!(matches!(e, Error::Contract { .. }), "{e}");
    assert!(e.to_string().contains("64"), "{e}");
}

/// tract runs on the CPU only: CUDA is refused, or replaced by the CPU when allowed.
#[test]
fn cuda_on_tract_is_refused_unless_cpu_fallback_is_allowed() {
    let d = tempfile::tempdir().unwrap();
    let manifest = common::tiny_model(d.path(), "tiny", 4, 10.0);
    let cuda = SessionOptions::builder()
        .backend(Backend::Tract)
        .device(Device::Cuda { device: 0 });
    let e = Classifier::open(&manifest, &cuda.clone().build()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BackendDevice {
                backend: Backend::Tract,
                device: Device::Cuda { device: 0 }
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("Device::Cpu"), "{e}");
    let c = Classifier::open(&manifest, &cuda.allow_cpu_fallback(true).build()).unwrap();
    assert_eq!(c.execution().device, Device::Cpu);
    assert!(c.execution().fallback.as_deref().unwrap().contains("tract"));
}
