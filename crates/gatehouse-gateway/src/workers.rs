//! The workers (and API clients) attached to this gateway: one [`WorkerLink`] per stream, and the
//! [`WorkerSet`] of those that take client events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use gatehouse_core::{NodeId, hrw};
use gatehouse_proto::v1::{Event, Reply};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What flows from the gateway to one attached worker.
pub(crate) enum Down {
    /// A client event (numbered per connection; acknowledged by the worker), with its encoded
    /// size for the batcher.
    Event(Event, u32),
    /// The answer to a command that asked for one.
    Reply(Reply),
}

/// How old a link must be before an absent membership entry may drop it: the registries'
/// membership that lists a worker may still be in flight when its link attaches.
pub(crate) const MEMBERSHIP_GRACE: Duration = Duration::from_secs(2);

/// One attached worker (or API client) stream.
pub(crate) struct WorkerLink {
    /// The peer's member id (random per process start): its rendezvous-hashing identity, and
    /// how the registries' membership names it (see `Hub::prune_departed_workers`).
    member: u64,
    /// The peer's label, for logs only.
    name: String,
    /// The app the worker announced (empty for API clients), for logs.
    app: String,
    /// Its app's place in the gateway's `--app` list (0 when the gateway serves any app);
    /// `None`: an app this gateway does not serve, so it gets no clients.
    app_slot: Option<u16>,
    /// Workers take client events; API clients only send commands.
    handles_events: bool,
    /// Towards the peer. Unbounded by type, bounded in practice: events are limited per
    /// connection and per gateway by the unacknowledged windows, replies by the requests the
    /// peer has in flight.
    down: mpsc::UnboundedSender<Down>,
    /// Cleared when the stream breaks: connections then move to another worker.
    alive: AtomicBool,
    /// Set when the worker says it is stopping: it gets no new client, and its clients move
    /// once it has answered for the events it holds.
    draining: AtomicBool,
    /// Cancelled to drop the link (worker left the cluster, gateway shutting down): ends both
    /// directions of the stream.
    cancel: CancellationToken,
    /// When the link attached (see [`MEMBERSHIP_GRACE`]).
    attached_at: tokio::time::Instant,
}

impl WorkerLink {
    /// A live link of a peer that serves any app (see [`WorkerLink::with_app`]).
    pub(crate) fn new(
        member: u64,
        name: String,
        handles_events: bool,
        down: mpsc::UnboundedSender<Down>,
        cancel: CancellationToken,
    ) -> WorkerLink {
        WorkerLink {
            member,
            name,
            app: String::new(),
            app_slot: Some(0),
            handles_events,
            down,
            alive: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            cancel,
            attached_at: tokio::time::Instant::now(),
        }
    }

    /// The same link for a peer of `app`, whose place in the gateway's app list is `slot`.
    pub(crate) fn with_app(self, app: String, slot: Option<u16>) -> WorkerLink {
        WorkerLink {
            app,
            app_slot: slot,
            ..self
        }
    }

    /// The peer's member id.
    pub(crate) fn member(&self) -> u64 {
        self.member
    }

    /// The peer's label, for logs.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The app the peer announced, for logs.
    pub(crate) fn app(&self) -> &str {
        &self.app
    }

    /// Whether the peer is a worker of an app this gateway does not serve (it gets no clients).
    pub(crate) fn serves_foreign_app(&self) -> bool {
        self.handles_events && self.app_slot.is_none()
    }

    /// Whether the peer takes client events (a worker) rather than only sending commands.
    pub(crate) fn handles_events(&self) -> bool {
        self.handles_events
    }

    /// Whether the peer may take the events of clients of app `slot`.
    pub(crate) fn takes_clients_of(&self, slot: u16) -> bool {
        self.app_slot == Some(slot)
    }

    /// Queues `item` towards the peer; a broken stream drops it (its events are re-sent
    /// elsewhere when the link is detached, and a reply has no one left to read it).
    pub(crate) fn send(&self, item: Down) {
        let _ = self.down.send(item);
    }

    /// Drops the link: both directions of its stream end.
    pub(crate) fn drop_link(&self) {
        self.cancel.cancel();
    }

    /// Resolves when the link is dropped.
    pub(crate) fn dropped(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Resolves when the link is dropped, without borrowing the link (for the outbound stream).
    pub(crate) fn dropped_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.cancel.clone().cancelled_owned()
    }

