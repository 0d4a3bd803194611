//! The errors of the client: transport failures, bad answers, refusals by the server.

use octate_protocol::ErrorCode;

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A socket operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// The server sent something that is not a valid message.
    #[error("protocol: {0}")]
    Protocol(#[from] octate_protocol::ProtocolError),
    /// An HTTP response could not be understood, or reported a failure.
    #[error("http: {0}")]
    Http(String),
    /// The connection closed, with the close code and reason when the server sent them.
    #[error("closed: {0:?}")]
    Closed(Option<(u16, String)>),
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
    /// The server answered `auth` or `resume` with an `error`.
    #[error("refused: {code}: {message}")]
    Refused {
        /// The `error` code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server refused `resume` (`resume-failed`): the session is gone; authenticate again.
    #[error("resume failed: {0}")]
    ResumeFailed(String),
    /// The server answered `auth` or `resume` with a message of this type instead.
    #[error("unexpected answer: {0}")]
    UnexpectedAnswer(&'static str),
    /// The session has no open connection: it ended and will not reconnect.
    #[error("not connected")]
    NotConnected,
    /// Reconnecting failed this many times in a row.
    #[error("gave up after {attempts} reconnect attempts: {last}")]
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// Why the last one failed.
        last: Box<Self>,
    },
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(err: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(err))
    }
}
