//! The connections of this process: a bounded outbound queue per connection.
//!
//! The core addresses effects to [`ConnId`]s; this map turns them into queue pushes.
//! Pushes never wait: a connection whose queue holds too many frames or bytes is a
//! slow consumer and is told to stop at once instead of growing the server's memory.
//! An idle connection's queue holds no allocation.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU64, Ordering};

use bytes::Bytes;
use octate_core::ConnId;
use octate_protocol::CloseCode;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

/// Something for a connection to put on the wire.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Outbound {
    /// A text frame, shared by every recipient of the same message.
    Text(Bytes),
    /// A WebSocket ping.
    Ping,
    /// A pong owed to the peer's ping, with its payload.
    Pong(Bytes),
    /// The answer to the peer's close frame, with its code if it sent one.
    CloseEcho(Option<u16>),
    /// A close frame; nothing is written after it.
    Close(CloseCode),
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(b) => write!(f, "Text({} bytes)", b.len()),
            Self::Ping => f.write_str("Ping"),
            Self::Pong(b) => write!(f, "Pong({} bytes)", b.len()),
            Self::CloseEcho(code) => write!(f, "CloseEcho({code:?})"),
            Self::Close(code) => write!(f, "Close({})", code.code()),
        }
    }
}

/// One connection's queue, shared by the registry (pushes) and its session (drains).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the session when something is queued or the connection is ended.
    ready: Notify,
    /// How the server ended the connection, if it did: an [`Ending`] as a number, 0 = open.
    ending: AtomicU8,
    /// The code of the close frame the server queued, 0 = none.
    close_code: AtomicU16,
}

/// How the server ended a connection, as its session finds out from the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// A close frame is queued last: nothing more is queued.
    CloseQueued,
    /// The queue overflowed (slow consumer): what it holds will never be sent.
    Overflowed,
}

impl Ending {
    fn to_u8(self) -> u8 {
        match self {
            Self::CloseQueued => 1,
            Self::Overflowed => 2,
        }
    }

    fn from_u8(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::CloseQueued),
            2 => Some(Self::Overflowed),
            _ => None,
        }
    }
}

/// The frames waiting in an [`Outbox`], and the bytes of their text.
#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outbound>,
    text_bytes: usize,
}

impl Outbox {
    /// Moves every queued item into `out` (which keeps its order) and returns how many.
    pub(crate) fn drain_into(&self, out: &mut VecDeque<Outbound>) -> usize {
        let mut queue = self.queue.lock();
        queue.text_bytes = 0;
        let n = queue.items.len();
        if out.is_empty() {
            std::mem::swap(out, &mut queue.items);
        } else {
            out.append(&mut queue.items);
        }
        n
    }

    /// Drops everything queued.
    pub(crate) fn discard(&self) {
        let mut queue = self.queue.lock();
        queue.items = VecDeque::new();
        queue.text_bytes = 0;
    }

    /// Waits until something is queued or the connection is ended.
    pub(crate) async fn wait(&self) {
        self.ready.notified().await;
    }

    /// How the server ended the connection, if it did.
    pub(crate) fn ending(&self) -> Option<Ending> {
        Ending::from_u8(self.ending.load(Ordering::Acquire))
    }

    /// The code of the close frame the server queued, once the connection has
    /// [`Ending::CloseQueued`].
    pub(crate) fn close_code(&self) -> Option<u16> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Records how the connection ended (the first ending stays) and wakes the session.
    fn end(&self, ending: Ending) {
        let _ =
            self.ending
                .compare_exchange(0, ending.to_u8(), Ordering::AcqRel, Ordering::Acquire);
        // Always wake it: a session waiting on a backlog does not drain the queue, so
        // it may not have been woken by the push.
        self.ready.notify_one();
    }
}

/// What happened to a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued.
    Queued,
    /// No such connection (it closed meanwhile).
    Gone,
    /// The queue was full: the connection has been ended as a slow consumer and unregistered.
    SlowConsumer,
}