    /// Whether the link is too new for an absent membership entry to mean its worker left.
    pub(crate) fn in_membership_grace(&self) -> bool {
        self.attached_at.elapsed() < MEMBERSHIP_GRACE
    }

    /// Whether the stream is still up.
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Marks the stream broken.
    pub(crate) fn mark_dead(&self) {
        self.alive.store(false, Ordering::Release);
    }

    /// Whether the worker is stopping.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the worker stopping; returns `false` if it already was.
    pub(crate) fn mark_draining(&self) -> bool {
        !self.draining.swap(true, Ordering::AcqRel)
    }

    /// The member id as a [`NodeId`], for logs.
    pub(crate) fn node(&self) -> NodeId {
        NodeId(self.member)
    }
}

/// The live workers that take events, as an immutable snapshot swapped on change: read once per
/// connection (to pick its worker), not per message.
#[derive(Default)]
pub(crate) struct WorkerSet {
    /// The snapshot: replaced whole on change, so a reader clones one `Arc` under a read lock
    /// taken once per connection and never holds it.
    live: RwLock<Arc<Vec<Arc<WorkerLink>>>>,
}

impl WorkerSet {
    /// The current live workers.
    pub(crate) fn snapshot(&self) -> Arc<Vec<Arc<WorkerLink>>> {
        self.live.read().expect("worker set poisoned").clone()
    }

    /// Adds a worker.
    pub(crate) fn add(&self, link: Arc<WorkerLink>) {
        let mut live = self.live.write().expect("worker set poisoned");
        let mut next: Vec<Arc<WorkerLink>> = live.iter().cloned().collect();
        next.push(link);
        *live = Arc::new(next);
    }

    /// Removes a worker.
    pub(crate) fn remove(&self, link: &Arc<WorkerLink>) {
        let mut live = self.live.write().expect("worker set poisoned");
        let next: Vec<Arc<WorkerLink>> = live.iter().filter(|l| !Arc::ptr_eq(l, link)).cloned().collect();
        *live = Arc::new(next);
    }

    /// The number of live workers.
    pub(crate) fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// The worker rendezvous hashing picks for `key` among the live ones of app `slot`.
    pub(crate) fn pick(&self, key: &[u8], slot: u16) -> Option<Arc<WorkerLink>> {
        self.pick_where(key, |w| w.takes_clients_of(slot))
    }

    /// The worker rendezvous hashing picks for `key` among the live ones of app `slot` other
    /// than `not`.
    pub(crate) fn pick_except(&self, key: &[u8], slot: u16, not: &Arc<WorkerLink>) -> Option<Arc<WorkerLink>> {
        self.pick_where(key, |w| w.takes_clients_of(slot) && !Arc::ptr_eq(w, not))
    }

    /// The highest-scoring live worker that passes `eligible` (the same choice as
    /// [`hrw::pick`] over those workers, without collecting them).
    fn pick_where(&self, key: &[u8], eligible: impl Fn(&Arc<WorkerLink>) -> bool) -> Option<Arc<WorkerLink>> {
        self.snapshot()
            .iter()
            .filter(|w| eligible(w))
            .max_by_key(|w| (hrw::score(key, w.member), w.member))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(member: u64) -> Arc<WorkerLink> {
        let (down, _) = mpsc::unbounded_channel();
        Arc::new(WorkerLink::new(
            member,
            format!("w{member}"),
            true,
            down,
            CancellationToken::new(),
        ))
    }

    #[test]
    fn a_key_keeps_its_worker_until_that_worker_leaves() {
        let set = WorkerSet::default();
        assert!(set.pick(b"client", 0).is_none(), "no worker, no choice");
        let (a, b, c) = (link(1), link(2), link(3));
        for l in [&a, &b, &c] {
            set.add(l.clone());
        }
        let chosen = set.pick(b"client", 0).unwrap();
        let other = if chosen.member == 1 { &b } else { &a };
        set.remove(other);
        assert_eq!(
            set.pick(b"client", 0).unwrap().member,
            chosen.member,
            "another worker leaving changes nothing"
        );
        set.remove(&chosen);
        let next = set.pick(b"client", 0).unwrap();
        assert_ne!(next.member, chosen.member);
        assert_eq!(set.len(), 1);
    }
}
