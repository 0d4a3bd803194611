//! The delivery queue: which event goes to which URL next, retries, order and overflow.
//!
//! Sans-I/O: time comes in as an argument and randomness as a number, so the rules are
//! tested without sockets or sleeps. Deliveries wait in lanes, one lane per URL and room;
//! a lane sends one delivery at a time, oldest first, so a room's events reach each URL in
//! order, and a retrying delivery holds back only its own lane.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use octate_protocol::RoomId;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::event::EncodedEvent;

/// One URL's lane of one room (`None`: events of no room).
type LaneKey = (usize, Option<RoomId>);

/// A delivery handed out to be sent.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// Which URL.
    pub(crate) url: usize,
    /// The event.
    pub(crate) event: Arc<EncodedEvent>,
    /// 1 for the first attempt.
    pub(crate) attempt: u32,
    seq: u64,
}

/// How an attempt went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The receiver answered 2xx.
    Delivered,
    /// The receiver answered a 4xx other than 429 (or another final status): not retried.
    Rejected,
    /// A network error, a timeout, a 5xx, or a 429 with its `Retry-After` if it had one.
    Retry(Option<Duration>),
}

/// What became of a delivery, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Accepted by the receiver.
    Delivered,
    /// Refused by the receiver for good.
    Rejected,
    /// Every attempt failed.
    Failed,
    /// It will be tried again.
    Retrying,
}

#[derive(Debug)]
struct Waiting {
    seq: u64,
    event: Arc<EncodedEvent>,
    failures: u32,
}

#[derive(Debug, Default)]
struct Lane {
    waiting: VecDeque<Waiting>,
    /// The front delivery is being sent.
    busy: bool,
    /// The front delivery is not sent again before this (after a failure).
    not_before: Option<Instant>,
}

/// Every delivery not settled yet, bounded.
///
/// Each lane that is not sending is in exactly one index of its URL: `ready` (by the
/// sequence number of its front delivery) or `retrying` (by when its front falls due).
/// Finding the next delivery or the next wake-up so never walks every lane.
#[derive(Debug)]
pub(crate) struct Queue {
    lanes: HashMap<LaneKey, Lane>,
    /// Deliveries that may be dropped (not being sent), oldest first.
    droppable: BTreeSet<(u64, LaneKey)>,
    /// Per URL: lanes whose front may be sent now, by its sequence number.
    ready: Vec<BTreeSet<(u64, LaneKey)>>,
    /// Per URL: lanes whose front waits for a retry, by when it falls due.
    retrying: Vec<BTreeSet<(Instant, LaneKey)>>,
    len: usize,
    capacity: usize,
    urls: usize,
    /// Deliveries being sent, per URL.
    in_flight: Vec<usize>,
    max_in_flight: usize,
    backoff: Backoff,
    next_seq: u64,
}

impl Queue {
    /// An empty queue for `urls` URLs holding at most `capacity` deliveries, sending at
    /// most `max_in_flight` at once to each URL.
    pub(crate) fn new(
        urls: usize,
        capacity: usize,
        max_in_flight: usize,
        backoff: Backoff,
    ) -> Self {
        Self {
            lanes: HashMap::new(),
            droppable: BTreeSet::new(),
            ready: vec![BTreeSet::new(); urls],
            retrying: vec![BTreeSet::new(); urls],
            len: 0,
            capacity: capacity.max(1),
            urls,
            in_flight: vec![0; urls],
            max_in_flight: max_in_flight.max(1),
            backoff,
            next_seq: 0,
        }
    }

