//! RevocationService.WatchRevocations through a real server: resume without gap or duplicate
//! (also across a restart), snapshot then live, compaction and OUT_OF_RANGE, a slow watcher
//! catching up while others stay live, filtering and permissions, many watchers, heartbeats.

mod common;

use std::time::Duration;

use common::{code_of, now_ms, revoke_one, TestServer};
use mqtt_tokend::proto::{
    revocation_service_client::RevocationServiceClient, watch_revocations_response::Message,
    RegisterDeviceCredentialRequest, RevocationKind, StartMode, UnRegisterDeviceCredentialRequest,
    WatchRevocationsRequest, WatchRevocationsResponse,
};
use mqtt_tokend_client::AuthChannel;
use tonic::{Code, Streaming};

const A: &str = "post-cn-a";
const B: &str = "post-cn-b";
const WAIT: Duration = Duration::from_secs(20);

async fn watch(
    c: &mut RevocationServiceClient<AuthChannel>,
    mode: StartMode,
    rev: u64,
    instances: &[&str],
) -> Streaming<WatchRevocationsResponse> {
    c.watch_revocations(WatchRevocationsRequest {
        start_mode: mode as i32,
        start_revision: rev,
        instance_ids: instances.iter().map(|s| s.to_string()).collect(),
    })
    .await
    .expect("watch opens")
    .into_inner()
}

/// The next message that is not a heartbeat.
async fn next(s: &mut Streaming<WatchRevocationsResponse>) -> Message {
    loop {
        let m = tokio::time::timeout(WAIT, s.message())
            .await
            .expect("a message in time")
            .expect("stream ok")
            .expect("stream open")
            .message
            .expect("message set");
        if !matches!(m, Message::Progress(_)) {
            return m;
        }
    }
}

