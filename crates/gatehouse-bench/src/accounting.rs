//! Counting what was sent and what arrived: the measured window, live counters, duplicate
//! detection per receiver, and latency histograms.
//!
//! A message is *measured* when its timestamp falls inside the window; sender and receiver judge
//! by the same stamp, so both sides agree on which messages count without talking to each other.
//! Every receiver remembers the `(sender, seq)` pairs of the measured messages it got: a second
//! copy is a duplicate, and `expected - distinct deliveries` is the loss.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// Highest latency the histograms resolve (60 s, in µs); slower deliveries are recorded as 60 s.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Histogram shards: receivers on different runtime threads rarely take the same lock.
const SHARDS: usize = 8;

/// The measured window, in nanoseconds since the run's clock base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First measured instant.
    pub start_ns: u64,
    /// First instant after the window.
    pub end_ns: u64,
}

impl Window {
    /// Whether a message stamped `ts_ns` is counted.
    pub fn contains(&self, ts_ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&ts_ns)
    }
}

/// Counters every client task updates; read live for progress lines and at the end for the
/// report. Relaxed atomics: each is a plain tally and none orders anything else.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages sent, measured or not (progress only).
    pub sent_total: AtomicU64,
    /// Data frames of this run received, measured or not (progress only).
    pub received_total: AtomicU64,
    /// Measured messages sent.
    pub sent: AtomicU64,
    /// Deliveries the measured messages should cause (fan-out included).
    pub expected: AtomicU64,
    /// Distinct deliveries of measured messages.
    pub delivered: AtomicU64,
    /// Extra copies of measured deliveries.
    pub duplicated: AtomicU64,
    /// Distinct acknowledgements of measured messages (chat only).
    pub acked: AtomicU64,
    /// Error frames the server sent.
    pub error_frames: AtomicU64,
    /// Clients whose connection ended before the run did (and, reconnecting, that could not
    /// connect again).
    pub disconnects: AtomicU64,
    /// Reconnecting chat clients: connections opened again after one ended.
    pub reconnects: AtomicU64,
    /// Reconnecting chat clients: clients that reconnected at least once.
    pub reconnected_clients: AtomicU64,
    /// Reconnecting chat clients: copies of a message the client already had, which the
    /// protocol allows (a push racing a catch-up, a resend pushed again) and clients drop by
    /// position; counted apart from `duplicated`.
    pub repeated: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// A consistent-enough copy of the measured counters.
    pub fn totals(&self) -> Totals {
        Totals {
            sent: Counters::get(&self.sent),
            expected: Counters::get(&self.expected),
            delivered: Counters::get(&self.delivered),
            duplicated: Counters::get(&self.duplicated),
        }
    }
}

/// The measured counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Measured messages sent.
    pub sent: u64,
    /// Deliveries they should cause.
    pub expected: u64,
    /// Distinct deliveries that arrived.
    pub delivered: u64,
    /// Extra copies that arrived.
    pub duplicated: u64,
}

impl Totals {
    /// Expected deliveries that did not arrive.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }
}

/// Whether a delivery was seen before by the same receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first copy.
    First,
    /// A repeat.
    Duplicate,
}

/// One receiver's memory of the measured messages it got, keyed by `(sender, seq)`.
///
/// About 16 bytes per measured delivery: a long run at a high rate needs memory in proportion,
/// which is the price of exact duplicate counting under reordering.
#[derive(Debug, Default)]
pub struct Tally {
    seen: HashSet<u64, BuildHasherDefault<KeyHasher>>,
}

impl Tally {
    /// Records a delivery of message `seq` from client `from`; `kind` separates independent
    /// streams of the same pair (deliveries and acks).
    pub fn observe(&mut self, kind: u8, from: u32, seq: u64) -> Seen {
        let key = (u64::from(kind) << 63) | (u64::from(from & 0x00ff_ffff) << 39) | (seq & ((1 << 39) - 1));
        if self.seen.insert(key) {
            Seen::First
        } else {
            Seen::Duplicate
        }
    }
}

/// A splitmix64-finalizer hasher for the packed `u64` keys of [`Tally`]: SipHash would cost more
/// than the rest of a delivery's accounting, and the keys are not attacker-controlled. (A bare
/// multiplication would not do: the table indexes by the low bits, which would then depend on
/// the low bits of `seq` alone, and every sender's `seq` runs through the same values.)
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        let mut z = self.0 ^ value;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = z ^ (z >> 31);
    }
}

