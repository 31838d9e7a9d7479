//! Accepting TLS connections: one task accepts TCP connections and starts a handshake task per
//! connection with the configuration current at that moment; finished handshakes are queued for
//! the server. A slow or hostile client therefore never holds up other clients' accepts, and a
//! reload affects only connections accepted after it.
//!
//! [`TlsIncoming`] is the stream tonic's `serve_with_incoming_shutdown` takes (its streams
//! implement tonic's `Connected`, so `Request::remote_addr` works); [`TlsListener`] is axum's
//! `Listener`. Dropping either stops the accept loop and closes the socket.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;

use super::{Protocol, ServerTls};
use crate::core::Metrics;

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to pick them up.
const QUEUE: usize = 64;
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

type Accepted = (TlsStream<TcpStream>, SocketAddr);

fn spawn_accept_loop(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    protocol: Protocol,
    metrics: Arc<Metrics>,
) -> mpsc::Receiver<Accepted> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // The server stopped accepting (shutdown): close the socket now.
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(listener = protocol.as_str(), error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            // Without it Nagle + delayed ACK add ~40 ms to responses written in pieces.
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor(protocol);
            let (tx, metrics) = (tx.clone(), metrics.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        // A closed queue means shutdown: dropping the stream closes it.
                        let _ = tx.send((stream, peer)).await;
                    }
                    Ok(Err(e)) => {
                        metrics.tls_handshake_failure(protocol.as_str());
                        tracing::debug!(listener = protocol.as_str(), %peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics.tls_handshake_failure(protocol.as_str());
                        tracing::debug!(listener = protocol.as_str(), %peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    rx
}

/// TLS connections for tonic's `serve_with_incoming_shutdown`.
pub struct TlsIncoming {
    rx: mpsc::Receiver<Accepted>,
}

impl TlsIncoming {
    /// Starts accepting on `listener` (the gRPC listener: ALPN `h2`).
    pub fn new(listener: TcpListener, tls: Arc<ServerTls>, metrics: Arc<Metrics>) -> Self {
        Self {
            rx: spawn_accept_loop(listener, tls, Protocol::Grpc, metrics),
        }
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx
            .poll_recv(cx)
            .map(|accepted| accepted.map(|(stream, _)| Ok(stream)))
    }
}

/// TLS connections for `axum::serve`.
pub struct TlsListener {
    rx: mpsc::Receiver<Accepted>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener` (the REST listener: ALPN `http/1.1`).
    ///
    /// # Errors
    /// The listener's local address cannot be read.
    pub fn new(
        listener: TcpListener,
        tls: Arc<ServerTls>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            rx: spawn_accept_loop(listener, tls, Protocol::Rest, metrics),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends once this receiver is gone, so this cannot happen;
            // if it did, accepting nothing more is the honest answer.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
