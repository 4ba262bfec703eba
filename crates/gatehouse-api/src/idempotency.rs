//! Idempotency keys for sends: a repeat within the window returns the first result and sends
//! nothing.
//!
//! Keys are scoped by API key name (two callers never share a key space) and remembered with a
//! fingerprint of the request, so the same key on a *different* request is refused instead of
//! silently answered with another request's result. Only successes are remembered: a send that
//! failed (a gateway unreachable, a timeout) may be retried with the same key. While the first
//! request with a key is still running, a repeat waits for it instead of sending a second copy.
//!
//! Memory is bounded: the cache is split into shards (a request locks one shard, briefly, and
//! only when it carries a key), each holding at most its share of the capacity. Completed keys
//! expire `window` after completion; when a shard is full, its oldest key is forgotten early
//! (counted in [`IdempotencyCache::evictions`]). The cache lives in one API process: repeats
//! that reach another process are not recognised (see docs/server-api.md).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
const SHARDS: usize = 16;

/// Checks an idempotency key: 1-128 printable ASCII characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "an idempotency key is 1-{MAX_KEY_BYTES} printable ASCII characters without spaces"
        ));
    }
    Ok(())
}

/// A digest of a request, so that a key reused for another request is detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

/// Builds a [`Fingerprint`] from a request's fields (each length-prefixed, so that field
/// boundaries cannot shift).
#[derive(Default)]
pub struct FingerprintBuilder(Sha256);

impl FingerprintBuilder {
    /// Adds a byte string.
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Adds a number.
    pub fn number(mut self, n: u64) -> Self {
        self.0.update(n.to_le_bytes());
        self
    }

    /// The digest.
    pub fn finish(self) -> Fingerprint {
        Fingerprint(self.0.finalize().into())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    scope: Arc<str>,
    key: Box<str>,
}

enum State {
    /// The first request is running; repeats subscribe and wait for the sender to go.
    Pending(watch::Sender<()>),
    /// Done successfully; repeats are answered from here until `expires`.
    Done { expires: Instant },
}

struct Entry {
    fingerprint: Fingerprint,
    generation: u64,
    state: State,
}

#[derive(Default)]
struct Shard {
    map: HashMap<CacheKey, Entry>,
    /// Insertion order, for expiry and eviction; records whose entry is gone or newer are
    /// skipped (and compacted away when they pile up).
    order: VecDeque<(CacheKey, u64)>,
    next_generation: u64,
}

/// What a request with an idempotency key should do.
pub enum Begin<'a> {
    /// Run it; report success through the claim.
    Run(Claim<'a>),
    /// An earlier request with this key succeeded: answer "done, replayed" and send nothing.
    Replay,
    /// The key was used for a different request.
    Mismatch,
    /// An earlier request with this key is running: wait, then ask again.
    Wait(watch::Receiver<()>),
}

/// The right to run a request with a given key. Dropped without [`Claim::succeed`], it
/// releases the key so that a retry runs again.
pub struct Claim<'a> {
    cache: &'a IdempotencyCache,
    key: CacheKey,
    generation: u64,
    shard: usize,
}

/// The cache of one API process.
pub struct IdempotencyCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    window: Duration,
    per_shard: usize,
    evictions: AtomicU64,
}

