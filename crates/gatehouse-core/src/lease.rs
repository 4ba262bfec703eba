//! What a member knows of its own lease: [`LeaseClock`].
//!
//! A registry drops a member whose heartbeats stop for a lease (a paused process, a network
//! partition); workers then stop sending to it. A gateway that comes back still holds its
//! clients, and they would silently miss everything sent while it was out. So the gateway must
//! know, from its own clock, whether any registry could have dropped it, and fence itself then.
//!
//! The registry answers each heartbeat with an ack. A heartbeat sent at `T` and acked proves the
//! registry saw the member no earlier than `T`, so it keeps the member until at least
//! `T + lease`. The member is surely listed while *some* registry's latest ack allows it (a
//! key routes to a gateway while any registry lists it). Past that point a drop may have
//! happened: the clock records a *lapse*. A lapse is also recorded when a renewal arrives after
//! such a gap, so a process that was paused cannot skip it by renewing first when it resumes.
//!
//! Registries that do not ack heartbeats (older versions) give no proof; a clock with no
//! acking registry never lapses, so a mixed-version cluster degrades to no fencing, not to
//! fencing for nothing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A member's lease as seen from the member: renewals per registry, lapses counted.
#[derive(Debug)]
pub struct LeaseClock {
    state: Mutex<State>,
    /// Lapses so far: a fencing member compares it with the number it has acted on.
    lapses: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// Per registry: send time of its latest acked heartbeat (or hello) and the lease it grants.
    renewed: Vec<Option<(Instant, Duration)>>,
    /// The end of the lease whose running out was last counted: one gap counts once, however
    /// often it is checked.
    counted: Option<Instant>,
}

impl State {
    /// The latest moment until which some registry surely lists the member.
    fn valid_until(&self) -> Option<Instant> {
        self.renewed.iter().flatten().map(|(sent, lease)| *sent + *lease).max()
    }
}

impl LeaseClock {
    /// A clock for a member of `registries` registries, with no renewal yet (never lapsed:
    /// a member that never got in was never listed).
    pub fn new(registries: usize) -> LeaseClock {
        LeaseClock {
            state: Mutex::new(State {
                renewed: vec![None; registries],
                counted: None,
            }),
            lapses: AtomicU64::new(0),
        }
    }

    /// Registry `registry` acked a heartbeat (or hello) the member sent at `sent_at`, granting
    /// `lease`. A lapse that happened before this renewal is recorded first.
    pub fn renewed(&self, registry: usize, sent_at: Instant, lease: Duration) {
        self.renewed_at(registry, sent_at, lease, Instant::now());
    }

    /// Records a lapse if, at this moment, no registry can still count the member as listed.
    /// Returns the number of lapses so far. Call it often (a tenth of the lease is plenty).
    pub fn check(&self) -> u64 {
        self.check_at(Instant::now())
    }

    /// The number of lapses recorded so far.
    pub fn lapses(&self) -> u64 {
        self.lapses.load(Ordering::Acquire)
    }

    /// Whether the member is, right now, outside every lease it was granted (it should refuse
    /// new clients until a registry renews it).
    pub fn is_lapsed(&self) -> bool {
        self.is_lapsed_at(Instant::now())
    }

    fn is_lapsed_at(&self, now: Instant) -> bool {
        let state = self.state.lock().expect("lease poisoned");
        state.valid_until().is_some_and(|until| now >= until)
    }

    fn renewed_at(&self, registry: usize, sent_at: Instant, lease: Duration, now: Instant) {
        let mut state = self.state.lock().expect("lease poisoned");
        self.record_lapse(&mut state, now);
        if let Some(slot) = state.renewed.get_mut(registry) {
            // Acks arrive in order on one stream, but a new session's hello may race an old
            // session's last ack: keep the later proof.
            if slot.is_none_or(|(previous, _)| previous <= sent_at) {
                *slot = Some((sent_at, lease));
            }
        }
    }

    fn check_at(&self, now: Instant) -> u64 {
        let mut state = self.state.lock().expect("lease poisoned");
        self.record_lapse(&mut state, now);
        self.lapses()
    }

    fn record_lapse(&self, state: &mut State, now: Instant) {
        let Some(until) = state.valid_until() else {
            return;
        };
        if now >= until && state.counted != Some(until) {
            state.counted = Some(until);
            self.lapses.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(6);

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_member_never_renewed_never_lapses() {
        let clock = LeaseClock::new(2);
        let base = Instant::now();
        assert_eq!(clock.check_at(at(base, 60_000)), 0);
        assert!(!clock.is_lapsed_at(at(base, 60_000)));
    }

    #[test]
    fn heartbeats_acked_in_time_keep_the_lease() {
        let clock = LeaseClock::new(1);
        let base = Instant::now();
        for beat in 0..10 {
            clock.renewed_at(0, at(base, beat * 2_000), LEASE, at(base, beat * 2_000 + 5));
            assert_eq!(clock.check_at(at(base, beat * 2_000 + 1_000)), 0);
        }
    }

    #[test]
    fn the_lease_lapses_once_per_gap_when_no_renewal_comes() {
        let clock = LeaseClock::new(1);
        let base = Instant::now();
        clock.renewed_at(0, base, LEASE, at(base, 1));
        assert_eq!(clock.check_at(at(base, 5_999)), 0);
        assert_eq!(clock.check_at(at(base, 6_000)), 1);
        assert!(clock.is_lapsed_at(at(base, 6_000)));
        assert_eq!(clock.check_at(at(base, 9_000)), 1, "one gap is one lapse");
        clock.renewed_at(0, at(base, 9_000), LEASE, at(base, 9_001));
        assert!(!clock.is_lapsed_at(at(base, 9_002)), "renewed: admitted again");
        assert_eq!(clock.check_at(at(base, 15_000)), 2, "a second gap");
    }

    #[test]
    fn a_renewal_after_a_pause_still_records_the_lapse_it_ends() {
        // A paused process resumes and its first act is to re-attach: the renewal must not
        // hide that it was out of every lease meanwhile.
        let clock = LeaseClock::new(1);
        let base = Instant::now();
        clock.renewed_at(0, base, LEASE, at(base, 1));
        clock.renewed_at(0, at(base, 10_000), LEASE, at(base, 10_002));
        assert_eq!(clock.lapses(), 1);
        assert!(!clock.is_lapsed_at(at(base, 10_003)));
    }

    #[test]
    fn one_registry_renewing_is_enough() {
        let clock = LeaseClock::new(2);
        let base = Instant::now();
        clock.renewed_at(0, base, LEASE, at(base, 1));
        clock.renewed_at(1, base, LEASE, at(base, 1));
        // Registry 0 is unreachable from now on; registry 1 keeps renewing.
        for beat in 1..10 {
            clock.renewed_at(1, at(base, beat * 2_000), LEASE, at(base, beat * 2_000 + 1));
        }
        assert_eq!(clock.check_at(at(base, 19_000)), 0);
    }

    #[test]
    fn an_old_ack_never_moves_the_lease_back() {
        let clock = LeaseClock::new(1);
        let base = Instant::now();
        clock.renewed_at(0, at(base, 4_000), LEASE, at(base, 4_001));
        clock.renewed_at(0, at(base, 2_000), LEASE, at(base, 4_002));
        assert_eq!(
            clock.check_at(at(base, 9_000)),
            0,
            "still inside the lease granted at 4 s"
        );
    }
}
