//! An HTTP service that classifies uploaded images through one shared
//! [`Classifier`](runtime::Classifier) — the embedding example, kept in the library so it
//! can be tested (`examples/serve.rs` only binds it to an address).
//!
//! Routes:
//! * `POST /classify[?top_k=K]` with `multipart/form-data`: every file part is an image
//!   (PNG, JPEG, BMP, GIF, WebP, TIFF, any size). Answers
//!   `{"model": NAME, "provider": ..., "predictions": [{"name", "class", "index",
//!   "probability", "top_k"}, ...]}` in upload order. A part that is not a readable image
//!   is a `422` naming it; a request without files or a broken form is a `400`.
//! * `GET /model`: the model's name, file, sha256, classes, claimed accuracy, provider.
//! * `GET /health`: `ok`.
//!
//! Decoding and inference run on tokio's blocking pool, so the async workers stay free;
//! the classifier itself is `Sync`, so every request shares it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! let options = runtime::SessionOptions::builder().sessions(2).build();
//! let classifier = runtime::Classifier::open("models/tpsnet-0123abcd.onnx", &options)?;
//! let app = tpsnet_examples::router(Arc::new(classifier));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Multipart, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use runtime::{ClassScore, Classifier};
use serde::{Deserialize, Serialize};

/// Largest request body accepted (all images of one request together).
pub const MAX_UPLOAD_BYTES: usize = 32 * 1024 * 1024;
/// Most classes a client may ask for per image.
const MAX_TOP_K: usize = 100;

/// The answer for one uploaded image.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct UploadPrediction {
    /// The part's file name (or field name when it has none).
    pub name: String,
    pub class: String,
    pub index: usize,
    pub probability: f32,
    pub top_k: Vec<Score>,
}

/// One of the top-k classes.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Score {
    pub index: usize,
    pub class: String,
    pub probability: f32,
}

impl From<ClassScore> for Score {
    fn from(s: ClassScore) -> Self {
        Score {
            index: s.index,
            class: s.class,
            probability: s.probability,
        }
    }
}

/// Body of `POST /classify`'s answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClassifyResponse {
    pub model: String,
    pub provider: String,
    pub predictions: Vec<UploadPrediction>,
}

#[derive(Deserialize)]
struct ClassifyQuery {
    top_k: Option<usize>,
}

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// The service's routes around one shared classifier.
pub fn router(classifier: Arc<Classifier>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/model", get(model_info))
        .route("/classify", post(classify))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .with_state(classifier)
}

async fn model_info(State(c): State<Arc<Classifier>>) -> Json<serde_json::Value> {
    let m = c.manifest();
    Json(serde_json::json!({
        "name": m.name,
        "file": m.file,
        "sha256": m.sha256,
        "classes": m.classes,
        "claimed_top1": m.metrics.claimed_top1(),
        "claim": m.metrics.claim,
        "provider": c.execution().provider,
    }))
}

async fn classify(
    State(c): State<Arc<Classifier>>,
    Query(q): Query<ClassifyQuery>,
    mut form: Multipart,
) -> Result<Json<ClassifyResponse>, ApiError> {
    let top_k = q.top_k.unwrap_or(1).clamp(1, MAX_TOP_K);
    let mut uploads = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError(e.status(), format!("bad multipart form: {}", e.body_text())))?
    {
        let name = field
            .file_name()
            .or(field.name())
            .unwrap_or("upload")
            .to_string();
        let bytes = field.bytes().await.map_err(|e| {
            ApiError(
                e.status(),
                format!("cannot read part {name}: {}", e.body_text()),
            )
        })?;
        uploads.push((name, bytes));
    }
    if uploads.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "no files in the form; send images as multipart/form-data file parts".into(),
        ));
    }
    let worker = Arc::clone(&c);
    let predictions =
        tokio::task::spawn_blocking(move || classify_uploads(&worker, uploads, top_k))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(ClassifyResponse {
        model: c.name().to_string(),
        provider: c.execution().provider.clone(),
        predictions,
    }))
}

fn classify_uploads(
    c: &Classifier,
    uploads: Vec<(String, axum::body::Bytes)>,
    top_k: usize,
) -> Result<Vec<UploadPrediction>, ApiError> {
    let mut images = Vec::with_capacity(uploads.len());
    for (name, bytes) in &uploads {
        let img = runtime::preprocess::load_bytes(bytes, name)
            .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        images.push(img);
    }
    let predictions = c
        .classify(&images, top_k)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.full_message()))?;
    Ok(uploads
        .into_iter()
        .zip(predictions)
        .map(|((name, _), p)| UploadPrediction {
            name,
            class: p.class,
            index: p.index,
            probability: p.probability,
            top_k: p.top_k.into_iter().map(Score::from).collect(),
        })
        .collect())
}
