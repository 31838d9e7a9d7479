//! The client crate's RevocationFollower against a real server: snapshot on first start,
//! resume from a saved revision, OUT_OF_RANGE answered with a snapshot, a server restart
//! survived with no gap and no duplicate, progress advancing the saved revision, and a saved
//! revision that is never one from the middle of a snapshot.

mod common;

use std::{path::Path, time::Duration};

use common::{revoke_one, Key, TestServer};
use mqtt_tokend_client::{
    FollowItem, FollowerOptions, RevisionFile, RevocationFollower, RevocationKind, SnapshotReason,
    WatchError,
};

const A: &str = "post-cn-a";
const B: &str = "post-cn-b";
const WAIT: Duration = Duration::from_secs(20);

type Follower = RevocationFollower<RevisionFile>;

fn follower(ts: &TestServer, key: &Key, path: &Path, options: FollowerOptions) -> Follower {
    // Short delays keep the reconnect tests quick; the jitter is still exercised.
    let options = options.backoff(Duration::from_millis(10), Duration::from_millis(100));
    RevocationFollower::new(&ts.client(key), RevisionFile::new(path), options)
}

/// The next item that is not a heartbeat.
async fn next(f: &mut Follower) -> FollowItem {
    common::next_follow_item(f).await
}

async fn next_event(f: &mut Follower) -> u64 {
    match next(f).await {
        FollowItem::Event(e) => e.revision,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The saved revision, as the file holds it.
fn saved(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().parse().expect("a saved revision is a number"))
}

#[tokio::test]
async fn first_start_reads_a_snapshot_and_saves_only_from_its_end() {
    let ts = TestServer::start().await;
    let root = ts.root.clone();
    for _ in 0..3 {
        revoke_one(&ts, &root, A).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    let mut f = follower(&ts, &root, &path, FollowerOptions::default());
    assert!(matches!(
        next(&mut f).await,
        FollowItem::SnapshotBegin(SnapshotReason::NoSavedRevision)
    ));
    for rev in 1..=3 {
        match next(&mut f).await {
            FollowItem::Event(e) => {
                assert_eq!(e.revision, rev);
                assert_eq!(e.kind, RevocationKind::TokenRevoked);
            }
            other => panic!("expected snapshot event {rev}, got {other:?}"),
        }
        assert_eq!(
            saved(&path),
            None,
            "nothing is saved in the middle of a snapshot"
        );
        assert_eq!(f.revision(), None);
    }
    assert!(matches!(
        next(&mut f).await,
        FollowItem::SnapshotEnd { revision: 3 }
    ));
    assert_eq!(f.revision(), Some(3));
    // Live: asking for the next item saves the snapshot's end.
    let (r4, _) = revoke_one(&ts, &root, A).await;
    assert_eq!(next_event(&mut f).await, r4);
    assert_eq!(saved(&path), Some(3));
    let (r5, _) = revoke_one(&ts, &root, A).await;
    assert_eq!(next_event(&mut f).await, r5);
    assert_eq!(saved(&path), Some(4));
}

#[tokio::test]
async fn resumes_after_the_saved_revision() {
    let ts = TestServer::start().await;
    let root = ts.root.clone();
    for _ in 0..4 {
        revoke_one(&ts, &root, A).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    std::fs::write(&path, "2\n").unwrap();
    let mut f = follower(&ts, &root, &path, FollowerOptions::default());
    assert_eq!(next_event(&mut f).await, 3, "no snapshot: straight to 3");
    assert_eq!(next_event(&mut f).await, 4);
    assert_eq!(saved(&path), Some(3));
}

#[tokio::test]
async fn a_compacted_revision_is_answered_with_a_snapshot() {
    let ts = TestServer::start_with(common::compact_at_once).await;
    let root = ts.root.clone();
    common::compacted_log(&ts, &root, A).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    std::fs::write(&path, "1\n").unwrap();
    let mut f = follower(&ts, &root, &path, FollowerOptions::default());
    assert_eq!(
        match next(&mut f).await {
            FollowItem::SnapshotBegin(reason) => reason,
            other => panic!("expected a snapshot, got {other:?}"),
        },
        SnapshotReason::OutOfRange {
            requested: 2,
            oldest: Some(4)
        }
    );
    assert_eq!(next_event(&mut f).await, 4);
    assert_eq!(
        saved(&path),
        Some(1),
        "the old revision stays until the end"
    );
    assert!(matches!(
        next(&mut f).await,
        FollowItem::SnapshotEnd { revision: 4 }
    ));
    assert_eq!(saved(&path), Some(1));
    let (r5, _) = revoke_one(&ts, &root, A).await;
    assert_eq!(next_event(&mut f).await, r5);
    assert_eq!(saved(&path), Some(4));
}

#[tokio::test]
async fn a_revision_beyond_the_servers_log_is_answered_with_a_snapshot() {
    // A broker that outlived the server's data directory.
    let ts = TestServer::start().await;
    let root = ts.root.clone();
    revoke_one(&ts, &root, A).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    std::fs::write(&path, "99\n").unwrap();
    let mut f = follower(&ts, &root, &path, FollowerOptions::default());
    assert!(matches!(
        next(&mut f).await,
        FollowItem::SnapshotBegin(SnapshotReason::OutOfRange {
            requested: 100,
            oldest: None
        })
    ));
    assert_eq!(next_event(&mut f).await, 1);
    assert!(matches!(
        next(&mut f).await,
        FollowItem::SnapshotEnd { revision: 1 }
    ));
}

#[tokio::test]
async fn a_server_restart_costs_no_event_and_repeats_none() {
    let grpc = common::free_addr();
    let mut ts = TestServer::start_with(|c| c.grpc_addr = grpc.into()).await;
    let root = ts.root.clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    let mut f = follower(&ts, &root, &path, FollowerOptions::default());
    assert!(matches!(next(&mut f).await, FollowItem::SnapshotBegin(_)));
    assert!(matches!(
        next(&mut f).await,
        FollowItem::SnapshotEnd { revision: 0 }
    ));
    let mut seen = vec![];
    for _ in 0..2 {
        revoke_one(&ts, &root, A).await;
        seen.push(next_event(&mut f).await);
    }

    // The server stops: the stream ends with UNAVAILABLE.
    ts.stop().await;
    match next(&mut f).await {
        FollowItem::Disconnected {
            error: WatchError::Status(s),
            ..
        } => assert_eq!(s.code(), tonic::Code::Unavailable),
        other => panic!("expected the stream to end, got {other:?}"),
    }
    // Revocations the follower cannot see live: made while the server listens elsewhere.
    ts.config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    ts.restart().await;
    revoke_one(&ts, &root, A).await;
    revoke_one(&ts, &root, B).await;
    ts.stop().await;
    ts.config.grpc_addr = grpc.into();
    ts.restart().await;

    // Back on its address: the follower reconnects by itself and resumes after revision 2.
    while seen.len() < 4 {
        match next(&mut f).await {
            FollowItem::Event(e) => seen.push(e.revision),
            FollowItem::Disconnected { .. } => {}
            other => panic!("expected events or reconnects, got {other:?}"),
        }
    }
    let (r5, _) = revoke_one(&ts, &root, A).await;
    seen.push(next_event(&mut f).await);
    assert_eq!(seen, vec![1, 2, 3, 4, r5], "every revision exactly once");
    assert_eq!(saved(&path), Some(4));
}

#[tokio::test]
async fn progress_advances_the_saved_revision_past_filtered_events() {
    let ts =
        TestServer::start_with(|c| c.watch_progress_interval = Duration::from_millis(50)).await;
    let root = ts.root.clone();
    for _ in 0..3 {
        revoke_one(&ts, &root, A).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    std::fs::write(&path, "0\n").unwrap();
    // Only instance B, which has no events: the stream carries nothing but heartbeats.
    let mut f = follower(
        &ts,
        &root,
        &path,
        FollowerOptions::default().instance_ids([B]),
    );
    let item = tokio::time::timeout(WAIT, f.next()).await.unwrap();
    assert!(
        matches!(item, FollowItem::Progress { revision: 3 }),
        "got {item:?}"
    );
    assert_eq!(f.revision(), Some(3));
    // Asking for more saves it.
    let item = tokio::time::timeout(WAIT, f.next()).await.unwrap();
    assert!(matches!(item, FollowItem::Progress { .. }), "got {item:?}");
    assert_eq!(saved(&path), Some(3));
}

#[tokio::test]
async fn run_saves_each_revision_once_handled_and_stops_on_shutdown() {
    let ts = TestServer::start().await;
    let root = ts.root.clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    let f = follower(&ts, &root, &path, FollowerOptions::default());
    let (items, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(f.run(
        move |item| {
            if let FollowItem::Event(e) = item {
                let _ = items.send(e.revision);
            }
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let (r1, _) = revoke_one(&ts, &root, A).await;
    let got = tokio::time::timeout(WAIT, rx.recv()).await.unwrap();
    assert_eq!(got, Some(r1));
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("run returns on shutdown")
        .unwrap();
    // Saved as soon as the handler returned, before the shutdown was seen.
    assert_eq!(saved(&path), Some(r1));
}

#[tokio::test]
async fn a_failed_save_is_reported_and_following_goes_on() {
    let ts = TestServer::start().await;
    let root = ts.root.clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("revision");
    let mut f = follower(&ts, &root, &path, FollowerOptions::default());
    assert!(matches!(next(&mut f).await, FollowItem::SnapshotBegin(_)));
    assert!(matches!(next(&mut f).await, FollowItem::SnapshotEnd { .. }));
    assert!(matches!(
        next(&mut f).await,
        FollowItem::SaveFailed { revision: 0, .. }
    ));
    let (r1, _) = revoke_one(&ts, &root, A).await;
    assert_eq!(next_event(&mut f).await, r1);
}

#[tokio::test]
async fn a_stream_silent_past_the_idle_timeout_counts_as_a_gone_server_and_resumes() {
    // Progress only every minute: the stream is silent for longer than the follower allows.
    let ts = TestServer::start_with(|c| c.watch_progress_interval = Duration::from_secs(60)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rev");
    let root = ts.root.clone();
    revoke_one(&ts, &root, A).await;
    let options = FollowerOptions::default().idle_timeout(Duration::from_millis(500));
    let mut f = follower(&ts, &root, &path, options);
    assert!(matches!(next(&mut f).await, FollowItem::SnapshotBegin(_)));
    while !matches!(next(&mut f).await, FollowItem::SnapshotEnd { .. }) {}
    match next(&mut f).await {
        FollowItem::Disconnected {
            error: WatchError::Status(s),
            ..
        } => {
            assert_eq!(s.code(), tonic::Code::Unavailable);
            assert!(s.message().contains("no message"), "{}", s.message());
        }
        other => panic!("expected a silent stream to end, got {other:?}"),
    }
    // It reconnects and resumes: the next revocation arrives once, in order.
    let (revision, _) = revoke_one(&ts, &root, A).await;
    assert_eq!(next_event(&mut f).await, revision);
}
