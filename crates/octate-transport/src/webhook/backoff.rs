//! When to try a failed delivery again: exponential back-off with full jitter.

use std::time::{Duration, SystemTime};

/// Longest single wait, in multiples of the base (base 5 s: about 5 minutes).
const MAX_WAIT_FACTOR: u32 = 64;

/// The retry schedule of deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The wait after the first failure is drawn from `[0, base]`; it doubles after each.
    pub(crate) base: Duration,
    /// Most attempts of one delivery, the first included.
    pub(crate) max_attempts: u32,
}

impl Backoff {
    /// The longest wait after `failures` failed attempts (1 or more): `base * 2^(failures-1)`,
    /// capped at [`Backoff::max_wait`].
    pub(crate) fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.base
            .saturating_mul(1u32 << doublings)
            .min(self.max_wait())
    }

    /// The wait after `failures` failed attempts: uniform in `[0, ceiling]` ("full jitter"),
    /// drawn from `random`.
    pub(crate) fn wait(&self, failures: u32, random: u64) -> Duration {
        let ceiling = u64::try_from(self.ceiling(failures).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(random % ceiling.saturating_add(1))
    }

    /// The longest wait of all, and the bound on a receiver's `Retry-After`.
    pub(crate) fn max_wait(&self) -> Duration {
        self.base.saturating_mul(MAX_WAIT_FACTOR)
    }

    /// The wait a receiver asked for with `Retry-After`, bounded by [`Backoff::max_wait`].
    pub(crate) fn honour(&self, retry_after: Duration) -> Duration {
        retry_after.min(self.max_wait())
    }
}

/// The wait a `Retry-After` header asks for at `now`: delay seconds, or an HTTP date (one
/// in the past: no wait). Anything else gives `None`.
pub(crate) fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = std::str::from_utf8(value).ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_S: Backoff = Backoff {
        base: Duration::from_secs(5),
        max_attempts: 8,
    };

    #[test]
    fn ceilings_double_from_the_base_and_stop_at_the_cap() {
        let ceilings: Vec<u64> = (1..=9).map(|f| FIVE_S.ceiling(f).as_secs()).collect();
        assert_eq!(ceilings, [5, 10, 20, 40, 80, 160, 320, 320, 320]);
        assert_eq!(FIVE_S.ceiling(u32::MAX), Duration::from_secs(320));
    }

    #[test]
    fn default_schedule_spans_about_ten_minutes() {
        // Seven waits between eight attempts: at most 635 s, on average half of it.
        let total: Duration = (1..FIVE_S.max_attempts).map(|f| FIVE_S.ceiling(f)).sum();
        assert_eq!(total, Duration::from_secs(635));
    }

    #[test]
    fn waits_are_drawn_from_zero_to_the_ceiling() {
        assert_eq!(FIVE_S.wait(1, 0), Duration::ZERO);
        assert_eq!(FIVE_S.wait(1, 5_000), Duration::from_secs(5));
        assert_eq!(FIVE_S.wait(1, 5_001), Duration::ZERO);
        assert_eq!(FIVE_S.wait(3, 12_345), Duration::from_millis(12_345));
        for random in [1, 77, u64::MAX, 1 << 40] {
            assert!(FIVE_S.wait(2, random) <= Duration::from_secs(10));
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date_and_bounded() {
        // Wed, 21 Oct 2015 07:28:00 GMT
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let ask = |v: &[u8]| parse_retry_after(v, now);
        assert_eq!(ask(b" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            ask(b"Wed, 21 Oct 2015 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(ask(b"Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(
            ask(b"Wednesday, 21-Oct-15 07:29:00 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(ask(b"Wed, 21 Oct 2015 07:28 GMT"), None);
        assert_eq!(ask(b"-1"), None);
        assert_eq!(ask(b"\xff"), None);
        assert_eq!(
            FIVE_S.honour(Duration::from_secs(86_400)),
            Duration::from_secs(320)
        );
        assert_eq!(
            FIVE_S.honour(Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }
}
