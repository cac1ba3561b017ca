//! KServe v2 / Open Inference Protocol over gRPC: `inference.GRPCInferenceService`
//! (ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer) on
//! its own port, beside the REST API.
//!
//! A `ModelInfer` goes through the same checks as a REST inference request (the
//! functions of [`crate::kserve`]) and the same [`Batcher`](crate::batcher::Batcher), so
//! gRPC and REST requests share batches, the queue limit and the metrics. The input
//! travels as typed `fp32_contents` or as `raw_input_contents` (little-endian FP32); the
//! answer comes back the same way (typed contents for a typed request, raw bytes for a
//! raw one). A requested output with the `classification` parameter (int64 K) gets the
//! top K classes as a `BYTES` tensor of `"logit:index:label"` strings.
//!
//! Errors are gRPC statuses: `INVALID_ARGUMENT` for a bad tensor (name, datatype, shape,
//! values), `NOT_FOUND` for an unknown model or version, `RESOURCE_EXHAUSTED` for a
//! full queue or a message larger than the body limit, `UNAVAILABLE` while shutting
//! down, `UNIMPLEMENTED` for the protocol's other calls.
//!
//! The messages are written by hand in [`messages`] to match
//! `serve/proto/grpc_predict_v2.proto` (the file to give clients).

pub mod messages;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use tokio::net::TcpListener;
use tonic::Status;
use tonic::transport::server::TcpIncoming;

use crate::batcher::BatchError;
use crate::error::{ApiError, ServeError};
use crate::kserve::{self, ModelInfo, RequestedOutput};
use crate::routes::Shared;
use messages::*;

/// The gRPC service's full name: the path prefix of its calls.
pub const SERVICE: &str = "inference.GRPCInferenceService";

/// A bound gRPC listener, served by [`Server::run`](crate::Server::run) beside HTTP.
#[derive(Debug)]
pub struct GrpcListener {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl GrpcListener {
    /// Binds `addr` (port 0: any free port).
    pub async fn bind(addr: SocketAddr) -> Result<GrpcListener, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::GrpcBind { addr, source })?;
        let local_addr = listener.local_addr()?;
        Ok(GrpcListener {
            listener,
            local_addr,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting connections and answers
    /// the calls already received (HTTP/2 GOAWAY) before returning.
    pub(crate) async fn serve(
        self,
        shared: Arc<Shared>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(InferenceService { shared }, incoming, shutdown)
            .await
            .map_err(|e| ServeError::Grpc(e.to_string()))
    }
}

/// The tower service answering every call of [`SERVICE`].
#[derive(Clone)]
struct InferenceService {
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<B> tower_service::Service<http::Request<B>> for InferenceService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { Ok(route(shared, request).await) })
    }
}

async fn route<B>(s: Arc<Shared>, request: http::Request<B>) -> http::Response<tonic::body::Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let method = request
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(SERVICE))
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or("")
        .to_string();
    let call = Call { s, request };
    match method.as_str() {
        "ServerLive" => call.unary("grpc_server_live", server_live).await,
        "ServerReady" => call.unary("grpc_server_ready", server_ready).await,
        "ModelReady" => call.unary("grpc_model_ready", model_ready).await,
        "ServerMetadata" => call.unary("grpc_server_metadata", server_metadata).await,
        "ModelMetadata" => call.unary("grpc_model_metadata", model_metadata).await,
        "ModelInfer" => call.unary("grpc_model_infer", model_infer).await,
        _ => Status::unimplemented(format!(
            "tpsnet-serve does not implement {}; it answers {SERVICE}'s ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer",
            call.request.uri().path()
        ))
        .into_http(),
    }
}

/// A call's failure: the gRPC status and the HTTP status REST would have answered (the
/// `code` label of the request metrics).
#[derive(Debug)]
struct Failure {
    status: Status,
    http: u16,
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let http = e.status.as_u16();
        let status = match http {
            404 => Status::not_found(e.message),
            413 => Status::resource_exhausted(e.message),
            503 => Status::unavailable(e.message),
            500..=599 => Status::internal(e.message),
            _ => Status::invalid_argument(e.message),
        };
        Failure { status, http }
    }
}

