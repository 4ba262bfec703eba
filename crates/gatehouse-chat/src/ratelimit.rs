//! Per-connection rate limits of the chat worker: one token bucket for sends and one for every
//! other request, per client id.
//!
//! The gateway already bounds the frames per second a socket may send (`--message-rate`); these
//! buckets bound what each frame may cost the chat service (a stored message, a store query),
//! at a rate a person never reaches. A request over the limit is answered `rate_limited` with
//! the time after which it would be accepted (`retry_after_ms`) and is not executed. A
//! connection that keeps sending regardless, more than [`RateLimits::abuse_refusals`] refused
//! requests within [`RateLimits::abuse_window`], is closed with 1008 (policy violation).
//!
//! Sends keep their order through refusals: a client pipelines sends, so when one is refused a
//! later one still on the wire could find a fresh token and be stored first. After a refused
//! send (with a `cid`) the connection's other sends are refused too until that `cid` comes
//! again, at most [`HOLD_FOR`]: a client that sends refused messages again oldest first (the
//! client library does) gets them stored in the order it sent them.
//!
//! State is one small entry per connection in a sharded map (no global lock on the message
//! path), dropped in `on_close`. A connection whose events moved to another worker never
//! closes here: entries idle for longer than [`IDLE_EVICTION`] (a full bucket then, so
//! forgetting one changes nothing) are swept now and then.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use gatehouse_sdk::ClientId;
use tokio::time::Instant;

/// Entries untouched this long are dropped by the sweep.
pub const IDLE_EVICTION: Duration = Duration::from_secs(600);
/// The map is swept once every this many checks.
const SWEEP_EVERY: u64 = 1 << 16;
/// How long a refused send holds back the connection's later sends (until it comes again).
pub const HOLD_FOR: Duration = Duration::from_secs(2);
/// At most one warning per this interval, however many requests are refused.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// A refill rate and a burst: `per_second` tokens flow in continuously up to `burst`. A rate
/// of 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens per second.
    pub per_second: u32,
    /// Bucket size: how many may come at once after a quiet period.
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        per_second: 0,
        burst: 0,
    };
}

/// The chat worker's per-connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `send` requests (each stores a message and pushes it).
    pub sends: Rate,
    /// Every other frame (store queries, group changes, malformed frames).
    pub requests: Rate,
    /// `typing` frames: ephemeral, refused without counting toward the close.
    pub typing: Rate,
    /// Refusals within `abuse_window` beyond which the connection is closed with 1008.
    pub abuse_refusals: u32,
    /// See `abuse_refusals`.
    pub abuse_window: Duration,
}

impl Default for RateLimits {
    /// 20 sends per second (bursts of 40), 20 other requests per second (bursts of 60), and a
    /// close after more than 50 refusals within 10 s: far above what a person does, even
    /// catching up after a reconnect, and far below what the store serves per connection.
    fn default() -> Self {
        RateLimits {
            sends: Rate {
                per_second: 20,
                burst: 40,
            },
            requests: Rate {
                per_second: 20,
                burst: 60,
            },
            typing: Rate {
                per_second: 2,
                burst: 4,
            },
            abuse_refusals: 50,
            abuse_window: Duration::from_secs(10),
        }
    }
}

/// Which bucket a frame draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `send`.
    Send,
    /// A `typing` frame (its own bucket; refusals never close the connection).
    Typing,
    /// Anything else.
    Request,
}

/// What the limiter decided about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allowed,
    /// Refuse; the request would be accepted after `retry_after`.
    Refused {
        /// When to try again.
        retry_after: Duration,
    },
    /// Refuse and close the connection (1008): it kept sending while refused.
    Abusive,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst.max(1)),
            updated: now,
        }
    }

    /// Takes one token, or returns how long until one is there (a refusal takes nothing).
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        if rate.per_second == 0 {
            return Ok(());
        }
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait(rate))
        }
    }

    /// How long until a token is there (zero if one is), taking nothing.
    fn peek(&mut self, rate: Rate, now: Instant) -> Duration {
        if rate.per_second == 0 {
            return Duration::ZERO;
        }
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            self.wait(rate)
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * f64::from(rate.per_second)).min(f64::from(rate.burst.max(1)));
    }

    fn wait(&self, rate: Rate) -> Duration {
        Duration::from_secs_f64((1.0 - self.tokens) / f64::from(rate.per_second))
    }
}

#[derive(Debug)]
struct Connection {
    sends: Bucket,
    requests: Bucket,
    typing: Bucket,
    window_start: Instant,
    refusals: u32,
    last_seen: Instant,
    /// The refused send (a hash of its `cid`) that holds back the later ones, and since when.
    held: Option<(u64, Instant)>,
}

