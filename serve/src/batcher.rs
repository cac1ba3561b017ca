//! Dynamic batching: concurrent requests are merged into one ONNX Runtime call.
//!
//! Requests enter a bounded queue, counted in images admitted but not yet running
//! (those in a batch still being formed count too). A worker task with nothing to do
//! sleeps until a request arrives; a free worker takes the oldest request and, at once,
//! every queued request after it whose images still fit in the batch size cap, and runs
//! them as one batch. The cap is at most
//! [`ServerConfig::max_batch`](crate::ServerConfig::max_batch), lower where larger
//! batches were measured to cost more per image (see `BatchCosts`).
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

use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::task::JoinHandle;
use tpsnet_runtime::{Classifier, InputImage};

use crate::metrics::Metrics;

/// Why a request got no logits.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// Admitting the request would put more than `limit` images in the queue (`queued` are
    /// waiting); answered `503` with `Retry-After`.
    #[error(
        "the server is busy: {queued} image(s) are waiting and the queue holds at most {limit}; retry shortly"
    )]
    QueueFull {
        /// Images already waiting.
        queued: usize,
        /// The queue's limit in images ([`crate::ServerConfig::max_queue`]).
        limit: usize,
    },
    /// One request holds more images (`images`) than the whole queue may (`limit`); answered `413`.
    #[error(
        "the request holds {images} images but the server queues at most {limit}; split it into smaller requests"
    )]
    TooManyImages {
        /// Images in the request.
        images: usize,
        /// The queue's limit in images.
        limit: usize,
    },
    /// The server is draining for shutdown and takes no new work; answered `503`.
    #[error("the server is shutting down; retry against another replica or after its restart")]
    ShuttingDown,
    /// ONNX Runtime failed on the batch holding this request (the runtime's message); answered
    /// `500`.
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
    costs: Mutex<BatchCosts>,
}

/// What a batch of each size costs per image, learnt from the batches run, and the
/// batch size cap it implies.
///
/// On a CPU a larger batch is not always cheaper per image: measured on a 2-core Xeon
/// shared with other work (load average 11–14), `resnet20` cost 0.63 ms per image alone
/// or in pairs but 1.5–2.4 ms per image in batches of 4 to 32, while `airnet-wide` was
/// 1.2x cheaper per image at 32 (on the same CPU idle, `resnet20` too was cheaper per
/// image at 32). Merging everything queued then cut throughput in half. So batches are capped
/// at the largest size class whose cost per
/// image is within 5 % of the cheapest class measured (no cap before any batch ran), and
/// a few batches (about 1 % of the images) run uncapped, which measures the sizes the
/// queue offers and keeps the costs current as the load changes.
#[derive(Debug)]
struct BatchCosts {
    /// Seconds per image, an exponential moving average, by size class: class `k`
    /// holds batches of `2^(k-1) + 1 ..= 2^k` images (class 0: one image).
    per_image: Vec<Option<f64>>,
    images: u64,
    explored_images: u64,
}

impl BatchCosts {
    /// Weight of the newest batch in the moving averages.
    const ALPHA: f64 = 0.2;
    /// Sizes this much dearer per image than the cheapest are not formed.
    const TOLERANCE: f64 = 1.05;
    /// Share of the images run in uncapped batches, to re-measure large sizes.
    const EXPLORE_SHARE: f64 = 0.01;

    fn new(max_batch: usize) -> BatchCosts {
        BatchCosts {
            per_image: vec![None; Self::class(max_batch) + 1],
            images: 0,
            explored_images: 0,
        }
    }

    fn class(images: usize) -> usize {
        images.max(1).next_power_of_two().trailing_zeros() as usize
    }

    fn record(&mut self, images: usize, seconds: f64, explored: bool) {
        let Some(slot) = self.per_image.get_mut(Self::class(images)) else {
            return;
        };
        let cost = seconds / images.max(1) as f64;
        *slot = Some(slot.map_or(cost, |old| old + Self::ALPHA * (cost - old)));
        self.images += images as u64;
        if explored {
            self.explored_images += images as u64;
        }
    }

