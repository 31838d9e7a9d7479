//! A proxy in front of one etcd member that can misbehave on a client's watch stream the way
//! etcd 3.4 and a slow network do, while every other call goes through untouched:
//! - `repeat_once`: the first watch response that puts a token key (`…/t/…`) goes out again,
//!   once, after the next watch response (etcd#17247; seen here once under a revocation
//!   benchmark);
//! - `hold`: the watch stream's frames are held back until released, so the replica behind
//!   the proxy lags behind etcd (its transactions and reads still go through).
//!
//! It reads the server's HTTP/2 frames (9-byte headers, RFC 9113 §4.1). A DATA frame whose
//! payload is one whole gRPC message with events (field 11 of etcd's `WatchResponse`) is a
//! watch response, and its stream is the watch stream: no other response of etcd has a field
//! 11. Frames of one stream keep their order; frames of other streams may pass held ones,
//! which HTTP/2 allows. Nothing changes in the client's direction, and HPACK state is
//! untouched: a repeated DATA frame carries no headers. Must run inside a tokio runtime.

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
    sync::{mpsc, watch},
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

/// What the test asks of the proxy, shared with its connections.
struct Shared {
    repeat: AtomicBool,
    repeated: AtomicBool,
    hold: watch::Sender<bool>,
}

/// The running proxy.
pub struct WatchProxy {
    /// Where clients connect: `http://127.0.0.1:<port>`.
    pub endpoint: String,
    shared: Arc<Shared>,
}

impl WatchProxy {
    /// Starts a proxy to `to` (`http://host:port`) that passes everything through.
    pub async fn start(to: &str) -> Self {
        let to: SocketAddr = to
            .trim_start_matches("http://")
            .parse()
            .expect("an http://ip:port endpoint");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let shared = Arc::new(Shared {
            repeat: AtomicBool::new(false),
            repeated: AtomicBool::new(false),
            hold: watch::channel(false).0,
        });
        let each = shared.clone();
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
                let (frames_tx, frames) = mpsc::unbounded_channel();
                tokio::spawn(read_frames(server_rx, frames_tx));
                tokio::spawn(replies(frames, client_tx, each.clone()));
            }
        });
        Self { endpoint, shared }
    }

    /// Repeats the first watch response that puts a token key once, after the next one.
    pub fn repeat_once(&self) {
        self.shared.repeat.store(true, Ordering::SeqCst);
    }

    /// Whether the kept watch response has been sent again.
    pub fn repeated(&self) -> bool {
        self.shared.repeated.load(Ordering::SeqCst)
    }

    /// Holds the watch stream's frames back (`true`) or sends the held ones and lets the
    /// stream flow again (`false`).
    pub fn hold(&self, on: bool) {
        self.shared.hold.send_replace(on);
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

/// Reads the server's frames, whole, in order.
async fn read_frames(mut server: OwnedReadHalf, frames: mpsc::UnboundedSender<Vec<u8>>) {
    loop {
        let mut header = [0u8; 9];
        if server.read_exact(&mut header).await.is_err() {
            return;
        }
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut frame = vec![0u8; 9 + length];
        frame[..9].copy_from_slice(&header);
        if server.read_exact(&mut frame[9..]).await.is_err() || frames.send(frame).is_err() {
            return;
        }
    }
}

/// One connection's server-to-client direction: which stream is the watch, what is held, and
/// the frame kept to repeat.
struct Replies {
    client: OwnedWriteHalf,
    shared: Arc<Shared>,
    watch_stream: Option<u32>,
    held: Vec<Vec<u8>>,
    kept: Option<Vec<u8>>,
}

impl Replies {
    /// Sends one frame on, applying the repeat rule to watch responses.
    async fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.client.write_all(frame).await?;
        let (kind, flags, payload) = (frame[3], frame[4], &frame[9..]);
        if kind != DATA
            || !self.shared.repeat.load(Ordering::SeqCst)
            || self.shared.repeated.load(Ordering::SeqCst)
        {
            return Ok(());
        }
        let Some(response) = watch_response(flags, payload) else {
            return Ok(());
        };
        match &self.kept {
            None => {
                let puts_token = response.events.iter().any(|e| {
                    e.kind == 0
                        && e.kv
                            .as_ref()
                            .is_some_and(|kv| kv.key.windows(3).any(|w| w == b"/t/"))
                });
                if puts_token {
                    let mut again = frame.to_vec();
                    again[4] &= !END_STREAM;
                    self.kept = Some(again);
                }
            }
            Some(again) => {
                let again = again.clone();
                self.client.write_all(&again).await?;
                self.shared.repeated.store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

fn stream_of(frame: &[u8]) -> u32 {
    u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff
}

/// Forwards the server's frames to the client, holding back and repeating as asked.
async fn replies(
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
    client: OwnedWriteHalf,
    shared: Arc<Shared>,
) {
    let mut hold = shared.hold.subscribe();
    let mut r = Replies {
        client,
        shared,
        watch_stream: None,
        held: Vec::new(),
        kept: None,
    };
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else { return };
                if r.watch_stream.is_none()
                    && frame[3] == DATA
                    && watch_response(frame[4], &frame[9..]).is_some()
                {
                    r.watch_stream = Some(stream_of(&frame));
                }
                if *hold.borrow() && r.watch_stream == Some(stream_of(&frame)) {
                    r.held.push(frame);
                } else if r.send(&frame).await.is_err() {
                    return;
                }
            }
            changed = hold.changed() => {
                if changed.is_err() {
                    return;
                }
                if !*hold.borrow_and_update() {
                    for frame in std::mem::take(&mut r.held) {
                        if r.send(&frame).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}
