//! The KServe v2 / Open Inference Protocol REST messages for a zoo model: metadata,
//! inference requests (FP32 tensors as JSON, flat or nested) and responses.
//!
//! Two extensions Triton's clients use by default are supported as well:
//!
//! * **binary tensor data**: a request with an `Inference-Header-Content-Length: L`
//!   header holds L bytes of JSON followed by raw tensor bytes; an input whose
//!   `parameters.binary_data_size` is B takes the next B bytes (little-endian FP32). An
//!   output requested with `parameters.binary_data: true` (or every output, when the
//!   request sets `parameters.binary_data_output: true` and names none) is sent the same
//!   way, with `parameters.binary_data_size` in the JSON header.
//! * **classification**: an output requested with `parameters.classification: K` comes
//!   back as a `BYTES` tensor of shape `[N, K]` holding `"logit:index:label"` strings,
//!   best first.
//!
//! The request/response shapes follow the protocol's specification
//! (<https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol>)
//! and Triton's extension documents; `docs/serving.md` has examples.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tpsnet_runtime::{Classifier, InputImage};

use crate::error::ApiError;

/// The platform name KServe and Triton use for ONNX Runtime models.
pub const PLATFORM: &str = "onnxruntime_onnx";
/// The server's name in its metadata.
pub const SERVER_NAME: &str = "tpsnet-serve";
/// The input tensor's shape in the model metadata (-1: any number of images).
pub const INPUT_SHAPE: [i64; 4] = [-1, 3, SIDE as i64, SIDE as i64];
/// The header of the binary tensor data extension.
pub const HEADER_LENGTH: &str = "inference-header-content-length";
/// Side of the square input images.
const SIDE: usize = 32;
/// Floats per image (3 x 32 x 32).
const IMAGE_FLOATS: usize = 3 * SIDE * SIDE;
/// Deepest nesting accepted in a tensor's `data` (a 4-d tensor needs 4).
const MAX_DATA_DEPTH: usize = 8;

/// What the protocol says about the served model.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The model's name, as clients address it in `/v2/models/{name}`.
    pub name: String,
    /// The first 8 hex digits of the ONNX file's sha256 (as in its file name).
    pub version: String,
    /// The name of the model's one input tensor.
    pub input_name: String,
    /// The name of the model's one output tensor (logits).
    pub output_name: String,
    /// The class names, in the order of the logits.
    pub classes: Vec<String>,
    /// The ONNX Runtime execution provider the model runs on (e.g. `CPUExecutionProvider`).
    pub provider: String,
}

impl ModelInfo {
    /// The protocol's view of `classifier`'s model (from its manifest).
    pub fn of(classifier: &Classifier) -> Self {
        let m = classifier.manifest();
        ModelInfo {
            name: m.name.clone(),
            version: m.sha256.chars().take(8).collect(),
            input_name: m.input.name.clone(),
            output_name: m.output.name.clone(),
            classes: m.classes.clone(),
            provider: classifier.execution().provider.clone(),
        }
    }

    /// Checks a `{name}` (and optional `{version}`) from the URL against this model.
    pub fn check(&self, name: &str, version: Option<&str>) -> Result<(), ApiError> {
        if name != self.name {
            return Err(ApiError::not_found(format!(
                "unknown model `{name}`; this server serves `{}` (GET /v2/models/{} describes it)",
                self.name, self.name
            )));
        }
        match version {
            Some(v) if v != self.version => Err(ApiError::not_found(format!(
                "model `{name}` has no version `{v}`; the version served is `{}`",
                self.version
            ))),
            _ => Ok(()),
        }
    }

    /// The model metadata response.
    pub fn metadata(&self) -> Value {
        json!({
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [{
                "name": self.input_name,
                "datatype": "FP32",
                "shape": INPUT_SHAPE,
            }],
            "outputs": [{
                "name": self.output_name,
                "datatype": "FP32",
                "shape": [-1, self.classes.len()],
            }],
        })
    }
}

