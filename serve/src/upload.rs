//! Image uploads: checking an image's size before decoding it, then preprocessing it
//! exactly as `tpsnet-infer` does (`tpsnet_runtime::preprocess::load_bytes`), so the server's
//! answer for an image equals the offline classifier's.

use std::io::Cursor;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};
use image::ImageReader;
use serde::Serialize;
use tpsnet_runtime::InputImage;

use crate::error::ApiError;

/// One uploaded image's answer.
#[derive(Debug, Serialize)]
pub struct UploadPrediction {
    /// The form part's file name (or field name); `image` for a raw body.
    pub name: String,
    /// The most likely class's index.
    pub index: usize,
    /// The most likely class's name.
    pub class: String,
    /// Its softmax probability, in [0, 1].
    pub probability: f32,
    /// The `top_k` most likely classes, best first.
    pub top_k: Vec<tpsnet_runtime::ClassScore>,
}

/// Decodes one uploaded image after checking its header against `max_side`.
///
/// Answers `400` for an empty upload, `413` for an image wider or taller than
/// `max_side` pixels (refused before any pixel is decoded) and `422` for bytes that are
/// not a supported image.
pub fn decode(bytes: &[u8], name: &str, max_side: u32) -> Result<InputImage, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(format!(
            "upload `{name}` is empty; send the image file's bytes"
        )));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ApiError::unprocessable(format!("cannot read upload `{name}`: {e}")))?;
    if reader.format().is_none() {
        return Err(ApiError::unprocessable(format!(
            "upload `{name}` is not a readable image (unrecognised format); supported: PNG, JPEG, BMP, GIF, WebP, TIFF"
        )));
    }
    // A header that cannot be read is a broken image; the decoder below says why.
    if let Ok((w, h)) = reader.into_dimensions()
        && (w > max_side || h > max_side)
    {
        return Err(ApiError::too_large(format!(
            "upload `{name}` is {w}x{h} pixels; this server accepts images up to {max_side}x{max_side} (--max-image-side); the model sees 32x32, so shrink it first"
        )));
    }
    tpsnet_runtime::preprocess::load_bytes(bytes, name).map_err(|e| match e {
        tpsnet_runtime::preprocess::ImageError::TooLarge { .. } => {
            ApiError::too_large(e.to_string())
        }
        other => ApiError::unprocessable(other.to_string()),
    })
}

/// The file parts of a `multipart/form-data` request, in order, each with its file name
/// (or field name, or `image`). This is the parsing `POST /v2/models/NAME/classify` does
/// (axum's `Multipart` extractor, that is the `multer` crate). `limit` is the body limit
/// the router enforces (`--max-body-bytes`), named in the `413` answer.
///
/// Answers `400` for a malformed form or one without files, `413` for a body over the
/// limit.
pub async fn form_files(request: Request, limit: usize) -> Result<Vec<(String, Bytes)>, ApiError> {
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("bad multipart form: {}", e.body_text())))?;
    let multipart_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "request body larger than {limit} bytes (--max-body-bytes); send fewer images per request"
            ))
        } else {
            ApiError::new(e.status(), format!("bad multipart form: {}", e.body_text()))
        }
    };
    let mut uploads = Vec::new();
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        let name = field
            .file_name()
            .or(field.name())
            .unwrap_or("image")
            .to_string();
        let bytes = field.bytes().await.map_err(multipart_error)?;
        uploads.push((name, bytes));
    }
    if uploads.is_empty() {
        return Err(ApiError::bad_request(
            "the form holds no files; send images as multipart/form-data file parts, or the image itself as the body",
        ));
    }
    Ok(uploads)
}

/// [`form_files`] over a body already in memory, with its `Content-Type` header value
/// (which carries the boundary): the same parsing, run to completion on the calling
/// thread. For the multipart fuzz target and tests; the server streams instead.
pub fn parse_form(content_type: &str, body: Vec<u8>) -> Result<Vec<(String, Bytes)>, ApiError> {
    let limit = body.len();
    let request = Request::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .map_err(|e| ApiError::bad_request(format!("bad Content-Type header: {e}")))?;
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| ApiError::internal(format!("cannot start a runtime: {e}")))?
        .block_on(form_files(request, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]));
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn limits_and_errors() {
        let ok = decode(&png(40, 20), "a.png", 64).unwrap();
        assert_eq!(
            ok,
            tpsnet_runtime::preprocess::load_bytes(&png(40, 20), "x").unwrap()
        );
        assert_eq!(decode(&png(65, 2), "b.png", 64).unwrap_err().status, 413);
        assert_eq!(decode(&[], "c", 64).unwrap_err().status, 400);
        let e = decode(b"hello, not an image", "d.txt", 64).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.message.contains("d.txt"), "{}", e.message);
        let mut truncated = png(32, 32);
        truncated.truncate(truncated.len() / 2);
        assert_eq!(decode(&truncated, "e.png", 64).unwrap_err().status, 422);
    }

    #[test]
    fn forms_give_their_files_in_order_and_bad_forms_are_400() {
        let body = b"--b0\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.png\"\r\n\r\nAAA\r\n\
--b0\r\nContent-Disposition: form-data; name=\"g\"\r\n\r\nBB\r\n--b0--\r\n";
        let files = parse_form("multipart/form-data; boundary=b0", body.to_vec()).unwrap();
        let got: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
        assert_eq!(got, [("a.png", &b"AAA"[..]), ("g", &b"BB"[..])]);
        for (content_type, body) in [
            ("multipart/form-data; boundary=b0", &b"--b0--\r\n"[..]),
            ("multipart/form-data; boundary=b0", &b"no boundary here"[..]),
            ("multipart/form-data", &body[..]),
        ] {
            let e = parse_form(content_type, body.to_vec()).unwrap_err();
            assert_eq!(e.status, 400, "{content_type}: {}", e.message);
        }
    }
}
