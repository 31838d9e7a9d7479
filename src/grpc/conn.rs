//! gRPC connections the server can cut. tonic's graceful shutdown waits for every open call
//! to finish, and a watch stream whose client stopped reading never does: HTTP/2 flow control
//! lets no more bytes out, not even the end of the stream. Once the shutdown grace period is
//! over the server cuts the connections still open: their reads and writes fail, hyper drops
//! them, and with them the services and the core they hold, so the store closes.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::watch,
};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpIncoming};

type Cut = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A connection that fails every read and write once `cut` turns true.
pub struct Severable<IO> {
    io: IO,
    /// Resolves when the connection is cut; `None` once it has.
    cut: Option<Cut>,
}

impl<IO> Severable<IO> {
    /// Wraps `io`, to be cut when `cut` turns true.
    pub fn new(io: IO, mut cut: watch::Receiver<bool>) -> Self {
        let cut: Cut = Box::pin(async move {
            if cut.wait_for(|cut| *cut).await.is_err() {
                // The server handle is gone without cutting: keep serving.
                std::future::pending::<()>().await;
            }
        });
        Self { io, cut: Some(cut) }
    }

    /// Whether the connection is cut; otherwise the task is woken when it is.
    fn severed(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(cut) = &mut self.cut {
            if cut.as_mut().poll(cx).is_pending() {
                return false;
            }
            self.cut = None;
        }
        true
    }
}

fn aborted<T>() -> Poll<io::Result<T>> {
    Poll::Ready(Err(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "cut at the end of the shutdown grace period",
    )))
}

impl<IO: AsyncRead + Unpin> AsyncRead for Severable<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.severed(cx) {
            return aborted();
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Severable<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.severed(cx) {
            return aborted();
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.severed(cx) {
            return aborted();
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Severable<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// The connections accepted on `listener` (with `TCP_NODELAY`), each cut when `cut` turns
/// true.
pub fn severable_incoming(
    listener: TcpListener,
    cut: watch::Receiver<bool>,
) -> impl Stream<Item = io::Result<Severable<tokio::net::TcpStream>>> {
    // tonic ignores `tcp_nodelay` for a caller-supplied incoming stream, so set it on the
    // incoming itself: without it Nagle + delayed ACK add ~40 ms to responses written in
    // more than one segment.
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |conn| conn.map(|io| Severable::new(io, cut.clone())))
}

/// Any incoming connection stream (e.g. the TLS accept loop's), each connection cut when `cut`
/// turns true.
pub fn severable<S, IO>(
    incoming: S,
    cut: watch::Receiver<bool>,
) -> impl Stream<Item = io::Result<Severable<IO>>>
where
    S: Stream<Item = io::Result<IO>>,
{
    incoming.map(move |conn| conn.map(|io| Severable::new(io, cut.clone())))
}
