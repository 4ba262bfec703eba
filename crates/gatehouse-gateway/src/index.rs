//! The uid and group indexes of this gateway's connections, for targeted fan-out.
//!
//! Every change that makes a key appear on (or disappear from) this gateway is recorded in the
//! route log under the index shard's lock, so the registries learn the changes in their true
//! order. A bind or join returns the generation its key appeared under; the caller completes it
//! once the registries confirmed that generation.
//!
//! Lock order, never reversed: the connection's mutex, then an index shard, then the route log.

use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use gatehouse_proto::v1::RouteKind;

use crate::conn::Conn;
use crate::routes::RouteSync;

/// The connections of one uid or one group on this gateway.
struct Members {
    /// The member connections (shared with the connection table) for fan-out.
    conns: Vec<Arc<Conn>>,
    /// Route-log generation of the key's last appearance; a bind waits for its confirmation.
    added_gen: u64,
}

/// Why a connection cannot join one more group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyGroups(pub usize);

/// The uid and group indexes.
pub(crate) struct RouteIndex {
    /// The connections bound to each uid (a user's devices), for sends to uids.
    uids: DashMap<String, Members>,
    /// The connections in each group, for sends to groups.
    groups: DashMap<String, Members>,
    /// Where appearances and disappearances of keys go (towards the registries).
    routes: Arc<RouteSync>,
    /// Groups one connection may be in: bounds the keys one client can make this gateway
    /// announce to the registries.
    max_groups_per_conn: usize,
}

impl RouteIndex {
    pub(crate) fn new(routes: Arc<RouteSync>, max_groups_per_conn: usize) -> RouteIndex {
        RouteIndex {
            uids: DashMap::new(),
            groups: DashMap::new(),
            routes,
            max_groups_per_conn,
        }
    }

    /// The number of distinct uids bound here.
    pub(crate) fn uid_count(&self) -> usize {
        self.uids.len()
    }

    /// The number of groups with members here.
    pub(crate) fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Calls `f` with the members of `key` under the shard's read guard (`f` must not touch
    /// this index).
    pub(crate) fn with_members(&self, kind: RouteKind, key: &str, f: impl FnOnce(&[Arc<Conn>])) {
        if let Some(members) = self.map(kind).get(key) {
            f(&members.conns);
        }
    }

    /// Every group name with members here.
    pub(crate) fn group_names(&self) -> Vec<String> {
        self.groups.iter().map(|g| g.key().clone()).collect()
    }

    /// Binds `conn` to `uid` (replacing any previous uid). Returns the route generation the
    /// caller must see confirmed before the bind counts as complete.
    pub(crate) fn bind_uid(&self, conn: &Arc<Conn>, uid: &str) -> u64 {
        let mut state = conn.lock();
        if state.uid() == Some(uid) {
            return self.uids.get(uid).map(|m| m.added_gen).unwrap_or(0);
        }
        if let Some(old) = state.set_uid(uid) {
            self.leave(RouteKind::Uid, &old, conn.id());
        }
        self.join(RouteKind::Uid, uid, conn)
    }

    /// Unbinds `conn` from `uid` if it is bound to it.
    pub(crate) fn unbind_uid(&self, conn: &Conn, uid: &str) {
        let mut state = conn.lock();
        if state.clear_uid(uid) {
            self.leave(RouteKind::Uid, uid, conn.id());
        }
    }

    /// Adds `conn` to `group`; returns the generation to wait for, like [`RouteIndex::bind_uid`].
    pub(crate) fn join_group(&self, conn: &Arc<Conn>, group: &str) -> Result<u64, TooManyGroups> {
        let mut state = conn.lock();
        if state.in_group(group) {
            return Ok(self.groups.get(group).map(|m| m.added_gen).unwrap_or(0));
        }
        if state.group_count() >= self.max_groups_per_conn {
            return Err(TooManyGroups(self.max_groups_per_conn));
        }
        state.add_group(group);
        Ok(self.join(RouteKind::Group, group, conn))
    }

    /// Removes `conn` from `group`.
    pub(crate) fn leave_group(&self, conn: &Conn, group: &str) {
        let mut state = conn.lock();
        if state.remove_group(group) {
            self.leave(RouteKind::Group, group, conn.id());
        }
    }