/// The gRPC status of a request the batcher refused or failed.
fn batch_failure(e: BatchError) -> Failure {
    let message = e.to_string();
    let (status, http) = match e {
        BatchError::QueueFull { .. } => (Status::resource_exhausted(message), 503),
        BatchError::TooManyImages { .. } => (Status::resource_exhausted(message), 413),
        BatchError::ShuttingDown => (Status::unavailable(message), 503),
        BatchError::Inference(_) => (Status::internal(message), 500),
    };
    Failure { status, http }
}

/// The model a request message names, for the `model` label of the request metrics
/// (recorded only if the server knows it, see `Repository::knows`).
trait NamesModel {
    fn model(&self) -> Option<&str> {
        None
    }
}

impl NamesModel for ServerLiveRequest {}
impl NamesModel for ServerReadyRequest {}
impl NamesModel for ServerMetadataRequest {}

impl NamesModel for ModelReadyRequest {
    fn model(&self) -> Option<&str> {
        Some(&self.name)
    }
}

impl NamesModel for ModelMetadataRequest {
    fn model(&self) -> Option<&str> {
        Some(&self.name)
    }
}

impl NamesModel for ModelInferRequest {
    fn model(&self) -> Option<&str> {
        Some(&self.model_name)
    }
}

struct Call<B> {
    s: Arc<Shared>,
    request: http::Request<B>,
}

impl<B> Call<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    /// Decodes the request message (at most `max_body_bytes`), runs `handler` and
    /// encodes its answer, counting the call in the metrics under `endpoint` (and the
    /// model it names, if the server knows it).
    async fn unary<Req, Resp, F, Fut>(
        self,
        endpoint: &'static str,
        handler: F,
    ) -> http::Response<tonic::body::Body>
    where
        Req: prost::Message + NamesModel + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        F: FnOnce(Arc<Shared>, Req) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resp, Failure>> + Send + 'static,
    {
        let started = Instant::now();
        let limit = self.s.config.max_body_bytes;
        let codec = tonic_prost::ProstCodec::<Resp, Req>::default();
        let mut grpc = tonic::server::Grpc::new(codec).max_decoding_message_size(limit);
        let unary = Unary {
            shared: Arc::clone(&self.s),
            endpoint,
            handler: Some(handler),
        };
        let mut response = grpc.unary(unary, self.request).await;
        // tonic answers a message over the decoding limit with OUT_OF_RANGE, in the
        // headers of a trailers-only response; gRPC's status code guide gives
        // RESOURCE_EXHAUSTED for it (REST answers 413). No handler returns OUT_OF_RANGE.
        // The message was never decoded, so the call names no model.
        let status = response.headers().get("grpc-status");
        if status.is_some_and(|v| v.as_bytes() == b"11") {
            response
                .headers_mut()
                .insert("grpc-status", http::HeaderValue::from_static("8"));
            self.s
                .record_request(endpoint, None, 413, started.elapsed());
        }
        response
    }
}

/// One call's handler as the tower service tonic's unary machinery expects.
struct Unary<F> {
    shared: Arc<Shared>,
    endpoint: &'static str,
    handler: Option<F>,
}

/// Decrements the in-flight gauge even when the client goes away mid-call.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.add_in_flight(-1);
    }
}

impl<Req, Resp, F, Fut> tower_service::Service<tonic::Request<Req>> for Unary<F>
where
    Req: NamesModel + Send + 'static,
    F: FnOnce(Arc<Shared>, Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Resp, Failure>> + Send + 'static,
{
    type Response = tonic::Response<Resp>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Resp>, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let endpoint = self.endpoint;
        let handler = self.handler.take();
        Box::pin(async move {
            let handler = handler.ok_or_else(|| Status::internal("a call handled twice"))?;
            let started = Instant::now();
            shared.metrics.add_in_flight(1);
            let _in_flight = InFlight(Arc::clone(&shared));
            let request = request.into_inner();
            let model = request.model().map(str::to_string);
            let result = handler(Arc::clone(&shared), request).await;
            let code = result.as_ref().map_or_else(|f| f.http, |_| 200);
            shared.record_request(endpoint, model.as_deref(), code, started.elapsed());
            if shared.config.access_log {
                eprintln!(
                    "gRPC {endpoint} {code} {:.2} ms",
                    started.elapsed().as_secs_f64() * 1e3
                );
            }
            result.map(tonic::Response::new).map_err(|f| f.status)
        })
    }
}

