//! WebSocket frames (RFC 6455 §5) as this server reads and writes them, without I/O.
//!
//! [`parse`] finds the next client frame at the start of a byte buffer and checks
//! everything a server must refuse (reserved bits and opcodes, unmasked frames,
//! fragmented or oversized control frames, frames over the message limit) before any
//! payload is read; [`FrameReader`] turns bytes as they arrive into whole frames,
//! keeping only an unfinished one; [`write_header`] writes the header of an unmasked
//! server frame.

use std::ops::ControlFlow;

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpCode {
    /// The continuation of a fragmented message.
    Continuation,
    /// The first (or only) frame of a text message.
    Text,
    /// The first (or only) frame of a binary message.
    Binary,
    /// A close frame.
    Close,
    /// A ping.
    Ping,
    /// A pong.
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Whether this is a control frame (close, ping, pong).
    pub(crate) fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// The header of one client frame whose bytes are all in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Whether this is the last frame of its message.
    pub(crate) fin: bool,
    /// What the frame carries.
    pub(crate) opcode: OpCode,
    /// The client's masking key.
    pub(crate) mask: [u8; 4],
    /// Bytes of header before the payload.
    pub(crate) header_len: usize,
    /// Bytes of payload.
    pub(crate) payload_len: usize,
}

impl Header {
    /// Header plus payload.
    pub(crate) fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Why a client frame is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// RSV1–3 set without a negotiated extension.
    #[error("reserved bits set")]
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A client frame without a mask (RFC 6455 §5.1).
    #[error("client frame not masked")]
    Unmasked,
    /// A control frame with FIN clear.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame too long")]
    ControlTooLong,
    /// A frame longer than the message limit.
    #[error("frame too large")]
    TooLarge,
}

/// Reads the frame at the start of `buf`.
///
/// `Ok(None)` means more bytes are needed: either the header is incomplete, or the
/// payload is (the caller compares [`Header::frame_len`] with what it holds). Errors
/// are found from the header alone, so an oversized frame is refused before its
/// payload arrives.
pub(crate) fn parse(buf: &[u8], max_payload: usize) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0b0111_0000 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & 0b1000_0000 != 0;
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(FrameError::ReservedOpcode(b0 & 0x0F))?;
    if b1 & 0b1000_0000 == 0 {
        return Err(FrameError::Unmasked);
    }
    if opcode.is_control() {
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        if b1 & 0x7F > 125 {
            return Err(FrameError::ControlTooLong);
        }
    }
    let (length_bytes, short_len) = match b1 & 0x7F {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(usize::from(n))),
    };
    let header_len = 2 + length_bytes + 4;
    let Some(header) = buf.get(..header_len) else {
        return Ok(None);
    };
    let payload_len = match short_len {
        Some(n) => n,
        None => {
            let mut be = [0u8; 8];
            be[8 - length_bytes..].copy_from_slice(&header[2..2 + length_bytes]);
            usize::try_from(u64::from_be_bytes(be)).map_err(|_| FrameError::TooLarge)?
        }
    };
    if payload_len > max_payload {
        return Err(FrameError::TooLarge);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&header[header_len - 4..]);
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        header_len,
        payload_len,
    }))
}

/// Turns bytes as they arrive into whole, unmasked frames.
///
/// Frames wholly inside the bytes given are handed out in place; only the start of a
/// frame still arriving is copied and kept, so between frames nothing is held.
#[derive(Debug)]
pub(crate) struct FrameReader {
    max_payload: usize,
    /// The start of a frame still arriving; empty (and unallocated) otherwise.
    partial: Vec<u8>,
}

impl FrameReader {
    /// A reader refusing frames with more than `max_payload` bytes of payload.
    pub(crate) fn new(max_payload: usize) -> Self {
        Self {
            max_payload,
            partial: Vec::new(),
        }
    }

    /// Hands every whole frame in what has arrived so far to `on_frame`, in order.
    ///
    /// Returns the value `on_frame` stopped with, if it did (the rest of `data` is then
    /// left unread), or the first frame the server must refuse.
    pub(crate) fn feed<B>(
        &mut self,
        data: &mut [u8],
        mut on_frame: impl FnMut(Header, &[u8]) -> ControlFlow<B>,
    ) -> Result<Option<B>, FrameError> {
        if self.partial.is_empty() {
            let (used, outcome) = self.frames(data, &mut on_frame);
            if matches!(outcome, Ok(None)) && used < data.len() {
                self.partial.extend_from_slice(&data[used..]);
            }
            return outcome;
        }
        let mut buf = std::mem::take(&mut self.partial);
        buf.extend_from_slice(data);
        let (used, outcome) = self.frames(&mut buf, &mut on_frame);
        if matches!(outcome, Ok(None)) && used < buf.len() {
            buf.drain(..used);
            self.partial = buf;
        }
        outcome
    }

