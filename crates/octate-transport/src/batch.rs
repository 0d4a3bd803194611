//! A write buffer that gathers the frames of a burst into one system call.
//!
//! Unlike `tokio::io::BufWriter`, it allocates only while there is something to send
//! and frees the buffer after each flush, so idle connections hold none.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;

/// Bytes gathered before a write is forced even without a flush.
const MAX_BATCH: usize = 64 * 1024;
/// Buffer capacity kept across flushes; anything larger is freed. Zero: an idle
/// connection holds no write buffer at all, and a burst costs one allocation.
const KEEP_CAPACITY: usize = 0;

/// Buffers writes until `flush`, then writes them in as few system calls as possible.
#[derive(Debug)]
pub(crate) struct BatchWriter<W> {
    inner: W,
    buf: Vec<u8>,
    written: usize,
}

impl<W: AsyncWrite + Unpin> BatchWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            written: 0,
        }
    }

    /// Writes out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.written = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for BatchWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.buf.is_empty() && self.buf.len() + data.len() > MAX_BATCH {
            ready!(self.poll_drain(cx))?;
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if !self.buf.is_empty() && self.buf.len() + total > MAX_BATCH {
            ready!(self.poll_drain(cx))?;
        }
        for b in bufs {
            self.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn nothing_reaches_the_socket_before_flush_and_everything_after() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let mut w = BatchWriter::new(client);
        w.write_all(b"one ").await.expect("buffered");
        let n = w
            .write_vectored(&[IoSlice::new(b"two "), IoSlice::new(b"three")])
            .await
            .expect("buffered");
        assert_eq!(n, 9, "both slices are taken whole");
        let mut probe = [0u8; 1];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            server.read(&mut probe),
        )
        .await;
        assert!(early.is_err(), "bytes leaked before flush");
        w.flush().await.expect("flush");
        let mut got = vec![0u8; 13];
        server.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"one two three");
        assert_eq!(
            w.buf.capacity(),
            KEEP_CAPACITY,
            "no buffer is kept after a flush"
        );
    }

    #[tokio::test]
    async fn large_bursts_are_written_without_waiting_for_flush_and_the_buffer_is_freed() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let mut w = BatchWriter::new(client);
        let chunk = vec![7u8; 40 * 1024];
        w.write_all(&chunk).await.expect("first");
        w.write_all(&chunk)
            .await
            .expect("second forces the first out");
        let mut got = vec![0u8; chunk.len()];
        server
            .read_exact(&mut got)
            .await
            .expect("first chunk arrived");
        w.flush().await.expect("flush");
        assert_eq!(w.buf.capacity(), 0, "large buffers are freed after a flush");
    }
}
