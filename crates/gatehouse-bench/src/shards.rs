//! [`Shards`]: the sharded map the baseline relay and the hop processes keep their
//! connections, uids and groups in. Its own module because both sides of the two-hop reference
//! use it (the edge in `baseline`, the hop in `hop`), and `baseline` already depends on `hop`.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};

/// Lock shards per map: more than the cores that could contend, few enough to scan for
/// broadcasts.
const SHARDS: usize = 16;

/// A map split over [`SHARDS`] mutexes by key hash.
pub(crate) struct Shards<K, V> {
    /// Picks a key's shard; random per map so that keys spread evenly whatever they are.
    hasher: RandomState,
    /// The shards; scanned in turn by broadcasts (each lock held for one shard only).
    pub(crate) shards: Vec<Mutex<HashMap<K, V>>>,
}

impl<K: Hash + Eq, V> Shards<K, V> {
    pub(crate) fn new() -> Shards<K, V> {
        Shards {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Locks the shard that holds `key`.
    pub(crate) fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, HashMap<K, V>> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }
}
