//! The keys one gateway holds: its uids and its groups.
//!
//! The registry holds every bound uid of the cluster once, so a key must be small: each name is
//! a [`CompactString`] (24 bytes, no allocation for names of up to 24 bytes) in a set of its
//! kind, where a `(kind, String)` pair took 32 bytes plus an allocation (docs/scaling.md).

use std::collections::HashSet;

use compact_str::CompactString;
use gatehouse_proto::v1::RouteKind;

/// A gateway's uids and groups.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    uids: HashSet<CompactString>,
    groups: HashSet<CompactString>,
}

impl Keys {
    /// Whether `kind` (a `RouteKind` on the wire) names a kind of key a gateway may hold.
    pub(crate) fn known_kind(kind: i32) -> bool {
        matches!(RouteKind::try_from(kind), Ok(RouteKind::Uid | RouteKind::Group))
    }

    fn set_mut(&mut self, kind: i32) -> Option<&mut HashSet<CompactString>> {
        match RouteKind::try_from(kind) {
            Ok(RouteKind::Uid) => Some(&mut self.uids),
            Ok(RouteKind::Group) => Some(&mut self.groups),
            _ => None,
        }
    }

    /// Adds a key; whether it was new. Keys of an unknown kind are never held.
    pub(crate) fn insert(&mut self, kind: i32, key: &str) -> bool {
        self.set_mut(kind)
            .is_some_and(|set| set.insert(CompactString::from(key)))
    }

    /// Removes a key; whether it was held.
    pub(crate) fn remove(&mut self, kind: i32, key: &str) -> bool {
        self.set_mut(kind).is_some_and(|set| set.remove(key))
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.uids.len() + self.groups.len()
    }

    /// Every key, with its kind.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (RouteKind, &CompactString)> + '_ {
        let uids = self.uids.iter().map(|key| (RouteKind::Uid, key));
        uids.chain(self.groups.iter().map(|key| (RouteKind::Group, key)))
    }

    /// The keys held here and not in `other`.
    pub(crate) fn difference<'a>(
        &'a self,
        other: &'a Keys,
    ) -> impl Iterator<Item = (RouteKind, &'a CompactString)> + 'a {
        let uids = self.uids.difference(&other.uids).map(|key| (RouteKind::Uid, key));
        uids.chain(self.groups.difference(&other.groups).map(|key| (RouteKind::Group, key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_and_groups_of_one_name_are_different_keys_and_unknown_kinds_are_never_held() {
        let mut keys = Keys::default();
        assert!(keys.insert(RouteKind::Uid as i32, "x"));
        assert!(keys.insert(RouteKind::Group as i32, "x"));
        assert!(!keys.insert(RouteKind::Uid as i32, "x"), "already held");
        assert!(!keys.insert(99, "y") && !keys.insert(RouteKind::Unspecified as i32, "y"));
        assert_eq!(keys.len(), 2);
        assert!(keys.remove(RouteKind::Group as i32, "x"));
        assert!(!keys.remove(RouteKind::Group as i32, "x"));
        let held: Vec<_> = keys.iter().map(|(kind, key)| (kind, key.as_str())).collect();
        assert_eq!(held, vec![(RouteKind::Uid, "x")]);
    }

    #[test]
    fn the_difference_keeps_kinds_apart() {
        let mut old = Keys::default();
        old.insert(RouteKind::Uid as i32, "a");
        old.insert(RouteKind::Group as i32, "b");
        let mut new = Keys::default();
        new.insert(RouteKind::Group as i32, "a");
        new.insert(RouteKind::Group as i32, "b");
        let gone: Vec<_> = old.difference(&new).map(|(kind, key)| (kind, key.as_str())).collect();
        assert_eq!(gone, vec![(RouteKind::Uid, "a")]);
        let added: Vec<_> = new.difference(&old).map(|(kind, key)| (kind, key.as_str())).collect();
        assert_eq!(added, vec![(RouteKind::Group, "a")]);
    }
}
