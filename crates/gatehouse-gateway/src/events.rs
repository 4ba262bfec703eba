//! Client events on their way to workers: numbering, the unacknowledged windows, worker choice
//! and fail-over.
//!
//! Each connection numbers its events and keeps them until the worker acknowledges them
//! (cumulatively, after its handler finished). A connection sticks to the worker rendezvous
//! hashing picked for it while that worker lives, so its events are handled in order. When the
//! worker's link breaks, the connection's unacknowledged events are re-sent, in order, to the
//! next worker before any newer event: at-least-once, order kept. Whoever touches the connection
//! first after the failure (its own socket task, or the sweep that runs when a link comes or
//! goes) does the re-sending under the connection's mutex, so nothing can overtake.
//!
//! Two windows bound what waits for acknowledgement: per connection (events and bytes) and per
//! gateway (bytes). A socket task whose window is full stops reading its client (TCP
//! back-pressure) instead of buffering or dropping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use gatehouse_core::{ClientId, NodeId};
use gatehouse_proto::prost::Message as _;
use gatehouse_proto::v1::{Event, Reject, event};
use tokio::sync::watch;

use crate::conn::{Conn, ConnState};
use crate::stats::Stats;
use crate::workers::{Down, WorkerLink, WorkerSet};

/// The limits of the unacknowledged windows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Windows {
    /// Events of one connection awaiting acknowledgement.
    pub conn_events: usize,
    /// Bytes of one connection's events awaiting acknowledgement.
    pub conn_bytes: usize,
    /// Bytes of all connections' events awaiting acknowledgement.
    pub gateway_bytes: usize,
}

/// What happened to an acknowledged connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acked {
    /// Nothing of the connection awaits acknowledgement any more.
    pub drained: bool,
}

/// Numbers, keeps, sends and re-sends client events.
pub(crate) struct EventRouter {
    gateway: NodeId,
    windows: Windows,
    workers: WorkerSet,
    /// Bytes of every connection's unacknowledged events.
    pending_bytes: AtomicUsize,
    /// Whether `pending_bytes` is at or over the gateway's window, for the per-message path:
    /// one atomic load, no lock.
    over: AtomicBool,
    /// The same flag for waiting. A watch, not a `Notify`: a socket task that checks it and
    /// then waits cannot miss the change in between.
    over_budget: watch::Sender<bool>,
}

impl EventRouter {
    pub(crate) fn new(gateway: NodeId, windows: Windows) -> EventRouter {
        EventRouter {
            gateway,
            windows,
            workers: WorkerSet::default(),
            pending_bytes: AtomicUsize::new(0),
            over: AtomicBool::new(false),
            over_budget: watch::Sender::new(false),
        }
    }

    /// The live workers.
    pub(crate) fn workers(&self) -> &WorkerSet {
        &self.workers
    }

