//! The client crate's requests on the wire, read by a recording proxy between a real client
//! and a real server: a unary call's message carries its end of stream, so it leaves in one
//! HTTP/2 DATA frame instead of the message and then an empty frame. For a message of 256
//! bytes or more that empty frame cost a write and a TCP segment of its own, and the server a
//! second wake-up (docs/benchmarks.md, "The fifth pass").

mod common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::TestServer;
use mqtt_tokend_client::{
    proto::{AuthorizeTopicRequest, QueryTokenRequest, TopicAction},
    ClientConfig,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The client connection preface that precedes the first frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const END_STREAM: u8 = 1;

/// Forwards connections to `to`, keeping a copy of every byte the clients sent.
async fn recording_proxy(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(to).await else {
                return;
            };
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut server_rx, mut server_tx) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
            });
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = client_rx.read(&mut buf).await {
                    if n == 0 || server_tx.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    record.lock().expect("record").extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (addr, sent)
}

/// The DATA frames of each stream in `bytes` (the client's side of one connection): their
/// payload lengths and whether each ended the stream.
fn data_frames(bytes: &[u8]) -> BTreeMap<u32, Vec<(usize, bool)>> {
    assert!(bytes.starts_with(PREFACE), "an HTTP/2 connection");
    let mut rest = &bytes[PREFACE.len()..];
    let mut streams: BTreeMap<u32, Vec<(usize, bool)>> = BTreeMap::new();
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let (kind, flags) = (rest[3], rest[4]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        if rest.len() < 9 + len {
            break;
        }
        if kind == DATA {
            streams
                .entry(stream)
                .or_default()
                .push((len, flags & END_STREAM != 0));
        }
        rest = &rest[9 + len..];
    }
    streams
}

#[tokio::test]
async fn a_unary_request_is_one_data_frame_that_ends_its_stream() {
    let ts = TestServer::start().await;
    let (proxy, sent) = recording_proxy(ts.server().grpc_addr()).await;
    let client = ClientConfig::new([format!("http://{proxy}")])
        .access_key(ts.root.clone())
        .connect()
        .await
        .expect("connect through the proxy");

    // A message well over h2's 256 bytes (a session handle is about 200 characters) and a
    // small one. Both are denied; only their frames matter here.
    let decision = client
        .broker()
        .authorize_topic(AuthorizeTopicRequest {
            client_id: "GID_frames@@@device-1".into(),
            session_handle: "h".repeat(400),
            action: TopicAction::Publish as i32,
            topic: "frames/up".into(),
            ..Default::default()
        })
        .await
        .expect("answered")
        .into_inner();
    assert!(!decision.allowed);
    let status = client
        .tokens()
        .query_token(QueryTokenRequest {
            instance_id: "post-cn-frames".into(),
            token: "short".into(),
        })
        .await
        .expect("answered")
        .into_inner();
    assert!(!status.token_status, "not a token");

    // Both requests were answered, so both were sent whole; give the proxy a moment to
    // record the last bytes it forwarded.
    let mut frames = BTreeMap::new();
    for _ in 0..100 {
        frames = data_frames(&sent.lock().expect("record"));
        let ended = frames
            .values()
            .filter(|f| f.last().is_some_and(|(_, end)| *end))
            .count();
        if ended >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(frames.len(), 2, "two requests with a body: {frames:?}");
    let sizes: Vec<usize> = frames.values().map(|f| f[0].0).collect();
    assert!(
        sizes.iter().any(|s| *s > 400) && sizes.iter().any(|s| *s < 100),
        "{frames:?}"
    );
    for (stream, data) in &frames {
        assert_eq!(
            data.len(),
            1,
            "stream {stream}: the message and its end of stream in one frame: {data:?}"
        );
        assert!(data[0].1, "stream {stream}: the frame ends the stream");
    }
}
