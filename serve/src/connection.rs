//! Connections: the accept loop's cap on open connections and the life of one HTTP/1.1
//! connection, with time limits against clients that stall or misbehave.
//!
//! Each connection is in one of four phases, and each phase but the last has its limit:
//!
//! | phase | limit |
//! |---|---|
//! | idle: waiting for a request, none of it received | `keep_alive_timeout` (a fresh connection: `header_timeout`) |
//! | headers: part of a request's headers received | `header_timeout`, from the first byte (a fresh connection: from its start) |
//! | body: headers received, body still arriving | `body_timeout` from the end of the headers, then `408` |
//! | busy: request received, its answer being made | none (the batcher answers or refuses every request) |
//!
//! Past its limit an idle or half-sent connection is closed. A late body is cut short:
//! the handler reading it gets an error, the request is answered `408 Request Timeout`
//! with `Connection: close`. On shutdown, idle and half-received connections are closed at
//! once; busy ones get their answer, then close.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::Request;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// The time limits of one connection, from [`ServerConfig`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub header: Duration,
    pub body: Duration,
    pub keep_alive: Duration,
}

impl Limits {
    pub fn of(config: &ServerConfig) -> Limits {
        Limits {
            header: config.header_timeout,
            body: config.body_timeout,
            keep_alive: config.keep_alive_timeout,
        }
    }
}

/// Where a connection stands; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    Headers,
    Body,
    Busy,
}

impl Phase {
    /// The label of `tpsnet_connection_timeouts_total` for a limit passed in this phase.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Headers => "headers",
            Phase::Body => "body",
            Phase::Busy => "busy",
        }
    }
}

struct PhaseState {
    phase: Phase,
    since: Instant,
    /// No request has been received on this connection yet.
    fresh: bool,
}

/// One connection's phase, shared by its reader, its service and its watchdog.
struct ConnState {
    state: Mutex<PhaseState>,
    changed: Notify,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            state: Mutex::new(PhaseState {
                phase: Phase::Idle,
                since: Instant::now(),
                fresh: true,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PhaseState> {
        // Plain values, consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, phase: Phase) {
        {
            let mut s = self.lock();
            s.phase = phase;
            s.since = Instant::now();
            if phase != Phase::Idle {
                s.fresh = false;
            }
        }
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection starts receiving a request's headers.
    fn on_read(&self) {
        let mut s = self.lock();
        if s.phase == Phase::Idle {
            s.phase = Phase::Headers;
            // A fresh connection's header limit counts from its start.
            if !s.fresh {
                s.since = Instant::now();
            }
            drop(s);
            self.changed.notify_one();
        }
    }

    fn phase(&self) -> (Phase, bool) {
        let s = self.lock();
        (s.phase, s.fresh)
    }

    /// When the current phase's limit passes (`None`: no limit).
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let s = self.lock();
        let limit = match s.phase {
            Phase::Idle if s.fresh => limits.header,
            Phase::Idle => limits.keep_alive,
            Phase::Headers => limits.header,
            // The body reader answers 408 at `limits.body`; this only closes a
            // connection whose handler stopped reading.
            Phase::Body => limits.body + Duration::from_secs(1),
            Phase::Busy => return None,
        };
        Some(s.since + limit)
    }

    /// Completes with the phase whose limit passed.
    async fn expired(&self, limits: &Limits) -> Phase {
        loop {
            let changed = self.changed.notified();
            match self.deadline(limits) {
                Some(at) if at <= Instant::now() => return self.phase().0,
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// The TCP stream, telling the connection's state when bytes arrive.
struct Watched {
    stream: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.on_read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Put in a request's extensions: set when its body did not arrive in time, so the
/// answer becomes `408` whatever the handler made of the cut-short body.
#[derive(Clone, Debug)]
pub struct BodyTimeout {
    timed_out: Arc<AtomicBool>,
    /// The limit that passed, for the error message.
    pub limit: Duration,
}

impl BodyTimeout {
    /// Whether the body's time limit passed before it all arrived.
    pub fn passed(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }
}

/// The error a late body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(Duration);

/// A request body that fails once its time limit passes, and tells the connection
/// when it has all arrived.
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    flag: BodyTimeout,
    state: Arc<ConnState>,
    done: bool,
}

impl TimedBody {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.state.set(Phase::Busy);
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => {
                if this.done || this.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.flag.timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(BodyTimedOut(this.flag.limit).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Holds a connection's slot under `max_connections` and its count in the gauge.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Slot {
    pub fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Slot {
        metrics.add_open_connections(1);
        Slot {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.add_open_connections(-1);
    }
}

/// What every connection task needs.
#[derive(Clone)]
pub(crate) struct ConnContext {
    pub app: Router,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
}

/// Serves one connection until the client closes it, a limit passes, or shutdown.
pub(crate) async fn serve(stream: TcpStream, ctx: ConnContext, slot: Slot) {
    let ConnContext {
        app,
        limits,
        metrics,
        mut shutdown,
    } = ctx;
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Watched {
        stream,
        state: Arc::clone(&state),
    });
    let service = {
        let state = Arc::clone(&state);
        hyper::service::service_fn(move |request| {
            handle(app.clone(), Arc::clone(&state), limits.body, request)
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            phase = state.expired(&limits) => {
                metrics.record_connection_timeout(phase.label());
                break;
            }
            _ = shutdown.wait_for(|s| *s), if !draining => {
                draining = true;
                match state.phase() {
                    // Nothing received, or a request still arriving: no answer is owed.
                    (Phase::Idle, true) | (Phase::Headers | Phase::Body, _) => break,
                    // An answer being made or written: finish it, then close.
                    (Phase::Idle, false) | (Phase::Busy, _) => conn.as_mut().graceful_shutdown(),
                }
            }
        }
    }
    drop(slot);
}

fn handle(
    mut app: Router,
    state: Arc<ConnState>,
    body_limit: Duration,
    request: Request<Incoming>,
) -> impl Future<Output = Result<axum::response::Response, Infallible>> {
    let complete = request.body().is_end_stream();
    state.set(if complete { Phase::Busy } else { Phase::Body });
    let flag = BodyTimeout {
        timed_out: Arc::new(AtomicBool::new(false)),
        limit: body_limit,
    };
    let (mut parts, inner) = request.into_parts();
    parts.extensions.insert(flag.clone());
    let body = TimedBody {
        inner,
        deadline: Box::pin(tokio::time::sleep(body_limit)),
        flag,
        state: Arc::clone(&state),
        done: complete,
    };
    let answer = app.call(Request::from_parts(parts, body));
    async move {
        let response = answer.await;
        state.set(Phase::Idle);
        response
    }
}

/// Answers a connection beyond `max_connections` with `503` and closes it, reading
/// (and dropping) what the client sent for up to a second first, so that closing does
/// not reset the connection before the client has read the answer.
pub(crate) async fn refuse(mut stream: TcpStream, max_connections: usize, retry_after_s: u32) {
    let body = serde_json::json!({
        "error": format!(
            "the server already has {max_connections} connections open (--max-connections); retry shortly"
        )
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {retry_after_s}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let linger = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < 64 * 1024 {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
}
