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

use gatehouse_core::admin::metrics::Histogram;
use gatehouse_core::{ClientId, NodeId};
use gatehouse_proto::prost::Message as _;
use gatehouse_proto::v1::{Event, Reject, event};
use tokio::sync::watch;

use crate::conn::{Conn, ConnState};
use crate::stats::Stats;
use crate::workers::{Down, WorkerLink, WorkerSet};

pub(crate) mod pending;

use pending::Pending;

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
    /// This gateway's id: with a connection number, the client id whose hash picks the worker.
    gateway: NodeId,
    /// The limits of what may await acknowledgement.
    windows: Windows,
    /// The workers that take events, to pick one per connection.
    workers: WorkerSet,
    /// Bytes of every connection's unacknowledged events.
    pending_bytes: AtomicUsize,
    /// Whether `pending_bytes` is at or over the gateway's window, for the per-message path:
    /// one atomic load, no lock.
    over: AtomicBool,
    /// The same flag for waiting. A watch, not a `Notify`: a socket task that checks it and
    /// then waits cannot miss the change in between.
    over_budget: watch::Sender<bool>,
    /// Client frame read → acknowledged by its worker (handled), sampled.
    ack_seconds: Histogram,
}

/// One event in this many (by its per-connection seq) is timed from read to acknowledgement.
pub(crate) const SAMPLE_EVENTS: u64 = 16;

