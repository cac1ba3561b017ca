//! The HTTP routes: KServe v2 health, metadata and inference, image uploads, metrics.
//! Every answer, errors included, is JSON (bar `/metrics`); no request can panic the
//! server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{
    BytesRejection, PathRejection, QueryRejection, RawPathParamsRejection,
};
use axum::extract::{
    DefaultBodyLimit, FromRequest, MatchedPath, Path, Query, RawPathParams, Request, State,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tpsnet_runtime::InputImage;

use crate::batcher::BatchError;
use crate::config::ServerConfig;
use crate::connection::BodyTimeout;
use crate::error::ApiError;
use crate::kserve;
use crate::metrics::Metrics;
use crate::repository::{LoadedModel, Repository};
use crate::upload::{self, UploadPrediction};

/// What every handler shares.
#[derive(Debug)]
pub struct Shared {
    /// The served models, each with its own batcher.
    pub repository: Repository,
    /// The server-wide metrics (requests, connections); each model has its own too.
    pub metrics: Arc<Metrics>,
    /// The server's settings (limits, time-outs, batching).
    pub config: ServerConfig,
    /// Set on the shutdown signal: `/v2/health/ready` answers 503 from then on.
    pub draining: AtomicBool,
}

impl Shared {
    /// Counts one answered request of `endpoint` (REST or gRPC) in the server's metrics,
    /// labelled with the model it `named` only if this server knows that model: clients
    /// choose names freely, and every label value is a series of its own.
    pub(crate) fn record_request(
        &self,
        endpoint: &'static str,
        named: Option<&str>,
        status: u16,
        elapsed: Duration,
    ) {
        let model = named.filter(|name| self.repository.knows(name));
        self.metrics
            .record_request(endpoint, model, status, elapsed);
    }
}

type AppState = Arc<Shared>;

/// The router: every route, the body limit and the metrics middleware.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let body_limit = shared.config.max_body_bytes;
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
        .route("/v2/models/{name}/classify", post(classify))
        .route(
            "/v2/models/{name}/versions/{version}/classify",
            post(classify),
        )
        .route("/metrics", get(metrics))
        .merge(crate::page::routes())
        .merge(crate::openapi::routes())
        .merge(crate::repository::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(crate::page::server_timing))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), track))
        .with_state(shared)
}

/// The endpoint label of a route (bounded: one per route, `unmatched` for the rest).
fn endpoint_name(route: Option<&str>) -> &'static str {
    match route {
        Some("/v2") => "server_metadata",
        Some("/v2/health/live") => "health_live",
        Some("/v2/health/ready") => "health_ready",
        Some("/v2/models/{name}" | "/v2/models/{name}/versions/{version}") => "model_metadata",
        Some("/v2/models/{name}/ready" | "/v2/models/{name}/versions/{version}/ready") => {
            "model_ready"
        }
        Some("/v2/models/{name}/infer" | "/v2/models/{name}/versions/{version}/infer") => "infer",
        Some("/v2/models/{name}/classify" | "/v2/models/{name}/versions/{version}/classify") => {
            "classify"
        }
        Some("/metrics") => "metrics",
        Some("/v2/repository/index") => "repository_index",
        Some("/v2/repository/models/{model_name}/load") => "repository_load",
        Some("/v2/repository/models/{model_name}/unload") => "repository_unload",
        _ => "unmatched",
    }
}

/// The path parameter of a route's endpoint that names a model, if it has one.
fn model_param(endpoint: &str) -> Option<&'static str> {
    match endpoint {
        "model_metadata" | "model_ready" | "infer" | "classify" => Some("name"),
        "repository_load" | "repository_unload" => Some("model_name"),
        _ => None,
    }
}

/// The model a request's path names (percent-decoded), as the client wrote it: `track`
/// labels the request metrics with it only if the server knows it
/// ([`Repository::knows`]).
fn named_model(endpoint: &str, params: Option<&RawPathParams>) -> Option<String> {
    let key = model_param(endpoint)?;
    params?
        .iter()
        .find_map(|(k, v)| (k == key).then(|| v.to_string()))
}

/// Decrements the in-flight gauge even when a client disconnects mid-request (the
/// handler's future is then dropped).
struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.add_in_flight(-1);
    }
}

async fn track(
    State(s): State<AppState>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = endpoint_name(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str()),
    );
    let model = named_model(endpoint, params.as_ref().ok());
    let log = s
        .config
        .access_log
        .then(|| format!("{} {}", request.method(), request.uri()));
    let body_timeout = request.extensions().get::<BodyTimeout>().cloned();
    let started = Instant::now();
    s.metrics.add_in_flight(1);
    let _in_flight = InFlight(&s.metrics);
    let mut response = next.run(request).await;
    if let Some(limit) = body_timeout.filter(BodyTimeout::passed) {
        // Whatever the handler made of the cut-short body, the answer is the timeout.
        s.metrics.record_connection_timeout("body");
        response = body_timed_out(limit.limit);
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    // Recorded after the answer, so a model this request loaded counts as known.
    s.record_request(endpoint, model.as_deref(), status, elapsed);
    if let Some(line) = log {
        eprintln!("{line} {status} {:.2} ms", elapsed.as_secs_f64() * 1e3);
    }
    response
}

/// `408` for a body that did not arrive in time; the connection closes after it.
fn body_timed_out(limit: std::time::Duration) -> Response {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request body did not arrive within {:.3} s (--body-timeout-s); send it faster or ask for a longer limit",
            limit.as_secs_f64()
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}; see GET /v2 (server), /v2/models/NAME (model), POST /v2/models/NAME/infer, POST /v2/models/NAME/classify, GET /metrics",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}; inference and uploads are POST, everything else GET",
            request.method(),
            request.uri().path()
        ),
    )
}

