//! [`Server`]: binds the listener, starts the batching workers, serves until the
//! shutdown signal, then finishes the requests in flight.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tpsnet_runtime::Classifier;

use crate::config::ServerConfig;
use crate::connection::{self, ConnContext, Limits, Slot};
use crate::error::ServeError;
use crate::grpc::GrpcListener;
use crate::kserve::ModelInfo;
use crate::metrics::Metrics;
use crate::repository::{CpuBudget, Repository};
use crate::routes::{self, Shared};

/// A bound server, ready to [`run`](Server::run).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tpsnet_runtime::{Classifier, SessionOptions};
/// use tpsnet_serve::{Server, ServerConfig};
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
    /// The first model served (what [`Server::model`] describes).
    first: ModelInfo,
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
        // One model: its workers run their batches freely, as many as it has sessions.
        let budget = CpuBudget {
            permits: config.workers.max(1),
            threads: 0,
        };
        let repository = Repository::new(None, Default::default(), &config, budget);
        Server::bind_models(addr, repository, vec![classifier], config).await
    }

    /// Checks `config`, binds `addr` and serves every one of `classifiers` (at least
    /// one, each under its manifest's name, no name twice) from `repository`, which
    /// sets the shared CPU budget and the models folder that
    /// `POST /v2/repository/models/NAME/load` loads from. Each classifier should hold
    /// [`ServerConfig::workers`] sessions and a batch size of at least
    /// [`ServerConfig::max_batch`].
    pub async fn bind_models(
        addr: SocketAddr,
        repository: Repository,
        classifiers: Vec<Arc<Classifier>>,
        config: ServerConfig,
    ) -> Result<Server, ServeError> {
        config.validate().map_err(ServeError::Config)?;
        let Some(first) = classifiers.first().map(|c| ModelInfo::of(c)) else {
            return Err(ServeError::Config(
                "no model to serve; give at least one".into(),
            ));
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local_addr = listener.local_addr()?;
        for classifier in classifiers {
            if config.warm_up {
                crate::repository::warm_up(Arc::clone(&classifier))
                    .await
                    .map_err(|reason| ServeError::WarmUp {
                        model: classifier.name().to_string(),
                        reason,
                    })?;
            }
            repository.insert(classifier).map_err(ServeError::Config)?;
        }
        Ok(Server {
            listener,
            local_addr,
            shared: Arc::new(Shared {
                repository,
                // Server-wide families only; no model labels (each model has its own).
                metrics: Arc::new(Metrics::new("", "", "")),
                config,
                draining: AtomicBool::new(false),
            }),
            first,
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

    /// The first model served, as the protocol describes it.
    pub fn model(&self) -> &ModelInfo {
        &self.first
    }

    /// The served models.
    pub fn repository(&self) -> &Repository {
        &self.shared.repository
    }

    /// The server-wide metrics (requests, connections; each model's batching metrics
    /// are its own, [`crate::repository::LoadedModel::metrics`]). All of them are
    /// served at `GET /metrics`.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// Serves until `shutdown` completes, then stops accepting connections, closes those
    /// with no request or with a request still arriving, answers every request already
    /// received (queued batches run at once, without waiting for an opt-in batching
    /// delay) and returns. Fails with [`ServeError::ShutdownTimeout`] when that takes
    /// longer than [`ServerConfig::shutdown_timeout`].
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let shared = Arc::clone(&self.shared);
        let config = &shared.config;
        let (stop_tx, stop_rx) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(config.max_connections));
        let ctx = ConnContext {
            app: routes::router(Arc::clone(&shared)),
            limits: Limits::of(config),
            metrics: Arc::clone(&shared.metrics),
            shutdown: stop_rx,
        };
        // gRPC, if bound, serves beside the HTTP accept loop until the same stop signal.
        let grpc = self.grpc.map(|grpc| {
            let mut stopped = ctx.shutdown.clone();
            tokio::spawn(grpc.serve(Arc::clone(&shared), async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        });
        tokio::pin!(shutdown);
        let mut accept_failed_at = None;
        loop {
            let (stream, _) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_failed(&e, &mut accept_failed_at).await;
                        continue;
                    }
                },
            };
            // Small request/answer pairs: do not wait to coalesce segments.
            let _ = stream.set_nodelay(true);
            match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => {
                    let slot = Slot::new(permit, Arc::clone(&shared.metrics));
                    tokio::spawn(connection::serve(stream, ctx.clone(), slot));
                }
                Err(_) => {
                    shared.metrics.record_connection_refused();
                    tokio::spawn(connection::refuse(
                        stream,
                        config.max_connections,
                        config.retry_after_s,
                    ));
                }
            }
        }
        drop(self.listener);
        shared.draining.store(true, Ordering::Relaxed);
        shared.repository.flush();
        let _ = stop_tx.send(true);
        // Every connection holds a slot until it closes: all slots back means all closed.
        let all_closed = async {
            let _ = slots.acquire_many(config.max_connections as u32).await;
            match grpc {
                Some(task) => task
                    .await
                    .map_err(|e| ServeError::Grpc(e.to_string()))
                    .and_then(|served| served),
                None => Ok(()),
            }
        };
        let timeout = config.shutdown_timeout;
        let Ok(closed) = tokio::time::timeout(timeout, all_closed).await else {
            shared.repository.close();
            return Err(ServeError::ShutdownTimeout {
                in_flight: shared.metrics.in_flight().max(0) as u64,
                timeout,
            });
        };
        shared.repository.close();
        shared.repository.join().await;
        closed
    }
}

/// Accepting failed (most often: out of file descriptors). Says so at most once a
/// minute, and pauses so a persistent failure does not spin.
async fn accept_failed(e: &std::io::Error, last_report: &mut Option<std::time::Instant>) {
    if last_report.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(60)) {
        eprintln!(
            "tpsnet-serve: cannot accept a connection: {e}; if it says too many open files, raise `ulimit -n` above --max-connections"
        );
        *last_report = Some(std::time::Instant::now());
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}