    /// Dissolves a group on this gateway.
    pub(crate) fn ungroup(&self, group: &str) {
        let members: Vec<Arc<Conn>> = match self.groups.get(group) {
            Some(m) => m.conns.clone(),
            None => return,
        };
        for conn in members {
            self.leave_group(&conn, group);
        }
    }

    /// Removes a closing connection from every index; returns the groups it was in, which its
    /// close event tells the worker (uid and session stay on the connection's state).
    pub(crate) fn detach(&self, conn: &Conn) -> Vec<String> {
        let mut state = conn.lock();
        if let Some(uid) = state.uid() {
            self.leave(RouteKind::Uid, uid, conn.id());
        }
        let groups: Vec<String> = state.take_groups().into_iter().collect();
        for group in &groups {
            self.leave(RouteKind::Group, group, conn.id());
        }
        groups
    }

    fn map(&self, kind: RouteKind) -> &DashMap<String, Members> {
        match kind {
            RouteKind::Group => &self.groups,
            _ => &self.uids,
        }
    }

    fn join(&self, kind: RouteKind, key: &str, conn: &Arc<Conn>) -> u64 {
        let mut members = self.map(kind).entry(key.to_owned()).or_insert_with(|| Members {
            conns: Vec::new(),
            added_gen: 0,
        });
        if members.conns.is_empty() {
            members.added_gen = self.routes.record(kind, key, true);
        }
        members.conns.push(conn.clone());
        members.added_gen
    }

    fn leave(&self, kind: RouteKind, key: &str, conn_id: u64) {
        if let Entry::Occupied(mut entry) = self.map(kind).entry(key.to_owned()) {
            entry.get_mut().conns.retain(|c| c.id() != conn_id);
            if entry.get().conns.is_empty() {
                self.routes.record(kind, key, false);
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(max_groups: usize) -> (RouteIndex, Arc<RouteSync>) {
        let routes = RouteSync::new(1);
        (RouteIndex::new(routes.clone(), max_groups), routes)
    }

    fn conn(id: u64) -> Arc<Conn> {
        Arc::new(Conn::new(id, 4).0)
    }

    fn members(index: &RouteIndex, kind: RouteKind, key: &str) -> Vec<u64> {
        let mut ids = Vec::new();
        index.with_members(kind, key, |conns| ids = conns.iter().map(|c| c.id()).collect());
        ids
    }

    #[test]
    fn a_key_appears_once_for_its_first_connection_and_disappears_with_its_last() {
        let (index, routes) = index(8);
        let (a, b) = (conn(1), conn(2));
        let first = index.bind_uid(&a, "ann");
        let second = index.bind_uid(&b, "ann");
        assert_eq!(first, second, "the second device waits for the same appearance");
        assert_eq!(routes.recorded(), vec![("ann".to_owned(), true)]);
        index.detach(&a);
        assert_eq!(members(&index, RouteKind::Uid, "ann"), [2]);
        index.unbind_uid(&b, "ann");
        assert_eq!(
            routes.recorded(),
            vec![("ann".to_owned(), true), ("ann".to_owned(), false)]
        );
        assert_eq!(index.uid_count(), 0);
    }

    #[test]
    fn rebinding_moves_a_connection_and_an_older_unbind_does_not_remove_a_newer_binding() {
        let (index, _) = index(8);
        let a = conn(1);
        index.bind_uid(&a, "ann");
        index.bind_uid(&a, "bob");
        assert!(members(&index, RouteKind::Uid, "ann").is_empty());
        index.unbind_uid(&a, "ann");
        assert_eq!(
            members(&index, RouteKind::Uid, "bob"),
            [1],
            "unbinding a uid it no longer has is a no-op"
        );
    }

    #[test]
    fn groups_per_connection_are_bounded_and_ungroup_empties_a_group_everywhere() {
        let (index, _) = index(2);
        let (a, b) = (conn(1), conn(2));
        assert!(index.join_group(&a, "g1").is_ok());
        assert!(
            index.join_group(&a, "g1").is_ok(),
            "joining twice is not a second group"
        );
        assert!(index.join_group(&a, "g2").is_ok());
        assert_eq!(index.join_group(&a, "g3"), Err(TooManyGroups(2)));
        index.join_group(&b, "g1").unwrap();
        index.ungroup("g1");
        assert!(members(&index, RouteKind::Group, "g1").is_empty());
        assert_eq!(index.group_names(), ["g2"]);
        assert!(!a.lock().in_group("g1"), "the connection forgot the group too");
    }
}
