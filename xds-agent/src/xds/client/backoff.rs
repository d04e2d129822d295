//! xDS transport: reconnect delays — exponential back-off with full jitter, as Envoy's
//! `JitteredExponentialBackOffStrategy` (base 500 ms, ceiling 30 s).

use std::time::Duration;

/// Envoy's default first retry ceiling for xDS streams.
const BASE: Duration = Duration::from_millis(500);
/// Envoy's default maximum retry ceiling for xDS streams.
const MAX: Duration = Duration::from_secs(30);

/// Delays between connection attempts: a uniform pick in `[0, ceiling]`, where the ceiling
/// doubles after each failure from `BASE` up to `MAX`.
#[derive(Debug)]
pub(super) struct Backoff {
    failures: u32,
}

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff { failures: 0 }
    }

    /// The upper bound of the next delay.
    fn ceiling(&self) -> Duration {
        // 2^6 * 500 ms already exceeds 30 s, so the shift never overflows.
        BASE.saturating_mul(1 << self.failures.min(6)).min(MAX)
    }

    /// The delay before the next attempt; each call counts one more failure.
    pub(super) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=millis))
    }

    /// A stream that got a response starts the sequence over.
    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_from_base_to_max() {
        let mut backoff = Backoff::new();
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(backoff.ceiling().as_millis());
            backoff.next_delay();
        }
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn delays_stay_within_the_ceiling_and_are_jittered() {
        let mut backoff = Backoff::new();
        for _ in 0..8 {
            backoff.next_delay();
        }
        let delays: Vec<Duration> = (0..200).map(|_| backoff.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= MAX));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(
            distinct.len() > 100,
            "full jitter spreads delays: {distinct:?}"
        );
        assert!(delays.iter().any(|d| *d < MAX / 2));
    }

    #[test]
    fn reset_starts_over_at_base() {
        let mut backoff = Backoff::new();
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert_eq!(backoff.ceiling(), BASE);
        assert!(backoff.next_delay() <= BASE);
    }
}
