//! The connection table and the uid / group indexes of one gateway.
//!
//! Lock order, never reversed: a connection's own mutex, then a shard of an index, then the
//! route log. The per-message paths take one uncontended per-connection mutex (reading) or one
//! index shard read guard (fan-out); nothing global.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Message;
use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use gatehouse_core::NodeId;
use gatehouse_proto::v1::{Event, Reject, RouteKind};
use tokio::sync::{Notify, oneshot};

use crate::config::GatewayConfig;
use crate::events::WorkerSet;
use crate::queue::{PushError, SendQueue};
use crate::routes::RouteSync;
use crate::stats::Stats;

/// What the socket task of a connection is asked to write.
pub(crate) enum Outbound {
    /// A frame for the client.
    Frame(Message),
    /// Write `last` (if any) after everything queued before it, then close.
    Close { last: Option<Message> },
}

/// One client connection, shared by its socket task, the indexes and the worker links.
pub(crate) struct Conn {
    pub id: u64,
    /// Frames towards the client (bounded by `send_queue`) and the request to close it now.
    pub queue: SendQueue,
    pub inner: Mutex<ConnInner>,
    /// Woken when acknowledgements free room in the unacknowledged-event window.
    pub credit: Notify,
    /// Set once the socket is gone; the entry stays until its last event is acknowledged.
    pub closed: AtomicBool,
}

/// The mutable part of a connection, behind its own mutex.
pub(crate) struct ConnInner {
    pub uid: Option<String>,
    /// The uid as bytes, shared into every event without a copy.
    pub uid_bytes: Bytes,
    pub groups: HashSet<String>,
    /// A JSON object; empty means no session.
    pub session: Bytes,
    pub queue: EventQueue,
    /// Resolved with the worker's verdict on the handshake.
    pub verdict: Option<oneshot::Sender<Option<Reject>>>,
}

/// Events of one connection not yet acknowledged, and the worker they go to.
pub(crate) struct EventQueue {
    pub next_seq: u64,
    pub pending: VecDeque<Event>,
    pub worker: Option<Arc<crate::events::WorkerLink>>,
}

/// A set of connections of one uid or one group, with their send queues for fan-out.
pub(crate) struct Members {
    pub conns: Vec<Arc<Conn>>,
    /// Route-log generation of the key's last appearance; a bind waits for its confirmation.
    pub added_gen: u64,
}

/// The state of one gateway process.
pub(crate) struct Hub {
    pub id: NodeId,
    pub config: GatewayConfig,
    next_conn: AtomicU64,
    pub conns: DashMap<u64, Arc<Conn>>,
    pub uids: DashMap<String, Members>,
    pub groups: DashMap<String, Members>,
    pub open_count: AtomicU64,
    pub routes: Arc<RouteSync>,
    pub workers: WorkerSet,
    pub stats: Stats,
    /// Cancelled when the gateway shuts down: sockets close with 1001.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl Hub {
    pub(crate) fn new(
        id: NodeId,
        config: GatewayConfig,
        routes: Arc<RouteSync>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Hub {
        Hub {
            id,
            config,
            next_conn: AtomicU64::new(1),
            conns: DashMap::new(),
            uids: DashMap::new(),
            groups: DashMap::new(),
            open_count: AtomicU64::new(0),
            routes,
            workers: WorkerSet::default(),
            stats: Stats::default(),
            shutdown,
        }
    }

    /// Creates a connection entry; the socket task takes the receiver.
    pub(crate) fn open_conn(&self) -> (Arc<Conn>, oneshot::Receiver<Option<Reject>>) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (verdict_tx, verdict_rx) = oneshot::channel();
        let conn = Arc::new(Conn {
            id,
            queue: SendQueue::new(self.config.send_queue),
            inner: Mutex::new(ConnInner {
                uid: None,
                uid_bytes: Bytes::new(),
                groups: HashSet::new(),
                session: Bytes::new(),
                queue: EventQueue {
                    next_seq: 0,
                    pending: VecDeque::new(),
                    worker: None,
                },
                verdict: Some(verdict_tx),
            }),
            credit: Notify::new(),
            closed: AtomicBool::new(false),
        });
        self.conns.insert(id, conn.clone());
        self.open_count.fetch_add(1, Ordering::Relaxed);
        (conn, verdict_rx)
    }

    /// Returns a live (not closed) connection.
    pub(crate) fn live_conn(&self, id: u64) -> Option<Arc<Conn>> {
        let conn = self.conns.get(&id)?.clone();
        (!conn.closed.load(Ordering::Acquire)).then_some(conn)
    }

    /// Asks a connection's socket task to close now with `code`.
    pub(crate) fn kill(&self, conn: &Conn, code: u16) {
        conn.queue.kill(code);
    }

