//! Client events on their way to workers: per-connection queues, worker choice and fail-over.
//!
//! Each connection numbers its events and keeps them until the worker acknowledges them
//! (cumulatively, after its handler finished). A connection sticks to the worker rendezvous
//! hashing picked for it while that worker lives, so its events are handled in order. When the
//! worker's link breaks, the connection's unacknowledged events are re-sent, in order, to the
//! next worker before any newer event: at-least-once, order kept. Whoever touches the connection
//! first after the failure (its own socket task, or the sweep that runs when a link comes or
//! goes) does the re-sending under the connection's mutex, so nothing can overtake.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use gatehouse_core::hrw;
use gatehouse_proto::v1::{Event, Reply, event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::{Conn, ConnInner, Hub};
use crate::stats::Stats;

/// What flows from the gateway to one attached worker.
pub(crate) enum Down {
    Event(Event),
    Reply(Reply),
}

/// One attached worker (or API client) stream.
pub(crate) struct WorkerLink {
    pub member: u64,
    pub name: String,
    pub handles_events: bool,
    /// Unbounded by type, bounded in practice: events are limited per connection by the
    /// unacknowledged window, replies by the requests the peer has in flight.
    pub down: mpsc::UnboundedSender<Down>,
    pub alive: AtomicBool,
    /// Cancelled to drop the link.
    pub cancel: CancellationToken,
    /// When the link attached: a worker is only judged gone by the registries' membership once
    /// its link is older than [`MEMBERSHIP_GRACE`] (the membership may still be in flight).
    pub attached_at: tokio::time::Instant,
}

/// How old a link must be before an absent membership entry may drop it.
pub(crate) const MEMBERSHIP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl WorkerLink {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

/// The live workers that take events, as an immutable snapshot swapped on change (reads are
/// once per connection, not per message).
#[derive(Default)]
pub(crate) struct WorkerSet {
    live: RwLock<Arc<Vec<Arc<WorkerLink>>>>,
}

impl WorkerSet {
    pub(crate) fn snapshot(&self) -> Arc<Vec<Arc<WorkerLink>>> {
        self.live.read().expect("worker set poisoned").clone()
    }

    pub(crate) fn add(&self, link: Arc<WorkerLink>) {
        let mut live = self.live.write().expect("worker set poisoned");
        let mut next: Vec<Arc<WorkerLink>> = live.iter().cloned().collect();
        next.push(link);
        *live = Arc::new(next);
    }

    pub(crate) fn remove(&self, link: &Arc<WorkerLink>) {
        let mut live = self.live.write().expect("worker set poisoned");
        let next: Vec<Arc<WorkerLink>> = live.iter().filter(|l| !Arc::ptr_eq(l, link)).cloned().collect();
        *live = Arc::new(next);
    }

    pub(crate) fn len(&self) -> usize {
        self.snapshot().len()
    }
}

impl Hub {
    /// Numbers a new event of `conn`, keeps it until acknowledged and sends it to the
    /// connection's worker. Returns how many events of the connection await acknowledgement.
    pub(crate) fn dispatch(&self, conn: &Conn, kind: event::Kind) -> usize {
        let mut inner = conn.inner.lock().expect("conn mutex poisoned");
        inner.queue.next_seq += 1;
        let event = Event {
            conn: conn.id,
            seq: inner.queue.next_seq,
            uid: inner.uid_bytes.clone(),
            kind: Some(kind),
        };
        inner.queue.pending.push_back(event.clone());
        self.deliver(conn, &mut inner, Some(event));
        inner.queue.pending.len()
    }

    /// Sends `new` to the connection's worker; if that worker is gone, picks another and re-sends
    /// everything pending (which includes `new`) first.
    fn deliver(&self, conn: &Conn, inner: &mut ConnInner, new: Option<Event>) {
        if let Some(worker) = inner.queue.worker.as_ref().filter(|w| w.is_alive()) {
            if let Some(event) = new {
                let _ = worker.down.send(Down::Event(event));
            }
            return;
        }
        let had_worker = inner.queue.worker.take().is_some();
        let live = self.workers.snapshot();
        let key = gatehouse_core::ClientId::new(self.id, conn.id).hash_key();
        let Some(index) = hrw::pick(&key, &live, |w| w.member) else {
            return; // kept pending until a worker attaches
        };
        let worker = live[index].clone();
        if had_worker {
            Stats::add(&self.stats.events_redelivered, inner.queue.pending.len() as u64);
        }
        for event in &inner.queue.pending {
            let _ = worker.down.send(Down::Event(event.clone()));
        }
        inner.queue.worker = Some(worker);
    }

    /// Re-sends the pending events of every connection whose worker is gone (or that never had
    /// one). Runs when a worker link attaches or breaks.
    pub(crate) fn sweep(&self) {
        let conns: Vec<Arc<Conn>> = self.conns.iter().map(|c| c.value().clone()).collect();
        for conn in conns {
            let mut inner = conn.inner.lock().expect("conn mutex poisoned");
            let orphaned = inner.queue.worker.as_ref().is_none_or(|w| !w.is_alive());
            if orphaned && !inner.queue.pending.is_empty() {
                self.deliver(&conn, &mut inner, None);
            }
        }
    }

    /// Applies a worker's cumulative acknowledgement.
    pub(crate) fn ack(&self, conn_id: u64, seq: u64, reject: Option<gatehouse_proto::v1::Reject>) {
        let Some(conn) = self.conns.get(&conn_id).map(|c| c.clone()) else {
            return;
        };
        let mut inner = conn.inner.lock().expect("conn mutex poisoned");
        let before = inner.queue.pending.len();
        let mut opened = false;
        while inner.queue.pending.front().is_some_and(|e| e.seq <= seq) {
            let event = inner.queue.pending.pop_front().expect("front checked");
            opened |= matches!(event.kind, Some(event::Kind::Open(_)));
        }
        if opened && let Some(verdict) = inner.verdict.take() {
            let _ = verdict.send(reject.filter(|_| seq == 1));
        }
        let after = inner.queue.pending.len();
        drop(inner);
        let limit = self.config.max_unacked_events;
        if before >= limit && after < limit {
            conn.credit.notify_one();
        }
        let drained = after == 0;
        if drained && conn.closed.load(Ordering::Acquire) {
            self.conns.remove(&conn_id);
        }
    }

    /// Drops the links of workers the registries say have left (lease expired): their clients'
    /// events go to the remaining workers without waiting for the HTTP/2 keep-alive.
    pub(crate) fn prune_departed_workers(&self) {
        let mut recheck = false;
        for link in self.workers.snapshot().iter() {
            if !self.routes.worker_left(link.member) {
                continue;
            }
            if link.attached_at.elapsed() < MEMBERSHIP_GRACE {
                recheck = true;
                continue;
            }
            tracing::warn!(member = %gatehouse_core::NodeId(link.member), name = %link.name, "worker left the cluster (lease expired); dropping its link");
            link.cancel.cancel();
        }
        if recheck {
            let routes = self.routes.clone();
            tokio::spawn(async move {
                tokio::time::sleep(MEMBERSHIP_GRACE).await;
                routes.membership_changed.notify_one();
            });
        }
    }

    /// Marks a link dead, removes it from the live set and re-homes its connections' events.
    pub(crate) fn link_gone(&self, link: &Arc<WorkerLink>) {
        link.alive.store(false, Ordering::Release);
        if link.handles_events {
            self.workers.remove(link);
            self.sweep();
        }
    }
}