    /// Handles the whole frames at the start of `buf`; returns the bytes they took.
    fn frames<B>(
        &self,
        buf: &mut [u8],
        on_frame: &mut impl FnMut(Header, &[u8]) -> ControlFlow<B>,
    ) -> (usize, Result<Option<B>, FrameError>) {
        let mut used = 0;
        loop {
            let rest = &mut buf[used..];
            let header = match parse(rest, self.max_payload) {
                Ok(Some(header)) if header.frame_len() <= rest.len() => header,
                Ok(_) => return (used, Ok(None)),
                Err(err) => return (used, Err(err)),
            };
            let payload = &mut rest[header.header_len..header.frame_len()];
            unmask(payload, header.mask);
            used += header.frame_len();
            if let ControlFlow::Break(value) = on_frame(header, payload) {
                return (used, Ok(Some(value)));
            }
        }
    }

    /// Bytes held for a frame still arriving.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        (self.partial.len(), self.partial.capacity())
    }
}

/// Unmasks a payload in place.
pub(crate) fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    fastwebsockets::unmask(payload, mask);
}

/// Appends the header of an unmasked, final server frame carrying `payload_len` bytes.
pub(crate) fn write_header(out: &mut Vec<u8>, opcode: OpCode, payload_len: usize) {
    out.push(0b1000_0000 | opcode.bits());
    if payload_len < 126 {
        out.push(payload_len as u8);
    } else if let Ok(len) = u16::try_from(payload_len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(payload_len as u64).to_be_bytes());
    }
}

