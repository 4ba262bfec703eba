//! Capped exponential back-off with jitter, for every reconnect loop.

use std::time::Duration;

/// Delays between reconnect attempts: doubling from `initial` up to `max`, with up to 25 %
/// random jitter so that a fleet restarting together does not reconnect in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Creates a back-off starting at `initial` and never exceeding `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// Returns the delay before the next attempt and grows the following one.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = base.mul_f64(rand::random::<f64>() * 0.25);
        base + jitter
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let first = backoff.next_delay();
        assert!(first >= Duration::from_millis(10) && first <= Duration::from_millis(13));
        for _ in 0..10 {
            assert!(backoff.next_delay() <= Duration::from_millis(125));
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(13));
    }
}
