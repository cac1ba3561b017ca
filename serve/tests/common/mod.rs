//! Shared by the server's tests: a shipped model, real CIFAR-10 test images as PNG
//! (encoded in memory at test time, never written into the repository), an in-process
//! server on 127.0.0.1 and a small HTTP client.
#![allow(dead_code)]

pub mod process;

pub use tpsnet_test_support::{fixtures, http};

use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tpsnet_runtime::{Classifier, SessionOptions, registry};
use tpsnet_serve::repository::{CpuBudget, Repository};
use tpsnet_serve::{Server, ServerConfig};

/// The folder of shipped models (the workspace's `models/`).
pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// The manifest of a shipped model, e.g. `resnet20` (small and fast: what the tests use).
pub fn shipped(name: &str) -> PathBuf {
    registry::resolve_model(Some(name), &models_dir())
        .unwrap_or_else(|e| panic!("shipped model {name}: {e}"))
}

/// Opens a shipped model for serving with batches of up to `max_batch` images.
pub fn classifier(name: &str, max_batch: usize) -> Arc<Classifier> {
    let options = SessionOptions::builder().batch_size(max_batch).build();
    Arc::new(Classifier::open(shipped(name), &options).expect("model opens"))
}

/// The first `n` CIFAR-10 test images as PNG files in memory.
pub fn cifar_pngs(n: usize) -> Vec<Vec<u8>> {
    let data = fixtures::cifar_test();
    (0..n)
        .map(|i| {
            let mut out = Vec::new();
            image::DynamicImage::ImageRgb8(fixtures::cifar_rgb(&data, i))
                .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
                .unwrap();
            out
        })
        .collect()
}

/// A server running on its own tokio runtime in a background thread.
pub struct TestServer {
    pub addr: SocketAddr,
    pub model: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), tpsnet_serve::ServeError>>>,
}

impl TestServer {
    /// Starts a server for `classifier` on 127.0.0.1 (a free port).
    pub fn start(classifier: Arc<Classifier>, config: ServerConfig) -> TestServer {
        TestServer::start_bound(move |addr| Server::bind(addr, classifier, config))
    }

    /// Starts a server for several `classifiers` that loads further models from the
    /// shipped models folder, one batch at a time across all models.
    pub fn start_models(classifiers: Vec<Arc<Classifier>>, config: ServerConfig) -> TestServer {
        TestServer::start_bound(move |addr| {
            let budget = CpuBudget {
                permits: 1,
                threads: 0,
            };
            let options = SessionOptions::default();
            let repository = Repository::new(Some(models_dir()), options, &config, budget);
            Server::bind_models(addr, repository, classifiers, config)
        })
    }

    /// Starts the server `bind` makes (inside the server's own runtime) on a free port.
    fn start_bound<F, Fut>(bind: F) -> TestServer
    where
        F: FnOnce(SocketAddr) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Server, tpsnet_serve::ServeError>>,
    {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = bind("127.0.0.1:0".parse().unwrap())
                    .await
                    .expect("server binds");
                ready_tx
                    .send((server.local_addr(), server.model().name.clone()))
                    .unwrap();
                server
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
            })
        });
        let (addr, model) = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server starts");
        TestServer {
            addr,
            model,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Path of a model route, e.g. `infer` → `/v2/models/resnet20/infer`.
    pub fn route(&self, what: &str) -> String {
        format!("/v2/models/{}/{what}", self.model)
    }

    /// The current value of a metric sample (a line `name{labels} value`).
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let text = http::get(self.addr, "/metrics").text();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    /// Signals shutdown and waits for the server to finish.
    pub fn stop(mut self) -> Result<(), tpsnet_serve::ServeError> {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().expect("server thread")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
