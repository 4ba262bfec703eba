//! One client connection: the state its socket task, the indexes and the worker links share.
//!
//! The mutable part sits behind the connection's own mutex, which only this connection's socket
//! task and the commands addressed to it take, so it is uncontended on the per-message path.
//! Lock order, never reversed: this mutex, then a shard of an index, then the route log.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use gatehouse_proto::v1::{Event, Reject};
use tokio::sync::{Notify, oneshot};

use crate::queue::SendQueue;
use crate::workers::WorkerLink;

/// One client connection, shared by its socket task, the uid and group indexes and the worker
/// links.
pub(crate) struct Conn {
    /// The gateway-local connection number (with the gateway id, the client id).
    id: u64,
    /// The app the client asked for (its slot in the gateway's `--app` list): only workers of
    /// that app get its events.
    app_slot: u16,
    /// Frames towards the client (bounded) and the request to close it now. Outside the mutex:
    /// fan-out pushes into it without touching the rest of the state.
    queue: SendQueue,
    /// Everything else that changes, behind the connection's own mutex.
    state: Mutex<ConnState>,
    /// Woken when acknowledgements free room in the connection's window of unacknowledged
    /// events, so that a socket task that stopped reading resumes.
    credit: Notify,
    /// Set once the socket is gone. The entry stays in the table until its last event (the close
    /// event) is acknowledged, so that the events can still be re-sent to another worker.
    closed: AtomicBool,
}

/// The mutable part of a connection.
pub(crate) struct ConnState {
    /// The uid bound to the connection, if any (at most one; a uid has many connections).
    pub uid: Option<String>,
    /// The same uid as bytes, shared into every event without a copy.
    pub uid_bytes: Bytes,
    /// The groups the connection is in: needed to leave every index when it closes.
    pub groups: HashSet<String>,
    /// The session, a JSON object; empty means none.
    pub session: Bytes,
    /// Events not yet acknowledged by a worker, and the worker they go to.
    pub events: EventQueue,
    /// Resolved with the worker's verdict on the handshake (taken when it arrives).
    pub verdict: Option<oneshot::Sender<Option<Reject>>>,
}

/// Events of one connection not yet acknowledged, in order, and where they go.
pub(crate) struct EventQueue {
    /// The sequence number of the last event numbered.
    pub next_seq: u64,
    /// Unacknowledged events, oldest first: re-sent in this order if their worker dies.
    pub pending: VecDeque<Pending>,
    /// The payload bytes of `pending`, for the per-connection and per-gateway byte budgets.
    pub pending_bytes: usize,
    /// How many events at the front of `pending` were sent to `worker`; the rest wait (for a
    /// worker, for a draining worker to finish the ones it has, or for a retry after a nack).
    pub sent: usize,
    /// A nacked event waits for its retry: nothing is sent until then.
    pub held: bool,
    /// Nacks in a row (the retry back-off grows with them; an acknowledgement resets it).
    pub retries: u32,
    /// The worker this connection's events go to while it lives (rendezvous hashing).
    pub worker: Option<Arc<WorkerLink>>,
}

/// An unacknowledged event and its encoded size, computed once: the windows, the batcher and
/// the acknowledgement all need it.
pub(crate) struct Pending {
    pub event: Event,
    pub bytes: u32,
    /// When the event was read, for one event in `events::SAMPLE_EVENTS` (the ack-latency
    /// histogram); `None` for the others, which then cost no clock read.
    pub read_at: Option<std::time::Instant>,
}

impl Conn {
    /// A new connection whose socket task will wait for the handshake verdict on the returned
    /// receiver.
    pub(crate) fn new(id: u64, send_queue: usize) -> (Conn, oneshot::Receiver<Option<Reject>>) {
        let (verdict_tx, verdict_rx) = oneshot::channel();
        let conn = Conn {
            id,
            app_slot: 0,
            queue: SendQueue::new(send_queue),
            state: Mutex::new(ConnState {
                uid: None,
                uid_bytes: Bytes::new(),
                groups: HashSet::new(),
                session: Bytes::new(),
                events: EventQueue {
                    next_seq: 0,
                    pending: VecDeque::new(),
                    pending_bytes: 0,
                    sent: 0,
                    held: false,
                    retries: 0,
                    worker: None,
                },
                verdict: Some(verdict_tx),
            }),
            credit: Notify::new(),
            closed: AtomicBool::new(false),
        };
        (conn, verdict_rx)
    }

    /// The same connection for a client of app `slot` (its place in the gateway's `--app` list).
    pub(crate) fn for_app(self, slot: u16) -> Conn {
        Conn { app_slot: slot, ..self }
    }

    /// The app the client asked for, as its slot in the gateway's `--app` list.
    pub(crate) fn app_slot(&self) -> u16 {
        self.app_slot
    }

    /// The gateway-local connection number.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The connection's send queue.
    pub(crate) fn queue(&self) -> &SendQueue {
        &self.queue
    }

    /// Locks the mutable state.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().expect("connection mutex poisoned")
    }

    /// Waits until acknowledgements free room (see [`Conn::credit`]).
    pub(crate) async fn credit(&self) {
        self.credit.notified().await;
    }

    /// Wakes the socket task waiting in [`Conn::credit`].
    pub(crate) fn grant_credit(&self) {
        self.credit.notify_one();
    }

    /// Whether the socket is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the socket gone; returns `false` if it already was.
    pub(crate) fn mark_closed(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }
}