/// The server metadata response.
pub fn server_metadata() -> Value {
    json!({
        "name": SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "classification"],
    })
}

/// The form of the one output a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestedOutput {
    /// `Some(k)`: the classification extension's top-k strings instead of logits.
    pub classification: Option<usize>,
    /// Raw bytes after the JSON header instead of a JSON `data` array.
    pub binary: bool,
}

/// A checked inference request.
#[derive(Debug)]
pub struct InferRequest {
    /// The request's `id`, repeated in the response.
    pub id: Option<String>,
    /// The images of the one input tensor, in order.
    pub images: Vec<InputImage>,
    /// How the response should carry the output.
    pub output: RequestedOutput,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<RawInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<RawOutput>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// Parses and checks an inference request body. `header_length` is the value of the
/// `Inference-Header-Content-Length` header, if any.
///
/// The steps: split the body into its JSON header and binary tail (`split_body`),
/// decode the JSON into a typed request (`decode_request`), then check its one input
/// against the model and read its images (`input_images`) and the output it asks for
/// (`requested_output`).
pub fn parse_infer(
    body: &[u8],
    header_length: Option<&str>,
    model: &ModelInfo,
) -> Result<InferRequest, ApiError> {
    let (json_part, binary) = split_body(body, header_length)?;
    let raw = decode_request(json_part)?;
    let [input] = raw.inputs.as_slice() else {
        return Err(input_count_error(model, raw.inputs.len()));
    };
    let images = input_images(model, input, binary, header_length.is_some())?;
    let output = requested_output(model, &raw)?;
    Ok(InferRequest {
        id: raw.id,
        images,
        output,
    })
}

/// Splits a body into its JSON part and the binary tensor data after it, as the
/// `Inference-Header-Content-Length` header (if any) says.
fn split_body<'a>(
    body: &'a [u8],
    header_length: Option<&str>,
) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(v) = header_length else {
        return Ok((body, &[][..]));
    };
    let len: usize = v.trim().parse().map_err(|_| {
        ApiError::bad_request(format!(
            "Inference-Header-Content-Length `{v}` is not a byte count"
        ))
    })?;
    if len > body.len() {
        return Err(ApiError::bad_request(format!(
            "Inference-Header-Content-Length is {len} but the body holds only {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(len))
}

/// Decodes the JSON part of a request into its typed form (no checks against the
/// model yet).
fn decode_request(json_part: &[u8]) -> Result<RawRequest<'_>, ApiError> {
    if json_part.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty request body; send a JSON inference request: {\"inputs\": [{\"name\", \"shape\", \"datatype\": \"FP32\", \"data\"}]}",
        ));
    }
    serde_json::from_slice(json_part)
        .map_err(|e| ApiError::bad_request(format!("malformed inference request JSON: {e}")))
}

/// Checks the request's one input against the model and reads its images, from its
/// JSON `data` or from `binary` (which it must use up exactly). `has_header_length`:
/// whether the request came with `Inference-Header-Content-Length`, which binary data
/// needs.
fn input_images(
    model: &ModelInfo,
    input: &RawInput<'_>,
    binary: &[u8],
    has_header_length: bool,
) -> Result<Vec<InputImage>, ApiError> {
    let n = check_input(model, &input.name, &input.datatype, &input.shape)?;
    let binary_size = input
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"))
        .map(|v| {
            v.as_u64().ok_or_else(|| {
                ApiError::bad_request("parameters.binary_data_size must be a byte count")
            })
        })
        .transpose()?;
    let (values, unclaimed) = match (binary_size, input.data) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "input `{}` has both `data` and parameters.binary_data_size; send one",
                input.name
            )));
        }
        (None, None) => {
            return Err(ApiError::bad_request(format!(
                "input `{}` has no `data` (nor binary data)",
                input.name
            )));
        }
        (None, Some(data)) => (parse_data(data.get(), &input.name)?, binary),
        (Some(size), None) => {
            if !has_header_length {
                return Err(ApiError::bad_request(
                    "parameters.binary_data_size needs the Inference-Header-Content-Length header",
                ));
            }
            binary_values(input, n, size as usize, binary)?
        }
    };
    if !unclaimed.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} bytes of binary data follow the JSON header but no input claims them",
            unclaimed.len()
        )));
    }
    images_from_values(&values, n, &input.name, &input.shape)
}

