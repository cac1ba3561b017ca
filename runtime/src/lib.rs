//! Inference runtime of the TPSNet model zoo, on ONNX Runtime or on tract (pure Rust).
//!
//! * [`Classifier`] opens a zoo model from its manifest (or from the ONNX file with the
//!   manifest beside it), refuses a file whose sha256 differs from the manifest, checks the
//!   graph against the manifest's input/output contract, and classifies batches of images
//!   from any number of threads.
//! * [`preprocess`] decodes PNG/JPEG/BMP/GIF/WebP/TIFF of any size and colour type into
//!   the model input (RGB in [0, 1], 32x32), in parallel and under decoding limits.
//! * [`session`] holds [`SessionOptions`] (with the [`Backend`]: ONNX Runtime, the
//!   default, or tract) (built with [`SessionOptions::builder`]) and picks
//!   the CPU or CUDA execution provider (CUDA failing is an error unless a CPU fallback is
//!   allowed, and a fallback is recorded in [`Execution`], never printed).
//! * [`ort_library`] finds ONNX Runtime at run time, without any environment variable:
//!   `ORT_DYLIB_PATH` if set, else beside the executable, else the checkout's `.venv`,
//!   else the system library path. [`session::ort_library`] tells which one is in use.
//! * [`registry`] finds published models by name and the best one, in the models folder
//!   [`models_dir`] finds at run time (`--models-dir`, `$TPSNET_MODELS`, `./models`,
//!   beside the executable, the checkout's `models/`).
//! * [`verify`] measures accuracy on the CIFAR-10 test set and checks manifest claims.
//! * [`infer`] and [`report`] are the library side of the `tpsnet-infer` command.
//!
//! The crate never links libtorch, and ONNX Runtime is loaded at run time, so it builds
//! anywhere. The library never prints; errors are [`Error`], whose ONNX Runtime failures
//! keep ONNX Runtime's error as their source ([`Error::full_message`] shows the chain).
//!
//! # Features
//!
//! * `ort` (default): the ONNX Runtime backend, [`Backend::Ort`].
//! * `tract`: the pure-Rust tract backend, [`Backend::Tract`] (`tract_engine`). Built
//!   with `--no-default-features --features cli,tract`, the crate and its commands
//!   contain no ONNX Runtime code and load no native library.
//! * `cli` (default): the `tpsnet-infer` and `verify` commands and the `cli` module, with clap, indicatif and anyhow, and CIFAR-10 downloading for
//!   `verify --download`. A program that embeds the runtime turns it off and names its
//!   backend:
//!
//! ```toml
//! [dependencies]
//! tpsnet-runtime = { path = "../tpsnet-zoo/runtime", default-features = false, features = ["ort"] }
//! ```
//!
//! `examples/standalone/` in the repository is such a program, built and run in CI.
//!
//! # Example
//!
//! ```no_run
//! use tpsnet_runtime::{Classifier, SessionOptions, preprocess, registry};
//!
//! # fn main() -> Result<(), tpsnet_runtime::Error> {
//! let options = SessionOptions::builder().threads(2).build();
//! // A model name looked up in the models folder, or a path to its .onnx or .json.
//! let model = registry::find_model(Some("airnet"), None)?;
//! let classifier = Classifier::open(&model, &options)?;
//! let images = vec![
//!     preprocess::load_file("cat.jpg".as_ref())?,
//!     preprocess::load_file("ship.png".as_ref())?,
//! ];
//! for p in classifier.classify(&images, 3)? {
//!     println!("{} {:.3}", p.class, p.probability);
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod classify;
#[cfg(feature = "cli")]
pub mod cli;
pub mod error;
pub mod infer;
pub mod models_dir;
#[cfg(feature = "ort")]
pub mod ort_library;
pub mod preprocess;
pub mod registry;
pub mod report;
pub mod session;
#[cfg(feature = "tract")]
pub mod tract_engine;
pub mod verify;

#[cfg(not(any(feature = "ort", feature = "tract")))]
compile_error!(
    "tpsnet-runtime needs a backend: enable the `ort` feature (ONNX Runtime, on by default) or `tract` (pure Rust)"
);

pub use classify::{ClassScore, Classifier, Prediction};
pub use error::{Error, Result};
#[cfg(feature = "ort")]
pub use ort_library::OrtLibrary;
pub use preprocess::InputImage;
pub use session::{Backend, Device, Execution, SessionOptions, SessionOptionsBuilder};
pub use tpsnet_zoo::TtaMode;

/// The workspace README's Rust examples (embedding the runtime), compiled as doctests so
/// that the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
