//! Group commit: one writer thread turns a queue of single appends into batched transactions.
//!
//! Every caller enqueues its message with a oneshot for the answer. The writer takes whatever
//! is queued (at least one message, at most `max_batch`), appends it with one
//! [`Store::append`] transaction, and only after the commit answers every caller. There is no
//! timer: under light load a batch is a single message and nobody waits for a batch to fill;
//! under heavy load the queue fills while a transaction runs, so the next batch is larger and
//! the cost of a commit (round trip, fsync) is shared by many messages.
//!
//! The writer runs on a thread of its own with a single-threaded runtime. A batch is several
//! sequential round trips to the database, and on the caller's runtime each of them would wait
//! behind the handlers that the previous commit just woke (hundreds at a time under load), so
//! the database would sit idle between the statements of one transaction. On its own thread a
//! round trip waits only for the database (bench/analysis.md has the measurement that led here;
//! figures belong to the benchmarks, not to this comment).
//!
//! The writer reports to the `metrics` facade (the process's Prometheus exporter, when one is
//! installed): `gatehouse_chat_commit_batch_items` and `gatehouse_chat_commit_seconds`
//! (histograms, `kind` = `messages` or `markers`), `gatehouse_chat_commit_failures_total`, and the
//! gauges `gatehouse_chat_commit_queue_depth` and `gatehouse_chat_commit_queue_capacity`. They
//! are recorded once per batch, on the writer's thread, before the batch's callers are answered:
//! a caller that has its answer finds its batch counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::StoreError;
use crate::markers::{MarkerBatch, MarkerMove, MarkerRequest};
use crate::model::{Appended, NewMessage};
use crate::store::{BatchOutcome, Store};

/// Sizing of a [`GroupCommitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// Most messages written in one transaction; bounds the latency of one commit and the size
    /// of one statement. Values below 1 count as 1.
    pub max_batch: usize,
    /// Most messages waiting for the writer; when full, `append` waits and `try_append` fails
    /// with [`StoreError::Overloaded`], so memory stays bounded when the database is slow.
    /// Values below 1 count as 1.
    pub queue_capacity: usize,
}

impl Default for GroupCommitConfig {
    /// Returns batches of up to 512 behind a queue of 4,096 (about 8 batches of backlog).
    fn default() -> Self {
        GroupCommitConfig {
            max_batch: 512,
            queue_capacity: 4_096,
        }
    }
}

type Reply = oneshot::Sender<Result<Appended, StoreError>>;
type MarkerReply = oneshot::Sender<Result<MarkerMove, StoreError>>;

#[derive(Debug)]
pub(crate) enum Job {
    /// A message to append.
    Append { message: NewMessage, reply: Reply },
    /// A receipt marker to move (read, delivered): receipts come at twice the rate of
    /// messages in a live chat, so they share the writer's batching instead of paying a
    /// commit each.
    Marker { request: MarkerRequest, reply: MarkerReply },
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Transactions that committed (a batch is one transaction).
    pub(crate) batches_committed: AtomicU64,
    /// Transactions that failed as a whole (every caller of the batch got the error).
    batches_failed: AtomicU64,
    /// New messages written (duplicates and refused items not counted).
    pub(crate) messages_stored: AtomicU64,
}

/// What the writer records about one kind of batch (messages or markers).
pub(crate) struct BatchMeters {
    /// Jobs per batch: how well commits are shared.
    items: Histogram,
    /// How long a batch's transaction took (retries included), whether or not it committed.
    seconds: Histogram,
    /// Batches that failed as a whole: every caller in them got the error.
    failures: Counter,
}

impl BatchMeters {
    fn new(kind: &'static str) -> BatchMeters {
        BatchMeters {
            items: metrics::histogram!("gatehouse_chat_commit_batch_items", "kind" => kind),
            seconds: metrics::histogram!("gatehouse_chat_commit_seconds", "kind" => kind),
            failures: metrics::counter!("gatehouse_chat_commit_failures_total", "kind" => kind),
        }
    }