    /// Bytes of events awaiting acknowledgement, gateway-wide.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending_bytes.load(Ordering::Relaxed)
    }

    /// Numbers a new event of `conn`, keeps it until acknowledged and sends it to the
    /// connection's worker. Returns whether the connection must stop reading (its window or the
    /// gateway's is full).
    pub(crate) fn dispatch(&self, conn: &Conn, kind: event::Kind, stats: &Stats) -> bool {
        let mut state = conn.lock();
        state.events.next_seq += 1;
        let event = Event {
            conn: conn.id(),
            seq: state.events.next_seq,
            uid: state.uid_bytes.clone(),
            kind: Some(kind),
        };
        let bytes = event.encoded_len();
        state.events.pending_bytes += bytes;
        state.events.pending.push_back(event.clone());
        self.add_pending(bytes);
        self.deliver(conn, &mut state, Some(event), stats);
        self.conn_window_full(&state) || self.gateway_over_budget()
    }

    /// Whether this connection's own window is full.
    pub(crate) fn conn_window_full(&self, state: &ConnState) -> bool {
        state.events.pending.len() >= self.windows.conn_events || state.events.pending_bytes >= self.windows.conn_bytes
    }

    /// Whether the gateway-wide window is full.
    pub(crate) fn gateway_over_budget(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// Waits until the gateway-wide window has room.
    pub(crate) async fn gateway_room(&self) {
        let mut rx = self.over_budget.subscribe();
        let _ = rx.wait_for(|over| !over).await;
    }

    fn add_pending(&self, bytes: usize) {
        let total = self.pending_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total >= self.windows.gateway_bytes && !self.over.load(Ordering::Acquire) {
            self.set_over();
        }
    }

    fn sub_pending(&self, bytes: usize) {
        let total = self.pending_bytes.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        if total < self.windows.gateway_bytes && self.over.load(Ordering::Acquire) {
            self.set_over();
        }
    }

    /// Brings the flag (and its watch) in line with the counter. Under the watch's lock, so
    /// that two threads crossing the limit in opposite directions settle on the true state.
    fn set_over(&self) {
        self.over_budget.send_if_modified(|over| {
            let now = self.pending_bytes.load(Ordering::Relaxed) >= self.windows.gateway_bytes;
            self.over.store(now, Ordering::Release);
            let changed = *over != now;
            *over = now;
            changed
        });
    }

    /// Sends `new` to the connection's worker; if that worker is gone, picks another and re-sends
    /// everything pending (which includes `new`) first.
    fn deliver(&self, conn: &Conn, state: &mut ConnState, new: Option<Event>, stats: &Stats) {
        if let Some(worker) = state.events.worker.as_ref().filter(|w| w.is_alive()) {
            if let Some(event) = new {
                let _ = worker.down.send(Down::Event(event));
            }
            return;
        }
        let had_worker = state.events.worker.take().is_some();
        let key = ClientId::new(self.gateway, conn.id()).hash_key();
        let Some(worker) = self.workers.pick(&key) else {
            return; // kept pending until a worker attaches
        };
        if had_worker {
            Stats::add(&stats.events_redelivered, state.events.pending.len() as u64);
        }
        for event in &state.events.pending {
            let _ = worker.down.send(Down::Event(event.clone()));
        }
        state.events.worker = Some(worker);
    }

    /// Re-sends the pending events of `conn` if its worker is gone (or it never had one).
    pub(crate) fn rehome(&self, conn: &Conn, stats: &Stats) {
        let mut state = conn.lock();
        let orphaned = state.events.worker.as_ref().is_none_or(|w| !w.is_alive());
        if orphaned && !state.events.pending.is_empty() {
            self.deliver(conn, &mut state, None, stats);
        }
    }

    /// Applies a worker's cumulative acknowledgement of `conn`'s events up to `seq`; a verdict on
    /// the handshake (`seq` 1) resolves the waiting upgrade.
    pub(crate) fn ack(&self, conn: &Conn, seq: u64, reject: Option<Reject>) -> Acked {
        let mut state = conn.lock();
        let was_full = self.conn_window_full(&state);
        let mut opened = false;
        let mut freed = 0;
        while state.events.pending.front().is_some_and(|e| e.seq <= seq) {
            let event = state.events.pending.pop_front().expect("front checked");
            freed += event.encoded_len();
            opened |= matches!(event.kind, Some(event::Kind::Open(_)));
        }
        state.events.pending_bytes -= freed;
        if opened && let Some(verdict) = state.verdict.take() {
            let _ = verdict.send(reject.filter(|_| seq == 1));
        }
        let now_full = self.conn_window_full(&state);
        let drained = state.events.pending.is_empty();
        drop(state);
        if freed > 0 {
            self.sub_pending(freed);
        }
        if was_full && !now_full {
            conn.grant_credit();
        }
        Acked { drained }
    }

    /// Adds a worker that takes events; the caller then re-homes orphaned connections.
    pub(crate) fn attach(&self, link: &Arc<WorkerLink>) {
        if link.handles_events {
            self.workers.add(link.clone());
        }
    }

    /// Marks a link dead and removes it from the live set; the caller then re-homes the
    /// connections whose events it held.
    pub(crate) fn detach(&self, link: &Arc<WorkerLink>) {
        link.mark_dead();
        if link.handles_events {
            self.workers.remove(link);
        }
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_proto::v1::{Closed, Payload};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn router(conn_events: usize) -> EventRouter {
        EventRouter::new(
            NodeId(7),
            Windows {
                conn_events,
                conn_bytes: 1 << 20,
                gateway_bytes: 1 << 30,
            },
        )
    }

    fn message(text: &str) -> event::Kind {
        event::Kind::Message(Payload {
            data: text.to_owned().into(),
            binary: false,
        })
    }

    fn worker(router: &EventRouter, member: u64) -> (Arc<WorkerLink>, mpsc::UnboundedReceiver<Down>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(WorkerLink::new(member, "w".into(), true, tx, CancellationToken::new()));
        router.attach(&link);
        (link, rx)
    }

    fn seqs(rx: &mut mpsc::UnboundedReceiver<Down>) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Ok(Down::Event(event)) = rx.try_recv() {
            seqs.push(event.seq);
        }
        seqs
    }

    #[test]
    fn events_wait_for_a_worker_and_then_go_out_in_order() {
        let router = router(8);
        let stats = Stats::default();
        let (conn, _) = Conn::new(1, 8);
        router.dispatch(&conn, message("a"), &stats);
        router.dispatch(&conn, message("b"), &stats);
        let (_link, mut rx) = worker(&router, 1);
        router.rehome(&conn, &stats);
        router.dispatch(&conn, message("c"), &stats);
        assert_eq!(seqs(&mut rx), [1, 2, 3]);
        assert_eq!(
            Stats::get(&stats.events_redelivered),
            0,
            "a first worker is not a redelivery"
        );
    }

    #[test]
    fn a_dead_workers_unacknowledged_events_go_to_the_next_worker_first_and_are_counted() {
        let router = router(8);
        let stats = Stats::default();
        let (conn, _) = Conn::new(1, 8);
        let (first, mut first_rx) = worker(&router, 1);
        for text in ["a", "b", "c"] {
            router.dispatch(&conn, message(text), &stats);
        }
        assert_eq!(seqs(&mut first_rx), [1, 2, 3]);
        router.ack(&conn, 1, None);
        router.detach(&first);
        let (_second, mut second_rx) = worker(&router, 2);
        router.dispatch(&conn, message("d"), &stats);
        assert_eq!(seqs(&mut second_rx), [2, 3, 4], "2 and 3 again, before 4");
        assert_eq!(Stats::get(&stats.events_redelivered), 3);
    }

    #[test]
    fn a_full_window_blocks_reading_until_an_ack_grants_credit() {
        let router = router(2);
        let stats = Stats::default();
        let (conn, _) = Conn::new(1, 8);
        let (_link, _rx) = worker(&router, 1);
        assert!(!router.dispatch(&conn, message("a"), &stats));
        assert!(router.dispatch(&conn, message("b"), &stats), "two of two: stop reading");
        let acked = router.ack(&conn, 1, None);
        assert!(!acked.drained);
        assert!(!router.conn_window_full(&conn.lock()));
        let credit = conn.credit();
        tokio::pin!(credit);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(credit.as_mut().poll(&mut cx).is_ready(), "the ack left a permit");
        assert!(router.ack(&conn, 2, None).drained);
    }

    #[test]
    fn the_gateway_window_counts_bytes_of_every_connection() {
        let router = EventRouter::new(
            NodeId(7),
            Windows {
                conn_events: 100,
                conn_bytes: 1 << 20,
                gateway_bytes: 100,
            },
        );
        let stats = Stats::default();
        let (a, _) = Conn::new(1, 8);
        let (b, _) = Conn::new(2, 8);
        assert!(!router.dispatch(&a, message(&"x".repeat(40)), &stats));
        assert!(
            router.dispatch(&b, message(&"y".repeat(40)), &stats),
            "80+ bytes of framing: over 100"
        );
        assert!(router.gateway_over_budget());
        router.ack(&a, 1, None);
        assert!(!router.gateway_over_budget());
        router.ack(&b, 1, None);
        assert_eq!(router.pending_bytes(), 0, "every byte counted in is counted out");
    }

    #[test]
    fn the_handshake_verdict_is_delivered_with_the_acknowledgement_of_the_open_event() {
        let router = router(8);
        let stats = Stats::default();
        let (_link, _rx) = worker(&router, 1);
        let refusal = Reject {
            status: 401,
            reason: "no".into(),
        };
        let (refused, mut verdict) = Conn::new(1, 8);
        router.dispatch(&refused, event::Kind::Open(Default::default()), &stats);
        router.ack(&refused, 1, Some(refusal.clone()));
        assert_eq!(verdict.try_recv().unwrap(), Some(refusal.clone()));

        let (accepted, mut verdict) = Conn::new(2, 8);
        router.dispatch(&accepted, event::Kind::Open(Default::default()), &stats);
        router.dispatch(&accepted, message("hi"), &stats);
        router.ack(&accepted, 2, None);
        assert_eq!(
            verdict.try_recv().unwrap(),
            None,
            "a cumulative ack past the open event admits"
        );

        let (closing, mut verdict) = Conn::new(3, 8);
        router.dispatch(
            &closing,
            event::Kind::Closed(Closed {
                code: 1000,
                reason: String::new(),
            }),
            &stats,
        );
        router.ack(&closing, 1, Some(refusal));
        assert!(verdict.try_recv().is_err(), "no open event, no verdict");
    }
}