#[derive(Deserialize)]
struct ModelPath {
    name: String,
    #[serde(default)]
    version: Option<String>,
}

/// The loaded model a `/v2/models/{name}[/versions/{version}]/...` route names.
fn model_path(
    s: &Shared,
    path: Result<Path<ModelPath>, PathRejection>,
) -> Result<Arc<LoadedModel>, ApiError> {
    let Path(p) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    s.repository.get(&p.name, p.version.as_deref())
}

fn body_error(e: BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!(
            "request body larger than {limit} bytes (--max-body-bytes); send fewer images per request"
        ))
    } else {
        ApiError::new(
            e.status(),
            format!("cannot read the request body: {}", e.body_text()),
        )
    }
}

fn batch_error(e: BatchError, retry_after_s: u32) -> ApiError {
    match e {
        BatchError::QueueFull { .. } | BatchError::ShuttingDown => {
            ApiError::unavailable(e.to_string(), retry_after_s)
        }
        BatchError::TooManyImages { .. } => ApiError::too_large(e.to_string()),
        BatchError::Inference(_) => ApiError::internal(e.to_string()),
    }
}

fn json_response(value: serde_json::Value) -> Response {
    Json(value).into_response()
}

async fn server_metadata() -> Response {
    json_response(kserve::server_metadata())
}

async fn live() -> Response {
    json_response(json!({ "live": true }))
}

async fn ready(State(s): State<AppState>) -> Response {
    if s.draining.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false })),
        )
            .into_response()
    } else {
        json_response(json!({ "ready": true }))
    }
}

async fn model_metadata(
    State(s): State<AppState>,
    path: Result<Path<ModelPath>, PathRejection>,
) -> Result<Response, ApiError> {
    let model = model_path(&s, path)?;
    Ok(json_response(model.info.metadata()))
}

async fn model_ready(
    State(s): State<AppState>,
    path: Result<Path<ModelPath>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(p) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // A model known but unloaded is not ready (503), as during shutdown.
    let ready = match s.repository.get(&p.name, p.version.as_deref()) {
        Ok(_) => !s.draining.load(Ordering::Relaxed),
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => false,
        Err(e) => return Err(e),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(json!({ "name": p.name, "ready": ready }))).into_response())
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        {
            let models = s.repository.metrics();
            let models: Vec<&Metrics> = models.iter().map(Arc::as_ref).collect();
            s.metrics.render_with_models(&models)
        },
    )
        .into_response()
}

/// Runs CPU work (parsing, decoding) off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("request worker failed: {e}")))?
}

async fn infer(
    State(s): State<AppState>,
    path: Result<Path<ModelPath>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let model = model_path(&s, path)?;
    let body = body.map_err(|e| body_error(e, s.config.max_body_bytes))?;
    let header_length = match headers.get(kserve::HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::bad_request("Inference-Header-Content-Length is not a number")
                })?
                .to_string(),
        ),
    };
    let parsing = Arc::clone(&model);
    let request =
        blocking(move || kserve::parse_infer(&body, header_length.as_deref(), &parsing.info))
            .await?;
    let logits = model
        .batcher
        .logits(request.images)
        .await
        .map_err(|e| batch_error(e, s.config.retry_after_s))?;
    Ok(kserve::infer_response(
        &model.info,
        request.id,
        request.output,
        &logits,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyQuery {
    top_k: Option<usize>,
}

async fn classify(
    State(s): State<AppState>,
    path: Result<Path<ModelPath>, PathRejection>,
    query: Result<Query<ClassifyQuery>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let model = model_path(&s, path)?;
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "bad query ({}); the only parameter is top_k=K",
            e.body_text()
        ))
    })?;
    let classes = model.info.classes.len();
    let top_k = match q.top_k {
        None => 1,
        Some(0) => return Err(ApiError::bad_request("top_k must be at least 1")),
        Some(k) => k.min(classes),
    };
    let uploads = read_uploads(&s, request).await?;
    let max_side = s.config.max_image_side;
    let names: Vec<String> = uploads.iter().map(|(n, _)| n.clone()).collect();
    let images: Vec<InputImage> = blocking(move || {
        uploads
            .iter()
            .map(|(name, bytes)| upload::decode(bytes, name, max_side))
            .collect()
    })
    .await?;
    let logits = model
        .batcher
        .logits(images)
        .await
        .map_err(|e| batch_error(e, s.config.retry_after_s))?;
    let predictions: Vec<UploadPrediction> = names
        .into_iter()
        .zip(model.classifier.predictions(&logits, top_k))
        .map(|(name, p)| UploadPrediction {
            name,
            index: p.index,
            class: p.class,
            probability: p.probability,
            top_k: p.top_k,
        })
        .collect();
    Ok(json_response(json!({
        "model_name": model.info.name,
        "model_version": model.info.version,
        "predictions": predictions,
    })))
}

/// The images of an upload: every file part of a `multipart/form-data` body, or the
/// whole body as one image named `image`.
async fn read_uploads(s: &AppState, request: Request) -> Result<Vec<(String, Bytes)>, ApiError> {
    let limit = s.config.max_body_bytes;
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !is_form {
        let body = Bytes::from_request(request, &())
            .await
            .map_err(|e| body_error(e, limit))?;
        return Ok(vec![("image".to_string(), body)]);
    }
    upload::form_files(request, limit).await
}