/// Appends a whole unmasked, final server frame.
pub(crate) fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    write_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Whether a peer may send this close code (RFC 6455 §7.4).
pub(crate) fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A client frame as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn read_one(buf: &mut [u8], max: usize) -> Result<Option<(Header, Vec<u8>)>, FrameError> {
        let Some(h) = parse(buf, max)? else {
            return Ok(None);
        };
        if buf.len() < h.frame_len() {
            return Ok(None);
        }
        let payload = &mut buf[h.header_len..h.frame_len()];
        unmask(payload, h.mask);
        Ok(Some((h, payload.to_vec())))
    }

    #[test]
    fn reads_a_masked_text_frame_of_each_length_form() {
        for len in [0, 1, 125, 126, 1_000, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut buf = client_frame(true, 0x1, &payload, [1, 2, 3, 4]);
            let (h, got) = read_one(&mut buf, 1 << 20)
                .expect("valid")
                .expect("complete");
            assert_eq!(h.opcode, OpCode::Text);
            assert!(h.fin);
            assert_eq!(h.frame_len(), buf.len(), "len {len}");
            assert_eq!(got, payload, "len {len}");
        }
    }

    #[test]
    fn partial_frames_ask_for_more_at_every_cut() {
        let frame = client_frame(true, 0x1, &[b'x'; 300], [9, 8, 7, 6]);
        for cut in 0..frame.len() {
            let mut part = frame[..cut].to_vec();
            assert_eq!(read_one(&mut part, 1 << 20), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn refuses_what_a_server_must_refuse() {
        let mask = [1, 1, 1, 1];
        let cases: [(Vec<u8>, FrameError); 6] = [
            (
                client_frame(true, 0x1 | 0x40, b"x", mask),
                FrameError::ReservedBits,
            ),
            (
                client_frame(true, 0x3, b"x", mask),
                FrameError::ReservedOpcode(3),
            ),
            (
                client_frame(true, 0xB, b"x", mask),
                FrameError::ReservedOpcode(0xB),
            ),
            (vec![0x81, 0x01, b'x'], FrameError::Unmasked),
            (
                client_frame(false, 0x9, b"", mask),
                FrameError::FragmentedControl,
            ),
            (
                client_frame(true, 0x9, &[0; 126], mask),
                FrameError::ControlTooLong,
            ),
        ];
        for (buf, want) in cases {
            assert_eq!(parse(&buf, 1 << 20), Err(want));
        }
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header_alone() {
        let frame = client_frame(true, 0x1, &[0; 2_000], [0; 4]);
        assert_eq!(parse(&frame[..8], 1_999), Err(FrameError::TooLarge));
        assert!(matches!(parse(&frame[..8], 2_000), Ok(Some(_))));
        let mut huge = vec![0x81, 0x80 | 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(parse(&huge, usize::MAX - 1), Err(FrameError::TooLarge));
    }

    #[test]
    fn the_reader_stops_where_the_handler_says_and_at_the_first_bad_frame() {
        let mut stream = [
            client_frame(true, 0x1, b"one", [1; 4]),
            client_frame(true, 0x1, b"two", [2; 4]),
        ]
        .concat();
        let mut reader = FrameReader::new(100);
        let mut seen = 0;
        let got = reader.feed(&mut stream, |_, payload| {
            seen += 1;
            ControlFlow::Break(payload.to_vec())
        });
        assert_eq!(got, Ok(Some(b"one".to_vec())));
        assert_eq!(seen, 1, "nothing after the stop is handled");

        let mut bad = [
            client_frame(true, 0x1, b"ok", [3; 4]),
            vec![0x81, 0x01, b'x'],
        ]
        .concat();
        let mut reader = FrameReader::new(100);
        let mut texts = Vec::new();
        let got = reader.feed(&mut bad, |_, payload| {
            texts.push(payload.to_vec());
            ControlFlow::<()>::Continue(())
        });
        assert_eq!(got, Err(FrameError::Unmasked));
        assert_eq!(
            texts,
            vec![b"ok".to_vec()],
            "frames before the bad one count"
        );
    }

    #[test]
    fn server_frames_use_the_shortest_length_form() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            write_frame(&mut out, OpCode::Text, &vec![b'a'; len]);
            assert_eq!(out.len(), header + len, "len {len}");
            assert_eq!(out[0], 0x81);
            assert_eq!(out[1] & 0x80, 0, "server frames are not masked");
        }
    }

    #[test]
    fn close_codes_a_peer_may_send() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1011, 3000, 4001, 4999] {
            assert!(close_code_allowed(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            assert!(!close_code_allowed(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_frame_a_client_writes_reads_back(
            fin in any::<bool>(),
            opcode in prop::sample::select(vec![0x0u8, 0x1, 0x2]),
            payload in prop::collection::vec(any::<u8>(), 0..3_000),
            mask in any::<[u8; 4]>(),
            tail in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut buf = client_frame(fin, opcode, &payload, mask);
            let frame_len = buf.len();
            buf.extend_from_slice(&tail);
            let h = parse(&buf, 1 << 20).expect("valid").expect("complete header");
            prop_assert_eq!(h.frame_len(), frame_len);
            prop_assert_eq!(h.fin, fin);
            let body = &mut buf[h.header_len..h.frame_len()];
            unmask(body, h.mask);
            prop_assert_eq!(&body[..], &payload[..]);
        }

        #[test]
        fn frames_come_out_the_same_however_the_bytes_are_cut(
            frames in prop::collection::vec(
                (any::<bool>(), prop::sample::select(vec![0x0u8, 0x1, 0x2, 0x9, 0xA]),
                 prop::collection::vec(any::<u8>(), 0..400), any::<[u8; 4]>()),
                1..12,
            ),
            cuts in prop::collection::vec(1usize..700, 0..40),
        ) {
            let frames: Vec<_> = frames
                .into_iter()
                .map(|(fin, op, mut payload, mask)| {
                    let control = op >= 0x8;
                    if control {
                        payload.truncate(125);
                    }
                    (fin || control, op, payload, mask)
                })
                .collect();
            let mut stream: Vec<u8> = frames
                .iter()
                .flat_map(|(fin, op, payload, mask)| client_frame(*fin, *op, payload, *mask))
                .collect();
            let longest = frames.iter().map(|f| f.2.len() + 14).max().unwrap_or(0);
            let mut reader = FrameReader::new(1 << 16);
            let mut seen = Vec::new();
            let mut at = 0usize;
            for cut in cuts.into_iter().chain([usize::MAX]) {
                let end = at.saturating_add(cut).min(stream.len());
                let got = reader.feed(&mut stream[at..end], |h, payload| {
                    seen.push((h.fin, h.opcode.bits(), payload.to_vec()));
                    ControlFlow::<()>::Continue(())
                });
                prop_assert_eq!(got, Ok(None));
                prop_assert!(reader.held().0 < longest, "holds at most one unfinished frame");
                at = end;
            }
            prop_assert_eq!(reader.held(), (0, 0), "nothing is held between frames");
            let want: Vec<_> = frames.into_iter().map(|(fin, op, payload, _)| (fin, op, payload)).collect();
            prop_assert_eq!(seen, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some(h)) = parse(&buf, 1 << 16) {
                prop_assert!(h.payload_len <= 1 << 16);
                prop_assert!(h.header_len <= 14, "2 + 8 (length) + 4 (mask) at most");
            }
        }
    }
}
