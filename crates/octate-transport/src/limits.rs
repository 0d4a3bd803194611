//! Per-connection frame rate limit and per-address connection counts.
//!
//! The rate limit reads tokio's clock, so paused-time tests steer it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use parking_lot::Mutex;
use tokio::time::Instant;

/// What to do with one inbound frame or message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the rate: handle it.
    Allow,
    /// Over the rate: drop it and tell the client `rate-limited`.
    Reject,
    /// Over the rate for too long: close the connection (4029).
    Close,
}

/// tokio's clock for governor, so that paused-time tests steer the rate limit too.
#[derive(Clone, Copy, Debug, Default)]
struct TokioClock;

impl governor::clock::Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

/// governor's token bucket (the generic cell rate algorithm) on tokio's clock.
type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// A token bucket per connection, plus a strike count for clients that keep flooding.
#[derive(Debug)]
pub(crate) struct MessageRate {
    bucket: Bucket,
    strikes: u32,
    max_strikes: u32,
    last_strike: Option<Instant>,
}

impl MessageRate {
    /// `per_second` sustained, `burst` at once (0: one second's worth), close after
    /// `max_strikes` rejections in a row.
    pub(crate) fn new(per_second: u32, burst: u32, max_strikes: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Self {
            bucket: RateLimiter::direct_with_clock(
                Quota::per_second(rate).allow_burst(burst),
                TokioClock,
            ),
            strikes: 0,
            max_strikes: max_strikes.max(1),
            last_strike: None,
        }
    }

    /// Judges one frame or message. Strikes are forgiven after a second without any.
    pub(crate) fn check(&mut self) -> Verdict {
        if self.bucket.check().is_ok() {
            // The clock is read again only while strikes are pending.
            if self
                .last_strike
                .is_some_and(|t| t.elapsed() >= Duration::from_secs(1))
            {
                self.strikes = 0;
                self.last_strike = None;
            }
            return Verdict::Allow;
        }
        self.strikes += 1;
        self.last_strike = Some(Instant::now());
        if self.strikes >= self.max_strikes {
            Verdict::Close
        } else {
            Verdict::Reject
        }
    }
}

/// Open connections per source address, with a cap.
#[derive(Debug, Default)]
pub(crate) struct PerAddress {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    /// Counts a new connection from `ip`, unless it already has `max` (0 = no cap).
    pub(crate) fn try_acquire(&self, ip: IpAddr, max: usize) -> bool {
        let mut counts = self.counts.lock();
        let count = counts.entry(ip).or_insert(0);
        if max != 0 && *count >= max {
            if *count == 0 {
                counts.remove(&ip);
            }
            return false;
        }
        *count += 1;
        true
    }

    /// Forgets one connection from `ip`.
    pub(crate) fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokens_come_back_at_the_rate_and_strikes_are_forgiven() {
        let mut rate = MessageRate::new(10, 5, 3);
        for _ in 0..5 {
            assert_eq!(rate.check(), Verdict::Allow);
        }
        assert_eq!(rate.check(), Verdict::Reject);
        tokio::time::advance(Duration::from_millis(99)).await;
        assert_eq!(rate.check(), Verdict::Reject, "no token back before 100 ms");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(rate.check(), Verdict::Allow, "one token every 100 ms");
        assert_eq!(rate.check(), Verdict::Close, "the third strike in a row");

        let mut rate = MessageRate::new(10, 5, 3);
        for _ in 0..5 {
            rate.check();
        }
        assert_eq!(rate.check(), Verdict::Reject);
        assert_eq!(rate.check(), Verdict::Reject);
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..5 {
            assert_eq!(
                rate.check(),
                Verdict::Allow,
                "a second refills 10, up to the burst"
            );
        }
        assert_eq!(
            rate.check(),
            Verdict::Reject,
            "strikes were forgiven after a quiet second: no close yet"
        );
    }

    #[test]
    fn a_flood_is_rejected_then_closed() {
        let mut rate = MessageRate::new(10, 5, 3);
        for _ in 0..5 {
            assert_eq!(rate.check(), Verdict::Allow);
        }
        assert_eq!(rate.check(), Verdict::Reject);
        assert_eq!(rate.check(), Verdict::Reject);
        assert_eq!(rate.check(), Verdict::Close);
    }

    #[test]
    fn per_address_cap_and_release() {
        let per = PerAddress::default();
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(per.try_acquire(ip, 2));
        assert!(per.try_acquire(ip, 2));
        assert!(!per.try_acquire(ip, 2));
        per.release(ip);
        assert!(per.try_acquire(ip, 2));
        per.release(ip);
        per.release(ip);
        assert!(per.counts.lock().is_empty());
        assert!(per.try_acquire(ip, 0), "0 means no cap");
    }
}