impl Connection {
    /// Takes a send token, keeping sends in order through refusals (see the module docs).
    fn send(&mut self, rate: Rate, cid: Option<&str>, now: Instant) -> Result<(), Duration> {
        // The cid is hashed only while a send is held or when this one is refused: an accepted
        // send with nothing held (the common case) costs no hash.
        if let Some((held, since)) = self.held {
            if now.saturating_duration_since(since) > HOLD_FOR {
                self.held = None;
            } else if cid.map(cid_key) != Some(held) {
                // Stored now, it would overtake the refused one: refused until that one is in.
                return Err(self.sends.peek(rate, now).max(Duration::from_millis(1)));
            }
        }
        let taken = self.sends.take(rate, now);
        if taken.is_ok() {
            self.held = None;
        } else if self.held.is_none() {
            self.held = cid.map(|cid| (cid_key(cid), now));
        }
        taken
    }
}

/// A hash of a `cid`: the hold needs to recognise it, not to keep it (no allocation per send).
fn cid_key(cid: &str) -> u64 {
    use std::hash::Hasher;
    // Fixed keys: the same cid must give the same key on every call. A client that made two of
    // its own cids collide would only let its own later send through.
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(cid.as_bytes());
    hasher.finish()
}

/// The per-connection buckets of one worker, and its counters.
#[derive(Debug)]
pub struct Limiter {
    limits: RateLimits,
    connections: DashMap<ClientId, Connection>,
    checks: AtomicU64,
    refused: AtomicU64,
    closed: AtomicU64,
    /// Milliseconds since `epoch` of the last warning.
    last_warning_ms: AtomicU64,
    epoch: Instant,
}

