//! A proxy in front of one etcd member that sends one watch response a second time, later, as
//! etcd 3.4 itself sometimes does (etcd#17247; seen here once under a revocation benchmark):
//! the first watch response that puts a token key (`…/t/…`) is kept, and after the next
//! response with events on the same watch stream it goes out again, once.
//!
//! It reads the server's HTTP/2 frames (9-byte headers, RFC 9113 §4.1) and forwards each as it
//! is. A DATA frame whose payload is one whole gRPC message with events (field 11 of etcd's
//! `WatchResponse`) is a watch response: no other response of etcd has a field 11. Nothing is
//! changed in the client's direction, and HPACK state is untouched: a repeated DATA frame
//! carries no headers. Must run inside a tokio runtime.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{tcp::OwnedReadHalf, tcp::OwnedWriteHalf, TcpListener, TcpStream},
};

const DATA: u8 = 0;
const END_STREAM: u8 = 0x1;
const PADDED: u8 = 0x8;

/// The fields of etcd's `WatchResponse` (rpc.proto) the proxy reads.
#[derive(Clone, PartialEq, Message)]
struct WatchResponse {
    #[prost(message, repeated, tag = "11")]
    events: Vec<Event>,
}

/// mvccpb `Event`: its type (0 is a put) and key-value.
#[derive(Clone, PartialEq, Message)]
struct Event {
    #[prost(int32, tag = "1")]
    kind: i32,
    #[prost(message, optional, tag = "2")]
    kv: Option<KeyValue>,
}

/// mvccpb `KeyValue`: its key.
#[derive(Clone, PartialEq, Message)]
struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
}

/// The running proxy.
pub struct Repeater {
    /// Where clients connect: `http://127.0.0.1:<port>`.
    pub endpoint: String,
    repeated: Arc<AtomicBool>,
}

impl Repeater {
    /// Starts a proxy to `to` (`http://host:port`).
    pub async fn start(to: &str) -> Self {
        let to: SocketAddr = to
            .trim_start_matches("http://")
            .parse()
            .expect("an http://ip:port endpoint");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let repeated = Arc::new(AtomicBool::new(false));
        let flag = repeated.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(to).await else {
                    return;
                };
                let (mut client_rx, client_tx) = client.into_split();
                let (server_rx, mut server_tx) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
                });
                tokio::spawn(replies(server_rx, client_tx, flag.clone()));
            }
        });
        Self { endpoint, repeated }
    }

    /// Whether the kept watch response has been sent again.
    pub fn repeated(&self) -> bool {
        self.repeated.load(Ordering::SeqCst)
    }
}

/// The watch response in a DATA frame's payload, if it is one with events.
fn watch_response(flags: u8, payload: &[u8]) -> Option<WatchResponse> {
    if flags & PADDED != 0 || payload.len() < 5 || payload[0] != 0 {
        return None;
    }
    let length = u32::from_be_bytes(payload[1..5].try_into().ok()?) as usize;
    if length != payload.len() - 5 {
        return None;
    }
    WatchResponse::decode(&payload[5..])
        .ok()
        .filter(|r| !r.events.is_empty())
}

/// Forwards the server's frames to the client, repeating one watch response once.
async fn replies(mut server: OwnedReadHalf, mut client: OwnedWriteHalf, repeated: Arc<AtomicBool>) {
    let mut kept: Option<(u32, Vec<u8>)> = None;
    loop {
        let mut header = [0u8; 9];
        if server.read_exact(&mut header).await.is_err() {
            return;
        }
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; length];
        if server.read_exact(&mut payload).await.is_err() {
            return;
        }
        let frame = [header.as_slice(), &payload].concat();
        if client.write_all(&frame).await.is_err() {
            return;
        }
        let (kind, flags) = (header[3], header[4]);
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        if kind != DATA || repeated.load(Ordering::SeqCst) {
            continue;
        }
        let Some(response) = watch_response(flags, &payload) else {
            continue;
        };
        match &kept {
            None => {
                let puts_token = response.events.iter().any(|e| {
                    e.kind == 0
                        && e.kv
                            .as_ref()
                            .is_some_and(|kv| kv.key.windows(3).any(|w| w == b"/t/"))
                });
                if puts_token {
                    let mut again = frame.clone();
                    again[4] &= !END_STREAM;
                    kept = Some((stream, again));
                }
            }
            Some((kept_stream, again)) if *kept_stream == stream => {
                if client.write_all(again).await.is_err() {
                    return;
                }
                repeated.store(true, Ordering::SeqCst);
            }
            Some(_) => {}
        }
    }
}