/// Every open WebSocket connection of this process.
#[derive(Debug)]
pub(crate) struct Registry {
    conns: RwLock<HashMap<ConnId, Arc<Outbox>>>,
    next_id: AtomicU64,
    queue_messages: usize,
    queue_bytes: usize,
}

impl Registry {
    pub(crate) fn new(queue_messages: usize, queue_bytes: usize) -> Self {
        Self {
            conns: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            queue_messages: queue_messages.max(4),
            queue_bytes,
        }
    }

    /// Registers a new connection and returns its id and outbox.
    pub(crate) fn register(&self) -> (ConnId, Arc<Outbox>) {
        let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let outbox = Arc::new(Outbox::default());
        self.conns.write().insert(id, outbox.clone());
        (id, outbox)
    }

    /// Forgets a connection.
    pub(crate) fn unregister(&self, id: ConnId) {
        self.conns.write().remove(&id);
    }

    /// Open connections.
    pub(crate) fn len(&self) -> usize {
        self.conns.read().len()
    }

    /// Queues an item; a queue over its frame or byte limit ends the connection.
    pub(crate) fn push(&self, id: ConnId, item: Outbound) -> Push {
        let slow = {
            let conns = self.conns.read();
            let Some(outbox) = conns.get(&id) else {
                return Push::Gone;
            };
            let mut queue = outbox.queue.lock();
            let len = match &item {
                Outbound::Text(bytes) => bytes.len(),
                _ => 0,
            };
            if queue.items.len() >= self.queue_messages || queue.text_bytes + len > self.queue_bytes
            {
                drop(queue);
                outbox.end(Ending::Overflowed);
                true
            } else {
                queue.text_bytes += len;
                let was_empty = queue.items.is_empty();
                queue.items.push_back(item);
                drop(queue);
                if was_empty {
                    outbox.ready.notify_one();
                }
                false
            }
        };
        if slow {
            self.unregister(id);
            Push::SlowConsumer
        } else {
            Push::Queued
        }
    }

    /// Queues a close frame and forgets the connection: nothing more is sent to it.
    pub(crate) fn close(&self, id: ConnId, code: CloseCode) -> Push {
        let outbox = self.conns.write().remove(&id);
        let Some(outbox) = outbox else {
            return Push::Gone;
        };
        let mut queue = outbox.queue.lock();
        // A close frame is queued even on a full queue: it is the last frame, and the
        // session drops everything after it.
        queue.items.push_back(Outbound::Close(code));
        drop(queue);
        outbox.close_code.store(code.code(), Ordering::Release);
        outbox.end(Ending::CloseQueued);
        Push::Queued
    }

