//! How a watch stream ends other than by its client going away, through a real server: a
//! deleted access key's streams end (whether they were idle or had just sent an event) while
//! other keys' streams go on, and shutdown ends an idle stream at once rather than at its next
//! heartbeat or at the end of the shutdown grace period.

mod common;

use std::time::{Duration, Instant};

use common::{code_of, next_event, revoke_one, Key, TestServer};
use mqtt_tokend::proto::{
    watch_revocations_response::Message, DeleteAccessKeyRequest, RevocationKind,
    WatchRevocationsResponse,
};
use tonic::{Code, Status, Streaming};

const A: &str = "post-cn-a";
const WAIT: Duration = Duration::from_secs(20);
/// Heartbeats far apart: nothing but the event or the shutdown can wake an idle stream.
const QUIET: Duration = Duration::from_secs(120);

async fn watch_now(ts: &TestServer, key: &Key) -> Streaming<WatchRevocationsResponse> {
    ts.revocations(key)
        .watch_revocations(common::from_now())
        .await
        .expect("watch opens")
        .into_inner()
}

/// Reads until the stream ends; returns the revisions of the events it still delivered and
/// the status it ended with.
async fn until_end(s: &mut Streaming<WatchRevocationsResponse>) -> (Vec<u64>, Status) {
    let mut revisions = Vec::new();
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match s.message().await {
                Ok(Some(m)) => {
                    if let Some(Message::Event(e)) = m.message {
                        revisions.push(e.revision);
                    }
                }
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends promptly");
    (revisions, end)
}

#[tokio::test]
async fn deleting_a_key_ends_its_streams_and_no_others() {
    let ts = TestServer::start_with(|c| c.watch_progress_interval = QUIET).await;
    let key = ts.create_key(&[A]).await;
    let mut idle = watch_now(&ts, &key).await;
    let mut busy = watch_now(&ts, &key).await;
    let mut root = watch_now(&ts, &ts.root).await;
    let (r1, _) = revoke_one(&ts, &ts.root, A).await;
    assert_eq!(next_event(&mut busy).await.revision, r1);
    assert_eq!(next_event(&mut root).await.revision, r1);

    ts.access_keys(&ts.root)
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: key.id.clone(),
        })
        .await
        .expect("delete");
    let deleted = next_event(&mut root).await;
    assert_eq!(deleted.kind, RevocationKind::AccessKeyDeleted as i32);
    assert_eq!(deleted.key_id, key.id);

    // Both of the key's streams end; nothing from the deletion on reaches them (the idle one
    // may still deliver r1, sent before).
    for s in [&mut idle, &mut busy] {
        let (revisions, status) = until_end(s).await;
        assert!(revisions.iter().all(|&r| r == r1), "{revisions:?}");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(code_of(&status), "InvalidAccessKeyId.NotFound");
    }
    // The root's stream goes on.
    let (r3, _) = revoke_one(&ts, &ts.root, A).await;
    assert_eq!(next_event(&mut root).await.revision, r3);
}

#[tokio::test]
async fn shutdown_ends_an_idle_stream_at_once() {
    let grace = Duration::from_secs(30);
    let mut ts = TestServer::start_with(|c| {
        c.watch_progress_interval = QUIET;
        c.shutdown_grace = grace;
    })
    .await;
    let root = ts.root.clone();
    let mut s = watch_now(&ts, &root).await;
    // The stream is live and idle: it has sent its event and waits for the next one.
    let (r1, _) = revoke_one(&ts, &root, A).await;
    assert_eq!(next_event(&mut s).await.revision, r1);

    let started = Instant::now();
    let stopping = tokio::spawn(async move {
        ts.stop().await;
        ts
    });
    let (revisions, status) = until_end(&mut s).await;
    assert!(revisions.is_empty(), "{revisions:?}");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Not cut at the end of the grace period: ended by the server, at once.
    let took = started.elapsed();
    assert!(took < grace / 3, "the stream ended after {took:?}");
    stopping.await.expect("stopped");
}
