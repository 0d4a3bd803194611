//! Reassembles fragmented WebSocket messages under a size limit.
//!
//! A message in one frame is handed back borrowed from the read buffer, so the common
//! case copies nothing; only fragmented messages are gathered, and never past the limit.

use crate::wire::OpCode;

/// A complete data message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// A UTF-8 text message.
    Text(&'a str),
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
    /// The message being gathered: its opcode and the bytes so far.
    partial: Option<(OpCode, Vec<u8>)>,
    /// The last fragmented message completed, lent out until the next frame.
    complete: Vec<u8>,
}

impl Assembler {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            partial: None,
            complete: Vec::new(),
        }
    }

    /// Feeds a data frame (text, binary or continuation); returns a message when one is complete.
    pub(crate) fn push<'a>(
        &'a mut self,
        fin: bool,
        opcode: OpCode,
        payload: &'a [u8],
    ) -> Result<Option<Message<'a>>, AssembleError> {
        self.complete = Vec::new();
        match (opcode, self.partial.as_mut()) {
            (OpCode::Text | OpCode::Binary, Some(_)) => Err(AssembleError::BadFragment),
            (OpCode::Continuation, None) => Err(AssembleError::BadFragment),
            (OpCode::Text | OpCode::Binary, None) => {
                if payload.len() > self.limit {
                    return Err(AssembleError::TooLarge);
                }
                if fin {
                    finish(opcode, payload).map(Some)
                } else {
                    self.partial = Some((opcode, payload.to_vec()));
                    Ok(None)
                }
            }
            (OpCode::Continuation, Some((_, buf))) => {
                if buf.len() + payload.len() > self.limit {
                    self.partial = None;
                    return Err(AssembleError::TooLarge);
                }
                buf.extend_from_slice(payload);
                if !fin {
                    return Ok(None);
                }
                let Some((opcode, bytes)) = self.partial.take() else {
                    return Err(AssembleError::BadFragment);
                };
                self.complete = bytes;
                finish(opcode, &self.complete).map(Some)
            }
            _ => Ok(None),
        }
    }
}

fn finish(opcode: OpCode, bytes: &[u8]) -> Result<Message<'_>, AssembleError> {
    if opcode == OpCode::Binary {
        return Ok(Message::Binary);
    }
    std::str::from_utf8(bytes)
        .map(Message::Text)
        .map_err(|_| AssembleError::InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_fragments() {
        let mut a = Assembler::new(100);
        assert_eq!(a.push(false, OpCode::Text, b"{\"a\""), Ok(None));
        assert_eq!(a.push(false, OpCode::Continuation, b":"), Ok(None));
        let done = a.push(true, OpCode::Continuation, b"1}").expect("complete");
        assert_eq!(done, Some(Message::Text("{\"a\":1}")));
    }

    #[test]
    fn a_message_in_one_frame_is_lent_not_copied() {
        let mut a = Assembler::new(100);
        let payload = b"{\"type\":\"leave-room\"}".to_vec();
        let Ok(Some(Message::Text(text))) = a.push(true, OpCode::Text, &payload) else {
            panic!("a whole text frame is a message");
        };
        assert_eq!(text.as_ptr(), payload.as_ptr());
    }

    #[test]
    fn endless_fragments_stop_at_the_limit() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(false, OpCode::Text, b"12345"), Ok(None));
        assert_eq!(a.push(false, OpCode::Continuation, b"12345"), Ok(None));
        assert_eq!(
            a.push(false, OpCode::Continuation, b"1"),
            Err(AssembleError::TooLarge)
        );
    }

    #[test]
    fn utf8_split_across_fragments_is_fine_but_invalid_is_not() {
        let mut a = Assembler::new(100);
        let e_acute = "é".as_bytes();
        assert_eq!(a.push(false, OpCode::Text, &e_acute[..1]), Ok(None));
        assert!(matches!(
            a.push(true, OpCode::Continuation, &e_acute[1..]),
            Ok(Some(Message::Text(_)))
        ));
        assert_eq!(
            a.push(true, OpCode::Text, &[0xff, 0xfe]),
            Err(AssembleError::InvalidUtf8)
        );
    }

    #[test]
    fn bad_fragment_orders() {
        let mut a = Assembler::new(100);
        assert_eq!(
            a.push(true, OpCode::Continuation, b"x"),
            Err(AssembleError::BadFragment)
        );
        assert_eq!(a.push(false, OpCode::Text, b"x"), Ok(None));
        assert_eq!(
            a.push(true, OpCode::Text, b"y"),
            Err(AssembleError::BadFragment)
        );
    }
}
