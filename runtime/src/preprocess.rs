//! Turning image files into the model's input: float32 CHW RGB in [0, 1], 32x32.
//!
//! * Formats: PNG, JPEG, BMP, GIF (first frame), WebP and TIFF, recognised by their
//!   contents (the file extension is only a fallback).
//! * Colour: grayscale, grayscale+alpha, RGBA and 16-bit images are converted to 8-bit
//!   RGB; an alpha channel is dropped (not composited).
//! * Size: any size is resized to 32x32 (aspect ratio not kept) with the `Triangle`
//!   filter of the `image` crate — bilinear when enlarging; when shrinking, its support
//!   widens with the scale factor, so it averages all source pixels like an area filter
//!   instead of aliasing. 32x32 images are used as they are.
//! * Limits: decoding refuses images wider or taller than [`MAX_SIDE`] pixels and decoders
//!   that would allocate more than [`MAX_DECODE_BYTES`], so a forged header (say a
//!   100000x100000 PNG) is an error instead of an allocation of tens of gigabytes.
//! * [`load_files`] decodes many files in parallel on rayon's thread pool.
//!
//! Normalisation (mean/std) is *not* done here: zoo models do it inside the graph
//! (`InputContract::normalization.in_graph`).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, Limits};
use rayon::prelude::*;

/// Side of the square model input in pixels.
pub const SIDE: usize = 32;
/// Floats per preprocessed image (3 x 32 x 32).
pub const IMAGE_FLOATS: usize = 3 * SIDE * SIDE;
/// Largest width or height accepted when decoding.
pub const MAX_SIDE: u32 = 16_384;
/// Most memory a decoder may allocate for one image.
pub const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
/// The resize filter (see the module docs).
pub const RESIZE_FILTER: FilterType = FilterType::Triangle;

/// Why an image could not be turned into model input. `source` names the file (or the
/// upload) it came from.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {source_name}: {reason}")]
    /// The file (or upload) cannot be read; `reason` is the I/O error.
    Read {
        /// The file's path, or a name for an upload.
        source_name: String,
        /// The I/O error.
        reason: String,
    },
    #[error("{source_name} is not a regular file; pass image files or folders of them")]
    /// The path exists but is not a regular file.
    NotAFile {
        /// The file's path, or a name for an upload.
        source_name: String,
    },
    #[error(
        "{source_name} is not a readable image ({reason}); supported: PNG, JPEG, BMP, GIF, WebP, TIFF"
    )]
    /// The bytes are not an image in a supported format, or are corrupt; `reason` is the decoder's.
    Decode {
        /// The file's path, or a name for an upload.
        source_name: String,
        /// The decoder's error.
        reason: String,
    },
    #[error(
        "{source_name} is too large to decode ({reason}); the limit is {MAX_SIDE}x{MAX_SIDE} pixels and {} MiB, shrink the image first",
        MAX_DECODE_BYTES >> 20
    )]
    /// The image exceeds [`MAX_SIDE`] or [`MAX_DECODE_BYTES`]; `reason` is the decoder's.
    TooLarge {
        /// The file's path, or a name for an upload.
        source_name: String,
        /// The decoder's error.
        reason: String,
    },
}

/// One preprocessed image: 3x32x32 float32, channel-planar RGB in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct InputImage {
    pixels: Vec<f32>,
}

impl InputImage {
    /// The CHW floats (length [`IMAGE_FLOATS`]).
    pub fn as_slice(&self) -> &[f32] {
        &self.pixels
    }

    /// From 3072 channel-planar RGB bytes (the CIFAR-10 record layout).
    ///
    /// # Panics
    /// If `planar` is not exactly 3072 bytes long (a programming error).
    pub fn from_planar_rgb8(planar: &[u8]) -> Self {
        assert_eq!(planar.len(), IMAGE_FLOATS, "expected 3x32x32 planar bytes");
        InputImage {
            pixels: planar.iter().map(|&v| v as f32 / 255.0).collect(),
        }
    }

