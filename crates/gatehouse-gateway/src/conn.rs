//! One client connection: the state its socket task, the indexes and the worker links share.
//!
//! The mutable part sits behind the connection's own mutex, which only this connection's socket
//! task and the commands addressed to it take, so it is uncontended on the per-message path.
//! Lock order, never reversed: this mutex, then a shard of an index, then the route log.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use gatehouse_proto::v1::Reject;
use tokio::sync::{Notify, oneshot};

use crate::events::pending::EventQueue;
use crate::queue::SendQueue;

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

/// The mutable part of a connection. Its fields are private: the indexes change the uid and
/// groups, commands the session, the event router the event queue, each through the methods
/// below.
pub(crate) struct ConnState {
    /// The uid bound to the connection, if any (at most one; a uid has many connections): the
    /// index leaves its entry when the connection rebinds or closes.
    uid: Option<String>,
    /// The same uid as bytes, shared into every event without a copy.
    uid_bytes: Bytes,
    /// The groups the connection is in: needed to leave every index when it closes, and told to
    /// the worker in the close event.
    groups: HashSet<String>,
    /// The session, a JSON object; empty means none. Shared into every event without a copy.
    session: Bytes,
    /// Events not yet acknowledged by a worker, and the worker they go to (the event router's
    /// alone: see `events::pending`).
    events: EventQueue,
    /// Resolved with the worker's verdict on the handshake (taken when it arrives).
    verdict: Option<oneshot::Sender<Option<Reject>>>,
}

impl ConnState {
    /// The uid bound to the connection.
    pub(crate) fn uid(&self) -> Option<&str> {
        self.uid.as_deref()
    }

    /// The bound uid as bytes (empty when none), for events.
    pub(crate) fn uid_bytes(&self) -> &Bytes {
        &self.uid_bytes
    }

    /// Binds `uid`; returns the uid it replaces, if any.
    pub(crate) fn set_uid(&mut self, uid: &str) -> Option<String> {
        self.uid_bytes = Bytes::copy_from_slice(uid.as_bytes());
        self.uid.replace(uid.to_owned())
    }

    /// Unbinds the connection if it is bound to `uid`; returns whether it was.
    pub(crate) fn clear_uid(&mut self, uid: &str) -> bool {
        if self.uid.as_deref() != Some(uid) {
            return false;
        }
        self.uid = None;
        self.uid_bytes = Bytes::new();
        true
    }

    /// Whether the connection is in `group`.
    pub(crate) fn in_group(&self, group: &str) -> bool {
        self.groups.contains(group)
    }

    /// How many groups the connection is in.
    pub(crate) fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Records that the connection joined `group`.
    pub(crate) fn add_group(&mut self, group: &str) {
        self.groups.insert(group.to_owned());
    }

    /// Records that the connection left `group`; returns whether it was in it.
    pub(crate) fn remove_group(&mut self, group: &str) -> bool {
        self.groups.remove(group)
    }

    /// Empties the connection's groups (it is closing) and returns them.
    pub(crate) fn take_groups(&mut self) -> HashSet<String> {
        std::mem::take(&mut self.groups)
    }

    /// The session (empty when none).
    pub(crate) fn session(&self) -> &Bytes {
        &self.session
    }

    /// Replaces the session; events numbered from now on carry it.
    pub(crate) fn set_session(&mut self, session: Bytes) {
        self.session = session;
    }

    /// The unacknowledged events.
    pub(crate) fn events(&self) -> &EventQueue {
        &self.events
    }

    /// The unacknowledged events, to change (by the event router).
    pub(crate) fn events_mut(&mut self) -> &mut EventQueue {
        &mut self.events
    }

    /// Takes the waiting handshake's verdict sender (once).
    pub(crate) fn take_verdict(&mut self) -> Option<oneshot::Sender<Option<Reject>>> {
        self.verdict.take()
    }
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
                events: EventQueue::new(),
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