/// Reads an input's `size` bytes of binary tensor data (`n` images) from the front of
/// `binary`; returns the values and the bytes left after them.
fn binary_values<'a>(
    input: &RawInput<'_>,
    n: usize,
    size: usize,
    binary: &'a [u8],
) -> Result<(Vec<f32>, &'a [u8]), ApiError> {
    let expected_bytes = n * IMAGE_FLOATS * 4;
    if size != expected_bytes {
        return Err(ApiError::bad_request(format!(
            "input `{}` has binary_data_size {size}; shape {:?} in FP32 takes {expected_bytes} bytes",
            input.name, input.shape
        )));
    }
    if size > binary.len() {
        return Err(ApiError::bad_request(format!(
            "input `{}` announces {size} binary bytes but the body holds {} after the JSON header",
            input.name,
            binary.len()
        )));
    }
    let (mine, rest) = binary.split_at(size);
    Ok((fp32_from_le_bytes(mine, &input.name)?, rest))
}

/// The form of the output a request asks for: its `outputs` (none or the model's one)
/// and the request-wide `binary_data_output` parameter.
fn requested_output(model: &ModelInfo, raw: &RawRequest<'_>) -> Result<RequestedOutput, ApiError> {
    let binary_output_default = flag(raw.parameters.as_ref(), "binary_data_output")?;
    match raw.outputs.as_deref() {
        None | Some([]) => Ok(RequestedOutput {
            classification: None,
            binary: binary_output_default,
        }),
        Some([out]) => {
            check_output_name(model, &out.name)?;
            let p = out.parameters.as_ref();
            let classification = match p.and_then(|p| p.get("classification")) {
                None => None,
                Some(v) => Some(classification_count(model, v.as_u64())?),
            };
            Ok(RequestedOutput {
                classification,
                binary: flag(p, "binary_data")?,
            })
        }
        Some(many) => Err(output_count_error(model, many.len())),
    }
}

/// The error for a request with other than one input (the REST and gRPC protocols share
/// it, as they share the checks below).
pub fn input_count_error(model: &ModelInfo, inputs: usize) -> ApiError {
    ApiError::bad_request(format!(
        "the request has {inputs} inputs; model `{}` takes exactly one, `{}`",
        model.name, model.input_name
    ))
}

/// The error for a request asking for more than one output.
pub fn output_count_error(model: &ModelInfo, outputs: usize) -> ApiError {
    ApiError::bad_request(format!(
        "the request asks for {outputs} outputs; model `{}` has one, `{}`",
        model.name, model.output_name
    ))
}

/// Checks an input tensor's name, datatype and shape against the model; returns the
/// number of images it holds.
pub fn check_input(
    model: &ModelInfo,
    name: &str,
    datatype: &str,
    shape: &[i64],
) -> Result<usize, ApiError> {
    if name != model.input_name {
        return Err(ApiError::bad_request(format!(
            "unknown input `{name}`; model `{}` takes one input named `{}`",
            model.name, model.input_name
        )));
    }
    if datatype != "FP32" {
        return Err(ApiError::bad_request(format!(
            "input `{name}` has datatype `{datatype}`; this model takes FP32 (float32 RGB in [0, 1])"
        )));
    }
    let n = match shape {
        &[n, 3, h, w] if n >= 1 && h == SIDE as i64 && w == SIDE as i64 => n as usize,
        other => {
            return Err(ApiError::bad_request(format!(
                "input `{name}` has shape {other:?}; this model takes [N, 3, {SIDE}, {SIDE}] (N >= 1 images, NCHW)"
            )));
        }
    };
    n.checked_mul(IMAGE_FLOATS * 4)
        .ok_or_else(|| ApiError::bad_request(format!("input `{name}` shape is too large")))?;
    Ok(n)
}

