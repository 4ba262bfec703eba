//! [`Batchers`]: one batching task per gateway link, so that the events of all the clients of
//! one gateway share requests.
//!
//! A batch is whatever is queued when a request slot frees up (group commit, no timer): a quiet
//! link sends each event at once, a busy one fills batches up to the event and byte budgets
//! while its `concurrency` requests are in flight. Each client has at most one event here at a
//! time (its handler waits for the result), so batching never reorders a client's events.
//! When the queue is full, a handler waits for room: back-pressure reaches the gateway's
//! window of unacknowledged events and, from there, the client's socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use gatehouse_core::NodeId;
use gatehouse_core::admin::metrics::Histogram;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::backend::{Backend, DeliveryError};
use crate::contract;
use crate::stats::WebhookStats;

/// A link's batcher with no event for this long ends (its gateway may be gone for good).
const IDLE: Duration = Duration::from_secs(60);

/// One event waiting for its result.
struct Job {
    event: Bytes,
    result: oneshot::Sender<Result<Value, DeliveryError>>,
}

/// The batchers of every gateway link, created on a link's first event.
pub(crate) struct Batchers {
    links: DashMap<NodeId, (u64, mpsc::Sender<Job>)>,
    next_id: AtomicU64,
    shared: Arc<Shared>,
}

/// What every batch task uses.
struct Shared {
    backend: Backend,
    max_events: usize,
    max_bytes: usize,
    concurrency: usize,
    stats: Arc<WebhookStats>,
    request_seconds: Histogram,
    /// Whether the last request succeeded: failures are logged when this flips, not per request.
    healthy: AtomicBool,
}

impl Batchers {
    pub(crate) fn new(config: &crate::WebhookConfig, stats: Arc<WebhookStats>) -> Batchers {
        Batchers {
            links: DashMap::new(),
            next_id: AtomicU64::new(0),
            shared: Arc::new(Shared {
                backend: Backend::new(config),
                max_events: config.max_batch_events,
                max_bytes: config.max_batch_bytes,
                concurrency: config.concurrency,
                stats,
                request_seconds: gatehouse_core::admin::metrics::histogram!("gatehouse_webhook_request_seconds"),
                healthy: AtomicBool::new(true),
            }),
        }
    }

    /// Sends `event` in the next batch of its gateway's link; returns the event's raw result.
    pub(crate) async fn submit(self: &Arc<Self>, gateway: NodeId, mut event: Bytes) -> Result<Value, DeliveryError> {
        // Twice at most: a batcher that ended for idleness between the look-up and the send is
        // replaced once.
        for _ in 0..2 {
            let (id, sender) = self.sender(gateway);
            let (result, wait) = oneshot::channel();
            match sender.send(Job { event, result }).await {
                Ok(()) => {
                    return wait
                        .await
                        .unwrap_or_else(|_| Err(DeliveryError::Unreachable("the batch task ended".into())));
                }
                Err(mpsc::error::SendError(job)) => {
                    self.links.remove_if(&gateway, |_, (current, _)| *current == id);
                    event = job.event;
                }
            }
        }
        Err(DeliveryError::Unreachable("no batch task for the link".into()))
    }

    fn sender(self: &Arc<Self>, gateway: NodeId) -> (u64, mpsc::Sender<Job>) {
        if let Some(entry) = self.links.get(&gateway) {
            return entry.value().clone();
        }
        self.links
            .entry(gateway)
            .or_insert_with(|| {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let capacity = self.shared.max_events * (self.shared.concurrency + 1);
                let (sender, receiver) = mpsc::channel(capacity);
                tokio::spawn(run(self.clone(), gateway, id, receiver));
                (id, sender)
            })
            .value()
            .clone()
    }
}

/// The batch loop of one link: wait for a request slot, take what is queued, send it.
async fn run(batchers: Arc<Batchers>, gateway: NodeId, id: u64, mut queue: mpsc::Receiver<Job>) {
    let shared = batchers.shared.clone();
    let slots = Arc::new(Semaphore::new(shared.concurrency));
    let mut carried: Option<Job> = None;
    loop {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let first = match carried.take() {
            Some(job) => job,
            None => match tokio::time::timeout(IDLE, queue.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(_) => {
                    // Idle: leave the map, then send what raced in before the queue closed.
                    batchers.links.remove_if(&gateway, |_, (current, _)| *current == id);
                    queue.close();
                    continue;
                }
            },
        };
        let mut bytes = first.event.len();
        let mut jobs = vec![first];
        while jobs.len() < shared.max_events {
            let Ok(job) = queue.try_recv() else { break };
            if bytes + 1 + job.event.len() > shared.max_bytes {
                carried = Some(job);
                break;
            }
            bytes += 1 + job.event.len();
            jobs.push(job);
        }
        tokio::spawn(send(shared.clone(), jobs, bytes, slot));
    }
}

/// Sends one batch and hands each event its result (or the batch's failure).
async fn send(shared: Arc<Shared>, jobs: Vec<Job>, bytes: usize, slot: OwnedSemaphorePermit) {
    let body = contract::batch_body(jobs.iter().map(|job| &job.event[..]), bytes);
    WebhookStats::inc(&shared.stats.requests);
    WebhookStats::add(&shared.stats.events_sent, jobs.len() as u64);
    let started = tokio::time::Instant::now();
    let outcome = shared.backend.post(body).await.and_then(|response| {
        contract::split_response(&response, jobs.len()).map_err(|e| DeliveryError::Invalid(e.to_string()))
    });
    shared.request_seconds.record(started.elapsed());
    drop(slot);
    match outcome {
        Ok(results) => {
            if !shared.healthy.swap(true, Ordering::Relaxed) {
                tracing::info!("webhook backend answers again");
            }
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = job.result.send(Ok(result));
            }
        }
        Err(error) => {
            note_failure(&shared, &error, jobs.len());
            for job in jobs {
                let _ = job.result.send(Err(error.clone()));
            }
        }
    }
}

fn note_failure(shared: &Shared, error: &DeliveryError, events: usize) {
    if !error.is_retryable() {
        WebhookStats::inc(&shared.stats.batches_refused);
        tracing::warn!(%error, events, "webhook backend refused a batch; its events are acknowledged without commands");
        return;
    }
    WebhookStats::inc(&shared.stats.request_failures);
    if shared.healthy.swap(false, Ordering::Relaxed) {
        tracing::warn!(%error, "webhook backend request failed; events are retried (logged again once it answers)");
    } else {
        tracing::debug!(%error, events, "webhook backend request failed");
    }
}
