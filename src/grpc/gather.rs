//! gRPC connections that gather the frames of many streams into one socket write.
//!
//! Each HTTP/2 stream's response is produced by a task of its own (hyper spawns one per
//! stream), which queues its frames and wakes the connection task that writes them. tokio runs
//! a task woken this way right after the task that woke it (its LIFO slot), so when one
//! revocation reaches 10,000 watch streams on 100 connections, each connection task ran once
//! per stream and wrote one ~110-byte frame per `sendto`: 10,000 system calls per event, and
//! the kernel's loopback TCP path was 40% of the server's CPU.
//!
//! [`Gathered`] makes the connection task yield once before the first write of each flush: the
//! tasks already runnable (the other streams' producers) queue their frames meanwhile, and the
//! write that follows carries them all. The cost is one extra poll of the connection task per
//! flush, and nothing is held back: the yield wakes the task at once, it only goes behind the
//! tasks that were already waiting to run.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// Every connection of `incoming`, gathered.
pub fn gathered<S, IO>(incoming: S) -> impl Stream<Item = io::Result<Gathered<IO>>>
where
    S: Stream<Item = io::Result<IO>>,
{
    incoming.map(|conn| conn.map(Gathered::new))
}

/// A connection whose writes wait for one yield of the task after each completed flush.
pub struct Gathered<IO> {
    io: IO,
    /// Whether this flush has yielded already: set by the first write, reset once the flush
    /// completes.
    yielded: bool,
}

impl<IO> Gathered<IO> {
    /// Wraps `io`.
    pub fn new(io: IO) -> Self {
        Self { io, yielded: false }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Gathered<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Gathered<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.yielded {
            this.yielded = true;
            // Woken while it runs, the task is queued behind every task already runnable
            // (tokio's yield), not in the LIFO slot: the other streams run first.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        if flushed.is_ready() {
            this.yielded = false;
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Gathered<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn every_byte_arrives_and_a_flush_yields_once() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut g = Gathered::new(a);
        // The first write of a flush is Pending once, with the task woken.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut g).poll_write(&mut cx, b"ab").is_pending());
        assert!(matches!(
            Pin::new(&mut g).poll_write(&mut cx, b"ab"),
            Poll::Ready(Ok(2))
        ));
        // Further writes of the same flush go straight through.
        assert!(matches!(
            Pin::new(&mut g).poll_write(&mut cx, b"cd"),
            Poll::Ready(Ok(2))
        ));
        assert!(Pin::new(&mut g).poll_flush(&mut cx).is_ready());
        assert!(Pin::new(&mut g).poll_write(&mut cx, b"ef").is_pending());
        // Through the async API, the yield is invisible.
        g.write_all(b"ef").await.unwrap();
        g.flush().await.unwrap();
        g.write_all(b"gh").await.unwrap();
        g.flush().await.unwrap();
        let mut got = [0u8; 8];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcdefgh");
    }
}