    /// Deliveries waiting or being sent.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Queues `event` for every URL; returns how many older deliveries were dropped to make room.
    pub(crate) fn push(&mut self, event: &Arc<EncodedEvent>) -> usize {
        let mut dropped = 0;
        for url in 0..self.urls {
            while self.len >= self.capacity && self.drop_oldest() {
                dropped += 1;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let key = (url, event.room_id.clone());
            self.droppable.insert((seq, key.clone()));
            let lane = self.lanes.entry(key.clone()).or_default();
            lane.waiting.push_back(Waiting {
                seq,
                event: Arc::clone(event),
                failures: 0,
            });
            if lane.waiting.len() == 1 {
                self.ready[url].insert((seq, key));
            }
            self.len += 1;
        }
        dropped
    }

    /// Drops the oldest delivery not being sent; `false` if every one is being sent.
    fn drop_oldest(&mut self) -> bool {
        let Some((seq, key)) = self.droppable.pop_first() else {
            return false;
        };
        if let Some(lane) = self.lanes.get_mut(&key)
            && let Some(at) = lane.waiting.iter().position(|w| w.seq == seq)
        {
            lane.waiting.remove(at);
            self.len -= 1;
            if at == 0 {
                // The lane's front changes: index it by its new one.
                self.ready[key.0].remove(&(seq, key.clone()));
                if let Some(t) = lane.not_before.take() {
                    self.retrying[key.0].remove(&(t, key.clone()));
                }
                match lane.waiting.front() {
                    Some(front) => {
                        self.ready[key.0].insert((front.seq, key));
                    }
                    None => {
                        self.lanes.remove(&key);
                    }
                }
            }
        }
        true
    }

    /// The next delivery to send now, if a lane has one due and its URL a free slot.
    pub(crate) fn next_ready(&mut self, now: Instant) -> Option<Delivery> {
        let mut best: Option<(u64, usize)> = None;
        for url in 0..self.urls {
            if self.in_flight[url] >= self.max_in_flight {
                continue;
            }
            self.promote_due(url, now);
            if let Some((seq, _)) = self.ready[url].first()
                && best.is_none_or(|(b, _)| *seq < b)
            {
                best = Some((*seq, url));
            }
        }
        let (_, url) = best?;
        let (seq, key) = self.ready[url].pop_first()?;
        let lane = self.lanes.get_mut(&key)?;
        let front = lane.waiting.front()?;
        lane.busy = true;
        self.droppable.remove(&(seq, key));
        self.in_flight[url] += 1;
        Some(Delivery {
            url,
            event: Arc::clone(&front.event),
            attempt: front.failures + 1,
            seq,
        })
    }

    /// Moves `url`'s lanes whose retry fell due by `now` to its ready lanes.
    fn promote_due(&mut self, url: usize, now: Instant) {
        while let Some((t, _)) = self.retrying[url].first()
            && *t <= now
        {
            let Some((_, key)) = self.retrying[url].pop_first() else {
                break;
            };
            if let Some(lane) = self.lanes.get_mut(&key)
                && let Some(front) = lane.waiting.front()
            {
                lane.not_before = None;
                self.ready[url].insert((front.seq, key));
            }
        }
    }

    /// When the earliest waiting retry falls due, among URLs with a free slot (a slot that
    /// frees is news of its own).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        (0..self.urls)
            .filter(|&url| self.in_flight[url] < self.max_in_flight)
            .filter_map(|url| self.retrying[url].first().map(|(t, _)| *t))
            .min()
    }

    /// Records how an attempt went; `random` draws the retry's wait.
    pub(crate) fn settle(
        &mut self,
        delivery: Delivery,
        attempt: Attempt,
        now: Instant,
        random: u64,
    ) -> Settled {
        let key = (delivery.url, delivery.event.room_id.clone());
        if let Some(slot) = self.in_flight.get_mut(delivery.url) {
            *slot = slot.saturating_sub(1);
        }
        let Some(lane) = self.lanes.get_mut(&key) else {
            return Settled::Failed;
        };
        lane.busy = false;
        let settled = match attempt {
            Attempt::Delivered => Settled::Delivered,
            Attempt::Rejected => Settled::Rejected,
            Attempt::Retry(_) if delivery.attempt >= self.backoff.max_attempts => Settled::Failed,
            Attempt::Retry(asked) => {
                let wait = match asked {
                    Some(asked) => self.backoff.honour(asked),
                    None => self.backoff.wait(delivery.attempt, random),
                };
                let due = now + wait;
                lane.not_before = Some(due);
                if let Some(front) = lane.waiting.front_mut()
                    && front.seq == delivery.seq
                {
                    front.failures = delivery.attempt;
                }
                self.retrying[key.0].insert((due, key.clone()));
                self.droppable.insert((delivery.seq, key));
                return Settled::Retrying;
            }
        };
        if lane.waiting.front().is_some_and(|w| w.seq == delivery.seq) {
            lane.waiting.pop_front();
            self.len -= 1;
        }
        lane.not_before = None;
        match lane.waiting.front() {
            Some(front) => {
                self.ready[key.0].insert((front.seq, key));
            }
            None => {
                self.lanes.remove(&key);
            }
        }
        settled
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_millis(100),
        max_attempts: 3,
    };

