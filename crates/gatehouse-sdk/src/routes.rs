//! The replicated routing table: uid / group → gateways, merged from every registry.
//!
//! Each registry's view is one bit in an entry's mask, so a registry's reset clears only its own
//! bit, and a key routes to a gateway while any registry says so. Extra gateways cost a wasted
//! command (the gateway filters); a missing one would lose a message, so the merge is a union.
//!
//! An update is acknowledged to its registry only after it is applied here. Because a gateway
//! confirms a bind only after every subscriber acknowledged it, a send issued after
//! `bind_uid` returned always finds the gateway in this table.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use compact_str::CompactString;
use dashmap::DashMap;
use gatehouse_proto::v1::{RouteEntry, RouteKind, RouteUpdate};
use tokio::sync::watch;

/// At most this many registries can be merged (one bit each).
pub(crate) const MAX_REGISTRIES: usize = 32;

/// What this process knows of one registry's view of the table.
#[derive(Default, Clone, Copy)]
struct View {
    /// Its session is up (a view from a broken session may be stale).
    connected: bool,
    /// A complete snapshot was received in this session.
    complete: bool,
    /// The registry is past its warm-up: absence in its view is true.
    authoritative: bool,
}

/// The gateways that hold one key, each with the mask of the registries that list it.
///
/// Nearly every key is held by one gateway (a user's devices behind one load balancer, a small
/// group), and a worker holds one entry per bound uid of the whole cluster: so one gateway is
/// stored inline, in 16 bytes, and only a second one moves the list to the heap. A vector would
/// cost 24 bytes plus an allocation of 64 for every key.
#[derive(Debug)]
enum Gateways {
    One(u64, u32),
    // Boxed on purpose: a bare Vec would make every entry 8 bytes larger for the rare key
    // held by several gateways.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<(u64, u32)>>),
}

impl Gateways {
    /// `(gateway, mask)` pairs, masks possibly zero only transiently inside an update.
    fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        let (one, many) = match self {
            Gateways::One(gateway, mask) => (Some((*gateway, *mask)), [].iter()),
            Gateways::Many(list) => (None, list.iter()),
        };
        one.into_iter().chain(many.copied())
    }

    /// Registry `bit` lists `gateway` for this key.
    fn set(&mut self, gateway: u64, bit: u32) {
        match self {
            Gateways::One(held, mask) if *held == gateway => *mask |= bit,
            Gateways::One(held, mask) => *self = Gateways::Many(Box::new(vec![(*held, *mask), (gateway, bit)])),
            Gateways::Many(list) => match list.iter_mut().find(|(held, _)| *held == gateway) {
                Some(slot) => slot.1 |= bit,
                None => list.push((gateway, bit)),
            },
        }
    }

    /// Registry `bit` no longer lists `gateway` (or, with `None`, any gateway) for this key.
    /// Returns whether some registry still lists some gateway.
    fn unset(&mut self, gateway: Option<u64>, bit: u32) -> bool {
        let hit = |held: u64| gateway.is_none_or(|g| g == held);
        match self {
            Gateways::One(held, mask) => {
                if hit(*held) {
                    *mask &= !bit;
                }
                *mask != 0
            }
            Gateways::Many(list) => {
                for slot in list.iter_mut().filter(|(held, _)| hit(*held)) {
                    slot.1 &= !bit;
                }
                list.retain(|(_, mask)| *mask != 0);
                if let [(held, mask)] = list[..] {
                    *self = Gateways::One(held, mask);
                }
                !matches!(self, Gateways::Many(list) if list.is_empty())
            }
        }
    }
}