    /// Records one batch of `size` jobs that took `elapsed`.
    pub(crate) fn batch(&self, size: usize, elapsed: Duration) {
        self.items.record(size as f64);
        self.seconds.record(elapsed);
    }
}

/// The writer's metric handles, made once at spawn: a batch costs a few atomic operations.
pub(crate) struct Meters {
    pub(crate) messages: BatchMeters,
    pub(crate) markers: BatchMeters,
    /// Jobs waiting for the writer, set after a batch is taken and after it is written.
    pub(crate) queue_depth: Gauge,
}

impl Meters {
    /// Makes the handles (so every family is exported from the start, at zero) and publishes the
    /// queue's capacity, against which the depth is judged.
    fn new(queue_capacity: usize) -> Meters {
        metrics::describe_histogram!(
            "gatehouse_chat_commit_batch_items",
            metrics::Unit::Count,
            "jobs written per group-commit transaction (kind: messages, markers)"
        );
        metrics::describe_histogram!(
            "gatehouse_chat_commit_seconds",
            metrics::Unit::Seconds,
            "time of one group-commit transaction, retries included"
        );
        metrics::describe_counter!(
            "gatehouse_chat_commit_failures_total",
            "group-commit transactions that failed as a whole (every sender in them got an error)"
        );
        metrics::describe_gauge!(
            "gatehouse_chat_commit_queue_depth",
            "messages and receipts waiting for the group-commit writer"
        );
        metrics::describe_gauge!(
            "gatehouse_chat_commit_queue_capacity",
            "most jobs the group-commit queue holds before sends wait and receipts are shed"
        );
        metrics::gauge!("gatehouse_chat_commit_queue_capacity").set(queue_capacity as f64);
        Meters {
            messages: BatchMeters::new("messages"),
            markers: BatchMeters::new("markers"),
            queue_depth: metrics::gauge!("gatehouse_chat_commit_queue_depth"),
        }
    }
}

/// A handle to the single writer of a store; cheap to clone, all clones share the queue.
///
/// The writer stops when the last handle is dropped, after writing what is already queued.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    /// The bounded queue the writer drains: its capacity is the back-pressure.
    queue: mpsc::Sender<Job>,
    /// What the writer counts, read by the caller's metrics.
    counters: Arc<Counters>,
    /// Becomes `true` when the writer has stopped and its runtime is gone.
    stopped: watch::Receiver<bool>,
}

impl GroupCommitter {
    /// Starts the writer on a thread of its own (`group-commit`) and returns its handle once
    /// the thread runs.
    ///
    /// One writer per store handle is the intent: batches only form when all appends of a
    /// process go through the same queue. The writer uses its own handle on the store
    /// ([`Store::for_this_runtime`]), so its round trips never wait for the caller's runtime and
    /// what is queued is still written after that runtime has stopped. Fails with
    /// [`StoreError::Start`] when the operating system refuses the thread or its runtime.
    pub async fn spawn(store: Store, config: GroupCommitConfig) -> Result<GroupCommitter, StoreError> {
        GroupCommitter::start(config, move |jobs, max_batch, counters, meters| async move {
            let store = store.for_this_runtime();
            run_writer(&store, jobs, max_batch, &counters, &meters).await;
            store.close_own_pools().await;
            finish_spawned_tasks().await;
        })
        .await
    }

