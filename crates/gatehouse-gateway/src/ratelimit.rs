//! A token bucket for one connection's input, owned by its socket task.
//!
//! Hand-written rather than `governor`'s direct limiter because it lives inside one task (no
//! atomics needed), costs 32 bytes per connection, and runs on tokio's clock, so the socket
//! task's rate behaviour is tested on a paused clock.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Rate;

/// Tokens refilled continuously at `rate` per second up to `burst`; a take may go into debt,
/// and the debt is the time the caller must wait before taking again.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket, or `None` when the rate is unlimited.
    pub(crate) fn new(rate: Rate, now: Instant) -> Option<TokenBucket> {
        (rate.per_second > 0).then(|| TokenBucket {
            per_second: f64::from(rate.per_second),
            burst: f64::from(rate.burst.max(1)),
            tokens: f64::from(rate.burst.max(1)),
            updated: now,
        })
    }

    /// Takes `amount` tokens; returns how long the caller must wait before the bucket is out of
    /// debt again (zero when it never went into debt).
    pub(crate) fn take(&mut self, amount: f64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst) - amount;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    #[test]
    fn a_burst_passes_and_the_excess_waits_for_refill() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(rate(10, 5), start).unwrap();
        for _ in 0..5 {
            assert_eq!(bucket.take(1.0, start), Duration::ZERO);
        }
        assert_eq!(
            bucket.take(1.0, start),
            Duration::from_millis(100),
            "one token of debt at 10/s"
        );
        let later = start + Duration::from_millis(100);
        assert_eq!(
            bucket.take(0.0, later),
            Duration::ZERO,
            "the debt is paid after the wait"
        );
        let much_later = later + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(bucket.take(1.0, much_later), Duration::ZERO);
        }
        assert!(
            bucket.take(1.0, much_later) > Duration::ZERO,
            "refill stops at the burst"
        );
    }

    #[test]
    fn a_zero_rate_means_no_bucket() {
        assert!(TokenBucket::new(Rate::UNLIMITED, Instant::now()).is_none());
    }
}
