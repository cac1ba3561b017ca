//! Inference runtime of the TPSNet model zoo, on ONNX Runtime.
//!
//! * [`Classifier`] opens a zoo model from its manifest (or from the ONNX file with the
//!   manifest beside it), refuses a file whose sha256 differs from the manifest, checks the
//!   graph against the manifest's input/output contract, and classifies batches of images
//!   from any number of threads.
//! * [`preprocess`] decodes PNG/JPEG/BMP/GIF/WebP/TIFF of any size and colour type into
//!   the model input (RGB in [0, 1], 32x32), in parallel and under decoding limits.
//! * [`session`] loads ONNX Runtime from `ORT_DYLIB_PATH` and picks the CPU or CUDA
//!   execution provider (CUDA failing is an error unless a CPU fallback is allowed).
//! * [`registry`] finds published models (`models/`, `$TPSNET_MODELS`) and the best one.
//! * [`verify`] measures accuracy on the CIFAR-10 test set and checks manifest claims.
//! * [`infer`] and [`report`] are the library side of the `tpsnet-infer` and `verify`
//!   commands.
//!
//! The crate never links libtorch, and ONNX Runtime is loaded at run time, so it builds
//! anywhere.
//!
//! ```no_run
//! use runtime::{Classifier, SessionOptions, preprocess};
//!
//! # fn main() -> Result<(), runtime::Error> {
//! let options = SessionOptions { threads: 2, ..SessionOptions::default() };
//! let classifier = Classifier::open("models/tpsnet-0123abcd.json", &options)?;
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

pub mod classify;
pub mod cli;
pub mod error;
pub mod infer;
pub mod preprocess;
pub mod registry;
pub mod report;
pub mod session;
pub mod verify;

pub use classify::{ClassScore, Classifier, Prediction};
pub use error::{Error, Result};
pub use preprocess::InputImage;
pub use session::{Device, Execution, SessionOptions};
pub use zoo::TtaMode;
