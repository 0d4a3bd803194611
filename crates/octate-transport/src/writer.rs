//! The writing side of one connection: its queue's frames on the wire, in order.
//!
//! A burst of queued frames is encoded into a per-thread buffer and written with one
//! non-blocking system call; only what the socket does not take is kept, until it
//! becomes writable. While such a backlog waits the queue is left alone, so its frame
//! and byte limits find a peer that does not read.
//!
//! A close frame is the last frame written. A slow consumer's close frame goes out
//! ahead of what it never read: right after the frame the socket is part-way through.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use octate_protocol::CloseCode;

use crate::registry::{Outbound, Outbox};
use crate::stream::SessionWriter;
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
    /// Where in `backlog` its first whole frame starts (it may begin mid-frame).
    first_frame: usize,
    /// Whether a close frame has been encoded: nothing follows it.
    close_encoded: bool,
}

impl Writer {
    /// A writer draining `outbox`.
    pub(crate) fn new(outbox: Arc<Outbox>) -> Self {
        Self {
            outbox,
            batch: VecDeque::new(),
            backlog: Vec::new(),
            sent: 0,
            first_frame: 0,
            close_encoded: false,
        }
    }

    /// Whether the close frame is completely written.
    pub(crate) fn close_written(&self) -> bool {
        self.close_encoded && !self.has_backlog()
    }

    /// Ends the connection with `code` ahead of everything not yet written: the queue is
    /// dropped, the backlog is cut after the frame the socket is part-way through, and
    /// the close frame follows. Frames are never cut.
    pub(crate) fn close_now(&mut self, code: CloseCode) {
        if self.close_encoded {
            return;
        }
        self.outbox.discard();
        self.batch.clear();
        let mut cut = self.first_frame;
        while cut < self.sent {
            match encoded_frame_len(&self.backlog[cut..]) {
                Some(len) => cut += len,
                // Never happens to whole frames of ours; keep everything if it did.
                None => cut = self.backlog.len(),
            }
        }
        self.backlog.truncate(cut);
        encode_close(&mut self.backlog, code);
        self.close_encoded = true;
    }

    /// Whether encoded bytes wait for the socket.
    pub(crate) fn has_backlog(&self) -> bool {
        self.sent < self.backlog.len()
    }

    /// Writes what is queued, as far as the socket takes it without waiting.
    ///
    /// While the socket holds back a backlog, the queue is left alone, so its frame and
    /// byte limits find a peer that does not read.
    pub(crate) fn flush(&mut self, wr: &mut impl SessionWriter) -> io::Result<()> {
        if self.has_backlog() {
            self.write_backlog(wr)?;
            if self.has_backlog() {
                return Ok(());
            }
        }
        if self.close_encoded || self.outbox.drain_into(&mut self.batch) == 0 {
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
                self.first_frame = first_frame_from(buf, written) - written;
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
                    self.close_encoded = true;
                }
                Outbound::Close(code) => {
                    encode_close(out, code);
                    self.close_encoded = true;
                }
            }
            if self.close_encoded {
                self.batch.clear();
                return;
            }
        }
    }

    fn write_backlog(&mut self, wr: &mut impl SessionWriter) -> io::Result<()> {
        match wr.try_write(&self.backlog[self.sent..]) {
            Ok(n) => self.sent += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
        if !self.has_backlog() {
            self.backlog = Vec::new();
            self.sent = 0;
            self.first_frame = 0;
        }
        Ok(())
    }
}

/// Appends a close frame with `code` and its reason.
fn encode_close(out: &mut Vec<u8>, code: CloseCode) {
    let reason = code.reason().as_bytes();
    wire::write_header(out, OpCode::Close, 2 + reason.len());
    out.extend_from_slice(&code.code().to_be_bytes());
    out.extend_from_slice(reason);
}

/// Where the first frame starting at or after `at` begins in `encoded`, a run of whole
/// frames of ours (its length when none does).
fn first_frame_from(encoded: &[u8], at: usize) -> usize {
    let mut start = 0;
    while start < at {
        match encoded_frame_len(&encoded[start..]) {
            Some(len) => start += len,
            None => return encoded.len(),
        }
    }
    start.min(encoded.len())
}

