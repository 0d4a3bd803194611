//! How long to wait before the next reconnect attempt: exponential back-off with full
//! jitter, so that clients cut off together do not come back together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Reconnect pacing: attempt `n` (from 0) waits a random time between zero and
/// `min(base * 2^n, max)`, and the session gives up after `max_attempts` failures in a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Longest wait before the first attempt.
    pub base: Duration,
    /// Longest wait before any attempt.
    pub max: Duration,
    /// Failed attempts in a row after which the session gives up.
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(250),
            max: Duration::from_secs(10),
            max_attempts: 10,
        }
    }
}

impl Backoff {
    /// The longest wait before attempt `attempt` (0 is the first).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A wait before attempt `attempt`, uniformly random in `0..=ceiling(attempt)`.
    pub(crate) fn delay(&self, attempt: u32, jitter: &mut Jitter) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(jitter.up_to(ceiling))
    }
}

/// A small pseudo-random generator (SplitMix64) for back-off jitter; not for secrets.
#[derive(Clone, Debug)]
pub(crate) struct Jitter {
    state: u64,
}

impl Jitter {
    /// A generator seeded from the clock and a process-wide counter, so that two sessions
    /// started in the same instant still draw different waits.
    pub(crate) fn from_clock() -> Self {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let count = STARTED.fetch_add(1, Ordering::Relaxed);
        Self::seeded(nanos ^ count.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    /// A generator with a fixed seed.
    pub(crate) fn seeded(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..=max`.
    fn up_to(&mut self, max: u64) -> u64 {
        let span = u128::from(max) + 1;
        ((u128::from(self.next_u64()) * span) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(3),
            max_attempts: 5,
        }
    }

    #[test]
    fn ceilings_double_up_to_the_maximum() {
        let b = backoff();
        let ms: Vec<u128> = (0..8).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3000, 3000, 3000]);
    }

    #[test]
    fn a_huge_attempt_number_is_capped_not_overflowed() {
        let b = backoff();
        assert_eq!(b.ceiling(31), b.max);
        assert_eq!(b.ceiling(32), b.max);
        assert_eq!(b.ceiling(u32::MAX), b.max);
        let huge = Backoff {
            base: Duration::MAX,
            max: Duration::MAX,
            max_attempts: 1,
        };
        assert_eq!(huge.ceiling(3), Duration::MAX);
        let _ = huge.delay(3, &mut Jitter::seeded(1));
    }

    #[test]
    fn every_delay_stays_within_its_ceiling() {
        let b = backoff();
        let mut jitter = Jitter::seeded(7);
        for attempt in 0..12 {
            for _ in 0..500 {
                let delay = b.delay(attempt, &mut jitter);
                assert!(
                    delay <= b.ceiling(attempt),
                    "{delay:?} at attempt {attempt}"
                );
            }
        }
    }

    #[test]
    fn delays_spread_over_the_whole_range() {
        let b = backoff();
        let ceiling = b.ceiling(3);
        let mut jitter = Jitter::seeded(42);
        let delays: Vec<Duration> = (0..1000).map(|_| b.delay(3, &mut jitter)).collect();
        let min = delays.iter().min().copied().unwrap_or_default();
        let max = delays.iter().max().copied().unwrap_or_default();
        assert!(min < ceiling / 10, "smallest {min:?} of {ceiling:?}");
        assert!(max > ceiling * 9 / 10, "largest {max:?} of {ceiling:?}");
        let below_half = delays.iter().filter(|d| **d < ceiling / 2).count();
        assert!(
            (400..600).contains(&below_half),
            "{below_half} of 1000 below half"
        );
    }

    #[test]
    fn a_zero_ceiling_waits_zero() {
        let b = Backoff {
            base: Duration::ZERO,
            ..backoff()
        };
        assert_eq!(b.delay(4, &mut Jitter::seeded(3)), Duration::ZERO);
    }

    #[test]
    fn generators_from_the_clock_differ() {
        let (mut a, mut b) = (Jitter::from_clock(), Jitter::from_clock());
        assert_ne!(a.next_u64(), b.next_u64());
    }
}