async fn next_event(
    s: &mut Streaming<WatchRevocationsResponse>,
) -> mqtt_tokend::proto::RevocationEvent {
    match next(s).await {
        Message::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

fn fingerprint(token: &str) -> String {
    mqtt_tokend_client::fingerprint(token)
}

#[tokio::test]
async fn resume_after_disconnect_and_restart_without_gap_or_duplicate() {
    let mut ts = TestServer::start().await;
    let root = ts.root.clone();
    let mut w = ts.revocations(&root);
    let mut s = watch(&mut w, StartMode::Now, 0, &[]).await;
    let (r1, t1) = revoke_one(&ts, &root, A).await;
    let (r2, _) = revoke_one(&ts, &root, A).await;
    assert_eq!((r1, r2), (1, 2));
    let e1 = next_event(&mut s).await;
    assert_eq!(e1.revision, 1);
    assert_eq!(e1.kind, RevocationKind::TokenRevoked as i32);
    assert_eq!(e1.instance_id, A);
    assert_eq!(e1.token_fingerprint, fingerprint(&t1));
    assert!(e1.expire_time > now_ms() && e1.revoke_time <= now_ms());
    assert_eq!(next_event(&mut s).await.revision, 2);
    drop(s);

    // Disconnected: two more revocations happen; resuming from 3 gets exactly 3 and 4.
    revoke_one(&ts, &root, A).await;
    revoke_one(&ts, &root, B).await;
    let mut s = watch(&mut w, StartMode::Revision, 3, &[]).await;
    assert_eq!(next_event(&mut s).await.revision, 3);
    assert_eq!(next_event(&mut s).await.revision, 4);
    let (r5, _) = revoke_one(&ts, &root, A).await;
    assert_eq!(next_event(&mut s).await.revision, r5);
    drop(s);

    // Across a restart: revisions continue, resume from 5 sees 5 and the new 6.
    ts.restart().await;
    let (r6, _) = revoke_one(&ts, &root, A).await;
    assert_eq!(r6, 6);
    let mut w = ts.revocations(&root);
    let mut s = watch(&mut w, StartMode::Revision, 5, &[]).await;
    assert_eq!(next_event(&mut s).await.revision, 5);
    assert_eq!(next_event(&mut s).await.revision, 6);
    // Asking for the future is an error.
    let err = w
        .watch_revocations(WatchRevocationsRequest {
            start_mode: StartMode::Revision as i32,
            start_revision: 99,
            instance_ids: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(code_of(&err), "FutureRevision");
    ts.stop().await;
}

#[tokio::test]
async fn shutdown_ends_streams_with_unavailable() {
    let mut ts = TestServer::start().await;
    let root = ts.root.clone();
    let mut w = ts.revocations(&root);
    let mut s = watch(&mut w, StartMode::Now, 0, &[]).await;
    let stopping = tokio::spawn(async move {
        ts.stop().await;
        ts
    });
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match s.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("stream ends promptly");
    let status = end.expect("ends with a status");
    assert_eq!(status.code(), Code::Unavailable);
    stopping.await.unwrap();
}

#[tokio::test]
async fn snapshot_then_live_with_marker() {
    let ts = TestServer::start().await;
    let root = ts.root.clone();
    for _ in 0..3 {
        revoke_one(&ts, &root, A).await;
    }
    let mut w = ts.revocations(&root);
    let mut s = watch(&mut w, StartMode::Snapshot, 0, &[]).await;
    for rev in 1..=3 {
        assert_eq!(next_event(&mut s).await.revision, rev);
    }
    match next(&mut s).await {
        Message::SnapshotEnd(p) => assert_eq!(p.revision, 3),
        other => panic!("expected the snapshot marker, got {other:?}"),
    }
    let (r4, _) = revoke_one(&ts, &root, A).await;
    assert_eq!(next_event(&mut s).await.revision, r4);
}

#[tokio::test]
async fn compaction_gives_out_of_range_with_the_oldest_revision() {
    let ts = TestServer::start_with(common::compact_at_once).await;
    let root = ts.root.clone();
    let err = common::compacted_log(&ts, &root, A).await;
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(code_of(&err), "RevisionCompacted");
    assert_eq!(
        err.metadata()
            .get("oldest-revision")
            .unwrap()
            .to_str()
            .unwrap(),
        "4"
    );
    // From the oldest retained revision on, everything is there; snapshot resyncs.
    let mut w = ts.revocations(&root);
    let mut s = watch(&mut w, StartMode::Revision, 4, &[]).await;
    assert_eq!(next_event(&mut s).await.revision, 4);
    let mut s = watch(&mut w, StartMode::Snapshot, 0, &[]).await;
    assert_eq!(next_event(&mut s).await.revision, 4);
    assert!(matches!(next(&mut s).await, Message::SnapshotEnd(_)));
}

#[tokio::test]
async fn filtering_and_permissions() {
    let ts = TestServer::start().await;
    let root = ts.root.clone();
    let only_a = ts.create_key(&[A]).await;
    let mut wa = ts.revocations(&only_a);
    let err = wa
        .watch_revocations(WatchRevocationsRequest {
            start_mode: StartMode::Now as i32,
            start_revision: 0,
            instance_ids: vec![B.into()],
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InstancePermissionCheckFailed");
    let mut sa = watch(&mut wa, StartMode::Now, 0, &[]).await;
    let mut wr = ts.revocations(&root);
    let mut sb = watch(&mut wr, StartMode::Now, 0, &[B]).await;
    let mut all = watch(&mut wr, StartMode::Now, 0, &[]).await;
    let (r1, _) = revoke_one(&ts, &root, B).await;
    let (r2, _) = revoke_one(&ts, &root, A).await;
    let (r3, _) = revoke_one(&ts, &root, B).await;
    assert_eq!(next_event(&mut sa).await.revision, r2);
    assert_eq!(next_event(&mut sb).await.revision, r1);
    assert_eq!(next_event(&mut sb).await.revision, r3);
    for r in [r1, r2, r3] {
        assert_eq!(next_event(&mut all).await.revision, r);
    }
    // The key sees its own instance's revocations only, even in a snapshot.
    let mut snap = watch(&mut wa, StartMode::Snapshot, 0, &[]).await;
    assert_eq!(next_event(&mut snap).await.revision, r2);
    assert!(matches!(next(&mut snap).await, Message::SnapshotEnd(_)));
}

#[tokio::test]
async fn idle_streams_get_progress_with_the_current_revision() {
    let ts =
        TestServer::start_with(|c| c.watch_progress_interval = Duration::from_millis(100)).await;
    let root = ts.root.clone();
    revoke_one(&ts, &root, A).await;
    let mut w = ts.revocations(&root);
    let mut s = watch(&mut w, StartMode::Now, 0, &[B]).await;
    let m = tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match m.message.unwrap() {
        Message::Progress(p) => assert_eq!(p.revision, 1),
        other => panic!("expected progress, got {other:?}"),
    }
    // An event filtered out still advances the progress revision.
    revoke_one(&ts, &root, A).await;
    let m = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Message::Progress(p)) = s.message().await.unwrap().unwrap().message {
                if p.revision == 2 {
                    return p;
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(m.revision, 2);
}

#[tokio::test]
async fn slow_watcher_catches_up_while_others_stay_live() {
    let ts = TestServer::start_with(|c| c.watch_buffer = 16).await;
    let root = ts.root.clone();
    let mut w = ts.revocations(&root);
    let mut slow = watch(&mut w, StartMode::Now, 0, &[]).await;
    let mut fast = watch(&mut w, StartMode::Now, 0, &[]).await;
    let n: u64 = 1200;
    // Revoke concurrently while the fast watcher reads; the slow one reads nothing yet.
    let writers = {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let mut t = ts.tokens(&root);
            set.spawn(async move {
                for _ in 0..(n / 8) {
                    common::revoke_with(&mut t, A).await;
                }
            });
        }
        set
    };
    for rev in 1..=n {
        assert_eq!(
            next_event(&mut fast).await.revision,
            rev,
            "the fast watcher stays live and in order"
        );
    }
    writers.join_all().await;
    for rev in 1..=n {
        assert_eq!(
            next_event(&mut slow).await.revision,
            rev,
            "the slow watcher gets every revision once"
        );
    }
}

#[tokio::test]
async fn hundreds_of_watchers_receive_every_event_in_order() {
    // One key holds them all here; the per-key cap (tests/watch_api.rs) is lifted.
    let ts = TestServer::start_with(|c| c.max_watches_per_key = 0).await;
    let root = ts.root.clone();
    let watchers = 300;
    let events: u64 = 20;
    let mut streams = vec![];
    for i in 0..watchers {
        // Spread watchers over a few connections, as brokers would.
        let client = if i % 3 == 0 {
            common::connect(ts.server().grpc_addr())
                .await
                .with_access_key(Some(&root))
                .unwrap()
        } else {
            ts.client(&root)
        };
        let mut c = client.revocations();
        streams.push(watch(&mut c, StartMode::Now, 0, &[]).await);
    }
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut got = vec![];
                for _ in 0..events {
                    got.push(next_event(&mut s).await.revision);
                }
                got
            })
        })
        .collect();
    for _ in 0..events {
        revoke_one(&ts, &root, A).await;
    }
    let expected: Vec<u64> = (1..=events).collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), expected);
    }
}

