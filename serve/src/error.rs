//! Errors: [`ApiError`] is what a client sees (a status and `{"error": message}`);
//! [`ServeError`] is what stops the server itself.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answer: an HTTP status and `{"error": message}` (the shape KServe v2 gives
/// error responses), plus `Retry-After` when the client should try again later.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status of the answer.
    pub status: StatusCode,
    /// The human-readable reason, sent as `{"error": message}`.
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    /// An error answer with any `status` (the helpers below cover the common ones).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// `400 Bad Request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `404 Not Found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// `413 Content Too Large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// `422 Unprocessable Content` (well-formed request, unusable content).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// `500 Internal Server Error`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// `503 Service Unavailable` with `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after_s: u32) -> Self {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A [`crate::ServerConfig`] value is out of range; the message names the field.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The HTTP listener could not bind `addr` (in use, or not permitted).
    #[error(
        "cannot listen on {addr}: {source}; pick another --port (0 lets the system choose) or stop the process using it"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The gRPC listener could not bind `addr`.
    #[error(
        "cannot listen on {addr} for gRPC: {source}; pick another --grpc-port (0 lets the system choose) or stop the process using it"
    )]
    GrpcBind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The gRPC server stopped with an error (its message).
    #[error("the gRPC server failed: {0}")]
    Grpc(String),
    /// A model's warm-up batch failed (the model cannot run).
    #[error("model `{model}` failed its warm-up batch: {reason}")]
    WarmUp {
        /// The model's name.
        model: String,
        /// The runtime's error.
        reason: String,
    },
    /// An I/O error of the HTTP accept loop.
    #[error("the HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
    /// Requests were still in flight when the shutdown timeout passed; the server
    /// stopped without answering them.
    #[error(
        "{in_flight} request(s) still in flight {timeout:?} after the shutdown signal; stopped without them (raise --shutdown-timeout to wait longer)"
    )]
    ShutdownTimeout {
        /// Requests still unanswered when the time ran out.
        in_flight: u64,
        /// The shutdown timeout that passed ([`crate::ServerConfig::shutdown_timeout`]).
        timeout: Duration,
    },
}