impl IdempotencyCache {
    /// A cache remembering completed keys for `window`, at most `capacity` keys.
    pub fn new(window: Duration, capacity: usize) -> IdempotencyCache {
        IdempotencyCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            window,
            per_shard: capacity.div_ceil(SHARDS).max(1),
            evictions: AtomicU64::new(0),
        }
    }

    /// Keys forgotten before their window ended because the cache was full.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Keys remembered (running or done), for tests and metrics.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("shard poisoned").map.len())
            .sum()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks a key up for a request with `fingerprint`, scoped by the caller's key `scope`.
    pub fn begin(&self, scope: &Arc<str>, key: &str, fingerprint: Fingerprint) -> Begin<'_> {
        let key = CacheKey {
            scope: scope.clone(),
            key: key.into(),
        };
        let shard_index = (self.hasher.hash_one(&key) as usize) % SHARDS;
        let mut shard = self.shards[shard_index].lock().expect("shard poisoned");
        let now = Instant::now();
        shard.prune(now);
        if let Some(entry) = shard.map.get(&key) {
            let live = match &entry.state {
                State::Pending(_) => true,
                State::Done { expires } => *expires > now,
            };
            if live {
                if entry.fingerprint != fingerprint {
                    return Begin::Mismatch;
                }
                return match &entry.state {
                    State::Pending(sender) => Begin::Wait(sender.subscribe()),
                    State::Done { .. } => Begin::Replay,
                };
            }
        }
        while shard.map.len() >= self.per_shard {
            if shard.evict_oldest() {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        let generation = shard.next_generation;
        shard.next_generation += 1;
        let (sender, _) = watch::channel(());
        shard.map.insert(
            key.clone(),
            Entry {
                fingerprint,
                generation,
                state: State::Pending(sender),
            },
        );
        shard.order.push_back((key.clone(), generation));
        if shard.order.len() > 2 * self.per_shard + 16 {
            shard.compact();
        }
        Begin::Run(Claim {
            cache: self,
            key,
            generation,
            shard: shard_index,
        })
    }
}

impl Claim<'_> {
    /// Records the request's success: repeats within the window are answered "replayed".
    pub fn succeed(self) {
        let mut shard = self.cache.shards[self.shard].lock().expect("shard poisoned");
        if let Some(entry) = shard.map.get_mut(&self.key)
            && entry.generation == self.generation
        {
            // Replacing the state drops the sender, which wakes every waiter.
            entry.state = State::Done {
                expires: Instant::now() + self.cache.window,
            };
        }
        drop(shard);
        std::mem::forget(self);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut shard = self.cache.shards[self.shard].lock().expect("shard poisoned");
        if shard
            .map
            .get(&self.key)
            .is_some_and(|e| e.generation == self.generation && matches!(e.state, State::Pending(_)))
        {
            shard.map.remove(&self.key);
        }
    }
}

impl Shard {
    fn is_current(&self, key: &CacheKey, generation: u64) -> bool {
        self.map.get(key).is_some_and(|e| e.generation == generation)
    }

    /// Drops expired keys and stale records from the front.
    fn prune(&mut self, now: Instant) {
        while let Some((key, generation)) = self.order.front() {
            match self.map.get(key) {
                Some(entry) if entry.generation == *generation => match entry.state {
                    State::Done { expires } if expires <= now => {
                        self.map.remove(key);
                    }
                    _ => return,
                },
                _ => {}
            }
            self.order.pop_front();
        }
    }

    /// Forgets the oldest remembered key; returns whether one was live.
    fn evict_oldest(&mut self) -> bool {
        while let Some((key, generation)) = self.order.pop_front() {
            if self.is_current(&key, generation) {
                self.map.remove(&key);
                return true;
            }
        }
        // No record left: the map is empty too (every entry has a record).
        false
    }

