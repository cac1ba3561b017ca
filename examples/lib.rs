//! Examples of embedding the TPSNet zoo in Rust programs; the code is in the examples
//! themselves:
//!
//! * `classify_one.rs`: classify one image file with a [`tpsnet_runtime::Classifier`];
//! * `serve.rs`: serve a model over HTTP with [`tpsnet_serve::Server`] (image uploads,
//!   KServe v2 inference, metrics), the library behind `tpsnet-serve`.
//!
//! (Cargo needs a library or binary target in every package; this one holds no code.)