/// The length, header included, of the unmasked frame of ours that `bytes` starts with;
/// `None` when `bytes` is too short to tell.
fn encoded_frame_len(bytes: &[u8]) -> Option<usize> {
    let len_byte = *bytes.get(1)? & 0x7F;
    let (header, payload) = match len_byte {
        126 => (
            4,
            usize::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)),
        ),
        127 => (
            10,
            usize::try_from(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)).ok()?,
        ),
        n => (2, usize::from(n)),
    };
    Some(header + payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payload_lens: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for &len in payload_lens {
            starts.push(out.len());
            wire::write_frame(&mut out, OpCode::Text, &vec![b'x'; len]);
        }
        (out, starts)
    }

    #[test]
    fn frame_lengths_of_every_header_size() {
        let (encoded, starts) = frames(&[0, 125, 126, 70_000]);
        assert_eq!(starts, [0, 2, 129, 129 + 4 + 126]);
        for pair in starts.windows(2) {
            assert_eq!(
                encoded_frame_len(&encoded[pair[0]..]),
                Some(pair[1] - pair[0])
            );
        }
        assert_eq!(encoded_frame_len(&encoded[starts[3]..]), Some(10 + 70_000));
        assert_eq!(encoded_frame_len(&encoded[..1]), None);
        assert_eq!(encoded_frame_len(&encoded[starts[2]..starts[2] + 3]), None);
    }

    #[test]
    fn the_first_whole_frame_after_a_partial_write() {
        let (encoded, starts) = frames(&[10, 200, 3]);
        assert_eq!(first_frame_from(&encoded, 0), 0);
        assert_eq!(first_frame_from(&encoded, 1), starts[1]);
        assert_eq!(first_frame_from(&encoded, starts[1]), starts[1]);
        assert_eq!(first_frame_from(&encoded, starts[1] + 1), starts[2]);
        assert_eq!(first_frame_from(&encoded, encoded.len()), encoded.len());
    }

    /// A writer holding `encoded[written..]` as its backlog, `sent` bytes of it written.
    fn with_backlog(encoded: &[u8], written: usize, sent: usize) -> Writer {
        let mut writer = Writer::new(Arc::new(Outbox::default()));
        writer.backlog = encoded[written..].to_vec();
        writer.first_frame = first_frame_from(encoded, written) - written;
        writer.sent = sent;
        writer
    }

    fn close_frame(code: CloseCode) -> Vec<u8> {
        let mut out = Vec::new();
        encode_close(&mut out, code);
        out
    }

    #[test]
    fn a_close_now_follows_the_frame_being_written() {
        let (encoded, starts) = frames(&[10, 200, 3]);
        // Written up to the middle of the second frame.
        let written = starts[1] + 50;
        let mut writer = with_backlog(&encoded, written, 0);
        writer.close_now(CloseCode::SlowConsumer);
        let mut want = encoded[written..starts[2]].to_vec();
        want.extend(close_frame(CloseCode::SlowConsumer));
        assert_eq!(writer.backlog, want, "the rest of frame 2, then the close");
        assert!(writer.has_backlog() && !writer.close_written());

        // The backlog's first frame is itself under way.
        let mut writer = with_backlog(&encoded, 5, starts[1] - 5 + 1);
        writer.close_now(CloseCode::SlowConsumer);
        let mut want = encoded[5..starts[2]].to_vec();
        want.extend(close_frame(CloseCode::SlowConsumer));
        assert_eq!(writer.backlog, want);
        assert_eq!(writer.sent, starts[1] - 5 + 1, "written bytes stay counted");
    }

    #[test]
    fn a_close_now_goes_ahead_of_a_backlog_not_yet_started() {
        let (encoded, _) = frames(&[10, 200]);
        let mut writer = with_backlog(&encoded, 0, 0);
        writer.close_now(CloseCode::SlowConsumer);
        assert_eq!(writer.backlog, close_frame(CloseCode::SlowConsumer));

        let mut idle = Writer::new(Arc::new(Outbox::default()));
        idle.close_now(CloseCode::SlowConsumer);
        assert_eq!(idle.backlog, close_frame(CloseCode::SlowConsumer));
        idle.close_now(CloseCode::Normal);
        assert_eq!(
            idle.backlog,
            close_frame(CloseCode::SlowConsumer),
            "one close frame only"
        );
    }
}