    fn compact(&mut self) {
        let order = std::mem::take(&mut self.order);
        self.order = order
            .into_iter()
            .filter(|(key, generation)| self.is_current(key, *generation))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(text: &str) -> Fingerprint {
        FingerprintBuilder::default().bytes(text.as_bytes()).finish()
    }

    fn scope(name: &str) -> Arc<str> {
        name.into()
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_is_replayed_within_the_window_and_forgotten_after() {
        let cache = IdempotencyCache::new(Duration::from_secs(300), 1000);
        let a = scope("a");
        let Begin::Run(claim) = cache.begin(&a, "k1", fp("send")) else {
            panic!("a new key must run");
        };
        claim.succeed();
        assert!(matches!(cache.begin(&a, "k1", fp("send")), Begin::Replay));
        assert!(matches!(cache.begin(&a, "k1", fp("other send")), Begin::Mismatch));
        // Another API key has its own key space.
        assert!(matches!(cache.begin(&scope("b"), "k1", fp("send")), Begin::Run(_)));
        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(matches!(cache.begin(&a, "k1", fp("send")), Begin::Run(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_releases_the_key_for_a_retry() {
        let cache = IdempotencyCache::new(Duration::from_secs(300), 1000);
        let a = scope("a");
        let Begin::Run(claim) = cache.begin(&a, "k", fp("x")) else {
            panic!()
        };
        drop(claim);
        assert!(cache.is_empty());
        assert!(matches!(cache.begin(&a, "k", fp("x")), Begin::Run(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeat_of_a_running_request_waits_for_its_outcome() {
        let cache = IdempotencyCache::new(Duration::from_secs(300), 1000);
        let a = scope("a");
        let Begin::Run(claim) = cache.begin(&a, "k", fp("x")) else {
            panic!()
        };
        let Begin::Wait(mut waiter) = cache.begin(&a, "k", fp("x")) else {
            panic!("a repeat of a running request must wait");
        };
        claim.succeed();
        // The sender is gone: the waiter wakes, asks again and is answered from the cache.
        assert!(waiter.changed().await.is_err());
        assert!(matches!(cache.begin(&a, "k", fp("x")), Begin::Replay));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_forgets_its_oldest_keys_first_and_counts_them() {
        // 16 shards of one key each.
        let cache = IdempotencyCache::new(Duration::from_secs(300), 16);
        let a = scope("a");
        for n in 0..200 {
            let key = format!("k{n}");
            let Begin::Run(claim) = cache.begin(&a, &key, fp(&key)) else {
                panic!()
            };
            claim.succeed();
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(cache.len() <= 16, "{} keys kept", cache.len());
        assert_eq!(cache.evictions(), 200 - cache.len() as u64);
        // The newest key is still remembered; the oldest is not.
        assert!(matches!(cache.begin(&a, "k199", fp("k199")), Begin::Replay));
        assert!(matches!(cache.begin(&a, "k0", fp("k0")), Begin::Run(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_keys_and_stale_records_do_not_accumulate() {
        // 16 shards of 100 keys: records are compacted past 216 per shard.
        let cache = IdempotencyCache::new(Duration::from_secs(1), 1600);
        let a = scope("a");
        for n in 0..10_000 {
            let key = format!("k{}", n % 50);
            match cache.begin(&a, &key, fp(&key)) {
                // Half succeed, half fail and leave a stale record behind.
                Begin::Run(claim) if n % 2 == 0 => claim.succeed(),
                Begin::Run(claim) => drop(claim),
                Begin::Replay | Begin::Mismatch | Begin::Wait(_) => {}
            }
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        let records: usize = cache.shards.iter().map(|s| s.lock().unwrap().order.len()).sum();
        assert!(cache.len() <= 50);
        assert!(records <= 16 * 216, "{records} records");
        tokio::time::advance(Duration::from_secs(2)).await;
        for shard in cache.shards.iter() {
            shard.lock().unwrap().prune(Instant::now());
        }
        assert!(cache.is_empty());
    }

    #[test]
    fn keys_are_printable_ascii_up_to_128_bytes() {
        assert!(check_key("order-42").is_ok());
        assert!(check_key(&"k".repeat(128)).is_ok());
        for bad in ["", "has space", "tab\t", "é", &"k".repeat(129)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fingerprints_respect_field_boundaries() {
        let ab_c = FingerprintBuilder::default().bytes(b"ab").bytes(b"c").finish();
        let a_bc = FingerprintBuilder::default().bytes(b"a").bytes(b"bc").finish();
        assert_ne!(ab_c, a_bc);
    }
}
