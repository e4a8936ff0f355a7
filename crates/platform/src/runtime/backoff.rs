//! Capped exponential backoff with jitter, for retrying transient failures.

use std::time::Duration;

/// Delays that double from `initial` up to `max`, each drawn uniformly from its upper half
/// ("equal jitter"), so replicas that failed together do not retry in lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from `initial`, doubling, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The delay before the next attempt; doubles the one after it.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Starts over from the initial delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

impl Default for Backoff {
    /// 200 ms doubling up to 30 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Backoff;

    #[test]
    fn delays_double_within_their_cap_and_start_over_after_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let ceilings = [100, 200, 400, 800, 800, 800];
        for ceiling in ceilings {
            let delay = backoff.next_delay();
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} not within the upper half of {ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
