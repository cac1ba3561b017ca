//! The zoo's web page, served at `/`: pick a served model, drop images, see the top-5
//! classes, the 32x32 picture the model saw and the server's time.
//!
//! The page (`serve/page/`: `index.html`, `app.js`, `style.css`) is compiled into the
//! binary, so a release `tpsnet-serve` needs no other files. It classifies through the
//! ordinary API (`POST /v2/models/{name}/classify?top_k=5`, one request per image) and
//! reads two facts the KServe API does not carry from endpoints of its own:
//!
//! * `GET /models.json`: every served model with its manifest facts (parameters, MACs,
//!   precision, version, claimed top-1 and its test-time augmentation, classes) and the
//!   server's upload limits. `scripts/site` writes a file of the same shape (with
//!   `"mode": "browser"`) for the static site that runs the models in the browser.
//! * `POST /page/preview`: an image as the body (the limits and decoding of `classify`)
//!   answered with the 32x32 PNG the model sees after the runtime's preprocessing.
//!
//! [`server_timing`] adds a `Server-Timing: app;dur=MS` header to every answer, so the
//! page can show the server's own time beside the round trip.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tpsnet_runtime::{Classifier, InputImage};

use crate::error::ApiError;
use crate::routes::Shared;
use crate::upload;

const INDEX_HTML: &str = include_str!("../page/index.html");
const APP_JS: &str = include_str!("../page/app.js");
const STYLE_CSS: &str = include_str!("../page/style.css");

/// The page loads only its own scripts and styles; pictures may be blob: URLs of the
/// user's files and data: URLs of previews.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The page's routes, merged into the server's router (`routes::router`).
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/models.json", get(models))
        .route("/page/preview", post(preview))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            // The assets change with the binary: revalidate instead of caching stale ones.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// A model as the page shows it: the manifest's facts the page needs, in the shape
/// `scripts/site` writes for the static site.
pub fn model_card(classifier: &Classifier) -> Value {
    let m = classifier.manifest();
    json!({
        "name": m.name,
        "version": m.sha256.chars().take(8).collect::<String>(),
        "file": m.file,
        "sha256": m.sha256,
        "bytes": m.bytes,
        "params": m.params,
        "macs": m.macs,
        "precision": m.precision,
        "source": m.quantization.as_ref().map(|q| q.source.name.clone()),
        "classes": m.classes,
        "metrics": m.metrics,
        "input": m.input,
        "output": m.output,
        // The server classifies one view per image (no test-time augmentation).
        "tta": "none",
        "provider": classifier.execution().provider,
    })
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    // Every loaded model, by name; the page lists whatever this holds.
    let models: Vec<Value> = s
        .repository
        .loaded()
        .iter()
        .map(|m| model_card(&m.classifier))
        .collect();
    axum::Json(json!({
        "mode": "server",
        "server": { "name": "tpsnet-serve", "version": env!("CARGO_PKG_VERSION") },
        "limits": {
            "max_body_bytes": s.config.max_body_bytes,
            "max_image_side": s.config.max_image_side,
        },
        "models": models,
    }))
    .into_response()
}

/// The 32x32 RGB PNG of a preprocessed image. Its values are `k / 255` in f32, so
/// `round(v * 255)` gives back the exact byte `k`.
pub fn preview_png(image: &InputImage) -> Vec<u8> {
    let side = tpsnet_runtime::preprocess::SIDE;
    let plane = side * side;
    let chw = image.as_slice();
    let rgb = image::RgbImage::from_fn(side as u32, side as u32, |x, y| {
        let i = y as usize * side + x as usize;
        let byte = |c: usize| (chw[c * plane + i] * 255.0).round().clamp(0.0, 255.0) as u8;
        image::Rgb([byte(0), byte(1), byte(2)])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(rgb)
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encoding a 32x32 PNG in memory cannot fail");
    out
}

async fn preview(
    State(s): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let limit = s.config.max_body_bytes;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "image larger than {limit} bytes (--max-body-bytes); shrink it first"
            ))
        } else {
            ApiError::new(
                e.status(),
                format!("cannot read the request body: {}", e.body_text()),
            )
        }
    })?;
    let max_side = s.config.max_image_side;
    let png = tokio::task::spawn_blocking(move || {
        upload::decode(&body, "image", max_side).map(|image| preview_png(&image))
    })
    .await
    .map_err(|e| ApiError::internal(format!("preview worker failed: {e}")))??;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))],
        png,
    )
        .into_response())
}

/// Adds `Server-Timing: app;dur=MS` (the time from the request's arrival to its answer's
/// headers, in milliseconds) to every answer; browsers expose it to the page's scripts.
pub async fn server_timing(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.3}")) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("server-timing"), v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_holds_the_exact_bytes_the_model_sees() {
        let planar: Vec<u8> = (0..tpsnet_runtime::preprocess::IMAGE_FLOATS)
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        let image = InputImage::from_planar_rgb8(&planar);
        let png = preview_png(&image);
        let back = tpsnet_runtime::preprocess::load_bytes(&png, "preview.png").unwrap();
        assert_eq!(back, image);
    }

    #[test]
    fn assets_are_the_page() {
        assert!(INDEX_HTML.contains("app.js") && INDEX_HTML.contains("style.css"));
        assert!(APP_JS.contains("models.json"));
    }
}
