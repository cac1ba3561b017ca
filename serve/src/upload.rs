//! Image uploads: checking an image's size before decoding it, then preprocessing it
//! exactly as `tpsnet-infer` does (`runtime::preprocess::load_bytes`), so the server's
//! answer for an image equals the offline classifier's.

use std::io::Cursor;

use image::ImageReader;
use runtime::InputImage;
use serde::Serialize;

use crate::error::ApiError;

/// One uploaded image's answer.
#[derive(Debug, Serialize)]
pub struct UploadPrediction {
    /// The form part's file name (or field name); `image` for a raw body.
    pub name: String,
    /// Most likely class index and name, and its softmax probability.
    pub index: usize,
    pub class: String,
    pub probability: f32,
    /// The `top_k` most likely classes, best first.
    pub top_k: Vec<runtime::ClassScore>,
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
    runtime::preprocess::load_bytes(bytes, name).map_err(|e| match e {
        runtime::preprocess::ImageError::TooLarge { .. } => ApiError::too_large(e.to_string()),
        other => ApiError::unprocessable(other.to_string()),
    })
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
            runtime::preprocess::load_bytes(&png(40, 20), "x").unwrap()
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
}
