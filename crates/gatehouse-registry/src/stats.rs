//! What the registry counts, exported at the admin listener's `/metrics`.
//!
//! The state machine is the only writer; gauges are refreshed after every input it handles
//! (the sums run over members, a few hundred at most), counters at the event.

use std::sync::atomic::{AtomicU64, Ordering};

gatehouse_core::counters! {
    /// The registry's counters.
    pub(crate) struct Counters {
        updates_published => "gatehouse_registry_route_updates_total", "route updates sent to subscribers (each chunk counts once per subscriber)";
        entries_published => "gatehouse_registry_route_entries_total", "route entries published (uid or group appearing on or leaving a gateway)";
        resyncs => "gatehouse_registry_resyncs_total", "complete key sets applied from (re)attaching gateways";
        snapshots => "gatehouse_registry_snapshots_total", "full tables sent to (re)subscribing workers and api clients";
        members_expired => "gatehouse_registry_members_expired_total", "members dropped because their lease ran out";
        members_refused => "gatehouse_registry_members_refused_total", "attaches refused at max-members";
        subscribers_cut_off => "gatehouse_registry_subscribers_cut_off_total", "members cut off for not acknowledging or not reading in time";
        batches_refused => "gatehouse_registry_batches_refused_total", "gateway route batches refused (invalid keys or over max-keys-per-gateway); the gateway is cut off";
    }
}

/// Counters plus the gauges of the state.
#[derive(Default)]
pub(crate) struct Stats {
    pub counters: Counters,
    members: AtomicU64,
    gateways: AtomicU64,
    subscribers: AtomicU64,
    keys: AtomicU64,
    authoritative: AtomicU64,
}

impl Stats {
    /// Records the state's sizes (after each input).
    pub(crate) fn set_sizes(
        &self,
        members: usize,
        gateways: usize,
        subscribers: usize,
        keys: usize,
        authoritative: bool,
    ) {
        self.members.store(members as u64, Ordering::Relaxed);
        self.gateways.store(gateways as u64, Ordering::Relaxed);
        self.subscribers.store(subscribers as u64, Ordering::Relaxed);
        self.keys.store(keys as u64, Ordering::Relaxed);
        self.authoritative.store(u64::from(authoritative), Ordering::Relaxed);
    }

    /// Whether the table is complete (past the warm-up).
    pub(crate) fn is_authoritative(&self) -> bool {
        self.authoritative.load(Ordering::Relaxed) == 1
    }

    /// The number of members.
    pub(crate) fn members(&self) -> u64 {
        self.members.load(Ordering::Relaxed)
    }

    /// Copies everything into the metrics recorder.
    pub(crate) fn publish(&self) {
        self.counters.publish();
        let gauge = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        gatehouse_core::admin::set_gauges(&[
            ("gatehouse_registry_members", gauge(&self.members)),
            ("gatehouse_registry_gateways", gauge(&self.gateways)),
            ("gatehouse_registry_route_subscribers", gauge(&self.subscribers)),
            ("gatehouse_registry_keys", gauge(&self.keys)),
            ("gatehouse_registry_authoritative", gauge(&self.authoritative)),
        ]);
    }
}
