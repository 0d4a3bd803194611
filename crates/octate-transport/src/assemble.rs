//! Reassembles fragmented WebSocket messages under a size limit.
//!
//! fastwebsockets' own collector has no total-size bound, so a peer could send
//! continuation frames forever; this one stops at the limit.

use bytes::BytesMut;
use fastwebsockets::{Frame, OpCode, Payload};

/// A complete data message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// A UTF-8 text message.
    Text(BytesMut),
    /// A binary message.
    Binary,
}

/// Why a message could not be assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AssembleError {
    /// The message grew past the limit.
    #[error("message too large")]
    TooLarge,
    /// A text message is not UTF-8.
    #[error("invalid utf-8")]
    InvalidUtf8,
    /// Continuation without a start, or a new start inside a message.
    #[error("invalid fragmentation")]
    BadFragment,
}

/// Collects data frames into messages.
#[derive(Debug)]
pub(crate) struct Assembler {
    limit: usize,
    partial: Option<(OpCode, BytesMut)>,
}

impl Assembler {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            partial: None,
        }
    }

    /// Feeds a data frame (text, binary or continuation); returns a message when one is complete.
    pub(crate) fn push(&mut self, frame: Frame<'_>) -> Result<Option<Message>, AssembleError> {
        let fin = frame.fin;
        match (frame.opcode, self.partial.as_mut()) {
            (OpCode::Text | OpCode::Binary, Some(_)) => Err(AssembleError::BadFragment),
            (OpCode::Continuation, None) => Err(AssembleError::BadFragment),
            (OpCode::Text | OpCode::Binary, None) => {
                if frame.payload.len() > self.limit {
                    return Err(AssembleError::TooLarge);
                }
                let opcode = frame.opcode;
                let bytes = into_bytes(frame.payload);
                if fin {
                    finish(opcode, bytes).map(Some)
                } else {
                    self.partial = Some((opcode, bytes));
                    Ok(None)
                }
            }
            (OpCode::Continuation, Some((_, buf))) => {
                if buf.len() + frame.payload.len() > self.limit {
                    self.partial = None;
                    return Err(AssembleError::TooLarge);
                }
                buf.extend_from_slice(&frame.payload);
                if fin {
                    match self.partial.take() {
                        Some((opcode, bytes)) => finish(opcode, bytes).map(Some),
                        None => Err(AssembleError::BadFragment),
                    }
                } else {
                    Ok(None)
                }
            }
            _ => Ok(None),
        }
    }
}

fn into_bytes(payload: Payload<'_>) -> BytesMut {
    match payload {
        Payload::Bytes(b) => b,
        other => BytesMut::from(&other[..]),
    }
}

fn finish(opcode: OpCode, bytes: BytesMut) -> Result<Message, AssembleError> {
    if opcode == OpCode::Binary {
        return Ok(Message::Binary);
    }
    if std::str::from_utf8(&bytes).is_err() {
        return Err(AssembleError::InvalidUtf8);
    }
    Ok(Message::Text(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: OpCode, data: &[u8]) -> Frame<'static> {
        Frame::new(fin, opcode, None, Payload::Owned(data.to_vec()))
    }

    #[test]
    fn joins_fragments() {
        let mut a = Assembler::new(100);
        assert_eq!(a.push(frame(false, OpCode::Text, b"{\"a\"")), Ok(None));
        assert_eq!(a.push(frame(false, OpCode::Continuation, b":")), Ok(None));
        let done = a
            .push(frame(true, OpCode::Continuation, b"1}"))
            .expect("complete");
        assert_eq!(done, Some(Message::Text(BytesMut::from(&b"{\"a\":1}"[..]))));
    }

    #[test]
    fn endless_fragments_stop_at_the_limit() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(frame(false, OpCode::Text, b"12345")), Ok(None));
        assert_eq!(
            a.push(frame(false, OpCode::Continuation, b"12345")),
            Ok(None)
        );
        assert_eq!(
            a.push(frame(false, OpCode::Continuation, b"1")),
            Err(AssembleError::TooLarge)
        );
    }

    #[test]
    fn utf8_split_across_fragments_is_fine_but_invalid_is_not() {
        let mut a = Assembler::new(100);
        let e_acute = "é".as_bytes();
        assert_eq!(a.push(frame(false, OpCode::Text, &e_acute[..1])), Ok(None));
        assert!(matches!(
            a.push(frame(true, OpCode::Continuation, &e_acute[1..])),
            Ok(Some(Message::Text(_)))
        ));
        assert_eq!(
            a.push(frame(true, OpCode::Text, &[0xff, 0xfe])),
            Err(AssembleError::InvalidUtf8)
        );
    }

    #[test]
    fn bad_fragment_orders() {
        let mut a = Assembler::new(100);
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, b"x")),
            Err(AssembleError::BadFragment)
        );
        assert_eq!(a.push(frame(false, OpCode::Text, b"x")), Ok(None));
        assert_eq!(
            a.push(frame(true, OpCode::Text, b"y")),
            Err(AssembleError::BadFragment)
        );
    }
}