    /// Closes every connection with 1001 (the gateway is shutting down).
    pub(crate) fn kill_all(&self) {
        for conn in self.conns.iter() {
            conn.queue.kill(1001);
        }
    }

    /// Queues a frame for a client; a full queue closes the client as a slow consumer.
    pub(crate) fn push(&self, conn: &Conn, frame: &Message) {
        match conn.queue.push(Outbound::Frame(frame.clone())) {
            Ok(()) => Stats::inc(&self.stats.frames_out),
            Err(PushError::Full) => {
                if conn.queue.kill(1013) {
                    Stats::inc(&self.stats.slow_consumers_closed);
                    tracing::warn!(client = %gatehouse_core::ClientId::new(self.id, conn.id), "slow consumer: send queue full, closing with 1013");
                }
            }
            Err(PushError::Closed) => {}
        }
    }

    /// Binds `conn` to `uid` (replacing any previous uid). Returns the route generation the
    /// caller must see confirmed before the bind counts as complete.
    pub(crate) fn bind_uid(&self, conn: &Arc<Conn>, uid: &str) -> u64 {
        let mut inner = conn.inner.lock().expect("conn mutex poisoned");
        if inner.uid.as_deref() == Some(uid) {
            return self.uids.get(uid).map(|m| m.added_gen).unwrap_or(0);
        }
        if let Some(old) = inner.uid.take() {
            self.leave_index(RouteKind::Uid, &old, conn.id);
        }
        inner.uid = Some(uid.to_owned());
        inner.uid_bytes = Bytes::copy_from_slice(uid.as_bytes());
        self.join_index(RouteKind::Uid, uid, conn)
    }

    /// Unbinds `conn` from `uid` if it is bound to it.
    pub(crate) fn unbind_uid(&self, conn: &Conn, uid: &str) {
        let mut inner = conn.inner.lock().expect("conn mutex poisoned");
        if inner.uid.as_deref() == Some(uid) {
            inner.uid = None;
            inner.uid_bytes = Bytes::new();
            self.leave_index(RouteKind::Uid, uid, conn.id);
        }
    }

    /// Adds `conn` to `group`; returns the generation to wait for, like [`Hub::bind_uid`].
    pub(crate) fn join_group(&self, conn: &Arc<Conn>, group: &str) -> u64 {
        let mut inner = conn.inner.lock().expect("conn mutex poisoned");
        if !inner.groups.insert(group.to_owned()) {
            return self.groups.get(group).map(|m| m.added_gen).unwrap_or(0);
        }
        self.join_index(RouteKind::Group, group, conn)
    }

    /// Removes `conn` from `group`.
    pub(crate) fn leave_group(&self, conn: &Conn, group: &str) {
        let mut inner = conn.inner.lock().expect("conn mutex poisoned");
        if inner.groups.remove(group) {
            self.leave_index(RouteKind::Group, group, conn.id);
        }
    }

    /// Dissolves a group on this gateway.
    pub(crate) fn ungroup(&self, group: &str) {
        let members: Vec<u64> = match self.groups.get(group) {
            Some(m) => m.conns.iter().map(|c| c.id).collect(),
            None => return,
        };
        for id in members {
            if let Some(conn) = self.conns.get(&id).map(|c| c.clone()) {
                self.leave_group(&conn, group);
            }
        }
    }

    /// Removes a closing connection from every index. Returns its uid for the close event.
    pub(crate) fn detach(&self, conn: &Conn) {
        let mut inner = conn.inner.lock().expect("conn mutex poisoned");
        if let Some(uid) = inner.uid.clone() {
            self.leave_index(RouteKind::Uid, &uid, conn.id);
        }
        for group in std::mem::take(&mut inner.groups) {
            self.leave_index(RouteKind::Group, &group, conn.id);
        }
    }

    fn index(&self, kind: RouteKind) -> &DashMap<String, Members> {
        match kind {
            RouteKind::Group => &self.groups,
            _ => &self.uids,
        }
    }

    fn join_index(&self, kind: RouteKind, key: &str, conn: &Arc<Conn>) -> u64 {
        let mut members = self.index(kind).entry(key.to_owned()).or_insert_with(|| Members {
            conns: Vec::new(),
            added_gen: 0,
        });
        if members.conns.is_empty() {
            members.added_gen = self.routes.record(kind, key, true);
        }
        members.conns.push(conn.clone());
        members.added_gen
    }

    fn leave_index(&self, kind: RouteKind, key: &str, conn_id: u64) {
        if let Entry::Occupied(mut entry) = self.index(kind).entry(key.to_owned()) {
            entry.get_mut().conns.retain(|c| c.id != conn_id);
            if entry.get().conns.is_empty() {
                self.routes.record(kind, key, false);
                entry.remove();
            }
        }
    }
}