/// Reads little-endian FP32 values (Triton's binary tensors, gRPC's raw contents),
/// refusing NaN and infinities.
pub fn fp32_from_le_bytes(bytes: &[u8], input: &str) -> Result<Vec<f32>, ApiError> {
    if bytes.len() % 4 != 0 {
        return Err(ApiError::bad_request(format!(
            "input `{input}` holds {} bytes, not a whole number of FP32 values",
            bytes.len()
        )));
    }
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    check_finite(&values, input)?;
    Ok(values)
}

/// Refuses NaN and infinite input values.
pub fn check_finite(values: &[f32], input: &str) -> Result<(), ApiError> {
    if values.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "input `{input}` holds NaN or infinite values"
        )))
    }
}

/// Splits an input's values into its `n` images (the count [`check_input`] returned for
/// `shape`) after checking there are as many values as they need.
pub fn images_from_values(
    values: &[f32],
    n: usize,
    input: &str,
    shape: &[i64],
) -> Result<Vec<InputImage>, ApiError> {
    let expected = n * IMAGE_FLOATS;
    if values.len() != expected {
        return Err(ApiError::bad_request(format!(
            "input `{input}` holds {} values but shape {shape:?} needs {expected}",
            values.len()
        )));
    }
    Ok(values
        .chunks_exact(IMAGE_FLOATS)
        .map(|c| InputImage::from_chw(c.to_vec()).expect("chunk of one image"))
        .collect())
}

/// Checks the name of a requested output.
pub fn check_output_name(model: &ModelInfo, name: &str) -> Result<(), ApiError> {
    if name == model.output_name {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "unknown output `{name}`; model `{}` has one output, `{}`",
            model.name, model.output_name
        )))
    }
}

/// The number of classes a `classification` output parameter asks for (`None` when it
/// is not a whole number), capped at the model's classes.
pub fn classification_count(model: &ModelInfo, k: Option<u64>) -> Result<usize, ApiError> {
    match k {
        Some(k) if k >= 1 => Ok((k as usize).min(model.classes.len())),
        _ => Err(ApiError::bad_request(
            "parameters.classification must be a whole number of classes >= 1",
        )),
    }
}

fn flag(parameters: Option<&Map<String, Value>>, name: &str) -> Result<bool, ApiError> {
    match parameters.and_then(|p| p.get(name)) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::bad_request(format!(
            "parameters.{name} must be true or false, not {other}"
        ))),
    }
}

/// Reads a tensor's `data` (a flat or nested JSON array of numbers) into a flat vector.
fn parse_data(raw: &str, input: &str) -> Result<Vec<f32>, ApiError> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_str(raw);
    Flatten {
        out: &mut out,
        depth: 0,
    }
    .deserialize(&mut de)
    .map_err(|e| ApiError::bad_request(format!("input `{input}` data: {e}")))?;
    Ok(out)
}

