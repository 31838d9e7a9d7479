//! Reconnect delays: exponential, capped, with jitter so that brokers that lost the service
//! together do not all come back in the same millisecond.

use std::time::Duration;

use rand::Rng;

/// The delay before the next reconnect. Doubles after every failure up to the cap; back to
/// the minimum once a stream delivers a message.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            current: min,
        }
    }

    /// The next delay: a random point in the upper half of the current step ("equal
    /// jitter": never shorter than half the step, never longer than the cap).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = step.saturating_mul(2).min(self.max);
        let half = step / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=step - half)
    }

    /// A stream is healthy again: the next failure starts from the minimum.
    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        for step in [100, 200, 400, 800, 1000, 1000] {
            let d = b.next_delay();
            assert!(
                d >= ms(step / 2) && d <= ms(step),
                "{d:?} outside step {step} ms"
            );
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            seen.insert(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay());
        }
        assert!(seen.len() > 1, "50 delays were all {seen:?}");
    }
}