    /// Starts `writer` on a thread of its own (`group-commit`) with a single-threaded runtime,
    /// and returns the handle once the thread runs.
    pub(crate) async fn start<W, F>(config: GroupCommitConfig, writer: W) -> Result<GroupCommitter, StoreError>
    where
        W: FnOnce(mpsc::Receiver<Job>, usize, Arc<Counters>, Meters) -> F + Send + 'static,
        F: std::future::Future<Output = ()>,
    {
        let (queue, jobs) = mpsc::channel(config.queue_capacity.max(1));
        let meters = Meters::new(config.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let writer_counters = Arc::clone(&counters);
        let max_batch = config.max_batch.max(1);
        let (report, started) = oneshot::channel();
        let (stop, stopped) = watch::channel(false);
        std::thread::Builder::new()
            .name("group-commit".to_owned())
            .spawn(move || {
                // Built here rather than by the caller: were the thread refused, a runtime
                // owned by this closure would be dropped in the caller's async context, which
                // panics.
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = report.send(Err(error));
                        return;
                    }
                };
                let _ = report.send(Ok(()));
                runtime.block_on(writer(jobs, max_batch, writer_counters, meters));
                drop(runtime);
                stop.send_replace(true);
            })
            .map_err(|error| StoreError::Start(Arc::new(error)))?;
        match started.await {
            Ok(Ok(())) => Ok(GroupCommitter {
                queue,
                counters,
                stopped,
            }),
            Ok(Err(error)) => Err(StoreError::Start(Arc::new(error))),
            // The thread ended without a word, which only a panic does.
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Drops this handle and waits until the writer has stopped: once every other handle is
    /// gone too, after writing everything queued. Lets a process flush the queue before it
    /// exits.
    pub async fn shutdown(self) {
        let GroupCommitter { queue, mut stopped, .. } = self;
        drop(queue);
        // An error means the writer's thread ended without saying so (a panic): stopped too.
        let _ = stopped.wait_for(|&done| done).await;
    }

    /// Appends one message through the next batch and returns its result once the batch has
    /// committed (never before: an `Ok` means the message is durable).
    ///
    /// Waits for queue space when the queue is full (back-pressure). Once enqueued, the message
    /// is written even if this future is dropped.
    pub async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job::Append { message, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Moves a receipt marker through the next batch (see [`Store::move_marker`]): markers
    /// queued together are written in one transaction. Fails at once with
    /// [`StoreError::Overloaded`] when the queue is full: a receipt is worth less than a
    /// message and the client repeats it with its next one.
    pub async fn move_marker(&self, request: MarkerRequest) -> Result<MarkerMove, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Job::Marker { request, reply })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Like [`GroupCommitter::append`], but fails at once with [`StoreError::Overloaded`] when
    /// the queue is full, for callers that prefer shedding load to waiting. The queue is checked
    /// when the returned future is first polled.
    pub async fn try_append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Job::Append { message, reply })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Returns how many batch transactions have committed: with `messages_stored` it shows the
    /// achieved batching factor (and proves batching in tests).
    pub fn batches_committed(&self) -> u64 {
        self.counters.batches_committed.load(Ordering::Relaxed)
    }

    /// Returns how many batch transactions failed as a whole (every item got the error).
    pub fn batches_failed(&self) -> u64 {
        self.counters.batches_failed.load(Ordering::Relaxed)
    }

    /// Returns how many new messages committed batches have stored (duplicates not counted).
    pub fn messages_stored(&self) -> u64 {
        self.counters.messages_stored.load(Ordering::Relaxed)
    }

    /// Returns how many messages are queued for the writer right now (a saturation gauge).
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

async fn run_writer(
    store: &Store,
    mut jobs: mpsc::Receiver<Job>,
    max_batch: usize,
    counters: &Counters,
    meters: &Meters,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let mut markers = Markers::default();
    while jobs.recv_many(&mut batch, max_batch).await > 0 {
        meters.queue_depth.set(jobs.len() as f64);
        let mut messages = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            match job {
                Job::Append { message, reply } => {
                    messages.push(message);
                    replies.push(reply);
                }
                Job::Marker { request, reply } => {
                    markers.requests.push(request);
                    markers.replies.push(reply);
                }
            }
        }
        // What queued up meanwhile is set before the callers are answered (in each write),
        // so an idle writer's last word is the empty queue it left. Markers ride in the
        // messages' transaction where the store allows it (SQLite: one commit per round).
        if !messages.is_empty() {
            write_messages(store, messages, replies, &mut markers, counters, meters, &jobs).await;
        }
        if !markers.requests.is_empty() {
            write_markers(store, &mut markers, counters, meters, &jobs).await;
        }
    }
    tracing::debug!("group committer stopped");
}

