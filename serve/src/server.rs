//! [`Server`]: binds the listener, starts the batching workers, serves until the
//! shutdown signal, then finishes the requests in flight.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::serve::ListenerExt;
use runtime::Classifier;
use tokio::net::TcpListener;

use crate::batcher::{Batcher, Workers};
use crate::config::ServerConfig;
use crate::error::ServeError;
use crate::grpc::GrpcListener;
use crate::kserve::ModelInfo;
use crate::metrics::Metrics;
use crate::routes::{self, Shared};

/// A bound server, ready to [`run`](Server::run).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use runtime::{Classifier, SessionOptions};
/// use serve::{Server, ServerConfig};
///
/// let classifier = Classifier::open("models/resnet20-3dcf6d04.json", &SessionOptions::default())?;
/// let server = Server::bind(
///     "127.0.0.1:8000".parse()?,
///     Arc::new(classifier),
///     ServerConfig::default(),
/// )
/// .await?;
/// println!("listening on {}", server.local_addr());
/// server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    workers: Workers,
    grpc: Option<GrpcListener>,
}

impl Server {
    /// Checks `config`, binds `addr` and starts the batching workers (on the current
    /// tokio runtime). The classifier should hold [`ServerConfig::workers`] sessions and
    /// a batch size of at least [`ServerConfig::max_batch`].
    pub async fn bind(
        addr: SocketAddr,
        classifier: Arc<Classifier>,
        config: ServerConfig,
    ) -> Result<Server, ServeError> {
        config.validate().map_err(ServeError::Config)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local_addr = listener.local_addr()?;
        let model = ModelInfo::of(&classifier);
        let metrics = Arc::new(Metrics::new(&model.name, &model.version, &model.provider));
        let (batcher, workers) = Batcher::start(
            Arc::clone(&classifier),
            Arc::clone(&metrics),
            config.max_batch,
            config.max_delay,
            config.max_queue,
            config.workers,
        );
        Ok(Server {
            listener,
            local_addr,
            shared: Arc::new(Shared {
                model,
                classifier,
                batcher,
                metrics,
                config,
                draining: AtomicBool::new(false),
            }),
            workers,
            grpc: None,
        })
    }

    /// Also serves the KServe v2 gRPC API ([`crate::grpc`]) on `addr`, through the same
    /// batcher, until the same shutdown.
    pub async fn bind_grpc(mut self, addr: SocketAddr) -> Result<Server, ServeError> {
        self.grpc = Some(GrpcListener::bind(addr).await?);
        Ok(self)
    }

    /// The address the gRPC API is bound to, if [`bind_grpc`](Server::bind_grpc) was called.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(GrpcListener::local_addr)
    }

    /// The address actually bound (port 0 becomes the port the system chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The served model as the protocol describes it.
    pub fn model(&self) -> &ModelInfo {
        &self.shared.model
    }

    /// The server's metrics (also served at `GET /metrics`).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// Serves until `shutdown` completes, then stops accepting connections, answers
    /// every request already received (queued batches run at once, without waiting for
    /// the batching delay) and returns. Fails with [`ServeError::ShutdownTimeout`] when
    /// that takes longer than [`ServerConfig::shutdown_timeout`].
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (signalled_tx, mut signalled) = tokio::sync::watch::channel(false);
        let shared = Arc::clone(&self.shared);
        let on_signal = async move {
            shutdown.await;
            shared.draining.store(true, Ordering::Relaxed);
            shared.batcher.flush();
            let _ = signalled_tx.send(true);
        };
        let listener = self.listener.tap_io(|tcp| {
            // Small request/answer pairs: do not wait to coalesce segments.
            let _ = tcp.set_nodelay(true);
        });
        let http = axum::serve(listener, routes::router(Arc::clone(&self.shared)))
            .with_graceful_shutdown(on_signal)
            .into_future();
        let serving =
            crate::grpc::serve_beside(self.grpc, Arc::clone(&self.shared), signalled.clone(), http);
        let timeout = self.shared.config.shutdown_timeout;
        let deadline = async move {
            if signalled.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(timeout).await;
        };
        tokio::select! {
            result = serving => result?,
            () = deadline => {
                self.shared.batcher.close();
                return Err(ServeError::ShutdownTimeout {
                    in_flight: self.shared.metrics.in_flight().max(0) as u64,
                    timeout,
                });
            }
        }
        self.shared.batcher.close();
        self.workers.join().await;
        Ok(())
    }
}
