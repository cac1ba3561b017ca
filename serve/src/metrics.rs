//! Prometheus metrics, kept in memory and rendered in the text exposition format
//! (version 0.0.4) at `GET /metrics`. The names and their meaning are listed in
//! `docs/serving.md`.
//!
//! Everything is a plain counter, gauge or histogram behind a mutex or an atomic: a
//! request touches them a handful of times, far below what would contend.
//!
//! Label order is fixed: the request families carry `endpoint`, then `model` (only for
//! a request naming a model the server knows), then `code` (errors) or `le` (buckets),
//! e.g. `tpsnet_request_errors_total{endpoint="infer",model="resnet20",code="503"}`.
//! The per-model families carry `model` first.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the batch-size histogram (images per ONNX Runtime call).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A cumulative histogram with fixed bucket bounds.
#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative; the last one is `+Inf`).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram with these bucket upper bounds (ascending; `+Inf` is added).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one observation in the first bucket whose bound is at least `value`.
    pub fn observe(&mut self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the observed values.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, &bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i];
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[self.bounds.len()];
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

/// The request families' numbers of one set of labels.
#[derive(Default, Debug)]
struct RequestStats {
    requests: u64,
    /// Error answers (status >= 400) by status code.
    errors: BTreeMap<u16, u64>,
    duration: Option<Histogram>,
}

impl RequestStats {
    fn record(&mut self, status: u16, elapsed: Duration) {
        self.requests += 1;
        if status >= 400 {
            *self.errors.entry(status).or_default() += 1;
        }
        self.duration
            .get_or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }
}

/// The requests of one endpoint: each is counted once, under the model it names if the
/// server knows that model, else under no model.
#[derive(Default, Debug)]
struct EndpointStats {
    /// Requests that name no model, or a model the server does not know.
    unlabelled: RequestStats,
    /// Requests that name a model the server knows, by model name.
    models: BTreeMap<String, RequestStats>,
}

impl EndpointStats {
    /// Each set of labels with its numbers, in rendering order: `endpoint="E"` (if any
    /// request had no model), then `endpoint="E",model="NAME"` by name.
    fn labelled(&self, endpoint: &str) -> Vec<(String, &RequestStats)> {
        let unlabelled = (self.unlabelled.requests > 0).then(|| {
            (
                format!("endpoint=\"{}\"", escape(endpoint)),
                &self.unlabelled,
            )
        });
        unlabelled
            .into_iter()
            .chain(self.models.iter().map(|(model, stats)| {
                (
                    format!(
                        "endpoint=\"{}\",model=\"{}\"",
                        escape(endpoint),
                        escape(model)
                    ),
                    stats,
                )
            }))
            .collect()
    }
}

