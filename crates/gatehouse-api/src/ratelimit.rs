//! A per-key token bucket without a lock: the generic cell rate algorithm (GCRA) on one atomic.
//!
//! The bucket is kept as a "theoretical arrival time" (TAT): the moment the bucket would be full
//! again. A request costing `n` moves it `n` emission intervals into the future; it is allowed
//! when the new TAT is at most `burst` intervals ahead of now. One compare-and-swap per request,
//! shared only by the requests of the same key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Rate;

/// Why a request was not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Over the rate: retry after this long.
    RetryAfter(Duration),
    /// The request alone costs more than the whole bucket holds; it can never pass.
    Exceeds {
        /// What the request costs.
        cost: u32,
        /// What the bucket holds.
        burst: u32,
    },
}

/// One key's token bucket.
#[derive(Debug)]
pub struct RateLimiter {
    /// Nanoseconds between two tokens; 0 disables the limit.
    interval_ns: u64,
    /// `burst` tokens, as nanoseconds.
    capacity_ns: u64,
    burst: u32,
    origin: Instant,
    /// The theoretical arrival time, in nanoseconds since `origin`.
    tat: AtomicU64,
}

impl RateLimiter {
    /// A full bucket for `rate`.
    pub fn new(rate: Rate) -> RateLimiter {
        let interval_ns = if rate.per_second == 0 {
            0
        } else {
            1_000_000_000 / u64::from(rate.per_second)
        }
        .max(u64::from(rate.per_second > 0));
        RateLimiter {
            interval_ns,
            capacity_ns: interval_ns.saturating_mul(u64::from(rate.burst)),
            burst: rate.burst,
            origin: Instant::now(),
            tat: AtomicU64::new(0),
        }
    }

    /// Takes `cost` tokens, or says how long to wait.
    pub fn check(&self, cost: u32) -> Result<(), Denied> {
        if self.interval_ns == 0 {
            return Ok(());
        }
        if cost > self.burst {
            return Err(Denied::Exceeds {
                cost,
                burst: self.burst,
            });
        }
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let increment = self.interval_ns.saturating_mul(u64::from(cost));
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let new_tat = tat.max(now).saturating_add(increment);
            let ahead = new_tat - now;
            if ahead > self.capacity_ns {
                return Err(Denied::RetryAfter(Duration::from_nanos(ahead - self.capacity_ns)));
            }
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_allows_its_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(rate(10, 5));
        for _ in 0..5 {
            limiter.check(1).unwrap();
        }
        let Err(Denied::RetryAfter(wait)) = limiter.check(1) else {
            panic!("the sixth request passed");
        };
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO, "{wait:?}");
        tokio::time::advance(Duration::from_millis(100)).await;
        limiter.check(1).unwrap();
        assert!(limiter.check(1).is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..5 {
            limiter.check(1).unwrap();
        }
        assert!(limiter.check(1).is_err(), "idle time never fills more than the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_costs_one_token_per_operation() {
        let limiter = RateLimiter::new(rate(100, 10));
        limiter.check(7).unwrap();
        assert!(matches!(limiter.check(4), Err(Denied::RetryAfter(_))));
        limiter.check(3).unwrap();
        assert_eq!(limiter.check(11), Err(Denied::Exceeds { cost: 11, burst: 10 }));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_zero_means_no_limit() {
        let limiter = RateLimiter::new(rate(0, 0));
        for _ in 0..10_000 {
            limiter.check(100).unwrap();
        }
    }
}
