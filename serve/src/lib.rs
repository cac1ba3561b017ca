//! HTTP inference server for the TPSNet zoo, the library behind `tpsnet-serve`.
//!
//! One or several [`tpsnet_runtime::Classifier`]s (the [`repository`]: each model its
//! own queue and batcher, all sharing one CPU budget) answer:
//!
//! * the KServe v2 / Open Inference Protocol REST API ([`kserve`]): `GET /v2`,
//!   `/v2/health/live`, `/v2/health/ready`, `/v2/models/{name}[/versions/{v}]`,
//!   `.../ready`, and `POST .../infer` with FP32 tensors in JSON (or Triton's binary
//!   tensor extension);
//! * image uploads ([`upload`]): `POST /v2/models/{name}/classify` with an image as the
//!   body or as `multipart/form-data` files, answered with classes and probabilities;
//! * Prometheus metrics ([`metrics`]) at `GET /metrics`;
//! * a page to try the served models in a browser ([`page`]) at `GET /`;
//! * the KServe v2 model repository extension ([`repository`]):
//!   `POST /v2/repository/index`, `.../models/{name}/load` and `.../unload`;
//! * optionally, the KServe v2 gRPC API ([`grpc`], `inference.GRPCInferenceService`) on
//!   a second port ([`Server::bind_grpc`]), through the same batcher.
//!
//! Concurrent requests are merged into one ONNX Runtime call by the [`batcher`] (up to
//! [`ServerConfig::max_batch`] images): a free worker runs whatever is queued at once,
//! and waits for company only with an opt-in [`ServerConfig::max_delay`]. [`connection`]
//! caps open connections and closes those that stall (header, body and keep-alive time
//! limits).
//! Limits on the body size, image size and queue length answer `413` or `503` with
//! `Retry-After`; every error is a JSON `{"error": ...}` with a 4xx/5xx status. On the
//! shutdown signal the [`Server`] stops accepting connections and finishes the requests
//! in flight. `docs/serving.md` documents the endpoints, options and metrics.
//!
//! The library knows nothing of the command line: `tpsnet-serve`'s `main` parses the
//! options into a [`ServerConfig`], a [`repository::Repository`] and classifiers and
//! calls [`Server::bind_models`] and [`Server::run`] ([`Server::bind`] serves one
//! classifier).

#![warn(missing_docs)]

pub mod batcher;
pub mod config;
pub mod connection;
pub mod error;
pub mod grpc;
pub mod kserve;
pub mod malloc_arenas;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod repository;
pub mod routes;
pub mod server;
pub mod upload;

pub use config::ServerConfig;
pub use error::{ApiError, ServeError};
pub use server::Server;
