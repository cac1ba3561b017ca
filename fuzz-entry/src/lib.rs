//! One entry point per fuzz target: outside bytes into a parser of the project. Each
//! returns normally for any input (accepted or refused with a typed error); a panic,
//! hang or runaway allocation is the bug. The cargo-fuzz targets (`fuzz/fuzz_targets/`)
//! call these, and `tests/fuzz_regressions.rs` replays the saved crash inputs through
//! them on stable.

use std::path::Path;

/// A model manifest (`models/*.json`): parse and check, as `Manifest::load` does.
pub fn manifest(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.json");
    std::fs::write(&path, data).expect("write input");
    let _ = tpsnet_zoo::Manifest::load(&path);
}

/// An architecture spec (JSON): parse, validate, count parameters and MACs.
pub fn spec(data: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<tpsnet_zoo::ResNetSpec>(data)
        && spec.validate().is_ok()
    {
        let _ = (spec.params(), spec.macs());
    }
}

/// A CIFAR-10 binary batch file's bytes.
pub fn cifar_batch(data: &[u8]) {
    let _ = tpsnet_zoo::cifar::parse_records(Path::new("data_batch_fuzz.bin"), data);
}

/// An image file: the runtime's decode + preprocess, and the server's upload path
/// (header check against the side limit, then the same preprocessing).
pub fn image(data: &[u8]) {
    let _ = tpsnet_runtime::preprocess::load_bytes(data, "fuzz.img");
    let _ = tpsnet_serve::upload::decode(data, "fuzz.img", 4096);
}

/// A KServe v2 inference request body. The first byte chooses between plain JSON and
/// the binary tensor extension, whose header length is the next two bytes.
pub fn kserve_infer(data: &[u8]) {
    let model = tpsnet_serve::kserve::ModelInfo {
        name: "resnet20".into(),
        version: "3dcf6d04".into(),
        input_name: "input".into(),
        output_name: "logits".into(),
        classes: (0..10).map(|i| format!("class{i}")).collect(),
        provider: "cpu".into(),
    };
    match data.split_first() {
        Some((&mode, rest)) if mode & 1 == 1 && rest.len() >= 2 => {
            let len = u16::from_le_bytes([rest[0], rest[1]]).to_string();
            let _ = tpsnet_serve::kserve::parse_infer(&rest[2..], Some(&len), &model);
        }
        Some((_, rest)) => {
            let _ = tpsnet_serve::kserve::parse_infer(rest, None, &model);
        }
        None => {}
    }
}

/// A `multipart/form-data` upload body, parsed as `POST /v2/models/NAME/classify`
/// parses it (`tpsnet_serve::upload::parse_form`). When the input starts with a line of
/// at most 70 bytes, that line is the boundary in the `Content-Type` header and the rest
/// is the body; otherwise the whole input is the body, with the boundary `fuzzboundary`.
pub fn multipart(data: &[u8]) {
    let (boundary, body) = match data.iter().take(71).position(|&b| b == b'\n') {
        Some(end) => (
            String::from_utf8_lossy(&data[..end]).into_owned(),
            &data[end + 1..],
        ),
        None => ("fuzzboundary".to_string(), data),
    };
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let _ = tpsnet_serve::upload::parse_form(&content_type, body.to_vec());
}

/// An ONNX model for the quantizer: decode the protobuf, build the graph, make the fp32
/// rewrites and plan the int8 lowering.
pub fn onnx_graph(data: &[u8]) {
    let _ = tpsnet_quantize::pipeline::prepare(Path::new("fuzz.onnx"), data, &[]);
}
