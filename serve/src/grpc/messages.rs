//! The protobuf messages of `serve/proto/grpc_predict_v2.proto`, written by hand for
//! prost (field numbers and types as in that file), so that building the server needs
//! no `protoc` and no build script.

use std::collections::HashMap;

/// `ServerLive` request: is the server process alive? (no fields)
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerLiveRequest {}

/// `ServerLive` response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerLiveResponse {
    /// True while the server can answer at all (liveness).
    #[prost(bool, tag = "1")]
    pub live: bool,
}

/// `ServerReady` request: is the server ready for inference? (no fields)
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReadyRequest {}

/// `ServerReady` response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReadyResponse {
    /// True while the server accepts inference requests (false once it drains on shutdown).
    #[prost(bool, tag = "1")]
    pub ready: bool,
}

/// `ModelReady` request: is one model ready for inference?
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelReadyRequest {
    /// The model's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The model's version; empty means the server's choice (here: the one version served).
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `ModelReady` response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelReadyResponse {
    /// True when the named model (and version) can take inference requests.
    #[prost(bool, tag = "1")]
    pub ready: bool,
}

/// `ServerMetadata` request (no fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerMetadataRequest {}

/// `ServerMetadata` response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerMetadataResponse {
    /// The server's name (`tpsnet-serve`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// The server's version.
    #[prost(string, tag = "2")]
    pub version: String,
    /// The protocol extensions the server supports (e.g. `classification`).
    #[prost(string, repeated, tag = "3")]
    pub extensions: Vec<String>,
}

/// `ModelMetadata` request: describe one model.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelMetadataRequest {
    /// The model's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The model's version; empty means the server's choice.
    #[prost(string, tag = "2")]
    pub version: String,
}

/// Name, datatype and shape of one input or output tensor in model metadata.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorMetadata {
    /// The tensor's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The tensor's datatype, as the protocol spells it (`FP32`, `BYTES`, ...).
    #[prost(string, tag = "2")]
    pub datatype: String,
    /// The tensor's shape; `-1` marks a dimension of any size.
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
}

/// `ModelMetadata` response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelMetadataResponse {
    /// The model's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The versions of the model that are available.
    #[prost(string, repeated, tag = "2")]
    pub versions: Vec<String>,
    /// The framework/backend that runs the model (`onnxruntime_onnx`).
    #[prost(string, tag = "3")]
    pub platform: String,
    /// The model's inputs.
    #[prost(message, repeated, tag = "4")]
    pub inputs: Vec<TensorMetadata>,
    /// The model's outputs.
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<TensorMetadata>,
}

/// A request, tensor or response parameter: one of a bool, an int64 or a string.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferParameter {
    /// The value; `None` when the sender set none.
    #[prost(oneof = "ParameterChoice", tags = "1, 2, 3")]
    pub parameter_choice: Option<ParameterChoice>,
}

/// The type and value of an [`InferParameter`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ParameterChoice {
    /// A boolean parameter.
    #[prost(bool, tag = "1")]
    BoolParam(bool),
    /// A 64-bit integer parameter.
    #[prost(int64, tag = "2")]
    Int64Param(i64),
    /// A string parameter.
    #[prost(string, tag = "3")]
    StringParam(String),
}

/// Typed tensor values: the field of the tensor's datatype is set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferTensorContents {
    /// Values of a `BOOL` tensor.
    #[prost(bool, repeated, tag = "1")]
    pub bool_contents: Vec<bool>,
    /// Values of an `INT8`, `INT16` or `INT32` tensor.
    #[prost(int32, repeated, tag = "2")]
    pub int_contents: Vec<i32>,
    /// Values of an `INT64` tensor.
    #[prost(int64, repeated, tag = "3")]
    pub int64_contents: Vec<i64>,
    /// Values of a `UINT8`, `UINT16` or `UINT32` tensor.
    #[prost(uint32, repeated, tag = "4")]
    pub uint_contents: Vec<u32>,
    /// Values of a `UINT64` tensor.
    #[prost(uint64, repeated, tag = "5")]
    pub uint64_contents: Vec<u64>,
    /// Values of an `FP32` tensor.
    #[prost(float, repeated, tag = "6")]
    pub fp32_contents: Vec<f32>,
    /// Values of an `FP64` tensor.
    #[prost(double, repeated, tag = "7")]
    pub fp64_contents: Vec<f64>,
    /// Elements of a `BYTES` tensor, one byte string each.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub bytes_contents: Vec<Vec<u8>>,
}

/// One input tensor of a `ModelInfer` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferInputTensor {
    /// The input's name, as in the model metadata.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The tensor's datatype (`FP32` for the zoo's models).
    #[prost(string, tag = "2")]
    pub datatype: String,
    /// The tensor's shape (`[N, 3, 32, 32]` for the zoo's models).
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
    /// Optional parameters of this input (e.g. `binary_data_size` in the REST form).
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    /// The values in typed form; unset when they come in
    /// [`ModelInferRequest::raw_input_contents`] instead.
    #[prost(message, optional, tag = "5")]
    pub contents: Option<InferTensorContents>,
}

/// An output a `ModelInfer` request asks for.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferRequestedOutputTensor {
    /// The output's name, as in the model metadata.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Optional parameters of this output (e.g. `classification: K` for the top-K classes as
    /// strings).
    #[prost(map = "string, message", tag = "2")]
    pub parameters: HashMap<String, InferParameter>,
}

/// `ModelInfer` request: run one inference.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferRequest {
    /// The name of the model to run.
    #[prost(string, tag = "1")]
    pub model_name: String,
    /// The model's version; empty means the server's choice.
    #[prost(string, tag = "2")]
    pub model_version: String,
    /// An identifier the response repeats; empty when the client sets none.
    #[prost(string, tag = "3")]
    pub id: String,
    /// Optional request-wide parameters.
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    /// The input tensors.
    #[prost(message, repeated, tag = "5")]
    pub inputs: Vec<InferInputTensor>,
    /// The outputs wanted; empty means every output in its default form.
    #[prost(message, repeated, tag = "6")]
    pub outputs: Vec<InferRequestedOutputTensor>,
    /// The inputs' values as raw little-endian bytes, one entry per input in order; either all
    /// inputs use this or none.
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub raw_input_contents: Vec<Vec<u8>>,
}

/// One output tensor of a `ModelInfer` response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferOutputTensor {
    /// The output's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The tensor's datatype (`FP32` logits or `BYTES` classification strings).
    #[prost(string, tag = "2")]
    pub datatype: String,
    /// The tensor's shape (`[N, classes]`, or `[N, K]` for classification).
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
    /// Optional parameters of this output.
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    /// The values in typed form; unset when they are in
    /// [`ModelInferResponse::raw_output_contents`] instead.
    #[prost(message, optional, tag = "5")]
    pub contents: Option<InferTensorContents>,
}

/// `ModelInfer` response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferResponse {
    /// The name of the model that ran.
    #[prost(string, tag = "1")]
    pub model_name: String,
    /// The version of the model that ran.
    #[prost(string, tag = "2")]
    pub model_version: String,
    /// The request's `id`.
    #[prost(string, tag = "3")]
    pub id: String,
    /// Optional response-wide parameters.
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    /// The output tensors.
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<InferOutputTensor>,
    /// The outputs' values as raw little-endian bytes (`BYTES` elements each with a 4-byte
    /// length), one entry per output in order, when the server sends them raw.
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub raw_output_contents: Vec<Vec<u8>>,
}