/// uid / group → gateways, with one bit per registry that lists each gateway.
///
/// Every worker holds the whole cluster's table, so an entry must be small: the key is a
/// [`CompactString`] (a uid or group name of up to 24 bytes needs no allocation) and the value
/// a [`Gateways`], 40 bytes in all (docs/scaling.md).
pub(crate) struct RouteTable {
    /// Per uid: the gateways that hold it. A sharded map: the send path reads one shard, never
    /// a global lock.
    uids: DashMap<CompactString, Gateways>,
    /// The same for groups.
    groups: DashMap<CompactString, Gateways>,
    /// Per registry: its view's state. Locked on updates and trust changes only, never on a send.
    views: Mutex<Vec<View>>,
    /// True while at least one registry view is complete and authoritative: absence in the
    /// table can be trusted. Otherwise callers broadcast to every gateway.
    trusted: watch::Sender<bool>,
    /// The same flag for the per-message path: one atomic load instead of the watch's lock.
    trusted_now: AtomicBool,
}

impl RouteTable {
    pub(crate) fn new(registries: usize) -> RouteTable {
        RouteTable {
            uids: DashMap::new(),
            groups: DashMap::new(),
            views: Mutex::new(vec![View::default(); registries]),
            trusted: watch::Sender::new(false),
            trusted_now: AtomicBool::new(false),
        }
    }

    /// Whether the table can be trusted right now.
    pub(crate) fn is_trusted(&self) -> bool {
        self.trusted_now.load(Ordering::Acquire)
    }

    /// Whether registry `registry`'s view is complete and authoritative.
    pub(crate) fn is_authoritative(&self, registry: usize) -> bool {
        let views = self.views.lock().expect("views poisoned");
        views
            .get(registry)
            .is_some_and(|v| v.connected && v.complete && v.authoritative)
    }

    /// A receiver to wait for trust.
    pub(crate) fn trust(&self) -> watch::Receiver<bool> {
        self.trusted.subscribe()
    }

    /// Calls `f` with each gateway that holds `key`. `f` runs under a read guard of the key's
    /// shard: it must not write to this table (it may read other maps and queue commands).
    pub(crate) fn for_each_gateway(&self, kind: RouteKind, key: &str, mut f: impl FnMut(u64)) {
        if let Some(entry) = self.map(kind).get(key) {
            for (gateway, _) in entry.iter().filter(|(_, mask)| *mask != 0) {
                f(gateway);
            }
        }
    }

    /// Whether any gateway holds `key`.
    pub(crate) fn holds(&self, kind: RouteKind, key: &str) -> bool {
        self.map(kind)
            .get(key)
            .is_some_and(|gateways| gateways.iter().any(|(_, mask)| mask != 0))
    }

    fn map(&self, kind: RouteKind) -> &DashMap<CompactString, Gateways> {
        match kind {
            RouteKind::Group => &self.groups,
            _ => &self.uids,
        }
    }

    /// Applies an update from registry `registry`. Returns whether it completes a snapshot or
    /// is a plain update (then the caller acknowledges `update.seq`).
    pub(crate) fn apply(&self, registry: usize, update: RouteUpdate) -> bool {
        let bit = 1u32 << registry;
        if update.reset {
            for map in [&self.uids, &self.groups] {
                map.retain(|_, gateways| gateways.unset(None, bit));
            }
        }
        for entry in update.entries {
            self.apply_entry(bit, entry);
        }
        let done = !update.partial;
        let mut views = self.views.lock().expect("views poisoned");
        let view = &mut views[registry];
        if update.reset {
            view.complete = false;
        }
        if done {
            view.complete = true;
        }
        view.authoritative = update.authoritative;
        drop(views);
        self.refresh_trust();
        done
    }

    fn apply_entry(&self, bit: u32, entry: RouteEntry) {
        let kind = RouteKind::try_from(entry.kind).unwrap_or(RouteKind::Unspecified);
        if kind == RouteKind::Unspecified {
            return;
        }
        let map = self.map(kind);
        let key = CompactString::from(entry.key);
        if entry.present {
            map.entry(key)
                .and_modify(|gateways| gateways.set(entry.gateway, bit))
                .or_insert(Gateways::One(entry.gateway, bit));
        } else if let dashmap::mapref::entry::Entry::Occupied(mut occupied) = map.entry(key)
            && !occupied.get_mut().unset(Some(entry.gateway), bit)
        {
            occupied.remove();
        }
    }

