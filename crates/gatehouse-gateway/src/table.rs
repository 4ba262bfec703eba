//! The table of this gateway's connections, by connection number.
//!
//! An entry lives from the handshake until its socket is gone *and* its last event is
//! acknowledged: until then a worker's death may still require re-sending its events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use gatehouse_proto::v1::Reject;
use tokio::sync::oneshot;

use crate::conn::Conn;

/// Every connection of the gateway.
pub(crate) struct ConnTable {
    /// The next connection number; never reused within the process.
    next: AtomicU64,
    /// The connections by number: sharded, so that acknowledgements and commands for different
    /// clients rarely meet on a lock.
    conns: DashMap<u64, Arc<Conn>>,
    /// Connections whose socket is still open (the table also holds closed ones draining).
    open: AtomicU64,
    /// Frames queued per connection before it counts as a slow consumer.
    send_queue: usize,
}

impl ConnTable {
    pub(crate) fn new(send_queue: usize) -> ConnTable {
        ConnTable {
            next: AtomicU64::new(1),
            conns: DashMap::new(),
            open: AtomicU64::new(0),
            send_queue,
        }
    }

    /// Creates an entry for a new connection; the handshake waits on the receiver.
    pub(crate) fn insert_new(&self, app_slot: u16) -> (Arc<Conn>, oneshot::Receiver<Option<Reject>>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (conn, verdict) = Conn::new(id, self.send_queue);
        let conn = Arc::new(conn.for_app(app_slot));
        self.conns.insert(id, conn.clone());
        self.open.fetch_add(1, Ordering::Relaxed);
        (conn, verdict)
    }

    /// A connection, open or draining.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<Conn>> {
        self.conns.get(&id).map(|c| c.clone())
    }

    /// A connection whose socket is still open.
    pub(crate) fn live(&self, id: u64) -> Option<Arc<Conn>> {
        self.get(id).filter(|c| !c.is_closed())
    }

    /// Records that a connection's socket is gone; removes the entry at once if nothing of it
    /// awaits acknowledgement.
    pub(crate) fn closed(&self, conn: &Conn, drained: bool) {
        if conn.mark_closed() {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        if drained {
            self.conns.remove(&conn.id());
        }
    }

    /// Removes a closed connection whose last event was acknowledged.
    pub(crate) fn remove_if_closed(&self, conn: &Conn) {
        if conn.is_closed() {
            self.conns.remove(&conn.id());
        }
    }

    /// The number of open sockets.
    pub(crate) fn open_count(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// A snapshot of every entry (for sweeps, shutdown and cluster-wide queries).
    pub(crate) fn snapshot(&self) -> Vec<Arc<Conn>> {
        self.conns.iter().map(|c| c.value().clone()).collect()
    }

    /// Calls `f` on every connection whose socket is open, under the table's shard guards (`f`
    /// must not touch the table).
    pub(crate) fn for_each_live(&self, mut f: impl FnMut(&Arc<Conn>)) {
        for conn in self.conns.iter() {
            if !conn.is_closed() {
                f(conn.value());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_connection_stays_until_drained_and_numbers_are_never_reused() {
        let table = ConnTable::new(4);
        let (a, _) = table.insert_new(0);
        let (b, _) = table.insert_new(0);
        assert_ne!(a.id(), b.id());
        assert_eq!(table.open_count(), 2);
        table.closed(&a, false);
        assert!(table.get(a.id()).is_some(), "kept while events await acknowledgement");
        assert!(table.live(a.id()).is_none());
        assert_eq!(table.open_count(), 1);
        table.closed(&a, false);
        assert_eq!(table.open_count(), 1, "closing twice counts once");
        table.remove_if_closed(&a);
        assert!(table.get(a.id()).is_none());
        table.remove_if_closed(&b);
        assert!(table.live(b.id()).is_some(), "an open connection is not removed");
        let (c, _) = table.insert_new(0);
        assert!(c.id() > b.id());
    }
}
