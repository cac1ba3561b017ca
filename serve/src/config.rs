//! [`ServerConfig`]: the server's batching policy and limits.

use std::time::Duration;

/// How requests are batched and what the server refuses. See `docs/serving.md` for how
/// to choose these values.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Most images in one ONNX Runtime call. Requests waiting in the queue are merged
    /// until their images reach this number. 1 turns dynamic batching off: every image
    /// gets its own call. A request holding more images than this still runs, alone,
    /// in chunks of this size.
    pub max_batch: usize,
    /// Opt-in: how long the oldest waiting request may wait for others to join its batch
    /// (while the batch is not full) before it runs anyway. Zero, the default, never
    /// waits: a free worker runs whatever is queued at once, so merging happens only
    /// while an earlier batch runs and costs a lone request nothing.
    pub max_delay: Duration,
    /// Most images waiting for their batch to start (queued, or in a batch still being
    /// formed). A request that would overflow it is answered `503 Service Unavailable`
    /// with `Retry-After`; one that holds more images than this alone gets `413`.
    pub max_queue: usize,
    /// Largest request body in bytes; a larger one is answered `413`.
    pub max_body_bytes: usize,
    /// Largest width or height of an uploaded image in pixels; a larger one is answered
    /// `413` before it is decoded.
    pub max_image_side: u32,
    /// Batches that may run at the same time (the classifier should hold as many
    /// sessions). 1 suits a CPU: one batch already uses every core.
    pub workers: usize,
    /// After a shutdown signal, how long in-flight requests may take to finish before
    /// the server stops anyway.
    pub shutdown_timeout: Duration,
    /// Seconds a client told to retry (queue full, shutting down) should wait.
    pub retry_after_s: u32,
    /// Print one line per request to stderr (method, path, status, milliseconds).
    pub access_log: bool,
    /// How long a client may take to send a request's headers, counted from its first
    /// byte (and, on a fresh connection, from the connection's start). Past it the
    /// connection is closed.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive, counted from the end of its
    /// headers. Past it the request is answered `408 Request Timeout` and the connection
    /// closed.
    pub body_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests before the server
    /// closes it.
    pub keep_alive_timeout: Duration,
    /// Most connections open at once; a connection beyond it is answered `503` with
    /// `Retry-After` and closed.
    pub max_connections: usize,
    /// Opt-in: before a model is served (at start and on a repository load), run one full
    /// batch (`max_batch` blank images) through each of its sessions, so that the first
    /// requests neither wait for ONNX Runtime's first-run set-up nor see memory grow.
    /// Off by default: it takes the memory of a full batch at once, for every model.
    pub warm_up: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_batch: 64,
            max_delay: Duration::ZERO,
            max_queue: 1024,
            max_body_bytes: 32 * 1024 * 1024,
            max_image_side: 4096,
            workers: 1,
            shutdown_timeout: Duration::from_secs(30),
            retry_after_s: 1,
            access_log: false,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(60),
            max_connections: 1024,
            warm_up: false,
        }
    }
}

impl ServerConfig {
    /// The same configuration with dynamic batching off (`max_batch` 1).
    pub fn without_batching(mut self) -> Self {
        self.max_batch = 1;
        self
    }

    /// Checks the values make sense together; the message names the option to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_batch == 0 {
            return Err("max batch must be at least 1 (1 turns batching off)".into());
        }
        if self.max_queue == 0 {
            return Err("max queue must be at least 1 image".into());
        }
        if self.workers == 0 {
            return Err("workers must be at least 1".into());
        }
        if self.max_body_bytes < 1024 {
            return Err("max body size must be at least 1024 bytes".into());
        }
        if self.max_image_side == 0 {
            return Err("max image side must be at least 1 pixel".into());
        }
        if self.max_connections == 0 {
            return Err("max connections must be at least 1".into());
        }
        for (value, name) in [
            (self.header_timeout, "header timeout"),
            (self.body_timeout, "body timeout"),
            (self.keep_alive_timeout, "keep-alive timeout"),
        ] {
            if value < Duration::from_millis(1) {
                return Err(format!("{name} must be at least 1 millisecond"));
            }
        }
        Ok(())
    }
}