    /// Queues a close frame on every connection (shutdown).
    pub(crate) fn close_all(&self, code: CloseCode) {
        let ids: Vec<ConnId> = self.conns.read().keys().copied().collect();
        for id in ids {
            self.close(id, code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(outbox: &Outbox) -> Vec<Outbound> {
        let mut out = VecDeque::new();
        outbox.drain_into(&mut out);
        out.into()
    }

    #[test]
    fn full_queue_kills_the_slow_consumer_only() {
        let reg = Registry::new(4, 1 << 20);
        let (slow, slow_box) = reg.register();
        let (fast, fast_box) = reg.register();
        for _ in 0..4 {
            assert_eq!(
                reg.push(slow, Outbound::Text(Bytes::from_static(b"x"))),
                Push::Queued
            );
        }
        assert_eq!(
            reg.push(slow, Outbound::Text(Bytes::from_static(b"x"))),
            Push::SlowConsumer
        );
        assert_eq!(slow_box.ending(), Some(Ending::Overflowed));
        assert_eq!(
            reg.push(slow, Outbound::Text(Bytes::from_static(b"x"))),
            Push::Gone
        );
        assert_eq!(
            reg.push(fast, Outbound::Text(Bytes::from_static(b"y"))),
            Push::Queued
        );
        assert_eq!(
            drain(&fast_box),
            vec![Outbound::Text(Bytes::from_static(b"y"))]
        );
        assert_eq!(fast_box.ending(), None);
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn byte_budget_kills_before_memory_grows() {
        let reg = Registry::new(1000, 10);
        let (id, outbox) = reg.register();
        assert_eq!(
            reg.push(id, Outbound::Text(Bytes::from_static(b"12345"))),
            Push::Queued
        );
        assert_eq!(
            reg.push(id, Outbound::Text(Bytes::from_static(b"12345"))),
            Push::Queued
        );
        assert_eq!(
            reg.push(id, Outbound::Text(Bytes::from_static(b"1"))),
            Push::SlowConsumer
        );
        assert_eq!(outbox.ending(), Some(Ending::Overflowed));
        assert_eq!(drain(&outbox).len(), 2, "what was accepted stays queued");
    }

    #[test]
    fn draining_frees_the_budget_and_keeps_order() {
        let reg = Registry::new(3, 10);
        let (id, outbox) = reg.register();
        for text in [&b"12345"[..], b"67890"] {
            assert_eq!(
                reg.push(id, Outbound::Text(Bytes::from_static(text))),
                Push::Queued
            );
        }
        assert_eq!(reg.push(id, Outbound::Ping), Push::Queued);
        let first = drain(&outbox);
        assert_eq!(first.len(), 3);
        assert_eq!(first[2], Outbound::Ping);
        assert_eq!(
            reg.push(id, Outbound::Text(Bytes::from_static(b"0123456789"))),
            Push::Queued,
            "a drained queue takes a full budget again"
        );
        assert_eq!(reg.close(id, CloseCode::GoingAway), Push::Queued);
        assert_eq!(outbox.ending(), Some(Ending::CloseQueued));
        assert_eq!(
            drain(&outbox).last(),
            Some(&Outbound::Close(CloseCode::GoingAway))
        );
        assert_eq!(reg.push(id, Outbound::Ping), Push::Gone);
        assert_eq!(reg.close(id, CloseCode::Normal), Push::Gone);
    }

    #[test]
    fn a_close_is_queued_on_a_full_queue_and_the_first_ending_stays() {
        let reg = Registry::new(4, 1 << 20);
        let (id, outbox) = reg.register();
        for _ in 0..4 {
            reg.push(id, Outbound::Ping);
        }
        assert_eq!(reg.close(id, CloseCode::Replaced), Push::Queued);
        assert_eq!(outbox.ending(), Some(Ending::CloseQueued));
        assert_eq!(
            drain(&outbox).last(),
            Some(&Outbound::Close(CloseCode::Replaced))
        );

        let (id, outbox) = reg.register();
        for _ in 0..5 {
            reg.push(id, Outbound::Ping);
        }
        assert_eq!(outbox.ending(), Some(Ending::Overflowed));
        assert_eq!(reg.close(id, CloseCode::Replaced), Push::Gone);
        assert_eq!(outbox.ending(), Some(Ending::Overflowed));
        outbox.discard();
        assert!(drain(&outbox).is_empty());
    }

    #[test]
    fn a_close_keeps_its_code_for_the_session() {
        let reg = Registry::new(4, 1 << 20);
        let (id, outbox) = reg.register();
        assert_eq!(outbox.close_code(), None, "open");
        reg.close(id, CloseCode::Replaced);
        assert_eq!(outbox.ending(), Some(Ending::CloseQueued));
        assert_eq!(outbox.close_code(), Some(4004));
        reg.close(id, CloseCode::GoingAway);
        assert_eq!(outbox.close_code(), Some(4004), "the first close stays");
    }

    #[test]
    fn an_idle_queue_holds_no_allocation() {
        let reg = Registry::new(8, 1 << 10);
        let (id, outbox) = reg.register();
        assert_eq!(outbox.queue.lock().items.capacity(), 0);
        reg.push(id, Outbound::Ping);
        let mut out = VecDeque::new();
        outbox.drain_into(&mut out);
        assert_eq!(
            outbox.queue.lock().items.capacity(),
            0,
            "draining takes the queue's buffer"
        );
    }
}