    /// From CHW floats; `None` unless there are exactly [`IMAGE_FLOATS`].
    pub fn from_chw(pixels: Vec<f32>) -> Option<Self> {
        (pixels.len() == IMAGE_FLOATS).then_some(InputImage { pixels })
    }

    /// From a decoded image of any size and colour type (converted and resized as the
    /// module docs describe).
    pub fn from_dynamic(img: &DynamicImage) -> Self {
        let rgb = img.to_rgb8();
        let rgb = if rgb.width() as usize == SIDE && rgb.height() as usize == SIDE {
            rgb
        } else {
            image::imageops::resize(&rgb, SIDE as u32, SIDE as u32, RESIZE_FILTER)
        };
        let mut pixels = vec![0f32; IMAGE_FLOATS];
        let plane = SIDE * SIDE;
        for (i, p) in rgb.pixels().enumerate() {
            for c in 0..3 {
                pixels[c * plane + i] = p.0[c] as f32 / 255.0;
            }
        }
        InputImage { pixels }
    }

    /// The image mirrored left-right (for flip test-time augmentation).
    pub fn flipped_horizontally(&self) -> Self {
        let mut pixels = self.pixels.clone();
        for row in pixels.chunks_exact_mut(SIDE) {
            row.reverse();
        }
        InputImage { pixels }
    }
}

/// The limits every decode runs under.
pub fn decode_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

fn decode_error(source_name: &str, e: image::ImageError) -> ImageError {
    let source_name = source_name.to_string();
    match e {
        image::ImageError::Limits(l) => ImageError::TooLarge {
            source_name,
            reason: l.to_string(),
        },
        image::ImageError::IoError(io) => ImageError::Decode {
            source_name,
            reason: format!("truncated or unreadable data: {io}"),
        },
        other => ImageError::Decode {
            source_name,
            reason: other.to_string(),
        },
    }
}

fn decode<R: std::io::BufRead + std::io::Seek>(
    mut reader: ImageReader<R>,
    source_name: &str,
) -> Result<InputImage, ImageError> {
    reader.limits(decode_limits());
    let img = reader.decode().map_err(|e| decode_error(source_name, e))?;
    Ok(InputImage::from_dynamic(&img))
}

/// Decodes and preprocesses an image held in memory (e.g. an upload). `name` is used in
/// error messages.
pub fn load_bytes(bytes: &[u8], name: &str) -> Result<InputImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Decode {
            source_name: name.to_string(),
            reason: "it is empty (0 bytes)".into(),
        });
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Read {
            source_name: name.to_string(),
            reason: e.to_string(),
        })?;
    if reader.format().is_none() {
        return Err(ImageError::Decode {
            source_name: name.to_string(),
            reason: "unrecognised image format".into(),
        });
    }
    decode(reader, name)
}

/// Decodes and preprocesses one image file.
///
/// Only regular files are opened (a FIFO or device would block or never end).
pub fn load_file(path: &Path) -> Result<InputImage, ImageError> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| ImageError::Read {
        source_name: name.clone(),
        reason: e.to_string(),
    })?;
    if !meta.is_file() {
        return Err(ImageError::NotAFile { source_name: name });
    }
    if meta.len() == 0 {
        return Err(ImageError::Decode {
            source_name: name,
            reason: "the file is empty (0 bytes)".into(),
        });
    }
    let reader = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| ImageError::Read {
            source_name: name.clone(),
            reason: e.to_string(),
        })?;
    if reader.format().is_none() {
        return Err(ImageError::Decode {
            source_name: name,
            reason: "unrecognised image format".into(),
        });
    }
    decode(reader, &name)
}

