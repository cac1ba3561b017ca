//! Dynamic batching: concurrent requests are merged into one ONNX Runtime call.
//!
//! Requests enter a bounded queue, counted in images admitted but not yet running
//! (those in a batch still being formed count too). A worker task with nothing to do
//! sleeps until a request arrives; a free worker takes the oldest request and, at once,
//! every queued request after it whose images still fit in
//! [`ServerConfig::max_batch`](crate::ServerConfig::max_batch), and runs them as one batch.
//! It never waits for company by default: merging happens because requests queue up
//! while the previous batch runs, so batches grow with the load and a lone request costs
//! no more than without batching (the policy of Triton's dynamic batcher, whose
//! `max_queue_delay_microseconds` defaults to 0). Waiting is opt-in:
//! with [`ServerConfig::max_delay`](crate::ServerConfig::max_delay) above zero, a batch
//! that is not full keeps taking newcomers until its oldest request has waited that long.
//! The batch runs on tokio's blocking pool (ONNX Runtime blocks its thread) and every
//! request gets its own rows of logits back through a oneshot channel.
//!
//! Requests are never reordered: a request that does not fit in the batch being formed
//! starts the next one. A request whose client went away before its batch formed is
//! dropped unrun.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use runtime::{Classifier, InputImage};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// Why a request got no logits.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error(
        "the server is busy: {queued} image(s) are waiting and the queue holds at most {limit}; retry shortly"
    )]
    QueueFull { queued: usize, limit: usize },
    #[error(
        "the request holds {images} images but the server queues at most {limit}; split it into smaller requests"
    )]
    TooManyImages { images: usize, limit: usize },
    #[error("the server is shutting down; retry against another replica or after its restart")]
    ShuttingDown,
    #[error("inference failed: {0}")]
    Inference(String),
}

type Reply = oneshot::Sender<Result<Vec<f32>, BatchError>>;

struct Job {
    images: Vec<InputImage>,
    enqueued: Instant,
    reply: Reply,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    /// Images admitted whose batch has not started: those in `jobs` and those in
    /// batches being formed. The queue limit applies to this number.
    images: usize,
    /// No new requests; workers stop once the queue is empty.
    closed: bool,
    /// Shutting down: run what is queued without waiting for the delay.
    flush: bool,
}

struct Queue {
    state: Mutex<QueueState>,
    changed: Notify,
    metrics: Arc<Metrics>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // The state is a queue of owned jobs, consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pops the front job if `fits` accepts it, dropping jobs whose client is gone.
    fn pop_front_if(
        &self,
        state: &mut QueueState,
        fits: impl Fn(&Job) -> bool,
    ) -> Option<Option<Job>> {
        loop {
            let front = state.jobs.front()?;
            if !front.reply.is_closed() && !fits(front) {
                return Some(None);
            }
            let job = state.jobs.pop_front().expect("front exists");
            if !job.reply.is_closed() {
                return Some(Some(job));
            }
            self.release(state, job.images.len());
        }
    }

    /// Takes `images` images off the queue's count (their batch started, or their
    /// client went away).
    fn release(&self, state: &mut QueueState, images: usize) {
        state.images -= images;
        self.metrics.add_queue_images(-(images as i64));
    }

    /// The oldest live job; `None` once the queue is closed and empty.
    async fn first(&self) -> Option<Job> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if let Some(Some(job)) = self.pop_front_if(&mut s, |_| true) {
                    return Some(job);
                }
                if s.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// The next job if it fits in `room` images. Without a deadline only a job already
    /// queued is taken; with one, newcomers are awaited until then.
    async fn next_fitting(
        &self,
        room: usize,
        deadline: Option<tokio::time::Instant>,
    ) -> Option<Job> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                match self.pop_front_if(&mut s, |j| j.images.len() <= room) {
                    Some(found) => return found,
                    None if s.closed || s.flush => return None,
                    None => {}
                }
            }
            let deadline = deadline?;
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// The handle requests are submitted through; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    queue: Arc<Queue>,
    max_queue: usize,
}

impl std::fmt::Debug for Batcher {
    // The queue holds requests' images; its length is what is worth showing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("queued_images", &self.queue.lock().images)
            .field("max_queue", &self.max_queue)
            .finish_non_exhaustive()
    }
}

/// The worker tasks of a [`Batcher`]; [`Workers::join`] waits for them after
/// [`Batcher::close`].
#[derive(Debug)]
pub struct Workers(Vec<JoinHandle<()>>);

impl Workers {
    /// Waits until every worker has answered the requests left in the queue and stopped.
    pub async fn join(self) {
        for handle in self.0 {
            // A worker only ends by returning; a panic was already reported by tokio.
            let _ = handle.await;
        }
    }
}

