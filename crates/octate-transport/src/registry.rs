//! The connections of this process: a bounded outbound queue per connection.
//!
//! The core addresses effects to [`ConnId`]s; this map turns them into queue pushes.
//! Pushes never wait: a connection whose queue is full, or holds too many bytes, is
//! a slow consumer and is told to stop at once instead of growing the server's memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use fastwebsockets::Frame;
use octate_core::ConnId;
use octate_protocol::CloseCode;
use parking_lot::RwLock;
use tokio::sync::{Notify, mpsc};

/// Something for a connection's writer task to put on the wire.
pub(crate) enum Outbound {
    /// A text frame, shared by every recipient of the same message.
    Text(Bytes),
    /// A WebSocket ping.
    Ping,
    /// A pong or close echo owed to the peer by the WebSocket protocol.
    Control(Frame<'static>),
    /// A close frame; the writer stops after it.
    Close(CloseCode),
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(b) => write!(f, "Text({} bytes)", b.len()),
            Self::Ping => f.write_str("Ping"),
            Self::Control(frame) => write!(f, "Control({:?})", frame.opcode),
            Self::Close(code) => write!(f, "Close({})", code.code()),
        }
    }
}

/// The sending side of one connection.
#[derive(Debug, Clone)]
struct Handle {
    tx: mpsc::Sender<Outbound>,
    pending_bytes: Arc<AtomicUsize>,
    kill: Arc<Notify>,
}

/// The receiving side of one connection, owned by its session.
#[derive(Debug)]
pub(crate) struct Mailbox {
    /// Queue drained by the writer task.
    pub(crate) rx: mpsc::Receiver<Outbound>,
    /// Bytes of text frames queued and not yet written.
    pub(crate) pending_bytes: Arc<AtomicUsize>,
    /// Fires when the connection must stop at once (slow consumer).
    pub(crate) kill: Arc<Notify>,
}

/// What happened to a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued.
    Queued,
    /// No such connection (it closed meanwhile).
    Gone,
    /// The queue was full: the connection has been killed and unregistered.
    SlowConsumer,
}

/// Every open WebSocket connection of this process.
#[derive(Debug)]
pub(crate) struct Registry {
    conns: RwLock<HashMap<ConnId, Handle>>,
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

    /// Registers a new connection and returns its id and mailbox.
    pub(crate) fn register(&self) -> (ConnId, Mailbox) {
        let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(self.queue_messages);
        let pending_bytes = Arc::new(AtomicUsize::new(0));
        let kill = Arc::new(Notify::new());
        let handle = Handle {
            tx,
            pending_bytes: pending_bytes.clone(),
            kill: kill.clone(),
        };
        self.conns.write().insert(id, handle);
        (
            id,
            Mailbox {
                rx,
                pending_bytes,
                kill,
            },
        )
    }

    /// Forgets a connection.
    pub(crate) fn unregister(&self, id: ConnId) {
        self.conns.write().remove(&id);
    }

    /// Open connections.
    pub(crate) fn len(&self) -> usize {
        self.conns.read().len()
    }

    /// Queues a text frame.
    pub(crate) fn send_text(&self, id: ConnId, text: Bytes) -> Push {
        let len = text.len();
        let verdict = {
            let conns = self.conns.read();
            let Some(handle) = conns.get(&id) else {
                return Push::Gone;
            };
            let queued = handle.pending_bytes.fetch_add(len, Ordering::Relaxed) + len;
            if queued > self.queue_bytes {
                Err(handle.kill.clone())
            } else {
                match handle.tx.try_send(Outbound::Text(text)) {
                    Ok(()) => Ok(()),
                    Err(mpsc::error::TrySendError::Closed(_)) => return Push::Gone,
                    Err(mpsc::error::TrySendError::Full(_)) => Err(handle.kill.clone()),
                }
            }
        };
        match verdict {
            Ok(()) => Push::Queued,
            Err(kill) => {
                kill.notify_one();
                self.unregister(id);
                Push::SlowConsumer
            }
        }
    }

    /// Queues a control item (ping or close); a full queue kills the connection.
    pub(crate) fn send_control(&self, id: ConnId, item: Outbound) -> Push {
        let verdict = {
            let conns = self.conns.read();
            let Some(handle) = conns.get(&id) else {
                return Push::Gone;
            };
            match handle.tx.try_send(item) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Push::Gone,
                Err(mpsc::error::TrySendError::Full(_)) => Err(handle.kill.clone()),
            }
        };
        match verdict {
            Ok(()) => Push::Queued,
            Err(kill) => {
                kill.notify_one();
                self.unregister(id);
                Push::SlowConsumer
            }
        }
    }

    /// Queues a close frame and forgets the connection: nothing more is sent to it.
    pub(crate) fn close(&self, id: ConnId, code: CloseCode) -> Push {
        let push = self.send_control(id, Outbound::Close(code));
        self.unregister(id);
        push
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

    #[test]
    fn full_queue_kills_the_slow_consumer_only() {
        let reg = Registry::new(4, 1 << 20);
        let (slow, _slow_box) = reg.register();
        let (fast, mut fast_box) = reg.register();
        for _ in 0..4 {
            assert_eq!(reg.send_text(slow, Bytes::from_static(b"x")), Push::Queued);
        }
        assert_eq!(
            reg.send_text(slow, Bytes::from_static(b"x")),
            Push::SlowConsumer
        );
        assert_eq!(reg.send_text(slow, Bytes::from_static(b"x")), Push::Gone);
        assert_eq!(reg.send_text(fast, Bytes::from_static(b"y")), Push::Queued);
        assert!(matches!(fast_box.rx.try_recv(), Ok(Outbound::Text(b)) if &b[..] == b"y"));
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn byte_budget_kills_before_memory_grows() {
        let reg = Registry::new(1000, 10);
        let (id, mailbox) = reg.register();
        assert_eq!(
            reg.send_text(id, Bytes::from_static(b"12345")),
            Push::Queued
        );
        assert_eq!(
            reg.send_text(id, Bytes::from_static(b"12345")),
            Push::Queued
        );
        assert_eq!(
            reg.send_text(id, Bytes::from_static(b"1")),
            Push::SlowConsumer
        );
        assert_eq!(mailbox.pending_bytes.load(Ordering::Relaxed), 11);
    }
}