impl Limiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: RateLimits) -> Limiter {
        Limiter {
            limits,
            connections: DashMap::new(),
            checks: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            last_warning_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Decides about one frame of `client` now (`cid`: the frame's, which keeps sends in order
    /// through refusals; see the module docs).
    pub fn check(&self, client: ClientId, kind: Kind, cid: Option<&str>) -> Verdict {
        self.check_at(client, kind, cid, Instant::now())
    }

    /// Decides about one frame of `client` at `now`.
    pub fn check_at(&self, client: ClientId, kind: Kind, cid: Option<&str>, now: Instant) -> Verdict {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(now);
        }
        let limits = self.limits;
        let verdict = {
            let mut connection = self.connections.entry(client).or_insert_with(|| Connection {
                sends: Bucket::full(limits.sends, now),
                requests: Bucket::full(limits.requests, now),
                typing: Bucket::full(limits.typing, now),
                window_start: now,
                refusals: 0,
                last_seen: now,
                held: None,
            });
            connection.last_seen = now;
            let taken = match kind {
                Kind::Send => connection.send(limits.sends, cid, now),
                Kind::Typing => connection.typing.take(limits.typing, now),
                Kind::Request => connection.requests.take(limits.requests, now),
            };
            match taken {
                Ok(()) => Verdict::Allowed,
                Err(retry_after) if kind == Kind::Typing => Verdict::Refused { retry_after },
                Err(retry_after) => {
                    if now.saturating_duration_since(connection.window_start) > limits.abuse_window {
                        connection.window_start = now;
                        connection.refusals = 0;
                    }
                    connection.refusals += 1;
                    if connection.refusals > limits.abuse_refusals {
                        Verdict::Abusive
                    } else {
                        Verdict::Refused { retry_after }
                    }
                }
            }
        };
        if verdict != Verdict::Allowed {
            self.count_refusal(client, verdict == Verdict::Abusive, now);
        }
        verdict
    }

    /// Forgets a connection (it closed).
    pub fn forget(&self, client: ClientId) {
        self.connections.remove(&client);
    }

    /// Requests refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed for abuse since start.
    pub fn closed(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }

    /// Connections tracked right now.
    pub fn tracked(&self) -> usize {
        self.connections.len()
    }

    /// Drops the entries of connections idle for [`IDLE_EVICTION`] (their buckets are full
    /// again, so nothing is lost).
    pub fn sweep(&self, now: Instant) {
        self.connections
            .retain(|_, c| now.saturating_duration_since(c.last_seen) < IDLE_EVICTION);
    }

    fn count_refusal(&self, client: ClientId, closing: bool, now: Instant) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let closed = if closing {
            self.closed.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.closed()
        };
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX);
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= WARN_INTERVAL.as_millis() as u64;
        if (due || closing)
            && self
                .last_warning_ms
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                %client,
                refused_total = refused,
                closed_total = closed,
                closing,
                "chat requests refused by the per-connection rate limit"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, burst: u32) -> RateLimits {
        RateLimits {
            sends: Rate { per_second, burst },
            requests: Rate {
                per_second: per_second * 2,
                burst,
            },
            typing: Rate { per_second, burst },
            abuse_refusals: 3,
            abuse_window: Duration::from_secs(10),
        }
    }

    fn client(n: u128) -> ClientId {
        format!("{:032x}", (1u128 << 64) | n).parse().expect("a client id")
    }

    #[test]
    fn a_burst_passes_then_the_rate_decides_and_says_when() {
        let start = Instant::now();
        let limiter = Limiter::new(limits(10, 3));
        for _ in 0..3 {
            assert_eq!(limiter.check_at(client(1), Kind::Send, None, start), Verdict::Allowed);
        }
        assert_eq!(
            limiter.check_at(client(1), Kind::Send, None, start),
            Verdict::Refused {
                retry_after: Duration::from_millis(100)
            }
        );
        assert_eq!(
            limiter.check_at(client(1), Kind::Request, None, start),
            Verdict::Allowed,
            "the buckets are separate"
        );
        assert_eq!(
            limiter.check_at(client(2), Kind::Send, None, start),
            Verdict::Allowed,
            "and per connection"
        );
        let later = start + Duration::from_millis(100);
        assert_eq!(limiter.check_at(client(1), Kind::Send, None, later), Verdict::Allowed);
        assert_eq!(limiter.refused(), 1);
    }

    #[test]
    fn a_connection_that_keeps_sending_while_refused_is_closed() {
        let start = Instant::now();
        let limiter = Limiter::new(limits(1, 1));
        assert_eq!(limiter.check_at(client(1), Kind::Send, None, start), Verdict::Allowed);
        for _ in 0..3 {
            assert!(matches!(
                limiter.check_at(client(1), Kind::Send, None, start),
                Verdict::Refused { .. }
            ));
        }
        assert_eq!(limiter.check_at(client(1), Kind::Send, None, start), Verdict::Abusive);
        assert_eq!((limiter.refused(), limiter.closed()), (4, 1));
    }

    #[test]
    fn refusals_spread_over_more_than_the_window_are_not_abuse() {
        let start = Instant::now();
        let limiter = Limiter::new(limits(1, 1));
        for second in 0..20u64 {
            let now = start + Duration::from_secs(second * 4);
            assert_eq!(limiter.check_at(client(1), Kind::Send, None, now), Verdict::Allowed);
            assert!(matches!(
                limiter.check_at(client(1), Kind::Send, None, now),
                Verdict::Refused { .. }
            ));
        }
    }

    #[test]
    fn forgotten_and_idle_connections_leave_no_entry() {
        let start = Instant::now();
        let limiter = Limiter::new(RateLimits::default());
        limiter.check_at(client(1), Kind::Send, None, start);
        limiter.check_at(client(2), Kind::Send, None, start);
        limiter.forget(client(1));
        assert_eq!(limiter.tracked(), 1);
        limiter.sweep(start + IDLE_EVICTION);
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn typing_has_its_own_bucket_and_never_closes() {
        let start = Instant::now();
        let limiter = Limiter::new(limits(1, 2));
        for _ in 0..2 {
            assert_eq!(limiter.check_at(client(1), Kind::Typing, None, start), Verdict::Allowed);
        }
        for _ in 0..100 {
            assert!(matches!(
                limiter.check_at(client(1), Kind::Typing, None, start),
                Verdict::Refused { .. }
            ));
        }
        assert_eq!(limiter.check_at(client(1), Kind::Send, None, start), Verdict::Allowed);
        assert_eq!(
            limiter.check_at(client(1), Kind::Request, None, start),
            Verdict::Allowed
        );
    }

    #[test]
    fn after_a_refused_send_the_later_ones_wait_until_it_comes_again() {
        let limiter = Limiter::new(limits(10, 1));
        let start = Instant::now();
        let send = |cid: &str, at: Instant| limiter.check_at(client(1), Kind::Send, Some(cid), at);
        assert_eq!(send("a", start), Verdict::Allowed);
        assert!(matches!(send("b", start), Verdict::Refused { .. }), "over the burst");
        let later = start + Duration::from_millis(150);
        assert!(
            matches!(send("c", later), Verdict::Refused { .. }),
            "a token is back, but c would overtake b"
        );
        assert_eq!(send("b", later), Verdict::Allowed, "b first");
        assert_eq!(send("c", later + Duration::from_millis(100)), Verdict::Allowed);
        assert!(matches!(
            send("d", later + Duration::from_millis(100)),
            Verdict::Refused { .. }
        ));
        let abandoned = later + Duration::from_millis(100) + HOLD_FOR + Duration::from_millis(1);
        assert_eq!(
            send("e", abandoned),
            Verdict::Allowed,
            "a refused send not sent again holds nothing for long"
        );
    }

    #[test]
    fn a_zero_rate_is_unlimited() {
        let start = Instant::now();
        let limiter = Limiter::new(RateLimits {
            sends: Rate::UNLIMITED,
            ..limits(1, 1)
        });
        for _ in 0..1000 {
            assert_eq!(limiter.check_at(client(1), Kind::Send, None, start), Verdict::Allowed);
        }
    }
}