/// Latencies in microseconds, recorded by many tasks into a few locked histograms and merged
/// at the end.
#[derive(Debug)]
pub struct LatencyRecorder {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for LatencyRecorder {
    fn default() -> LatencyRecorder {
        LatencyRecorder::new()
    }
}

impl LatencyRecorder {
    /// Empty histograms covering 1 µs to 60 s at three significant digits.
    pub fn new() -> LatencyRecorder {
        LatencyRecorder {
            shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }

    /// Records one latency; `shard` spreads writers (a client index does).
    pub fn record(&self, shard: usize, micros: u64) {
        let mut histogram = self.shards[shard % SHARDS].lock().unwrap_or_else(|e| e.into_inner());
        histogram.saturating_record(micros.clamp(1, MAX_LATENCY_US));
    }

    /// All shards merged into one histogram.
    pub fn merged(&self) -> Histogram<u64> {
        let mut merged = new_histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            merged.add(&*shard).expect("histograms with equal bounds always merge");
        }
        merged
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_half_open() {
        let window = Window {
            start_ns: 100,
            end_ns: 200,
        };
        assert!(!window.contains(99));
        assert!(window.contains(100));
        assert!(window.contains(199));
        assert!(!window.contains(200));
    }

    #[test]
    fn duplicates_are_per_sender_and_seq() {
        let mut tally = Tally::default();
        assert_eq!(tally.observe(0, 1, 7), Seen::First);
        assert_eq!(tally.observe(0, 2, 7), Seen::First);
        assert_eq!(tally.observe(0, 1, 8), Seen::First);
        assert_eq!(tally.observe(0, 1, 7), Seen::Duplicate);
        // An ack of the same message is a separate stream.
        assert_eq!(tally.observe(1, 1, 7), Seen::First);
        assert_eq!(tally.observe(1, 1, 7), Seen::Duplicate);
    }

    #[test]
    fn loss_and_duplicates_add_up() {
        // Three receivers of a group of three; sender 0 sends seqs 0..10, the fan-out is three.
        let counters = Counters::default();
        let mut tallies: Vec<Tally> = (0..3).map(|_| Tally::default()).collect();
        for seq in 0..10 {
            Counters::bump(&counters.sent);
            Counters::add(&counters.expected, 3);
            for (receiver, tally) in tallies.iter_mut().enumerate() {
                // Receiver 2 misses seq 4; receiver 1 gets seq 6 twice.
                if receiver == 2 && seq == 4 {
                    continue;
                }
                let copies = if receiver == 1 && seq == 6 { 2 } else { 1 };
                for _ in 0..copies {
                    match tally.observe(0, 0, seq) {
                        Seen::First => Counters::bump(&counters.delivered),
                        Seen::Duplicate => Counters::bump(&counters.duplicated),
                    }
                }
            }
        }
        let totals = counters.totals();
        assert_eq!(totals.sent, 10);
        assert_eq!(totals.expected, 30);
        assert_eq!(totals.delivered, 29);
        assert_eq!(totals.duplicated, 1);
        assert_eq!(totals.lost(), 1);
    }

    #[test]
    fn more_deliveries_than_expected_is_not_negative_loss() {
        let totals = Totals {
            sent: 1,
            expected: 1,
            delivered: 2,
            duplicated: 0,
        };
        assert_eq!(totals.lost(), 0);
    }

    #[test]
    fn shards_merge_into_percentiles() {
        let recorder = LatencyRecorder::new();
        for micros in 1..=1000u64 {
            recorder.record(micros as usize, micros);
        }
        let merged = recorder.merged();
        assert_eq!(merged.len(), 1000);
        let p50 = merged.value_at_quantile(0.5);
        let p99 = merged.value_at_quantile(0.99);
        assert!((499..=501).contains(&p50), "p50 {p50}");
        assert!((989..=991).contains(&p99), "p99 {p99}");
        assert_eq!(merged.max(), 1000);
    }

    #[test]
    fn out_of_range_latencies_are_clamped() {
        let recorder = LatencyRecorder::new();
        recorder.record(0, 0);
        recorder.record(0, u64::MAX);
        let merged = recorder.merged();
        assert_eq!(merged.len(), 2);
        assert_eq!(merged.min(), 1);
        assert!(merged.max() >= MAX_LATENCY_US);
    }
}