    fn event(id: &str, room: Option<&str>) -> Arc<EncodedEvent> {
        Arc::new(EncodedEvent {
            id: id.to_owned(),
            kind: "peer.joined",
            room_id: room.map(|r| RoomId::new(r).unwrap()),
            body: Bytes::new(),
        })
    }

    fn ids(ready: &[Delivery]) -> Vec<&str> {
        ready.iter().map(|d| d.event.id.as_str()).collect()
    }

    fn drain_ready(q: &mut Queue, now: Instant) -> Vec<Delivery> {
        std::iter::from_fn(|| q.next_ready(now)).collect()
    }

    #[test]
    fn a_room_sends_one_event_at_a_time_in_order_and_rooms_go_on_in_parallel() {
        let now = Instant::now();
        let mut q = Queue::new(1, 100, 8, BACKOFF);
        q.push(&event("a1", Some("a")));
        q.push(&event("a2", Some("a")));
        q.push(&event("b1", Some("b")));
        let ready = drain_ready(&mut q, now);
        assert_eq!(ids(&ready), ["a1", "b1"]);
        let mut ready = ready.into_iter();
        let a1 = ready.next().unwrap();
        assert_eq!(q.settle(a1, Attempt::Delivered, now, 0), Settled::Delivered);
        assert_eq!(ids(&drain_ready(&mut q, now)), ["a2"]);
    }

    #[test]
    fn a_retrying_event_holds_back_its_room_only_until_it_is_due() {
        let now = Instant::now();
        let mut q = Queue::new(1, 100, 8, BACKOFF);
        q.push(&event("a1", Some("a")));
        q.push(&event("a2", Some("a")));
        let a1 = q.next_ready(now).unwrap();
        // random 50 -> a wait of 50 ms (ceiling 100 ms after the first failure).
        assert_eq!(
            q.settle(a1, Attempt::Retry(None), now, 50),
            Settled::Retrying
        );
        assert!(q.next_ready(now).is_none(), "a2 must wait behind a1");
        assert_eq!(q.next_due(), Some(now + Duration::from_millis(50)));
        q.push(&event("b1", Some("b")));
        assert_eq!(ids(&drain_ready(&mut q, now)), ["b1"]);
        let again = q.next_ready(now + Duration::from_millis(50)).unwrap();
        assert_eq!((again.event.id.as_str(), again.attempt), ("a1", 2));
    }

    #[test]
    fn a_delivery_fails_after_max_attempts_and_its_room_goes_on() {
        let mut now = Instant::now();
        let mut q = Queue::new(1, 100, 8, BACKOFF);
        q.push(&event("a1", Some("a")));
        q.push(&event("a2", Some("a")));
        for attempt in 1..=3 {
            let d = q.next_ready(now).unwrap();
            assert_eq!((d.event.id.as_str(), d.attempt), ("a1", attempt));
            let settled = q.settle(d, Attempt::Retry(None), now, 0);
            let expected = if attempt < 3 {
                Settled::Retrying
            } else {
                Settled::Failed
            };
            assert_eq!(settled, expected);
            now += Duration::from_secs(1);
        }
        assert_eq!(ids(&drain_ready(&mut q, now)), ["a2"]);
    }

    #[test]
    fn a_rejected_delivery_is_not_retried() {
        let now = Instant::now();
        let mut q = Queue::new(1, 100, 8, BACKOFF);
        q.push(&event("a1", Some("a")));
        let d = q.next_ready(now).unwrap();
        assert_eq!(q.settle(d, Attempt::Rejected, now, 0), Settled::Rejected);
        assert_eq!(q.len(), 0);
        assert!(q.next_ready(now + Duration::from_secs(60)).is_none());
    }

    #[test]
    fn retry_after_is_honoured_and_bounded() {
        let now = Instant::now();
        let mut q = Queue::new(1, 100, 8, BACKOFF);
        q.push(&event("a1", Some("a")));
        let d = q.next_ready(now).unwrap();
        q.settle(d, Attempt::Retry(Some(Duration::from_secs(2))), now, 0);
        assert_eq!(q.next_due(), Some(now + Duration::from_secs(2)));
        let d = q.next_ready(now + Duration::from_secs(2)).unwrap();
        q.settle(d, Attempt::Retry(Some(Duration::from_secs(3600))), now, 0);
        assert_eq!(q.next_due(), Some(now + BACKOFF.max_wait()));
    }