/// The marker requests of one round and their callers, index for index.
#[derive(Default)]
struct Markers {
    requests: Vec<MarkerRequest>,
    replies: Vec<MarkerReply>,
}

impl Markers {
    /// Answers every caller, in order, and empties the round.
    fn answer(&mut self, results: impl IntoIterator<Item = Result<MarkerMove, StoreError>>) {
        self.requests.clear();
        for (reply, result) in self.replies.drain(..).zip(results) {
            // The caller may have gone away; its marker moved regardless.
            let _ = reply.send(result);
        }
    }

    /// Answers every caller with `error`.
    fn fail(&mut self, error: &StoreError) {
        let size = self.requests.len();
        self.answer(std::iter::repeat_n(error, size).cloned().map(Err));
    }
}

/// Appends one batch of messages and answers their callers. The round's `markers` go into the
/// same transaction when the store can take them (then they are answered and emptied here).
async fn write_messages(
    store: &Store,
    messages: Vec<NewMessage>,
    replies: Vec<Reply>,
    markers: &mut Markers,
    counters: &Counters,
    meters: &Meters,
    jobs: &mpsc::Receiver<Job>,
) {
    let size = messages.len();
    let started = Instant::now();
    let (written, riders) = append_with_riders(store, messages, markers).await;
    let elapsed = started.elapsed();
    meters.messages.batch(size, elapsed);
    if written.is_err() {
        meters.messages.failures.increment(1);
    }
    if let Some(riders) = riders {
        meters.markers.batch(riders, elapsed);
    }
    meters.queue_depth.set(jobs.len() as f64);
    match written {
        Ok(outcome) => {
            if outcome.committed {
                let stored = outcome
                    .results
                    .iter()
                    .filter(|r| matches!(r, Ok(appended) if !appended.duplicate))
                    .count();
                counters.batches_committed.fetch_add(1, Ordering::Relaxed);
                counters.messages_stored.fetch_add(stored as u64, Ordering::Relaxed);
            }
            for (reply, result) in replies.into_iter().zip(outcome.results) {
                // The caller may have gone away; its message is stored regardless.
                let _ = reply.send(result);
            }
        }
        Err(error) => {
            counters.batches_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, size, "group commit batch failed");
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
            // Receipts that rode in the failed transaction fail with it; the client repeats a
            // receipt with its next one.
            if riders.is_some() {
                meters.markers.failures.increment(1);
                markers.fail(&error);
            }
        }
    }
}

/// Runs the append with the round's markers riding in its transaction where the store takes
/// them. Returns the outcome and, when markers rode, how many: then, on success, they are
/// answered here; on failure they are left for the caller to fail with the batch. Markers
/// that did not ride stay queued for a transaction of their own.
async fn append_with_riders(
    store: &Store,
    messages: Vec<NewMessage>,
    markers: &mut Markers,
) -> (Result<BatchOutcome, StoreError>, Option<usize>) {
    let requests = std::mem::take(&mut markers.requests);
    let requests_len = requests.len();
    let mut riders = MarkerBatch::new(&requests).ok().filter(|_| !requests.is_empty());
    let written = store.append_batch(messages, riders.as_mut()).await;
    let rode = match &written {
        Ok(outcome) => outcome.markers_moved,
        Err(_) => riders.is_some() && store.merges_markers(),
    };
    let answers = match riders {
        Some(riders) if rode && written.is_ok() => Some(riders.finish()),
        _ => None,
    };
    markers.requests = requests;
    if let Some(answers) = answers {
        markers.answer(answers);
    }
    (written, rode.then_some(requests_len))
}