impl EventRouter {
    pub(crate) fn new(gateway: NodeId, windows: Windows, ack_seconds: Histogram) -> EventRouter {
        EventRouter {
            ack_seconds,
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

    /// Waits until no event awaits acknowledgement. Polls: it runs only while draining, and a
    /// notification on the per-message path would cost every message.
    pub(crate) async fn drained(&self) {
        while self.pending_bytes() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Numbers a new event of `conn`, keeps it until acknowledged and sends it to the
    /// connection's worker. Returns whether the connection must stop reading (its window or the
    /// gateway's is full).
    pub(crate) fn dispatch(&self, conn: &Conn, kind: event::Kind, stats: &Stats) -> bool {
        let mut state = conn.lock();
        state.events_mut().next_seq += 1;
        let event = Event {
            conn: conn.id(),
            seq: state.events().next_seq,
            uid: state.uid_bytes().clone(),
            kind: Some(kind),
            // Shared, not copied: a reference count (nothing at all when no session is set).
            session: state.session().clone(),
            redelivered: false,
        };
        let bytes = event.encoded_len();
        let read_at = event.seq.is_multiple_of(SAMPLE_EVENTS).then(std::time::Instant::now);
        let queue = state.events_mut();
        queue.pending_bytes += bytes;
        queue.pending.push_back(Pending {
            event,
            bytes: bytes as u32,
            read_at,
        });
        self.add_pending(bytes);
        self.flush(conn, &mut state, stats);
        self.conn_window_full(&state) || self.gateway_over_budget()
    }

    /// Whether this connection's own window is full.
    pub(crate) fn conn_window_full(&self, state: &ConnState) -> bool {
        let queue = state.events();
        queue.pending.len() >= self.windows.conn_events || queue.pending_bytes >= self.windows.conn_bytes
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

    /// Sends the connection's waiting events (those after `sent`) where they belong:
    /// - to its worker, while that worker lives, is not draining, and no retry is pending;
    /// - nowhere yet, while a draining worker (or one that gave events back) still holds
    ///   earlier events of the client: order comes first;
    /// - otherwise to the next worker rendezvous hashing picks, re-sending everything pending
    ///   first if the old worker died with events unacknowledged.
    fn flush(&self, conn: &Conn, state: &mut ConnState, stats: &Stats) {
        let queue = state.events_mut();
        if queue.held {
            return;
        }
        if let Some(worker) = queue.worker.as_ref().filter(|w| w.is_alive()) {
            if !worker.is_draining() {
                for pending in queue.pending.iter().skip(queue.sent) {
                    worker.send(Down::Event(pending.event.clone(), pending.bytes));
                }
                queue.sent = queue.pending.len();
                return;
            }
            if queue.sent > 0 {
                return; // the draining worker still answers for earlier events
            }
        }
        let died = queue.worker.as_ref().is_some_and(|w| !w.is_alive());
        if !died && queue.pending.len() == queue.sent {
            return;
        }
        // A worker that drained and then left answered for everything it had (`sent == 0`):
        // its clients are handed over, not failed over, even when their next event comes after
        // its link closed.
        let drained = queue.worker.as_ref().is_some_and(|w| w.is_draining()) && queue.sent == 0;
        let died = died && !drained;
        let key = ClientId::new(self.gateway, conn.id()).hash_key();
        let Some(next) = self.workers.pick(&key, conn.app_slot()) else {
            if died {
                queue.worker = None;
                queue.sent = 0;
            }
            return; // kept pending until a worker attaches
        };
        if died {
            Stats::inc(&stats.clients_failed_over);
            Stats::add(&stats.events_redelivered, queue.sent as u64);
            mark_redelivered(queue.pending.iter_mut().take(queue.sent));
            queue.sent = 0;
        }
        if drained {
            Stats::inc(&stats.clients_handed_over);
        }
        for pending in queue.pending.iter().skip(queue.sent) {
            next.send(Down::Event(pending.event.clone(), pending.bytes));
        }
        queue.sent = queue.pending.len();
        queue.worker = Some(next);
    }

    /// Sends the waiting events of `conn` if its worker is gone, draining or absent.
    pub(crate) fn rehome(&self, conn: &Conn, stats: &Stats) {
        let mut state = conn.lock();
        let queue = state.events();
        let stranded = queue.worker.as_ref().is_none_or(|w| !w.is_alive() || w.is_draining());
        if stranded && !queue.pending.is_empty() {
            self.flush(conn, &mut state, stats);
        }
    }

    /// A worker gave back the events of `conn` from `seq` on: they wait for a retry (after a
    /// back-off) on a worker that is not draining, or move at once once the draining worker
    /// answered for the earlier ones. Returns the back-off before the retry, if one is due.
    pub(crate) fn nack(&self, conn: &Conn, seq: u64, link: &Arc<WorkerLink>) -> Option<std::time::Duration> {
        let mut state = conn.lock();
        let queue = state.events_mut();
        if !queue.worker.as_ref().is_some_and(|w| Arc::ptr_eq(w, link)) {
            return None; // a stale answer from a worker the client already left
        }
        let was_sent = queue.sent;
        queue.sent = queue.pending.iter().take_while(|p| p.event.seq < seq).count();
        mark_redelivered(queue.pending.iter_mut().take(was_sent).skip(queue.sent));
        if link.is_draining() {
            return None; // moves with the acknowledgements of the earlier events
        }
        queue.held = true;
        queue.retries = queue.retries.saturating_add(1);
        Some(retry_backoff(queue.retries))
    }

    /// The back-off of a nacked connection is over: its events go out again, to another worker
    /// if there is one (the one that gave them back may be the one with the problem), else to
    /// the same one.
    pub(crate) fn retry(&self, conn: &Conn, stats: &Stats) {
        let mut state = conn.lock();
        let queue = state.events_mut();
        queue.held = false;
        let key = ClientId::new(self.gateway, conn.id()).hash_key();
        let other = queue
            .worker
            .as_ref()
            .filter(|w| w.is_alive() && !w.is_draining())
            .and_then(|current| self.workers.pick_except(&key, conn.app_slot(), current));
        if let Some(other) = other {
            Stats::inc(&stats.clients_handed_over);
            for pending in queue.pending.iter().skip(queue.sent) {
                other.send(Down::Event(pending.event.clone(), pending.bytes));
            }
            queue.sent = queue.pending.len();
            queue.worker = Some(other);
            return;
        }
        self.flush(conn, &mut state, stats);
    }

    /// Applies a worker's cumulative acknowledgement of `conn`'s events up to `seq`; a verdict on
    /// the handshake (`seq` 1) resolves the waiting upgrade.
    pub(crate) fn ack(&self, conn: &Conn, seq: u64, reject: Option<Reject>, stats: &Stats) -> Acked {
        let mut state = conn.lock();
        let was_full = self.conn_window_full(&state);
        let mut opened = false;
        let mut freed = 0;
        let mut popped = 0;
        let queue = state.events_mut();
        while queue.pending.front().is_some_and(|p| p.event.seq <= seq) {
            let pending = queue.pending.pop_front().expect("front checked");
            if let Some(read_at) = pending.read_at {
                self.ack_seconds.record(read_at.elapsed().as_secs_f64());
            }
            freed += pending.bytes as usize;
            opened |= matches!(pending.event.kind, Some(event::Kind::Open(_)));
            popped += 1;
        }
        queue.pending_bytes -= freed;
        queue.sent = queue.sent.saturating_sub(popped);
        if popped > 0 {
            queue.retries = 0;
        }
        let draining = queue.worker.as_ref().is_some_and(|w| w.is_draining());
        if draining && queue.sent == 0 && !queue.pending.is_empty() {
            // The draining worker answered for everything it had: the rest moves on.
            self.flush(conn, &mut state, stats);
        }
        if opened && let Some(verdict) = state.take_verdict() {
            let _ = verdict.send(reject.filter(|_| seq == 1));
        }
        let now_full = self.conn_window_full(&state);
        let drained = state.events().is_empty();
        drop(state);
        if freed > 0 {
            self.sub_pending(freed);
        }
        if was_full && !now_full {
            conn.grant_credit();
        }
        Acked { drained }
    }

    /// Adds a worker that takes events (of an app this gateway serves); the caller then
    /// re-homes orphaned connections.
    pub(crate) fn attach(&self, link: &Arc<WorkerLink>) {
        if link.handles_events() && !link.serves_foreign_app() {
            self.workers.add(link.clone());
        }
    }

    /// A worker is stopping: it takes no new client; the caller then moves the clients it has
    /// no unanswered events of.
    pub(crate) fn drain(&self, link: &Arc<WorkerLink>) -> bool {
        if !link.mark_draining() {
            return false;
        }
        if link.handles_events() {
            self.workers.remove(link);
        }
        true
    }

    /// Marks a link dead and removes it from the live set; the caller then re-homes the
    /// connections whose events it held.
    pub(crate) fn detach(&self, link: &Arc<WorkerLink>) {
        link.mark_dead();
        if link.handles_events() {
            self.workers.remove(link);
        }
    }
}

/// Flags events that went to a worker before and go out again (its handler may have run for
/// them), so that the worker that gets them counts the redelivery.
fn mark_redelivered<'a>(events: impl Iterator<Item = &'a mut Pending>) {
    for pending in events {
        pending.event.redelivered = true;
    }
}

/// The pause before nacked events go out again: 100 ms doubling to at most 5 s, so that a
/// worker that cannot reach what it needs is not flooded with retries.
fn retry_backoff(retries: u32) -> std::time::Duration {
    let millis = 100u64.saturating_mul(1 << retries.saturating_sub(1).min(6));
    std::time::Duration::from_millis(millis.min(5_000))
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
            Histogram::noop(),
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
        while let Ok(Down::Event(event, _)) = rx.try_recv() {
            seqs.push(event.seq);
        }
        seqs
    }

    /// The seqs of the events sent, each with its `redelivered` flag.
    fn flagged(rx: &mut mpsc::UnboundedReceiver<Down>) -> Vec<(u64, bool)> {
        let mut sent = Vec::new();
        while let Ok(Down::Event(event, _)) = rx.try_recv() {
            sent.push((event.seq, event.redelivered));
        }
        sent
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
        router.ack(&conn, 1, None, &stats);
        router.detach(&first);
        let (_second, mut second_rx) = worker(&router, 2);
        router.dispatch(&conn, message("d"), &stats);
        assert_eq!(
            flagged(&mut second_rx),
            [(2, true), (3, true), (4, false)],
            "2 and 3 again (flagged), before 4"
        );
        assert_eq!(Stats::get(&stats.events_redelivered), 2, "the two sent again");
        assert_eq!(Stats::get(&stats.clients_failed_over), 1);
    }

    #[test]
    fn a_full_window_blocks_reading_until_an_ack_grants_credit() {
        let router = router(2);
        let stats = Stats::default();
        let (conn, _) = Conn::new(1, 8);
        let (_link, _rx) = worker(&router, 1);
        assert!(!router.dispatch(&conn, message("a"), &stats));
        assert!(router.dispatch(&conn, message("b"), &stats), "two of two: stop reading");
        let acked = router.ack(&conn, 1, None, &stats);
        assert!(!acked.drained);
        assert!(!router.conn_window_full(&conn.lock()));
        let credit = conn.credit();
        tokio::pin!(credit);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(credit.as_mut().poll(&mut cx).is_ready(), "the ack left a permit");
        assert!(router.ack(&conn, 2, None, &stats).drained);
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
            Histogram::noop(),
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
        router.ack(&a, 1, None, &stats);
        assert!(!router.gateway_over_budget());
        router.ack(&b, 1, None, &stats);
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
        router.ack(&refused, 1, Some(refusal.clone()), &stats);
        assert_eq!(verdict.try_recv().unwrap(), Some(refusal.clone()));

        let (accepted, mut verdict) = Conn::new(2, 8);
        router.dispatch(&accepted, event::Kind::Open(Default::default()), &stats);
        router.dispatch(&accepted, message("hi"), &stats);
        router.ack(&accepted, 2, None, &stats);
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
                groups: Vec::new(),
            }),
            &stats,
        );
        router.ack(&closing, 1, Some(refusal), &stats);
        assert!(verdict.try_recv().is_err(), "no open event, no verdict");
    }

    #[test]
    fn a_draining_worker_keeps_what_it_has_and_the_client_moves_on_after_its_acks_in_order() {
        let router = router(16);
        let stats = Stats::default();
        let (conn, _) = Conn::new(1, 8);
        let (first, mut first_rx) = worker(&router, 1);
        router.dispatch(&conn, message("a"), &stats);
        router.dispatch(&conn, message("b"), &stats);
        assert_eq!(seqs(&mut first_rx), [1, 2]);
        let (_second, mut second_rx) = worker(&router, 2);
        assert!(router.drain(&first));
        router.dispatch(&conn, message("c"), &stats);
        assert!(
            seqs(&mut second_rx).is_empty(),
            "3 waits: 1 and 2 are still the draining worker's"
        );
        assert!(seqs(&mut first_rx).is_empty(), "a draining worker gets nothing new");
        router.ack(&conn, 1, None, &stats);
        assert!(seqs(&mut second_rx).is_empty(), "2 is still unanswered");
        router.ack(&conn, 2, None, &stats);
        assert_eq!(flagged(&mut second_rx), [(3, false)], "handed over, not redelivered");
        router.dispatch(&conn, message("d"), &stats);
        assert_eq!(
            flagged(&mut second_rx),
            [(4, false)],
            "the client now belongs to the other worker"
        );
        assert_eq!(Stats::get(&stats.events_redelivered), 0, "nothing was sent twice");
        assert_eq!(Stats::get(&stats.clients_handed_over), 1);
    }

    #[test]
    fn a_client_whose_worker_drained_and_left_is_handed_over_not_failed_over() {
        let router = router(16);
        let stats = Stats::default();
        let (conn, _) = Conn::new(1, 8);
        let (first, mut first_rx) = worker(&router, 1);
        router.dispatch(&conn, message("a"), &stats);
        assert_eq!(seqs(&mut first_rx), [1]);
        router.ack(&conn, 1, None, &stats);
        let (_second, mut second_rx) = worker(&router, 2);
        assert!(router.drain(&first));
        router.detach(&first);
        router.dispatch(&conn, message("b"), &stats);
        assert_eq!(flagged(&mut second_rx), [(2, false)], "nothing to redeliver");
        assert_eq!(Stats::get(&stats.clients_handed_over), 1);
        assert_eq!(Stats::get(&stats.clients_failed_over), 0, "the worker left cleanly");
    }

    #[test]
    fn nacked_events_are_held_for_a_back_off_then_sent_again_from_the_nacked_one() {
        let router = router(16);
        let stats = Stats::default();
        let (conn, _) = Conn::new(1, 8);
        let (link, mut rx) = worker(&router, 1);
        for text in ["a", "b", "c"] {
            router.dispatch(&conn, message(text), &stats);
        }
        assert_eq!(seqs(&mut rx), [1, 2, 3]);
        router.ack(&conn, 1, None, &stats);
        let backoff = router.nack(&conn, 2, &link).expect("a retry is due");
        assert_eq!(backoff, std::time::Duration::from_millis(100));
        router.dispatch(&conn, message("d"), &stats);
        assert!(seqs(&mut rx).is_empty(), "nothing goes out during the back-off");
        router.retry(&conn, &stats);
        assert_eq!(
            flagged(&mut rx),
            [(2, true), (3, true), (4, false)],
            "again from the nacked event, in order (the only worker); 4 is new"
        );
        let second = router.nack(&conn, 2, &link).unwrap();
        assert_eq!(second, std::time::Duration::from_millis(200), "the back-off grows");
        router.retry(&conn, &stats);
        seqs(&mut rx);
        router.ack(&conn, 4, None, &stats);
        assert_eq!(
            router.nack(&conn, 5, &link),
            Some(std::time::Duration::from_millis(100)),
            "an ack resets it"
        );
    }

    #[test]
    fn events_a_draining_worker_gives_back_go_to_another_worker_at_once() {
        let router = router(16);
        let stats = Stats::default();
        let (conn, _) = Conn::new(1, 8);
        let (first, mut first_rx) = worker(&router, 1);
        router.dispatch(&conn, message("a"), &stats);
        router.dispatch(&conn, message("b"), &stats);
        seqs(&mut first_rx);
        let (_second, mut second_rx) = worker(&router, 2);
        router.drain(&first);
        assert_eq!(router.nack(&conn, 1, &first), None, "no back-off: it is leaving");
        router.rehome(&conn, &stats);
        assert_eq!(flagged(&mut second_rx), [(1, true), (2, true)]);
    }

    #[test]
    fn a_nack_from_a_worker_the_client_already_left_is_ignored() {
        let router = router(16);
        let stats = Stats::default();
        let (conn, _) = Conn::new(1, 8);
        let (first, mut first_rx) = worker(&router, 1);
        router.dispatch(&conn, message("a"), &stats);
        seqs(&mut first_rx);
        router.detach(&first);
        let (_second, mut second_rx) = worker(&router, 2);
        router.rehome(&conn, &stats);
        assert_eq!(seqs(&mut second_rx), [1]);
        assert_eq!(router.nack(&conn, 1, &first), None);
        router.dispatch(&conn, message("b"), &stats);
        assert_eq!(seqs(&mut second_rx), [2], "the stale nack changed nothing");
    }

    #[test]
    fn nacked_events_go_to_another_worker_when_there_is_one() {
        let router = router(16);
        let stats = Stats::default();
        let (conn, _) = Conn::new(1, 8);
        let (a, mut a_rx) = worker(&router, 1);
        let (b, mut b_rx) = worker(&router, 2);
        router.dispatch(&conn, message("x"), &stats);
        router.dispatch(&conn, message("y"), &stats);
        let (first, mut first_rx, mut other_rx) = if seqs(&mut a_rx).is_empty() {
            assert_eq!(seqs(&mut b_rx), [1, 2]);
            (b, b_rx, a_rx)
        } else {
            (a, a_rx, b_rx)
        };
        router.ack(&conn, 1, None, &stats);
        assert!(router.nack(&conn, 2, &first).is_some());
        router.retry(&conn, &stats);
        assert!(seqs(&mut first_rx).is_empty(), "not the worker that gave it back");
        assert_eq!(seqs(&mut other_rx), [2]);
        router.dispatch(&conn, message("z"), &stats);
        assert_eq!(seqs(&mut other_rx), [3], "the client stays with the other worker");
    }
}