/// Decodes many files in parallel (rayon); results are in the order of `paths`.
pub fn load_files(paths: &[PathBuf]) -> Vec<Result<InputImage, ImageError>> {
    paths.par_iter().map(|p| load_file(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};

    fn png_bytes(img: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn planar_layout_and_scaling() {
        // Pixel (x=1, y=0) is pure red; everything else black.
        let mut img = ImageBuffer::<Rgb<u8>, _>::new(32, 32);
        img.put_pixel(1, 0, Rgb([255, 0, 0]));
        let x = InputImage::from_dynamic(&DynamicImage::ImageRgb8(img));
        assert_eq!(x.as_slice().len(), IMAGE_FLOATS);
        assert_eq!(x.as_slice()[1], 1.0);
        assert_eq!(x.as_slice()[1024 + 1], 0.0);
        assert_eq!(x.as_slice().iter().filter(|&&v| v != 0.0).count(), 1);
        // Flipping moves it to x=30 of row 0.
        let f = x.flipped_horizontally();
        assert_eq!(f.as_slice()[30], 1.0);
        assert_eq!(f.flipped_horizontally(), x);
    }

    #[test]
    fn color_types_and_sizes_are_converted() {
        let gray = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(7, 5, Luma([128u8])));
        let x = load_bytes(&png_bytes(&gray), "gray.png").unwrap();
        assert!(
            x.as_slice()
                .iter()
                .all(|&v| (v - 128.0 / 255.0).abs() < 1e-6)
        );

        let gray16 = DynamicImage::ImageLuma16(ImageBuffer::from_pixel(40, 64, Luma([65535u16])));
        let x = load_bytes(&png_bytes(&gray16), "gray16.png").unwrap();
        assert!(x.as_slice().iter().all(|&v| v == 1.0));

        let la = DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(3, 3, LumaA([10u8, 0])));
        let x = load_bytes(&png_bytes(&la), "la.png").unwrap();
        assert!(
            x.as_slice()
                .iter()
                .all(|&v| (v - 10.0 / 255.0).abs() < 1e-6)
        );

        let rgba =
            DynamicImage::ImageRgba8(ImageBuffer::from_pixel(100, 50, Rgba([0u8, 255, 0, 3])));
        let x = load_bytes(&png_bytes(&rgba), "rgba.png").unwrap();
        assert!(x.as_slice()[..1024].iter().all(|&v| v == 0.0));
        assert!(x.as_slice()[1024..2048].iter().all(|&v| v == 1.0));
    }

    #[test]
    fn downscaling_averages() {
        // A 64x64 checkerboard shrinks to mid-grey, not to one of the two colours.
        let img = ImageBuffer::from_fn(64, 64, |x, y| {
            Luma([if (x + y) % 2 == 0 { 0u8 } else { 255 }])
        });
        let x = InputImage::from_dynamic(&DynamicImage::ImageLuma8(img));
        let mean = x.as_slice().iter().sum::<f32>() / IMAGE_FLOATS as f32;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        assert!(x.as_slice().iter().all(|&v| (0.3..0.7).contains(&v)));
    }

    #[test]
    fn every_supported_format_decodes() {
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(20, 12, |x, y| {
            Rgb([(x * 10) as u8, (y * 20) as u8, 90])
        }));
        for fmt in [
            image::ImageFormat::Png,
            image::ImageFormat::Jpeg,
            image::ImageFormat::Bmp,
            image::ImageFormat::Gif,
            image::ImageFormat::WebP,
            image::ImageFormat::Tiff,
        ] {
            let mut out = Vec::new();
            img.write_to(&mut Cursor::new(&mut out), fmt).unwrap();
            let x = load_bytes(&out, "x").unwrap_or_else(|e| panic!("{fmt:?}: {e}"));
            assert_eq!(x.as_slice().len(), IMAGE_FLOATS, "{fmt:?}");
        }
    }

    #[test]
    fn bad_bytes_are_errors() {
        assert!(matches!(
            load_bytes(b"", "empty.png"),
            Err(ImageError::Decode { .. })
        ));
        let e = load_bytes(b"hello, not an image", "notes.txt").unwrap_err();
        assert!(e.to_string().contains("notes.txt"), "{e}");
        let gray = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(32, 32, Luma([1u8])));
        let png = png_bytes(&gray);
        let e = load_bytes(&png[..png.len() / 2], "half.png").unwrap_err();
        assert!(matches!(e, ImageError::Decode { .. }), "{e}");
    }
}
