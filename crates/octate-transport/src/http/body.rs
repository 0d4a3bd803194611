//! The body of every response: bytes already in memory (the API), a file read in
//! chunks as the socket takes them (static files), so no file is ever held whole, or
//! frames made as they come (the admin stats stream).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

/// Most bytes of a file read for one chunk of a response.
const FILE_CHUNK_BYTES: usize = 64 * 1024;

/// A response body.
#[derive(Debug)]
pub(crate) enum Body {
    /// Bytes in memory: JSON, metrics text, or nothing.
    Full(Full<Bytes>),
    /// A file, streamed.
    File(FileBody),
    /// Frames produced as they come, until the producer ends (the admin stats stream).
    Streamed(BoxBody<Bytes, io::Error>),
}

impl Body {
    /// A body that reads `len` bytes of `file` in chunks.
    pub(crate) fn file(file: tokio::fs::File, len: u64) -> Self {
        Self::File(FileBody {
            file,
            remaining: len,
            buf: BytesMut::new(),
        })
    }

    /// A body whose frames `body` produces.
    pub(crate) fn streamed<B>(body: B) -> Self
    where
        B: hyper::body::Body<Data = Bytes, Error = io::Error> + Send + Sync + 'static,
    {
        Self::Streamed(body.boxed())
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::Full(Full::default())
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Full(Full::from(bytes))
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Self::Full(Full::from(text))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Self {
        Self::Full(Full::from(text))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Self::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(|never| match never {}))),
            Self::File(file) => file.poll_chunk(cx),
            Self::Streamed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(full) => full.is_end_stream(),
            Self::File(file) => file.remaining == 0,
            Self::Streamed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(full) => full.size_hint(),
            Self::File(file) => SizeHint::with_exact(file.remaining),
            Self::Streamed(body) => body.size_hint(),
        }
    }
}

/// The bytes of a file still to be sent; the length is fixed when the response starts.
#[derive(Debug)]
pub(crate) struct FileBody {
    file: tokio::fs::File,
    /// Bytes still to send; never more than the length announced in `Content-Length`.
    remaining: u64,
    /// Space for the next chunk; never longer than `remaining`.
    buf: BytesMut,
}

impl FileBody {
    fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if self.buf.is_empty() {
            let want = usize::try_from(self.remaining)
                .map_or(FILE_CHUNK_BYTES, |r| r.min(FILE_CHUNK_BYTES));
            self.buf = BytesMut::zeroed(want);
        }
        let mut read = ReadBuf::new(&mut self.buf);
        match Pin::new(&mut self.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(err)) => {
                self.remaining = 0;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n == 0 {
                    // The file shrank after its length was announced.
                    self.remaining = 0;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being sent",
                    ))));
                }
                self.remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(self.buf.split_to(n).freeze()))))
            }
        }
    }
}