impl Batcher {
    /// Starts `workers` batching tasks on the current tokio runtime.
    pub fn start(
        classifier: Arc<Classifier>,
        metrics: Arc<Metrics>,
        max_batch: usize,
        max_delay: Duration,
        max_queue: usize,
        workers: usize,
    ) -> (Batcher, Workers) {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            changed: Notify::new(),
            metrics,
        });
        let handles = (0..workers.max(1))
            .map(|_| {
                tokio::spawn(work(
                    Arc::clone(&queue),
                    Arc::clone(&classifier),
                    max_batch.max(1),
                    max_delay,
                ))
            })
            .collect();
        (
            Batcher {
                queue,
                max_queue: max_queue.max(1),
            },
            Workers(handles),
        )
    }

    /// Queues `images` and waits for their logits (`images.len() * classes` values).
    pub async fn logits(&self, images: Vec<InputImage>) -> Result<Vec<f32>, BatchError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let answer = self.submit(images)?;
        answer.await.unwrap_or_else(|_| {
            // Workers answer every job they take; a dropped sender means the worker died.
            Err(BatchError::Inference(
                "the batching worker stopped before answering".into(),
            ))
        })
    }

    fn submit(
        &self,
        images: Vec<InputImage>,
    ) -> Result<oneshot::Receiver<Result<Vec<f32>, BatchError>>, BatchError> {
        let n = images.len();
        if n > self.max_queue {
            return Err(BatchError::TooManyImages {
                images: n,
                limit: self.max_queue,
            });
        }
        let (reply, answer) = oneshot::channel();
        {
            let mut s = self.queue.lock();
            if s.closed {
                return Err(BatchError::ShuttingDown);
            }
            if s.images + n > self.max_queue {
                return Err(BatchError::QueueFull {
                    queued: s.images,
                    limit: self.max_queue,
                });
            }
            s.jobs.push_back(Job {
                images,
                enqueued: Instant::now(),
                reply,
            });
            s.images += n;
            self.queue.metrics.add_queue_images(n as i64);
        }
        self.queue.changed.notify_waiters();
        Ok(answer)
    }

    /// Images admitted whose batch has not started yet.
    pub fn queued_images(&self) -> usize {
        self.queue.lock().images
    }

    /// From now on batches run as soon as a worker is free, without waiting for an
    /// opt-in delay (used while shutting down, so in-flight requests finish promptly).
    pub fn flush(&self) {
        self.queue.lock().flush = true;
        self.queue.changed.notify_waiters();
    }

    /// Refuses new requests; the workers answer what is queued, then stop.
    pub fn close(&self) {
        {
            let mut s = self.queue.lock();
            s.closed = true;
            s.flush = true;
        }
        self.queue.changed.notify_waiters();
    }
}

async fn work(
    queue: Arc<Queue>,
    classifier: Arc<Classifier>,
    max_batch: usize,
    max_delay: Duration,
) {
    while let Some(first) = queue.first().await {
        // No delay (the default): the batch is what is queued right now.
        let deadline = (!max_delay.is_zero())
            .then(|| tokio::time::Instant::from_std(first.enqueued + max_delay));
        let mut images = first.images.len();
        let mut batch = vec![first];
        while images < max_batch {
            match queue.next_fitting(max_batch - images, deadline).await {
                Some(job) => {
                    images += job.images.len();
                    batch.push(job);
                }
                None => break,
            }
        }
        queue.release(&mut queue.lock(), images);
        run_batch(&queue.metrics, &classifier, batch).await;
    }
}

async fn run_batch(metrics: &Metrics, classifier: &Arc<Classifier>, batch: Vec<Job>) {
    let started = Instant::now();
    let mut images = Vec::with_capacity(batch.iter().map(|j| j.images.len()).sum());
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        metrics.record_queue_wait(started.duration_since(job.enqueued));
        replies.push((job.images.len(), job.reply));
        images.extend(job.images);
    }
    let n = images.len();
    let worker = Arc::clone(classifier);
    let result = tokio::task::spawn_blocking(move || worker.logits(&images)).await;
    metrics.record_batch(n, started.elapsed());
    match result {
        Ok(Ok(logits)) => {
            let per_image = logits.len() / n.max(1);
            let mut rows = logits.into_iter();
            for (count, reply) in replies {
                let mine: Vec<f32> = rows.by_ref().take(count * per_image).collect();
                let _ = reply.send(Ok(mine));
            }
        }
        Ok(Err(e)) => {
            let e = BatchError::Inference(e.to_string());
            for (_, reply) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(join) => {
            let e = BatchError::Inference(format!("the inference thread failed: {join}"));
            for (_, reply) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