struct Flatten<'a> {
    out: &'a mut Vec<f32>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Flatten<'_> {
    fn push<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        if self.depth == 0 {
            return Err(E::custom("must be an array of numbers, flat or nested"));
        }
        let f = v as f32;
        if !f.is_finite() {
            return Err(E::custom(format!("{v} is outside the FP32 range")));
        }
        self.out.push(f);
        Ok(())
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of numbers (flat or nested)")
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.push(v)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.push(v as f64)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.push(v as f64)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DATA_DEPTH {
            return Err(A::Error::custom(format!(
                "nested deeper than {MAX_DATA_DEPTH} levels"
            )));
        }
        while seq
            .next_element_seed(Flatten {
                out: &mut *self.out,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// Builds the inference response for `logits` (`images * classes` values).
pub fn infer_response(
    model: &ModelInfo,
    id: Option<String>,
    output: RequestedOutput,
    logits: &[f32],
) -> Response {
    let classes = model.classes.len();
    let n = logits.len() / classes.max(1);
    let (datatype, shape, data, raw): (&str, [usize; 2], Value, Vec<u8>) =
        match output.classification {
            None => {
                let raw = if output.binary {
                    logits.iter().flat_map(|v| v.to_le_bytes()).collect()
                } else {
                    Vec::new()
                };
                ("FP32", [n, classes], json!(logits), raw)
            }
            Some(k) => {
                let strings = classification_strings(logits, &model.classes, k);
                let raw = if output.binary {
                    bytes_tensor(&strings)
                } else {
                    Vec::new()
                };
                ("BYTES", [n, k], json!(strings), raw)
            }
        };
    let mut out = json!({
        "name": model.output_name,
        "datatype": datatype,
        "shape": shape,
    });
    if output.binary {
        out["parameters"] = json!({ "binary_data_size": raw.len() });
    } else {
        out["data"] = data;
    }
    let mut body = json!({
        "model_name": model.name,
        "model_version": model.version,
        "outputs": [out],
    });
    if let Some(id) = id {
        body["id"] = json!(id);
    }
    let header = body.to_string();
    if !output.binary {
        return (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            header,
        )
            .into_response();
    }
    let header_len = header.len();
    let mut bytes = header.into_bytes();
    bytes.extend_from_slice(&raw);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::HeaderName::from_static(HEADER_LENGTH),
                HeaderValue::from(header_len),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// A `BYTES` tensor in binary form: each element as a 4-byte little-endian length and
/// its bytes.
pub fn bytes_tensor(strings: &[String]) -> Vec<u8> {
    let mut raw = Vec::new();
    for s in strings {
        raw.extend_from_slice(&(s.len() as u32).to_le_bytes());
        raw.extend_from_slice(s.as_bytes());
    }
    raw
}

/// The classification extension's strings: per image, the `k` best classes as
/// `"logit:index:label"`, best first (ties keep the lower index first).
pub fn classification_strings(logits: &[f32], classes: &[String], k: usize) -> Vec<String> {
    let mut out = Vec::new();
    for row in logits.chunks_exact(classes.len().max(1)) {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        for &i in order.iter().take(k) {
            out.push(format!("{}:{i}:{}", row[i], classes[i]));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A served model's description for unit tests (the gRPC tests use it too).
    pub(crate) fn model() -> ModelInfo {
        ModelInfo {
            name: "m".into(),
            version: "0123abcd".into(),
            input_name: "input".into(),
            output_name: "logits".into(),
            classes: vec!["a".into(), "b".into(), "c".into()],
            provider: "CPUExecutionProvider".into(),
        }
    }

    fn request(shape: &str, data: &str) -> String {
        format!(
            r#"{{"inputs":[{{"name":"input","shape":{shape},"datatype":"FP32","data":{data}}}]}}"#
        )
    }

    fn zeros(n: usize) -> String {
        format!("[{}]", vec!["0"; n].join(","))
    }

    #[test]
    fn flat_and_nested_data_parse_alike() {
        let flat: Vec<String> = (0..IMAGE_FLOATS).map(|i| format!("{}", i % 7)).collect();
        let flat_json = format!("[{}]", flat.join(","));
        let a = parse_infer(
            request("[1,3,32,32]", &flat_json).as_bytes(),
            None,
            &model(),
        )
        .unwrap();
        let rows: Vec<String> = flat
            .chunks(32)
            .map(|r| format!("[{}]", r.join(",")))
            .collect();
        let planes: Vec<String> = rows
            .chunks(32)
            .map(|p| format!("[{}]", p.join(",")))
            .collect();
        let nested = format!("[[{}]]", planes.join(","));
        let b = parse_infer(request("[1,3,32,32]", &nested).as_bytes(), None, &model()).unwrap();
        assert_eq!(a.images, b.images);
        assert_eq!(a.images[0].as_slice()[8], 1.0);
        assert_eq!(
            a.output,
            RequestedOutput {
                classification: None,
                binary: false
            }
        );
    }

    #[test]
    fn bad_requests_are_400_with_a_reason() {
        let m = model();
        let cases = [
            ("{", "malformed"),
            ("", "empty request body"),
            (&request("[1,3,32,32]", "[1,2]"), "holds 2 values"),
            (
                &request("[1,3,28,28]", &zeros(3 * 28 * 28)),
                "has shape [1, 3, 28, 28]",
            ),
            (&request("[0,3,32,32]", "[]"), "has shape [0, 3, 32, 32]"),
            (&request("[1,3,32,32]", "[\"x\"]"), "data"),
            (&request("[1,3,32,32]", "1"), "must be an array"),
            (&request("[1,3,32,32]", "[1e300]"), "outside the FP32 range"),
            (
                &request(
                    "[1,3,32,32]",
                    &format!("{}0{}", "[".repeat(20), "]".repeat(20)),
                ),
                "nested deeper",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,3,32,32],"datatype":"INT64","data":[1]}]}"#,
                "datatype `INT64`",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,3,32,32],"datatype":"FP32","data":[1]}]}"#,
                "unknown input `x`",
            ),
            (r#"{"inputs":[]}"#, "has 0 inputs"),
            (r#"{"inputs":[{"name":"input"}]}"#, "missing field"),
            (
                r#"{"inputs":[{"name":"input","shape":[1,3,32,32],"datatype":"FP32"}]}"#,
                "has no `data`",
            ),
        ];
        for (body, needle) in cases {
            let e = parse_infer(body.as_bytes(), None, &m).unwrap_err();
            assert_eq!(e.status, 400, "{body:.80}");
            assert!(e.message.contains(needle), "{body:.80}: {}", e.message);
        }
    }

    #[test]
    fn outputs_and_classification() {
        let m = model();
        let body = format!(
            r#"{{"id":"7","inputs":[{{"name":"input","shape":[1,3,32,32],"datatype":"FP32","data":{}}}],"outputs":[{{"name":"logits","parameters":{{"classification":5}}}}]}}"#,
            zeros(IMAGE_FLOATS)
        );
        let r = parse_infer(body.as_bytes(), None, &m).unwrap();
        assert_eq!(r.id.as_deref(), Some("7"));
        assert_eq!(r.output.classification, Some(3));
        let bad = body.replace("\"logits\"", "\"probs\"");
        assert!(
            parse_infer(bad.as_bytes(), None, &m)
                .unwrap_err()
                .message
                .contains("unknown output")
        );
        let s = classification_strings(&[0.5, 2.0, -1.0], &m.classes, 2);
        assert_eq!(s, vec!["2:1:b", "0.5:0:a"]);
    }

    #[test]
    fn binary_inputs() {
        let m = model();
        let header = r#"{"inputs":[{"name":"input","shape":[1,3,32,32],"datatype":"FP32","parameters":{"binary_data_size":12288}}],"parameters":{"binary_data_output":true}}"#;
        let mut body = header.as_bytes().to_vec();
        for i in 0..IMAGE_FLOATS {
            body.extend_from_slice(&(i as f32 / 4096.0).to_le_bytes());
        }
        let len = header.len().to_string();
        let r = parse_infer(&body, Some(&len), &m).unwrap();
        assert_eq!(r.images[0].as_slice()[3071], 3071.0 / 4096.0);
        assert!(r.output.binary);
        // Too few bytes, extra bytes, no header.
        let e = parse_infer(&body[..body.len() - 4], Some(&len), &m).unwrap_err();
        assert!(e.message.contains("announces 12288"), "{}", e.message);
        let mut extra = body.clone();
        extra.push(0);
        let e = parse_infer(&extra, Some(&len), &m).unwrap_err();
        assert!(e.message.contains("no input claims"), "{}", e.message);
        let e = parse_infer(&body, None, &m).unwrap_err();
        assert!(e.message.contains("malformed") || e.message.contains("needs the"));
        let e = parse_infer(&body, Some("99999999"), &m).unwrap_err();
        assert!(e.message.contains("holds only"), "{}", e.message);
    }
}