fn draining(s: &Shared) -> bool {
    s.draining.load(Ordering::Relaxed)
}

/// An empty version field means "the version the server picks".
fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

async fn server_live(_: Arc<Shared>, _: ServerLiveRequest) -> Result<ServerLiveResponse, Failure> {
    Ok(ServerLiveResponse { live: true })
}

async fn server_ready(
    s: Arc<Shared>,
    _: ServerReadyRequest,
) -> Result<ServerReadyResponse, Failure> {
    Ok(ServerReadyResponse {
        ready: !draining(&s),
    })
}

async fn model_ready(s: Arc<Shared>, r: ModelReadyRequest) -> Result<ModelReadyResponse, Failure> {
    // A model known but unloaded is not ready, as during shutdown.
    let ready = match s.repository.get(&r.name, version(&r.version)) {
        Ok(_) => !draining(&s),
        Err(e) if e.status.as_u16() == 503 => false,
        Err(e) => return Err(e.into()),
    };
    Ok(ModelReadyResponse { ready })
}

async fn server_metadata(
    _: Arc<Shared>,
    _: ServerMetadataRequest,
) -> Result<ServerMetadataResponse, Failure> {
    Ok(ServerMetadataResponse {
        name: kserve::SERVER_NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        extensions: vec!["classification".to_string()],
    })
}

async fn model_metadata(
    s: Arc<Shared>,
    r: ModelMetadataRequest,
) -> Result<ModelMetadataResponse, Failure> {
    let model = s.repository.get(&r.name, version(&r.version))?;
    let m = &model.info;
    Ok(ModelMetadataResponse {
        name: m.name.clone(),
        versions: vec![m.version.clone()],
        platform: kserve::PLATFORM.to_string(),
        inputs: vec![TensorMetadata {
            name: m.input_name.clone(),
            datatype: "FP32".to_string(),
            shape: kserve::INPUT_SHAPE.to_vec(),
        }],
        outputs: vec![TensorMetadata {
            name: m.output_name.clone(),
            datatype: "FP32".to_string(),
            shape: vec![-1, m.classes.len() as i64],
        }],
    })
}

async fn model_infer(s: Arc<Shared>, r: ModelInferRequest) -> Result<ModelInferResponse, Failure> {
    let model = s.repository.get(&r.model_name, version(&r.model_version))?;
    let raw = !r.raw_input_contents.is_empty();
    let images = infer_images(&model.info, &r)?;
    let output = requested_output(&model.info, &r.outputs, raw)?;
    let logits = model.batcher.logits(images).await.map_err(batch_failure)?;
    Ok(infer_response(&model.info, r.id, output, &logits))
}

/// The images of a `ModelInfer` request, checked as REST checks its tensors.
fn infer_images(
    model: &ModelInfo,
    r: &ModelInferRequest,
) -> Result<Vec<tpsnet_runtime::InputImage>, ApiError> {
    let [input] = r.inputs.as_slice() else {
        return Err(kserve::input_count_error(model, r.inputs.len()));
    };
    let name = &input.name;
    let n = kserve::check_input(model, name, &input.datatype, &input.shape)?;
    let typed = input
        .contents
        .as_ref()
        .map(|c| c.fp32_contents.as_slice())
        .filter(|v| !v.is_empty());
    let decoded;
    let values = match (r.raw_input_contents.as_slice(), typed) {
        ([], Some(values)) => {
            kserve::check_finite(values, name)?;
            values
        }
        ([raw], None) => {
            decoded = kserve::fp32_from_le_bytes(raw, name)?;
            decoded.as_slice()
        }
        ([], None) => {
            return Err(ApiError::bad_request(format!(
                "input `{name}` has no values: send them in contents.fp32_contents or in raw_input_contents"
            )));
        }
        ([_], Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "input `{name}` has both contents.fp32_contents and raw_input_contents; send one"
            )));
        }
        (many, _) => {
            return Err(ApiError::bad_request(format!(
                "raw_input_contents holds {} entries; it needs one per input, and model `{}` takes one",
                many.len(),
                model.name
            )));
        }
    };
    kserve::images_from_values(values, n, name, &input.shape)
}