    /// Marks registry `registry` connected or not.
    pub(crate) fn set_connected(&self, registry: usize, connected: bool) {
        let mut views = self.views.lock().expect("views poisoned");
        views[registry] = View {
            connected,
            complete: false,
            authoritative: false,
        };
        drop(views);
        self.refresh_trust();
    }

    fn refresh_trust(&self) {
        let trusted = self
            .views
            .lock()
            .expect("views poisoned")
            .iter()
            .any(|v| v.connected && v.complete && v.authoritative);
        self.trusted.send_if_modified(|current| {
            let changed = *current != trusted;
            *current = trusted;
            if changed {
                self.trusted_now.store(trusted, Ordering::Release);
                if trusted {
                    tracing::info!("routing table trusted; sends go to the gateways that hold their keys");
                } else {
                    tracing::warn!("routing table not trusted; uid and group sends go to every gateway");
                }
            }
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_of_the_table_takes_forty_bytes() {
        assert_eq!(std::mem::size_of::<Gateways>(), 16);
        assert_eq!(std::mem::size_of::<(CompactString, Gateways)>(), 40);
    }

    #[test]
    fn a_second_gateway_spills_to_the_heap_and_the_last_one_left_comes_back_inline() {
        let mut gateways = Gateways::One(1, 0b01);
        gateways.set(1, 0b10);
        assert!(
            matches!(gateways, Gateways::One(1, 0b11)),
            "the same gateway, another registry"
        );
        gateways.set(2, 0b01);
        assert_eq!(gateways.iter().collect::<Vec<_>>(), vec![(1, 0b11), (2, 0b01)]);
        assert!(gateways.unset(Some(1), 0b11), "gateway 2 is still listed");
        assert!(matches!(gateways, Gateways::One(2, 0b01)));
        assert!(!gateways.unset(None, 0b01), "nothing left");
    }

    fn update(seq: u64, reset: bool, entries: Vec<(RouteKind, &str, u64, bool)>) -> RouteUpdate {
        RouteUpdate {
            seq,
            reset,
            authoritative: true,
            partial: false,
            entries: entries
                .into_iter()
                .map(|(kind, key, gateway, present)| RouteEntry {
                    kind: kind as i32,
                    key: key.to_owned(),
                    gateway,
                    present,
                })
                .collect(),
        }
    }

    fn gateways(table: &RouteTable, key: &str) -> Vec<u64> {
        let mut out = Vec::new();
        table.for_each_gateway(RouteKind::Uid, key, |gateway| out.push(gateway));
        out.sort();
        out
    }

    #[test]
    fn registries_merge_as_a_union_and_reset_only_their_own_view() {
        let table = RouteTable::new(2);
        table.set_connected(0, true);
        table.set_connected(1, true);
        table.apply(0, update(1, true, vec![(RouteKind::Uid, "alice", 7, true)]));
        table.apply(
            1,
            update(
                1,
                true,
                vec![(RouteKind::Uid, "alice", 7, true), (RouteKind::Uid, "alice", 8, true)],
            ),
        );
        assert_eq!(gateways(&table, "alice"), vec![7, 8]);
        assert!(table.is_trusted());
        // Registry 0 restarts with an empty table: registry 1 still routes both.
        table.apply(0, update(1, true, vec![]));
        assert_eq!(gateways(&table, "alice"), vec![7, 8]);
        table.apply(1, update(2, false, vec![(RouteKind::Uid, "alice", 8, false)]));
        assert_eq!(gateways(&table, "alice"), vec![7]);
        table.apply(1, update(3, false, vec![(RouteKind::Uid, "alice", 7, false)]));
        assert!(gateways(&table, "alice").is_empty());
    }

    #[test]
    fn partial_snapshots_and_non_authoritative_registries_are_not_trusted() {
        let table = RouteTable::new(1);
        table.set_connected(0, true);
        let mut first = update(5, true, vec![(RouteKind::Uid, "bob", 1, true)]);
        first.partial = true;
        assert!(!table.apply(0, first));
        assert!(!table.is_trusted());
        let mut warm = update(5, false, vec![]);
        warm.authoritative = false;
        assert!(table.apply(0, warm));
        assert!(!table.is_trusted());
        assert!(table.apply(0, update(5, false, vec![])));
        assert!(table.is_trusted());
        table.set_connected(0, false);
        assert!(!table.is_trusted());
    }

    #[test]
    fn a_uid_is_held_while_any_registry_lists_a_gateway_for_it() {
        let table = RouteTable::new(2);
        table.set_connected(0, true);
        table.set_connected(1, true);
        assert!(!table.holds(RouteKind::Uid, "carol"));
        table.apply(0, update(1, true, vec![(RouteKind::Uid, "carol", 3, true)]));
        table.apply(1, update(1, true, vec![(RouteKind::Uid, "carol", 3, true)]));
        assert!(table.holds(RouteKind::Uid, "carol"));
        assert!(!table.holds(RouteKind::Group, "carol"), "uids and groups are separate");
        table.apply(0, update(2, false, vec![(RouteKind::Uid, "carol", 3, false)]));
        assert!(
            table.holds(RouteKind::Uid, "carol"),
            "the other registry still lists it"
        );
        table.apply(1, update(2, false, vec![(RouteKind::Uid, "carol", 3, false)]));
        assert!(!table.holds(RouteKind::Uid, "carol"));
    }

    fn group_gateways(table: &RouteTable, key: &str) -> Vec<u64> {
        let mut out = Vec::new();
        table.for_each_gateway(RouteKind::Group, key, |gateway| out.push(gateway));
        out.sort();
        out
    }

    #[test]
    fn a_reset_drops_only_the_keys_that_registry_listed() {
        let table = RouteTable::new(2);
        table.apply(0, update(1, true, vec![(RouteKind::Uid, "alice", 7, true)]));
        table.apply(
            1,
            update(
                1,
                true,
                vec![(RouteKind::Uid, "bob", 8, true), (RouteKind::Group, "room", 8, true)],
            ),
        );
        table.apply(0, update(2, true, vec![(RouteKind::Group, "room", 9, true)]));
        assert!(gateways(&table, "alice").is_empty(), "only registry 0 listed it");
        assert_eq!(gateways(&table, "bob"), vec![8]);
        assert_eq!(group_gateways(&table, "room"), vec![8, 9]);
        table.apply(1, update(2, true, vec![]));
        assert_eq!(group_gateways(&table, "room"), vec![9]);
        assert!(!table.holds(RouteKind::Uid, "bob"));
    }

    #[test]
    fn uids_and_groups_of_the_same_name_route_separately() {
        let table = RouteTable::new(1);
        table.apply(
            0,
            update(
                1,
                true,
                vec![(RouteKind::Uid, "x", 1, true), (RouteKind::Group, "x", 2, true)],
            ),
        );
        assert_eq!(gateways(&table, "x"), vec![1]);
        assert_eq!(group_gateways(&table, "x"), vec![2]);
        table.apply(0, update(2, false, vec![(RouteKind::Group, "x", 2, false)]));
        assert_eq!(gateways(&table, "x"), vec![1]);
        assert!(!table.holds(RouteKind::Group, "x"));
    }

    #[test]
    fn an_entry_of_unknown_kind_is_ignored() {
        let table = RouteTable::new(1);
        let mut bad = update(1, true, vec![(RouteKind::Unspecified, "x", 1, true)]);
        bad.entries.push(RouteEntry {
            kind: 99,
            key: "y".into(),
            gateway: 1,
            present: true,
        });
        table.apply(0, bad);
        assert!(!table.holds(RouteKind::Uid, "x") && !table.holds(RouteKind::Uid, "y"));
        assert!(!table.holds(RouteKind::Group, "x") && !table.holds(RouteKind::Group, "y"));
    }

    #[test]
    fn a_gateway_announced_twice_is_listed_once_and_one_removal_ends_it() {
        let table = RouteTable::new(1);
        table.apply(0, update(1, true, vec![(RouteKind::Uid, "dan", 4, true)]));
        table.apply(0, update(2, false, vec![(RouteKind::Uid, "dan", 4, true)]));
        assert_eq!(gateways(&table, "dan"), vec![4]);
        table.apply(0, update(3, false, vec![(RouteKind::Uid, "dan", 4, false)]));
        assert!(!table.holds(RouteKind::Uid, "dan"));
    }

    #[test]
    fn removing_what_is_not_listed_changes_nothing() {
        let table = RouteTable::new(2);
        table.apply(0, update(1, true, vec![(RouteKind::Uid, "eve", 4, true)]));
        table.apply(
            0,
            update(
                2,
                false,
                vec![(RouteKind::Uid, "eve", 5, false), (RouteKind::Uid, "nobody", 4, false)],
            ),
        );
        table.apply(1, update(1, false, vec![(RouteKind::Uid, "eve", 4, false)]));
        assert_eq!(gateways(&table, "eve"), vec![4], "another gateway, another registry");
        assert!(!table.holds(RouteKind::Uid, "nobody"));
    }

    #[test]
    fn a_partial_snapshot_is_not_acknowledged_and_its_last_chunk_is() {
        let table = RouteTable::new(1);
        table.set_connected(0, true);
        let mut first = update(4, true, vec![(RouteKind::Uid, "a", 1, true)]);
        first.partial = true;
        assert!(!table.apply(0, first));
        assert!(!table.is_authoritative(0), "incomplete");
        let mut middle = update(4, false, vec![(RouteKind::Uid, "b", 1, true)]);
        middle.partial = true;
        assert!(!table.apply(0, middle));
        assert!(!table.is_authoritative(0));
        assert!(table.apply(0, update(4, false, vec![(RouteKind::Uid, "c", 1, true)])));
        assert!(table.is_authoritative(0));
        for key in ["a", "b", "c"] {
            assert!(table.holds(RouteKind::Uid, key), "{key} kept across the chunks");
        }
        let mut again = update(5, true, vec![]);
        again.partial = true;
        table.apply(0, again);
        assert!(
            !table.is_authoritative(0),
            "a new snapshot makes the view incomplete again"
        );
    }

    #[test]
    fn a_view_is_authoritative_only_while_connected_complete_and_authoritative() {
        let table = RouteTable::new(2);
        assert!(!table.is_authoritative(0), "never connected");
        table.apply(0, update(1, true, vec![]));
        assert!(!table.is_authoritative(0), "complete but not connected");
        table.set_connected(0, true);
        assert!(!table.is_authoritative(0), "a new session starts incomplete");
        table.apply(0, update(1, true, vec![]));
        assert!(table.is_authoritative(0));
        assert!(!table.is_authoritative(1), "views are per registry");
        assert!(!table.is_authoritative(5), "no such registry");
    }

    #[test]
    fn any_one_trusted_view_makes_the_table_trusted() {
        let table = RouteTable::new(2);
        let mut trust = table.trust();
        table.set_connected(0, true);
        table.set_connected(1, true);
        assert!(!trust.has_changed().unwrap(), "untrusted from the start: no news");
        table.apply(1, update(1, true, vec![]));
        assert!(table.is_trusted());
        assert!(trust.has_changed().unwrap());
        assert!(*trust.borrow_and_update());
        table.apply(0, update(1, true, vec![]));
        assert!(!trust.has_changed().unwrap(), "still trusted: no news");
        table.set_connected(1, false);
        assert!(table.is_trusted(), "registry 0 is still complete");
        table.set_connected(0, false);
        assert!(!table.is_trusted());
        assert!(trust.has_changed().unwrap());
        assert!(!*trust.borrow_and_update());
    }
}