/// The server's metrics. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    model_labels: String,
    /// `model="NAME"`: the label of this model's batching families.
    model_label: String,
    /// The request families, by endpoint (and within one, by model).
    endpoints: Mutex<BTreeMap<&'static str, EndpointStats>>,
    batch_size: Mutex<Histogram>,
    queue_duration: Mutex<Histogram>,
    inference_duration: Mutex<Histogram>,
    queue_images: AtomicI64,
    in_flight: AtomicI64,
    open_connections: AtomicI64,
    refused_connections: AtomicU64,
    /// Connections closed for passing a time limit, by phase (`idle`, `headers`, `body`).
    connection_timeouts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Metrics for a server of `model` (name), `version` on `provider`; these become the
    /// labels of `tpsnet_model_info`.
    pub fn new(model: &str, version: &str, provider: &str) -> Self {
        Metrics {
            model_labels: format!(
                "model=\"{}\",version=\"{}\",provider=\"{}\"",
                escape(model),
                escape(version),
                escape(provider)
            ),
            model_label: format!("model=\"{}\"", escape(model)),
            endpoints: Mutex::new(BTreeMap::new()),
            batch_size: Mutex::new(Histogram::new(BATCH_BUCKETS)),
            queue_duration: Mutex::new(Histogram::new(LATENCY_BUCKETS)),
            inference_duration: Mutex::new(Histogram::new(LATENCY_BUCKETS)),
            queue_images: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            open_connections: AtomicI64::new(0),
            refused_connections: AtomicU64::new(0),
            connection_timeouts: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one answered request of `endpoint`, labelled `model="NAME"` when `model`
    /// is given.
    ///
    /// Pass only the name of a model the server knows, never a name as a client sent
    /// it: every distinct name becomes a series of its own, so unknown names would let
    /// clients grow the metrics without bound. The server's routes record through
    /// `Shared::record_request`, which drops names the repository does not know.
    pub fn record_request(
        &self,
        endpoint: &'static str,
        model: Option<&str>,
        status: u16,
        elapsed: Duration,
    ) {
        let mut map = lock(&self.endpoints);
        let e = map.entry(endpoint).or_default();
        match model {
            None => e.unlabelled.record(status, elapsed),
            // The name is copied once, on its first request.
            Some(name) => match e.models.get_mut(name) {
                Some(stats) => stats.record(status, elapsed),
                None => e
                    .models
                    .entry(name.to_string())
                    .or_default()
                    .record(status, elapsed),
            },
        }
    }

    /// Records one ONNX Runtime call of `images` images taking `elapsed`.
    pub fn record_batch(&self, images: usize, elapsed: Duration) {
        lock(&self.batch_size).observe(images as f64);
        lock(&self.inference_duration).observe(elapsed.as_secs_f64());
    }

    /// Records how long one request waited in the queue before its batch started.
    pub fn record_queue_wait(&self, waited: Duration) {
        lock(&self.queue_duration).observe(waited.as_secs_f64());
    }

    /// Adds `delta` images to the queue gauge.
    pub fn add_queue_images(&self, delta: i64) {
        self.queue_images.fetch_add(delta, Ordering::Relaxed);
    }

    /// Adds `delta` to the in-flight requests gauge.
    pub fn add_in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Adds `delta` to the open connections gauge.
    pub fn add_open_connections(&self, delta: i64) {
        self.open_connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> i64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// Counts one connection refused for going past `--max-connections`.
    pub fn record_connection_refused(&self) {
        self.refused_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one connection closed because the limit of `phase` passed.
    pub fn record_connection_timeout(&self, phase: &'static str) {
        *lock(&self.connection_timeouts).entry(phase).or_default() += 1;
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A copy of the batch-size histogram.
    pub fn batch_sizes(&self) -> Histogram {
        lock(&self.batch_size).clone()
    }

    /// Everything in the Prometheus text format, this instance's batching families
    /// labelled with its model.
    pub fn render(&self) -> String {
        self.render_with_models(&[self])
    }

    /// The server-wide families (requests, connections) of this instance and the
    /// per-model families of each of `models` (each model's own instance, its samples
    /// labelled `model="NAME"`), in the Prometheus text format. The request families
    /// are labelled by endpoint and by the model recorded with each request (see
    /// [`record_request`](Self::record_request)).
    pub fn render_with_models(&self, models: &[&Metrics]) -> String {
        let mut out = String::with_capacity(8192);
        render_model_families(&mut out, models);
        let endpoints = lock(&self.endpoints);
        // Every set of labels of the request families: by endpoint, then unlabelled
        // before each known model by name.
        let labelled: Vec<(String, &RequestStats)> = endpoints
            .iter()
            .flat_map(|(endpoint, e)| e.labelled(endpoint))
            .collect();
        header(
            &mut out,
            "tpsnet_requests_total",
            "counter",
            "Requests answered (REST and gRPC), by endpoint and, for a request naming a model this server knows, model.",
        );
        for (labels, stats) in &labelled {
            let _ = writeln!(out, "tpsnet_requests_total{{{labels}}} {}", stats.requests);
        }
        header(
            &mut out,
            "tpsnet_request_errors_total",
            "counter",
            "Requests answered with an error status (4xx, 5xx; gRPC calls by the HTTP status REST would answer), by endpoint, model (as in tpsnet_requests_total) and status code.",
        );
        for (labels, stats) in &labelled {
            for (code, n) in &stats.errors {
                let _ = writeln!(
                    out,
                    "tpsnet_request_errors_total{{{labels},code=\"{code}\"}} {n}"
                );
            }
        }
        header(
            &mut out,
            "tpsnet_request_duration_seconds",
            "histogram",
            "Time from the request's arrival to its answer, by endpoint and model (as in tpsnet_requests_total).",
        );
        for (labels, stats) in &labelled {
            if let Some(h) = &stats.duration {
                h.render(&mut out, "tpsnet_request_duration_seconds", labels);
            }
        }
        drop(endpoints);
        header(
            &mut out,
            "tpsnet_in_flight_requests",
            "gauge",
            "Requests being answered.",
        );
        let _ = writeln!(out, "tpsnet_in_flight_requests {}", self.in_flight());
        self.render_connections(&mut out);
        out
    }

    fn render_connections(&self, out: &mut String) {
        header(
            out,
            "tpsnet_open_connections",
            "gauge",
            "HTTP connections open (--max-connections limits this).",
        );
        let _ = writeln!(out, "tpsnet_open_connections {}", self.open_connections());
        header(
            out,
            "tpsnet_connections_refused_total",
            "counter",
            "Connections answered 503 and closed because --max-connections were open.",
        );
        let _ = writeln!(
            out,
            "tpsnet_connections_refused_total {}",
            self.refused_connections.load(Ordering::Relaxed)
        );
        header(
            out,
            "tpsnet_connection_timeouts_total",
            "counter",
            "Connections closed for passing a time limit, by phase: idle (--keep-alive-timeout-s), headers (--header-timeout-s), body (--body-timeout-s; the request is answered 408).",
        );
        for (phase, n) in lock(&self.connection_timeouts).iter() {
            let _ = writeln!(
                out,
                "tpsnet_connection_timeouts_total{{phase=\"{phase}\"}} {n}"
            );
        }
    }
}

/// Which of a model's histograms a family renders.
type ModelHistogram = fn(&Metrics) -> &Mutex<Histogram>;

/// The per-model families: `tpsnet_model_info`, the batching histograms and the queue
/// gauge, one labelled set of samples per model.
fn render_model_families(out: &mut String, models: &[&Metrics]) {
    header(
        out,
        "tpsnet_model_info",
        "gauge",
        "The models this server serves (always 1; the labels carry the facts).",
    );
    for m in models {
        let _ = writeln!(out, "tpsnet_model_info{{{}}} 1", m.model_labels);
    }
    let histograms: [(&str, &str, ModelHistogram); 3] = [
        (
            "tpsnet_batch_size",
            "Images per ONNX Runtime call (dynamic batching merges concurrent requests), by model.",
            |m| &m.batch_size,
        ),
        (
            "tpsnet_queue_duration_seconds",
            "Time a request waited in the batching queue before its batch started, by model.",
            |m| &m.queue_duration,
        ),
        (
            "tpsnet_inference_duration_seconds",
            "Time of one ONNX Runtime call (one batch), by model.",
            |m| &m.inference_duration,
        ),
    ];
    for (name, help, histogram) in histograms {
        header(out, name, "histogram", help);
        for m in models {
            lock(histogram(m)).render(out, name, &m.model_label);
        }
    }
    header(
        out,
        "tpsnet_queue_images",
        "gauge",
        "Images admitted and waiting for their batch to start (--max-queue limits this), by model.",
    );
    for m in models {
        let _ = writeln!(
            out,
            "tpsnet_queue_images{{{}}} {}",
            m.model_label,
            m.queue_images.load(Ordering::Relaxed)
        );
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Locks a metrics mutex; a panic elsewhere while holding it leaves only numbers behind,
/// which stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_with_inf() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert_eq!(
            out,
            "x_bucket{a=\"b\",le=\"1\"} 2\nx_bucket{a=\"b\",le=\"2\"} 3\nx_bucket{a=\"b\",le=\"+Inf\"} 4\nx_sum{a=\"b\"} 6\nx_count{a=\"b\"} 4\n"
        );
    }

    #[test]
    fn render_has_every_family_and_escapes_labels() {
        let m = Metrics::new("res\"net", "v1", "CPUExecutionProvider");
        m.record_request("infer", None, 200, Duration::from_millis(3));
        m.record_request("infer", None, 503, Duration::from_millis(1));
        m.record_batch(8, Duration::from_millis(2));
        m.record_queue_wait(Duration::from_millis(1));
        let text = m.render();
        for needle in [
            "tpsnet_model_info{model=\"res\\\"net\",version=\"v1\",provider=\"CPUExecutionProvider\"} 1",
            "tpsnet_requests_total{endpoint=\"infer\"} 2",
            "tpsnet_request_errors_total{endpoint=\"infer\",code=\"503\"} 1",
            "tpsnet_request_duration_seconds_count{endpoint=\"infer\"} 2",
            "tpsnet_batch_size_bucket{model=\"res\\\"net\",le=\"4\"} 0",
            "tpsnet_batch_size_bucket{model=\"res\\\"net\",le=\"8\"} 1",
            "tpsnet_batch_size_sum{model=\"res\\\"net\"} 8",
            "tpsnet_queue_duration_seconds_count{model=\"res\\\"net\"} 1",
            "tpsnet_inference_duration_seconds_count{model=\"res\\\"net\"} 1",
            "tpsnet_queue_images{model=\"res\\\"net\"} 0",
            "tpsnet_in_flight_requests 0",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
        }
    }

    #[test]
    fn request_families_carry_the_model_label_only_when_given() {
        let m = Metrics::new("", "", "");
        let ms = Duration::from_millis;
        m.record_request("infer", Some("b"), 200, ms(3));
        m.record_request("infer", Some("a\"x"), 503, ms(1));
        m.record_request("infer", None, 404, ms(1));
        m.record_request("infer", Some("b"), 200, ms(2));
        m.record_request("health_live", None, 200, ms(0));
        m.record_request("classify", Some("b"), 413, ms(1));
        let text = m.render_with_models(&[]);
        let samples = |prefix: &str| -> Vec<&str> {
            text.lines().filter(|l| l.starts_with(prefix)).collect()
        };
        // By endpoint; within one, no model first, then each model by name.
        assert_eq!(
            samples("tpsnet_requests_total"),
            [
                "tpsnet_requests_total{endpoint=\"classify\",model=\"b\"} 1",
                "tpsnet_requests_total{endpoint=\"health_live\"} 1",
                "tpsnet_requests_total{endpoint=\"infer\"} 1",
                "tpsnet_requests_total{endpoint=\"infer\",model=\"a\\\"x\"} 1",
                "tpsnet_requests_total{endpoint=\"infer\",model=\"b\"} 2",
            ]
        );
        assert_eq!(
            samples("tpsnet_request_errors_total"),
            [
                "tpsnet_request_errors_total{endpoint=\"classify\",model=\"b\",code=\"413\"} 1",
                "tpsnet_request_errors_total{endpoint=\"infer\",code=\"404\"} 1",
                "tpsnet_request_errors_total{endpoint=\"infer\",model=\"a\\\"x\",code=\"503\"} 1",
            ]
        );
        assert_eq!(
            samples("tpsnet_request_duration_seconds_count"),
            [
                "tpsnet_request_duration_seconds_count{endpoint=\"classify\",model=\"b\"} 1",
                "tpsnet_request_duration_seconds_count{endpoint=\"health_live\"} 1",
                "tpsnet_request_duration_seconds_count{endpoint=\"infer\"} 1",
                "tpsnet_request_duration_seconds_count{endpoint=\"infer\",model=\"a\\\"x\"} 1",
                "tpsnet_request_duration_seconds_count{endpoint=\"infer\",model=\"b\"} 2",
            ]
        );
        for needle in [
            "tpsnet_request_duration_seconds_bucket{endpoint=\"infer\",model=\"b\",le=\"0.0025\"} 1",
            "tpsnet_request_duration_seconds_bucket{endpoint=\"infer\",model=\"b\",le=\"0.005\"} 2",
            "tpsnet_request_duration_seconds_sum{endpoint=\"infer\",model=\"b\"} 0.005",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
        }
    }
}