/// The form of the answer: `raw` (bytes in `raw_output_contents`) mirrors the request.
fn requested_output(
    model: &ModelInfo,
    outputs: &[InferRequestedOutputTensor],
    raw: bool,
) -> Result<RequestedOutput, ApiError> {
    let classification = match outputs {
        [] => None,
        [out] => {
            kserve::check_output_name(model, &out.name)?;
            match out.parameters.get("classification") {
                None => None,
                Some(p) => {
                    let k = match p.parameter_choice {
                        Some(ParameterChoice::Int64Param(k)) => u64::try_from(k).ok(),
                        _ => None,
                    };
                    Some(kserve::classification_count(model, k)?)
                }
            }
        }
        many => return Err(kserve::output_count_error(model, many.len())),
    };
    Ok(RequestedOutput {
        classification,
        binary: raw,
    })
}

fn infer_response(
    model: &ModelInfo,
    id: String,
    output: RequestedOutput,
    logits: &[f32],
) -> ModelInferResponse {
    let classes = model.classes.len().max(1);
    let n = (logits.len() / classes) as i64;
    let (datatype, shape, contents, raw) = match output.classification {
        None => {
            let raw = output
                .binary
                .then(|| logits.iter().flat_map(|v| v.to_le_bytes()).collect());
            let contents = InferTensorContents {
                fp32_contents: logits.to_vec(),
                ..Default::default()
            };
            ("FP32", vec![n, classes as i64], contents, raw)
        }
        Some(k) => {
            let strings = kserve::classification_strings(logits, &model.classes, k);
            let raw = output.binary.then(|| kserve::bytes_tensor(&strings));
            let contents = InferTensorContents {
                bytes_contents: strings.into_iter().map(String::into_bytes).collect(),
                ..Default::default()
            };
            ("BYTES", vec![n, k as i64], contents, raw)
        }
    };
    let raw_output_contents: Vec<Vec<u8>> = raw.into_iter().collect();
    ModelInferResponse {
        model_name: model.name.clone(),
        model_version: model.version.clone(),
        id,
        parameters: HashMap::new(),
        outputs: vec![InferOutputTensor {
            name: model.output_name.clone(),
            datatype: datatype.to_string(),
            shape,
            parameters: HashMap::new(),
            contents: raw_output_contents.is_empty().then_some(contents),
        }],
        raw_output_contents,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kserve::tests::model;

    fn request(shape: Vec<i64>, values: Vec<f32>, raw: bool) -> ModelInferRequest {
        let mut input = InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape,
            ..Default::default()
        };
        let mut r = ModelInferRequest {
            model_name: "m".into(),
            ..Default::default()
        };
        if raw {
            r.raw_input_contents = vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()];
        } else {
            input.contents = Some(InferTensorContents {
                fp32_contents: values,
                ..Default::default()
            });
        }
        r.inputs = vec![input];
        r
    }

    #[test]
    fn typed_and_raw_inputs_give_the_same_images() {
        let m = model();
        let values: Vec<f32> = (0..2 * 3072).map(|i| i as f32 / 8192.0).collect();
        for raw in [false, true] {
            let images = infer_images(&m, &request(vec![2, 3, 32, 32], values.clone(), raw))
                .expect("valid request");
            assert_eq!(images.len(), 2);
            assert_eq!(images[1].as_slice(), &values[3072..]);
        }
    }

    #[test]
    fn bad_tensors_are_invalid_arguments_naming_the_problem() {
        let m = model();
        let ok = request(vec![1, 3, 32, 32], vec![0.5; 3072], false);
        let cases: Vec<(ModelInferRequest, &str)> = vec![
            (
                request(vec![1, 3, 32, 32], vec![0.5; 3071], false),
                "holds 3071 values",
            ),
            (
                request(vec![1, 3, 32, 32], vec![0.5; 3071], true),
                "holds 3071 values",
            ),
            (
                request(vec![1, 1, 32, 32], vec![0.5; 1024], false),
                "has shape",
            ),
            (
                request(vec![1, 3, 32, 32], vec![f32::NAN; 3072], false),
                "NaN",
            ),
            (
                request(vec![1, 3, 32, 32], vec![f32::INFINITY; 3072], true),
                "NaN",
            ),
            (
                ModelInferRequest {
                    inputs: vec![ok.inputs[0].clone(), ok.inputs[0].clone()],
                    ..ok.clone()
                },
                "has 2 inputs",
            ),
            (
                ModelInferRequest {
                    raw_input_contents: vec![vec![0; 12288]],
                    ..ok.clone()
                },
                "has both",
            ),
        ];
        let mut fp64 = ok.clone();
        fp64.inputs[0].datatype = "FP64".into();
        let mut empty = ok.clone();
        empty.inputs[0].contents = None;
        for (r, needle) in cases
            .into_iter()
            .chain([(fp64, "datatype `FP64`"), (empty, "has no values")])
        {
            let e = Failure::from(infer_images(&m, &r).unwrap_err());
            assert_eq!(e.status.code(), tonic::Code::InvalidArgument);
            assert!(
                e.status.message().contains(needle),
                "{}",
                e.status.message()
            );
        }
    }

    #[test]
    fn errors_map_to_grpc_codes() {
        let m = model();
        let e = Failure::from(m.check("other", None).unwrap_err());
        assert_eq!((e.status.code(), e.http), (tonic::Code::NotFound, 404));
        let e = Failure::from(m.check("m", Some("ffffffff")).unwrap_err());
        assert_eq!(e.status.code(), tonic::Code::NotFound);
        let full = batch_failure(BatchError::QueueFull {
            queued: 4,
            limit: 4,
        });
        assert_eq!(full.status.code(), tonic::Code::ResourceExhausted);
        let big = batch_failure(BatchError::TooManyImages {
            images: 5,
            limit: 4,
        });
        assert_eq!(big.status.code(), tonic::Code::ResourceExhausted);
        let down = batch_failure(BatchError::ShuttingDown);
        assert_eq!(
            (down.status.code(), down.http),
            (tonic::Code::Unavailable, 503)
        );
        let failed = batch_failure(BatchError::Inference("x".into()));
        assert_eq!(failed.status.code(), tonic::Code::Internal);
    }

    #[test]
    fn answers_mirror_the_request_form_and_classification() {
        let m = model();
        let logits = [0.5, 2.0, -1.0, 1.0, 0.0, 3.0];
        let typed = RequestedOutput {
            classification: None,
            binary: false,
        };
        let r = infer_response(&m, "7".into(), typed, &logits);
        assert_eq!(r.id, "7");
        assert_eq!(r.outputs[0].shape, vec![2, 3]);
        assert_eq!(
            r.outputs[0].contents.as_ref().unwrap().fp32_contents,
            logits
        );
        assert!(r.raw_output_contents.is_empty());
        let raw = RequestedOutput {
            classification: None,
            binary: true,
        };
        let r = infer_response(&m, String::new(), raw, &logits);
        assert!(r.outputs[0].contents.is_none());
        assert_eq!(
            kserve::fp32_from_le_bytes(&r.raw_output_contents[0], "x").unwrap(),
            logits
        );

        let out = InferRequestedOutputTensor {
            name: "logits".into(),
            parameters: HashMap::from([(
                "classification".to_string(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::Int64Param(1)),
                },
            )]),
        };
        let top1 = requested_output(&m, std::slice::from_ref(&out), false).unwrap();
        let r = infer_response(&m, String::new(), top1, &logits);
        assert_eq!(r.outputs[0].datatype, "BYTES");
        assert_eq!(
            r.outputs[0].contents.as_ref().unwrap().bytes_contents,
            vec![b"2:1:b".to_vec(), b"3:2:c".to_vec()]
        );
        let mut bad = out.clone();
        bad.name = "probs".into();
        assert!(requested_output(&m, &[bad], false).is_err());
        let mut bad = out;
        bad.parameters.insert(
            "classification".into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(-1)),
            },
        );
        assert!(requested_output(&m, &[bad], false).is_err());
    }
}
