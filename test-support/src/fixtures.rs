//! Tiny random-weight zoo models published with manifests, real CIFAR-10 test images,
//! and hostile image and model files.

use std::path::{Path, PathBuf};

use tpsnet_zoo::manifest::{Manifest, Metrics, TrainingRecord};
use tpsnet_zoo::publish::write_atomic;
use tpsnet_zoo::{ResNetSpec, Weights};

/// The small architecture the tests use (`[1,1,1]` blocks, C1 = 4).
pub fn tiny_spec() -> ResNetSpec {
    ResNetSpec::paper(&[1, 1, 1], 4, 2)
}

/// A manifest for `bytes` with the given claims.
pub fn manifest_for(
    name: &str,
    spec: &ResNetSpec,
    bytes: &[u8],
    top1: f64,
    tta: Option<f64>,
) -> Manifest {
    Manifest::describe(
        name,
        spec,
        bytes,
        Metrics {
            dataset: "cifar10-test".into(),
            images: 10_000,
            top1,
            top1_flip_tta: tta,
            top1_6view: None,
            claim: if tta.is_some() { "flip_tta" } else { "single" }.into(),
            how: "test fixture: random weights".into(),
        },
        TrainingRecord::untrained(0),
    )
}

/// Writes `bytes` as a published model `<name>-<sha8>.onnx` with its manifest in `dir`;
/// returns the manifest path.
pub fn publish(
    dir: &Path,
    name: &str,
    spec: &ResNetSpec,
    bytes: &[u8],
    top1: f64,
    tta: Option<f64>,
) -> PathBuf {
    let m = manifest_for(name, spec, bytes, top1, tta);
    let model = dir.join(&m.file);
    write_atomic(&model, bytes).unwrap();
    let manifest = Manifest::path_for_model(&model);
    write_atomic(&manifest, m.to_json().as_bytes()).unwrap();
    manifest
}

/// ONNX bytes of the tiny spec with random weights.
pub fn tiny_onnx(seed: u64) -> Vec<u8> {
    let spec = tiny_spec();
    tpsnet_zoo::onnx::export(
        &spec,
        &Weights::random(&spec, seed),
        &tpsnet_zoo::onnx::ExportOptions::default(),
    )
    .unwrap()
}

/// Publishes a tiny random model claiming `top1` (single view); returns the manifest path.
pub fn tiny_model(dir: &Path, name: &str, seed: u64, top1: f64) -> PathBuf {
    publish(dir, name, &tiny_spec(), &tiny_onnx(seed), top1, None)
}

pub use crate::data::cifar_dir;

/// Loads the real CIFAR-10 test set.
pub fn cifar_test() -> tpsnet_zoo::cifar::Cifar10 {
    tpsnet_zoo::cifar::load(&cifar_dir(), tpsnet_zoo::cifar::Split::Test)
        .expect("CIFAR-10 test set loads")
}

/// Decodes CIFAR-10 test image `i` into an RGB image.
pub fn cifar_rgb(data: &tpsnet_zoo::cifar::Cifar10, i: usize) -> image::RgbImage {
    let planar = data.image(i);
    image::RgbImage::from_fn(32, 32, |x, y| {
        let p = (y * 32 + x) as usize;
        image::Rgb([planar[p], planar[1024 + p], planar[2048 + p]])
    })
}

/// Writes the first `n` CIFAR-10 test images as PNG files into `dir` (at test time, in a
/// temp folder; never into the repository). Returns the paths.
pub fn write_cifar_pngs(dir: &Path, n: usize) -> Vec<PathBuf> {
    let data = cifar_test();
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let p = dir.join(format!("test_{i:05}.png"));
            cifar_rgb(&data, i).save(&p).unwrap();
            p
        })
        .collect()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A valid PNG header claiming `width` x `height` RGBA pixels (a decoding bomb if
/// believed), with a tiny IDAT and IEND.
pub fn png_with_dimensions(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A valid ONNX model of the zoo's architecture on 64x64 inputs (so its input is
/// [N, 3, 64, 64], not the [N, 3, 32, 32] a zoo manifest promises).
pub fn onnx_64px() -> (ResNetSpec, Vec<u8>) {
    let mut spec = tiny_spec();
    spec.input_size = 64;
    spec.pool = 16;
    let w = Weights::random(&spec, 5);
    let bytes =
        tpsnet_zoo::onnx::export(&spec, &w, &tpsnet_zoo::onnx::ExportOptions::default()).unwrap();
    (spec, bytes)
}

/// Path of the ONNX file a manifest describes.
pub fn model_of(manifest: &Path) -> PathBuf {
    Manifest::load(manifest).unwrap().model_path(manifest)
}