    /// The most images the next batch may hold, and whether it is an uncapped one.
    fn cap(&self, max_batch: usize) -> (usize, bool) {
        let explore = (self.explored_images as f64) < Self::EXPLORE_SHARE * self.images as f64;
        if explore {
            return (max_batch, true);
        }
        let best = self
            .per_image
            .iter()
            .flatten()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let cap = self
            .per_image
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some_and(|c| c <= best * Self::TOLERANCE))
            .map(|(k, _)| 1usize << k)
            .max()
            .unwrap_or(max_batch);
        (cap.min(max_batch), false)
    }
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
        let permits = Arc::new(Semaphore::new(workers.max(1)));
        let policy = crate::config::ServerConfig {
            max_batch,
            max_delay,
            max_queue,
            workers,
            ..Default::default()
        };
        Batcher::start_with_permits(classifier, metrics, &policy, permits)
    }

    /// Starts [`ServerConfig::workers`](crate::ServerConfig::workers) batching tasks
    /// batching as `config` says, whose batches run only while holding one of `permits`.
    /// Batchers of several models that share one semaphore share its CPU budget: at
    /// most as many batches run at once, across all of them, as it has permits. A
    /// worker takes its permit once a request is queued and only then forms its batch,
    /// so requests that arrive while it waits join that batch.
    pub fn start_with_permits(
        classifier: Arc<Classifier>,
        metrics: Arc<Metrics>,
        config: &crate::config::ServerConfig,
        permits: Arc<Semaphore>,
    ) -> (Batcher, Workers) {
        let (max_batch, max_delay, max_queue, workers) = (
            config.max_batch,
            config.max_delay,
            config.max_queue,
            config.workers,
        );
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            changed: Notify::new(),
            metrics,
            costs: Mutex::new(BatchCosts::new(max_batch.max(1))),
        });
        let handles = (0..workers.max(1))
            .map(|_| {
                tokio::spawn(work(
                    Arc::clone(&queue),
                    Arc::clone(&classifier),
                    (max_batch.max(1), max_delay),
                    Arc::clone(&permits),
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
    (max_batch, max_delay): (usize, Duration),
    permits: Arc<Semaphore>,
) {
    while let Some(first) = queue.first().await {
        // No delay (the default): the batch is what is queued right now.
        let deadline = (!max_delay.is_zero())
            .then(|| tokio::time::Instant::from_std(first.enqueued + max_delay));
        let (cap, explored) = lock(&queue.costs).cap(max_batch);
        let mut images = first.images.len();
        let mut batch = vec![first];
        fill(&queue, &mut batch, &mut images, cap, deadline).await;
        // The right to use the CPU budget (shared with other models' batchers). The
        // semaphore is never closed. It is taken after the opt-in wait, so a batch
        // waiting for company does not hold up other models, and what was queued while
        // it was awaited joins the batch.
        let Ok(_permit) = permits.acquire().await else {
            return;
        };
        fill(&queue, &mut batch, &mut images, cap, None).await;
        queue.release(&mut queue.lock(), images);
        let seconds = run_batch(&queue.metrics, &classifier, batch).await;
        lock(&queue.costs).record(images, seconds, explored);
    }
}

/// Adds queued jobs to `batch` while they fit in `cap` images (`images` counts them),
/// waiting for newcomers until `deadline` if there is one.
async fn fill(
    queue: &Queue,
    batch: &mut Vec<Job>,
    images: &mut usize,
    cap: usize,
    deadline: Option<tokio::time::Instant>,
) {
    while *images < cap {
        match queue.next_fitting(cap - *images, deadline).await {
            Some(job) => {
                *images += job.images.len();
                batch.push(job);
            }
            None => break,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain numbers, consistent between statements.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one batch and answers its requests; returns the inference's seconds.
async fn run_batch(metrics: &Metrics, classifier: &Arc<Classifier>, batch: Vec<Job>) -> f64 {
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
    let elapsed = started.elapsed();
    metrics.record_batch(n, elapsed);
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
    elapsed.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::BatchCosts;

    #[test]
    fn the_cap_follows_the_cheapest_size_per_image() {
        let mut c = BatchCosts::new(64);
        // Nothing measured: no cap.
        assert_eq!(c.cap(64), (64, false));
        // Alone 0.6 ms per image, in batches of 28 1.5 ms: batches of one.
        c.record(1, 0.0006, false);
        c.record(28, 28.0 * 0.0015, true);
        c.record(1, 0.0006, false);
        for _ in 0..40 {
            c.record(1, 0.0006, false);
        }
        assert_eq!(c.cap(64), (1, false));
        // Large batches become cheaper (a quieter machine): after re-measuring, they
        // are formed again.
        for _ in 0..20 {
            c.record(28, 28.0 * 0.0003, true);
        }
        assert_eq!(c.cap(64).0, 32);
        // Once too little of the work was uncapped, the next batch is.
        let mut c = BatchCosts::new(64);
        c.record(1, 0.001, false);
        assert_eq!(c.cap(64), (64, true));
        c.record(2, 0.0024, true);
        assert_eq!(c.cap(16), (1, false));
        for _ in 0..200 {
            c.record(1, 0.001, false);
        }
        assert_eq!(c.cap(16), (16, true));
    }
}