/// Moves one batch of markers in one transaction (retried after a deadlock) and answers their
/// callers.
async fn write_markers(
    store: &Store,
    markers: &mut Markers,
    counters: &Counters,
    meters: &Meters,
    jobs: &mpsc::Receiver<Job>,
) {
    let started = Instant::now();
    let requests = &markers.requests;
    let mut outcome = store.move_markers(requests).await;
    for _ in 1..MARKER_ATTEMPTS {
        match &outcome {
            Err(error) if crate::store::is_transient(error) => outcome = store.move_markers(requests).await,
            _ => break,
        }
    }
    let size = requests.len();
    meters.markers.batch(size, started.elapsed());
    if outcome.is_err() {
        meters.markers.failures.increment(1);
    }
    meters.queue_depth.set(jobs.len() as f64);
    match outcome {
        Ok(results) => {
            counters.batches_committed.fetch_add(1, Ordering::Relaxed);
            markers.answer(results);
        }
        Err(error) => {
            counters.batches_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, size, "marker batch failed");
            markers.fail(&error);
        }
    }
}

/// How often a marker batch is tried when it meets a deadlock.
const MARKER_ATTEMPTS: u32 = 3;

/// Waits, for at most 5 s, until the tasks spawned on the writer's runtime have finished. sqlx
/// hands a connection back to its pool in such a task; a runtime dropped with it pending closes
/// the connection instead, and for an in-memory SQLite store that connection is the database.
async fn finish_spawned_tasks() {
    let deadline = Instant::now() + Duration::from_secs(5);
    let runtime = tokio::runtime::Handle::current();
    while runtime.metrics().num_alive_tasks() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markers::Marker;
    use crate::markers::tests::request;
    use crate::plan::tests::direct as dm;

    /// One round of the writer with a message and two receipts costs one SQLite transaction,
    /// and every caller gets the answer it would get from separate transactions.
    #[tokio::test]
    async fn on_sqlite_a_round_of_messages_and_receipts_commits_once() {
        let store = Store::open("sqlite::memory:").await.expect("open");
        let first = store.append(vec![dm("alice", "bob", "m1")]).await;
        assert_eq!(first[0].as_ref().expect("stored").message.seq, 1);
        let counters = Counters::default();
        let meters = Meters::new(8);
        let (_queue, jobs) = mpsc::channel(8);
        let mut markers = Markers::default();
        let mut answers = Vec::new();
        for (uid, seq, kind) in [
            ("bob", 1, Marker::Delivered),
            ("bob", 1, Marker::Read),
            ("zoe", 1, Marker::Read),
        ] {
            let (reply, answer) = oneshot::channel();
            markers.requests.push(request(uid, "d:alice:bob", seq, kind));
            markers.replies.push(reply);
            answers.push(answer);
        }
        let (reply, appended) = oneshot::channel();
        write_messages(
            &store,
            vec![dm("alice", "bob", "m2")],
            vec![reply],
            &mut markers,
            &counters,
            &meters,
            &jobs,
        )
        .await;

        assert!(
            markers.requests.is_empty() && markers.replies.is_empty(),
            "the receipts rode along"
        );
        assert_eq!(counters.batches_committed.load(Ordering::Relaxed), 1, "one transaction");
        assert_eq!(appended.await.expect("answered").expect("stored").message.seq, 2);
        let delivered = answers.remove(0).await.expect("answered").expect("moved");
        assert_eq!((delivered.marker, delivered.moved, delivered.last_seq), (1, true, 2));
        let read = answers.remove(0).await.expect("answered").expect("moved");
        assert_eq!((read.marker, read.moved), (1, true));
        assert!(matches!(
            answers.remove(0).await.expect("answered"),
            Err(StoreError::NotMember { .. })
        ));
        let bob = store.conversations_of("bob").await.expect("conversations");
        assert_eq!(bob[0].unread, 1, "bob read seq 1 of 2");
    }
}
