//! The writing side of one connection: its queue's frames on the wire, in order.
//!
//! A burst of queued frames is encoded into a per-thread buffer and written with one
//! non-blocking system call; only what the socket does not take is kept, until it
//! becomes writable. While such a backlog waits the queue is left alone, so its frame
//! and byte limits find a peer that does not read.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use tokio::net::tcp::WriteHalf;

use crate::registry::{Outbound, Outbox};
use crate::wire::{self, OpCode};

/// Capacity of the per-thread write buffer kept between writes; a larger one is freed.
const WRITE_KEEP: usize = 64 * 1024;

thread_local! {
    /// Where every connection on this thread encodes a burst of frames before writing it.
    static WRITE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Puts a connection's queued frames on the wire.
pub(crate) struct Writer {
    pub(crate) outbox: Arc<Outbox>,
    /// Items taken from the outbox; empty between flushes (its capacity is reused).
    batch: VecDeque<Outbound>,
    /// Encoded bytes the socket has not taken yet; empty (and unallocated) otherwise.
    backlog: Vec<u8>,
    /// How many bytes of `backlog` are already written.
    sent: usize,
    /// Whether a close frame has been encoded: nothing follows it.
    pub(crate) close_sent: bool,
}

impl Writer {
    /// A writer draining `outbox`.
    pub(crate) fn new(outbox: Arc<Outbox>) -> Self {
        Self {
            outbox,
            batch: VecDeque::new(),
            backlog: Vec::new(),
            sent: 0,
            close_sent: false,
        }
    }

    /// Whether encoded bytes wait for the socket.
    pub(crate) fn has_backlog(&self) -> bool {
        self.sent < self.backlog.len()
    }

    /// Writes what is queued, as far as the socket takes it without waiting.
    ///
    /// While the socket holds back a backlog, the queue is left alone, so its frame and
    /// byte limits find a peer that does not read.
    pub(crate) fn flush(&mut self, wr: &WriteHalf<'_>) -> io::Result<()> {
        if self.has_backlog() {
            self.write_backlog(wr)?;
            if self.has_backlog() {
                return Ok(());
            }
        }
        if self.close_sent || self.outbox.drain_into(&mut self.batch) == 0 {
            return Ok(());
        }
        WRITE_BUF.with_borrow_mut(|buf| {
            buf.clear();
            self.encode_batch(buf);
            let written = match wr.try_write(buf) {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
                Err(err) => return Err(err),
            };
            if written < buf.len() {
                self.backlog.extend_from_slice(&buf[written..]);
                self.sent = 0;
            }
            if buf.capacity() > WRITE_KEEP {
                *buf = Vec::new();
            }
            Ok(())
        })
    }

    /// Encodes the batch into frames, stopping after a close frame.
    fn encode_batch(&mut self, out: &mut Vec<u8>) {
        while let Some(item) = self.batch.pop_front() {
            match item {
                Outbound::Text(text) => wire::write_frame(out, OpCode::Text, &text),
                Outbound::Ping => wire::write_frame(out, OpCode::Ping, &[]),
                Outbound::Pong(payload) => wire::write_frame(out, OpCode::Pong, &payload),
                Outbound::CloseEcho(code) => {
                    let payload = code.map(u16::to_be_bytes);
                    wire::write_frame(out, OpCode::Close, payload.as_ref().map_or(&[], |p| p));
                    self.close_sent = true;
                }
                Outbound::Close(code) => {
                    let reason = code.reason().as_bytes();
                    wire::write_header(out, OpCode::Close, 2 + reason.len());
                    out.extend_from_slice(&code.code().to_be_bytes());
                    out.extend_from_slice(reason);
                    self.close_sent = true;
                }
            }
            if self.close_sent {
                self.batch.clear();
                return;
            }
        }
    }

    fn write_backlog(&mut self, wr: &WriteHalf<'_>) -> io::Result<()> {
        match wr.try_write(&self.backlog[self.sent..]) {
            Ok(n) => self.sent += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
        if !self.has_backlog() {
            self.backlog = Vec::new();
            self.sent = 0;
        }
        Ok(())
    }

    /// Writes everything queued (up to a close frame), waiting for the socket as needed.
    pub(crate) async fn finish(&mut self, wr: &WriteHalf<'_>) -> io::Result<()> {
        loop {
            self.flush(wr)?;
            if !self.has_backlog() {
                return Ok(());
            }
            wr.writable().await?;
        }
    }
}
