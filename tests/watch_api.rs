//! The WatchRevocations request rules: a start revision alone resumes from it (etcd's rule), a
//! start revision with a mode that has no use for it is refused, and each access key holds at
//! most `--max-watches-per-key` streams, a slot coming free when a stream closes.

mod common;

use std::time::Duration;

use common::{code_of, revoke_one, Key, TestServer};
use mqtt_tokend::proto::{StartMode, WatchRevocationsRequest, WatchRevocationsResponse};
use tonic::{Code, Status, Streaming};
use tonic_types::StatusExt;

const A: &str = "post-cn-a";
const WAIT: Duration = Duration::from_secs(20);

async fn open(
    ts: &TestServer,
    key: &Key,
    mode: StartMode,
    start_revision: u64,
) -> Result<Streaming<WatchRevocationsResponse>, Status> {
    ts.revocations(key)
        .watch_revocations(WatchRevocationsRequest {
            start_mode: mode as i32,
            start_revision,
            instance_ids: vec![],
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn next_revision(s: &mut Streaming<WatchRevocationsResponse>) -> u64 {
    common::next_event(s).await.revision
}

#[tokio::test]
async fn a_start_revision_alone_resumes_and_one_with_now_or_snapshot_is_refused() {
    let ts = TestServer::start().await;
    let root = ts.root.clone();
    for _ in 0..3 {
        revoke_one(&ts, &root, A).await;
    }
    // What `grpcurl -d '{"start_revision":2}'` sends: no mode. It used to start now and
    // silently skip 2 and 3.
    let mut s = open(&ts, &root, StartMode::Unspecified, 2).await.unwrap();
    assert_eq!(next_revision(&mut s).await, 2);
    assert_eq!(next_revision(&mut s).await, 3);
    let (r4, _) = revoke_one(&ts, &root, A).await;
    assert_eq!(next_revision(&mut s).await, r4);
    // No revision and no mode is still "now".
    let mut now = open(&ts, &root, StartMode::Unspecified, 0).await.unwrap();
    let (r5, _) = revoke_one(&ts, &root, A).await;
    assert_eq!(next_revision(&mut now).await, r5);

    for mode in [StartMode::Now, StartMode::Snapshot] {
        let err = open(&ts, &root, mode, 2).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{mode:?}");
        assert_eq!(code_of(&err), "InvalidParameter.StartRevision", "{mode:?}");
    }
}

#[tokio::test]
async fn the_stream_cap_refuses_the_next_stream_and_a_closed_one_frees_its_slot() {
    let ts = TestServer::start_with(|c| c.max_watches_per_key = 3).await;
    let key = ts.create_key(&[A]).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(
            open(&ts, &key, StartMode::Now, 0)
                .await
                .expect("under the cap"),
        );
    }
    let err = open(&ts, &key, StartMode::Now, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(code_of(&err), "WatchStreamNumExceed");
    let info = err.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        info.metadata.get("max_watches_per_key").map(String::as_str),
        Some("3")
    );
    // The cap is per key: another key still opens streams.
    let mut other = open(&ts, &ts.root, StartMode::Now, 0)
        .await
        .expect("root's own slots");

    // The open streams still work.
    let (rev, _) = revoke_one(&ts, &ts.root, A).await;
    for s in &mut streams {
        assert_eq!(next_revision(s).await, rev);
    }
    assert_eq!(next_revision(&mut other).await, rev);

    // Closing one frees its slot. The server learns of the close from the HTTP/2 reset, a
    // moment after the drop, and sends nothing the client could wait on: retry, bounded.
    drop(streams.pop());
    let deadline = tokio::time::Instant::now() + WAIT;
    let reopened = loop {
        match open(&ts, &key, StartMode::Now, 0).await {
            Ok(s) => break s,
            Err(e) if code_of(&e) == "WatchStreamNumExceed" => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot never came free"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    };
    streams.push(reopened);
    assert_eq!(
        code_of(&open(&ts, &key, StartMode::Now, 0).await.unwrap_err()),
        "WatchStreamNumExceed",
        "full again"
    );
}