#[tokio::test]
async fn device_and_access_key_events_carry_what_to_drop() {
    let ts = TestServer::start().await;
    let root = ts.root.clone();
    let scoped = ts.create_key(&[A]).await;
    let everywhere = ts.create_key(&["*"]).await;
    let mut w = ts.revocations(&root);
    let mut all = watch(&mut w, StartMode::Now, 0, &[]).await;
    let mut ws = ts.revocations(&scoped);
    let mut mine = watch(&mut ws, StartMode::Now, 0, &[]).await;

    let mut d = ts.devices(&root);
    let reg = |c: &str| RegisterDeviceCredentialRequest {
        instance_id: A.into(),
        client_id: c.into(),
    };
    let first = d
        .register_device_credential(reg("GID_evt@@@d1"))
        .await
        .unwrap()
        .into_inner()
        .device_credential
        .unwrap();
    let refreshed = d
        .refresh_device_credential(mqtt_tokend::proto::RefreshDeviceCredentialRequest {
            instance_id: A.into(),
            client_id: "GID_evt@@@d1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .device_credential
        .unwrap();
    d.un_register_device_credential(UnRegisterDeviceCredentialRequest {
        instance_id: A.into(),
        client_id: "GID_evt@@@d1".into(),
    })
    .await
    .unwrap();
    ts.access_keys(&root)
        .delete_access_key(mqtt_tokend::proto::DeleteAccessKeyRequest {
            access_key_id: everywhere.id.clone(),
        })
        .await
        .unwrap();

    let e = next_event(&mut all).await;
    assert_eq!(
        (e.revision, e.kind),
        (1, RevocationKind::DeviceCredentialRefreshed as i32)
    );
    assert_eq!(
        (
            e.client_id.as_str(),
            e.key_id.as_str(),
            e.instance_id.as_str()
        ),
        ("GID_evt@@@d1", first.device_access_key_id.as_str(), A)
    );
    assert_eq!(e.expire_time, 0);
    let e = next_event(&mut all).await;
    assert_eq!(
        (e.revision, e.kind),
        (2, RevocationKind::DeviceCredentialUnregistered as i32)
    );
    assert_eq!(e.key_id, refreshed.device_access_key_id);
    let e = next_event(&mut all).await;
    assert_eq!(
        (e.revision, e.kind),
        (3, RevocationKind::AccessKeyDeleted as i32)
    );
    assert_eq!(
        (e.key_id.as_str(), e.instance_id.as_str()),
        (everywhere.id.as_str(), "")
    );

    // The scoped key sees its instance's events but not the deletion of a key beyond its scope.
    assert_eq!(next_event(&mut mine).await.revision, 1);
    assert_eq!(next_event(&mut mine).await.revision, 2);
    // Deleting the scoped key ends its own stream.
    ts.access_keys(&root)
        .delete_access_key(mqtt_tokend::proto::DeleteAccessKeyRequest {
            access_key_id: scoped.id.clone(),
        })
        .await
        .unwrap();
    let status = tokio::time::timeout(WAIT, async {
        loop {
            match mine.message().await {
                Ok(Some(m)) => assert!(
                    !matches!(m.message, Some(Message::Event(_))),
                    "unexpected event {m:?}"
                ),
                Ok(None) => panic!("stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Code::Unauthenticated);
}
