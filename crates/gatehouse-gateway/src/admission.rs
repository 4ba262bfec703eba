//! Who may open a connection: caps on TCP connections, connections per client address and
//! handshakes waiting for a worker. Every refusal is a real HTTP status (see `docs/security.md`).
//!
//! A slot is an RAII guard: it lives as long as what it admitted (a TCP connection, then the
//! WebSocket it became) and gives its place back when dropped, whatever path ends it.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connection counters shared by the accept loop and the upgrade handler.
pub(crate) struct Admission {
    /// Open connections (TCP, or the WebSocket it became) per client address.
    per_ip: Arc<DashMap<IpAddr, usize>>,
    max_per_ip: usize,
    /// Open TCP connections on the public listener (HTTP, handshaking or upgraded).
    tcp_open: Arc<AtomicUsize>,
    max_tcp: usize,
    /// Handshakes waiting for a worker's verdict.
    pending: Arc<Semaphore>,
    max_pending: usize,
}

/// A place counted against one client address; given back on drop.
pub(crate) struct IpSlot {
    per_ip: Arc<DashMap<IpAddr, usize>>,
    ip: IpAddr,
}

/// A place among the open TCP connections; given back on drop.
pub(crate) struct TcpSlot {
    tcp_open: Arc<AtomicUsize>,
}

/// A place among the handshakes waiting for a verdict.
pub(crate) type PendingSlot = OwnedSemaphorePermit;

impl Admission {
    /// Counters for at most `max_tcp` TCP connections, `max_per_ip` per client address and
    /// `max_pending` handshakes at a time.
    pub(crate) fn new(max_tcp: usize, max_per_ip: usize, max_pending: usize) -> Admission {
        Admission {
            per_ip: Arc::new(DashMap::new()),
            max_per_ip,
            tcp_open: Arc::new(AtomicUsize::new(0)),
            max_tcp,
            pending: Arc::new(Semaphore::new(max_pending)),
            max_pending,
        }
    }

    /// Counts a new TCP connection, or refuses it when the listener is full.
    pub(crate) fn tcp(&self) -> Option<TcpSlot> {
        let previous = self.tcp_open.fetch_add(1, Ordering::AcqRel);
        let slot = TcpSlot {
            tcp_open: self.tcp_open.clone(),
        };
        (previous < self.max_tcp).then_some(slot)
    }

    /// Counts a connection from `ip`, or refuses it when that address holds its maximum.
    pub(crate) fn ip(&self, ip: IpAddr) -> Option<IpSlot> {
        match self.per_ip.entry(ip) {
            Entry::Occupied(mut entry) => {
                if *entry.get() >= self.max_per_ip {
                    return None;
                }
                *entry.get_mut() += 1;
            }
            Entry::Vacant(entry) => {
                entry.insert(1);
            }
        }
        Some(IpSlot {
            per_ip: self.per_ip.clone(),
            ip,
        })
    }

    /// Takes a place among the handshakes waiting for a verdict, or refuses when they are full.
    pub(crate) fn pending(&self) -> Option<PendingSlot> {
        self.pending.clone().try_acquire_owned().ok()
    }

    /// Handshakes waiting for a verdict now.
    pub(crate) fn pending_count(&self) -> usize {
        self.max_pending - self.pending.available_permits()
    }

    /// Open TCP connections.
    pub(crate) fn tcp_open(&self) -> usize {
        self.tcp_open.load(Ordering::Relaxed)
    }

    /// Distinct client addresses with connections.
    pub(crate) fn addresses(&self) -> usize {
        self.per_ip.len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut entry) = self.per_ip.entry(self.ip) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

impl Drop for TcpSlot {
    fn drop(&mut self) {
        self.tcp_open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_places_back_when_its_connections_go() {
        let admission = Admission::new(10, 2, 1);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = admission.ip(ip).unwrap();
        let _b = admission.ip(ip).unwrap();
        assert!(admission.ip(ip).is_none(), "a third connection from one address");
        assert!(
            admission.ip("192.0.2.2".parse().unwrap()).is_some(),
            "other addresses are not affected"
        );
        drop(a);
        assert!(admission.ip(ip).is_some());
    }

    #[test]
    fn the_listener_and_the_handshakes_are_bounded() {
        let admission = Admission::new(1, 10, 1);
        let tcp = admission.tcp().unwrap();
        assert!(admission.tcp().is_none());
        assert_eq!(
            admission.tcp_open(),
            1,
            "a refused connection gives its place back at once"
        );
        drop(tcp);
        assert!(admission.tcp().is_some());
        let pending = admission.pending().unwrap();
        assert!(admission.pending().is_none());
        drop(pending);
        assert!(admission.pending().is_some());
    }

    #[test]
    fn an_address_without_connections_leaves_no_entry() {
        let admission = Admission::new(10, 2, 1);
        let slot = admission.ip("192.0.2.9".parse().unwrap()).unwrap();
        assert_eq!(admission.addresses(), 1);
        drop(slot);
        assert_eq!(admission.addresses(), 0);
    }
}
