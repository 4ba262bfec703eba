//! The unacknowledged events of one connection. They live in the connection's state (under its
//! mutex, see `conn`) but only the event router changes them: the fields are visible to
//! `events` alone, and the rest of the gateway gets two read-only answers.

use std::collections::VecDeque;
use std::sync::Arc;

use gatehouse_proto::v1::Event;

use crate::workers::WorkerLink;

/// Events of one connection not yet acknowledged, in order, and where they go.
pub(crate) struct EventQueue {
    /// The sequence number of the last event numbered.
    pub(super) next_seq: u64,
    /// Unacknowledged events, oldest first: re-sent in this order if their worker dies.
    pub(super) pending: VecDeque<Pending>,
    /// The payload bytes of `pending`, for the per-connection and per-gateway byte budgets.
    pub(super) pending_bytes: usize,
    /// How many events at the front of `pending` were sent to `worker`; the rest wait (for a
    /// worker, for a draining worker to finish the ones it has, or for a retry after a nack).
    pub(super) sent: usize,
    /// A nacked event waits for its retry: nothing is sent until then.
    pub(super) held: bool,
    /// Nacks in a row (the retry back-off grows with them; an acknowledgement resets it).
    pub(super) retries: u32,
    /// The worker this connection's events go to while it lives (rendezvous hashing).
    pub(super) worker: Option<Arc<WorkerLink>>,
}

/// An unacknowledged event and its encoded size, computed once: the windows, the batcher and
/// the acknowledgement all need it.
pub(super) struct Pending {
    /// The event as sent (and re-sent after a worker's failure).
    pub(super) event: Event,
    /// Its encoded size.
    pub(super) bytes: u32,
    /// When the event was read, for one event in `events::SAMPLE_EVENTS` (the ack-latency
    /// histogram); `None` for the others, which then cost no clock read.
    pub(super) read_at: Option<std::time::Instant>,
}

impl EventQueue {
    /// No event yet, no worker yet (nothing allocated until the first event).
    pub(crate) fn new() -> EventQueue {
        EventQueue {
            next_seq: 0,
            pending: VecDeque::new(),
            pending_bytes: 0,
            sent: 0,
            held: false,
            retries: 0,
            worker: None,
        }
    }

    /// The sequence number of the last event numbered: what a change made now (a session) is
    /// ordered after.
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether every event was acknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Frees the room of the unacknowledged events when there are none: the queue keeps its
    /// capacity while events flow (no allocation per event), and a connection gone idle gives
    /// it back (about 0.9 KB) at its next ping.
    pub(crate) fn release_idle(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Pending {
        Pending {
            event: Event::default(),
            bytes: 0,
            read_at: None,
        }
    }

    #[test]
    fn an_idle_event_queue_gives_back_its_room_and_a_busy_one_keeps_it() {
        let mut queue = EventQueue::new();
        queue.pending.push_back(pending());
        queue.release_idle();
        assert!(queue.pending.capacity() > 0, "an unacknowledged event keeps its room");
        queue.pending.clear();
        queue.release_idle();
        assert_eq!(queue.pending.capacity(), 0);
    }
}
