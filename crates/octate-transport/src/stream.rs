//! The byte streams a WebSocket session runs on: plain TCP, or TLS over TCP.
//!
//! A session reads and writes from one task, waiting on either side at once, so it
//! splits its stream into a reading and a writing side borrowed together. Writing never
//! waits: [`SessionWriter::try_write`] takes what the stream takes now, and
//! [`SessionWriter::writable`] is what the session waits on when something is left.
//!
//! Plain TCP uses tokio's borrowed halves and the socket's own readiness, as if there
//! were no abstraction. TLS shares one `tokio_rustls` stream between both sides behind a
//! lock that is never contended (a session's task polls one side at a time), and also
//! waits for the bytes that rustls has encrypted but the socket has not taken yet.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio_rustls::server::TlsStream;

/// A stream a session can run on.
pub(crate) trait SessionStream {
    /// The reading side.
    type Reader<'a>: AsyncRead + Unpin
    where
        Self: 'a;
    /// The writing side.
    type Writer<'a>: SessionWriter
    where
        Self: 'a;

    /// Both sides, borrowed together.
    fn split(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);
}

/// The writing side of a session's stream: writes that never wait, and a wait for room.
pub(crate) trait SessionWriter {
    /// Writes as much of `buf` as the stream takes now; `WouldBlock` when it takes nothing.
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize>;

    /// Whether bytes already taken still wait below for the socket (TLS records).
    fn has_pending(&self) -> bool;

    /// Completes when writing can make progress: the socket has room, and whatever was
    /// pending below has gone out.
    fn writable(&mut self) -> impl Future<Output = io::Result<()>>;

    /// Starts shutting the writing side down without waiting; the rest, if any, is
    /// finished by [`SessionWriter::writable`].
    fn poll_shutdown_now(&mut self) -> Poll<io::Result<()>>;
}

impl SessionStream for TcpStream {
    type Reader<'a> = ReadHalf<'a>;
    type Writer<'a> = WriteHalf<'a>;

    fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        Self::split(self)
    }
}

impl SessionWriter for WriteHalf<'_> {
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        WriteHalf::try_write(self, buf)
    }

    fn has_pending(&self) -> bool {
        false
    }

    fn writable(&mut self) -> impl Future<Output = io::Result<()>> {
        WriteHalf::writable(self)
    }

    fn poll_shutdown_now(&mut self) -> Poll<io::Result<()>> {
        // A TCP write half shuts down at once.
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(self).poll_shutdown(&mut cx)
    }
}

/// A TLS connection that a session runs on.
pub(crate) struct TlsSession {
    stream: Mutex<TlsStream<TcpStream>>,
    /// Whether the writing side is being shut down (`close_notify` sent or queued).
    shut: AtomicBool,
}

impl TlsSession {
    /// Wraps an established TLS connection.
    pub(crate) fn new(stream: TlsStream<TcpStream>) -> Self {
        Self {
            stream: Mutex::new(stream),
            shut: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the stream; an error instead if the other side holds it (never, as a
    /// session's task polls one side at a time).
    fn with<T>(
        &self,
        f: impl FnOnce(Pin<&mut TlsStream<TcpStream>>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match self.stream.try_lock() {
            Some(mut stream) => f(Pin::new(&mut *stream)),
            None => Poll::Ready(Err(io::Error::other(
                "TLS stream used by both sides at once",
            ))),
        }
    }
}

/// One side of a [`TlsSession`].
pub(crate) struct TlsSide<'a>(&'a TlsSession);

impl SessionStream for TlsSession {
    type Reader<'a> = TlsSide<'a>;
    type Writer<'a> = TlsSide<'a>;

    fn split(&mut self) -> (TlsSide<'_>, TlsSide<'_>) {
        (TlsSide(self), TlsSide(self))
    }
}

impl AsyncRead for TlsSide<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.with(|stream| stream.poll_read(cx, buf))
    }
}

impl SessionWriter for TlsSide<'_> {
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.0.with(|stream| stream.poll_write(&mut cx, buf)) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn has_pending(&self) -> bool {
        self.0
            .stream
            .try_lock()
            .is_some_and(|stream| stream.get_ref().1.wants_write())
    }

    fn writable(&mut self) -> impl Future<Output = io::Result<()>> {
        let session = self.0;
        poll_fn(move |cx| {
            if session.shut.load(Ordering::Relaxed) {
                session.with(|stream| stream.poll_shutdown(cx))
            } else {
                session.with(|stream| stream.poll_flush(cx))
            }
        })
    }

    fn poll_shutdown_now(&mut self) -> Poll<io::Result<()>> {
        self.0.shut.store(true, Ordering::Relaxed);
        let mut cx = Context::from_waker(Waker::noop());
        match self.0.with(|stream| stream.poll_shutdown(&mut cx)) {
            // The rest goes out when the socket has room: the session waits on `writable`.
            Poll::Pending => Poll::Ready(Ok(())),
            done => done,
        }
    }
}