    #[test]
    fn a_full_queue_drops_the_oldest_waiting_deliveries() {
        let now = Instant::now();
        let mut q = Queue::new(1, 3, 8, BACKOFF);
        q.push(&event("a1", Some("a")));
        let in_flight = q.next_ready(now).unwrap();
        q.push(&event("a2", Some("a")));
        q.push(&event("b1", Some("b")));
        assert_eq!(q.push(&event("c1", Some("c"))), 1, "one dropped");
        assert_eq!(q.push(&event("c2", Some("c"))), 1, "one more");
        assert_eq!(q.len(), 3);
        // a1 was being sent: kept. a2 and b1 were the oldest waiting: dropped.
        assert_eq!(in_flight.event.id, "a1");
        q.settle(in_flight, Attempt::Delivered, now, 0);
        assert_eq!(ids(&drain_ready(&mut q, now)), ["c1"]);
    }

    #[test]
    fn a_due_retry_behind_a_full_url_wakes_nobody_until_a_slot_frees() {
        let now = Instant::now();
        let mut q = Queue::new(1, 100, 1, BACKOFF);
        q.push(&event("a1", Some("a")));
        let a1 = q.next_ready(now).unwrap();
        q.settle(a1, Attempt::Retry(None), now, 10);
        q.push(&event("b1", Some("b")));
        let b1 = q.next_ready(now).unwrap();
        assert_eq!(b1.event.id, "b1");
        // a1 is due at +10 ms but the only slot is taken: no wake-up in the past.
        let later = now + Duration::from_millis(20);
        assert!(q.next_ready(later).is_none());
        assert_eq!(q.next_due(), None);
        q.settle(b1, Attempt::Delivered, later, 0);
        let again = q.next_ready(later).unwrap();
        assert_eq!((again.event.id.as_str(), again.attempt), ("a1", 2));
    }

    #[test]
    fn deliveries_go_oldest_first_across_urls_and_retries_and_drops_keep_the_indexes() {
        let mut now = Instant::now();
        let mut q = Queue::new(2, 6, 8, BACKOFF);
        q.push(&event("a1", Some("a")));
        q.push(&event("b1", Some("b")));
        let first: Vec<(usize, String)> = drain_ready(&mut q, now)
            .into_iter()
            .map(|d| {
                let id = (d.url, d.event.id.clone());
                let settled = q.settle(d, Attempt::Retry(None), now, 30);
                assert_eq!(settled, Settled::Retrying);
                id
            })
            .collect();
        assert_eq!(
            first,
            [
                (0, "a1".into()),
                (1, "a1".into()),
                (0, "b1".into()),
                (1, "b1".into())
            ]
        );
        assert_eq!(q.next_due(), Some(now + Duration::from_millis(30)));
        // Two more events fill the queue: the oldest waiting deliveries (a1 to both
        // URLs, retrying) are dropped, and room a's lanes move on to a2.
        q.push(&event("a2", Some("a")));
        assert_eq!(q.len(), 6);
        assert_eq!(q.push(&event("c1", Some("c"))), 2);
        now += Duration::from_millis(30);
        let ready = drain_ready(&mut q, now);
        let ids: Vec<(usize, &str, u32)> = ready
            .iter()
            .map(|d| (d.url, d.event.id.as_str(), d.attempt))
            .collect();
        assert_eq!(
            ids,
            [
                (0, "b1", 2),
                (1, "b1", 2),
                (0, "a2", 1),
                (1, "a2", 1),
                (0, "c1", 1),
                (1, "c1", 1)
            ]
        );
        assert_eq!(q.next_due(), None);
    }

    #[test]
    fn every_url_gets_its_own_lane_and_a_bounded_number_in_flight() {
        let now = Instant::now();
        let mut q = Queue::new(2, 100, 2, BACKOFF);
        for room in ["a", "b", "c"] {
            q.push(&event(room, Some(room)));
        }
        let ready = drain_ready(&mut q, now);
        let per_url = |u: usize| ready.iter().filter(|d| d.url == u).count();
        assert_eq!((per_url(0), per_url(1)), (2, 2));
        assert_eq!(q.len(), 6);
    }
}
