//! Shutdown through a real server: a write that asks for durability after the flusher stopped
//! is refused with ServiceUnavailable, and a watcher whose client stopped reading neither holds
//! shutdown past its grace period nor keeps the data directory open.

mod common;

use std::time::{Duration, Instant};

use common::{now_ms, TestServer};
use mqtt_tokend::{
    core::{Actions, Caller, Core, Error, TokenRequest, WatchStart},
    proto::{
        revocation_service_client::RevocationServiceClient, ApplyTokenRequest, RevokeTokenRequest,
        TokenAction,
    },
};
use tokio_stream::StreamExt;
use tonic::{transport::Channel, Code};

const WAIT: Duration = Duration::from_secs(20);

fn token_request() -> TokenRequest {
    TokenRequest {
        instance_id: "post-cn-a".into(),
        actions: Actions {
            read: true,
            write: false,
        },
        resources: vec!["a/b".into()],
        expire_time: now_ms() + 3_600_000,
    }
}

/// Mints and revokes `n` tokens in process: `n` revocation events.
async fn revocations(core: &Core, caller: &Caller, n: usize) {
    for _ in 0..n {
        let token = core
            .apply_token(caller, token_request())
            .await
            .expect("apply")
            .token;
        core.revoke_token(caller, "post-cn-a", &token)
            .await
            .expect("revoke");
    }
}

#[tokio::test]
async fn writes_after_shutdown_are_service_unavailable() {
    let mut ts = TestServer::start().await;
    let core = ts.server().core().clone();
    let root = core
        .authenticate(&ts.root.id, &ts.root.secret)
        .expect("root authenticates");
    let server = ts.server.take().expect("running");
    let stopping = tokio::spawn(server.shutdown());

    // Writes are acknowledged while in-flight calls drain; once shutdown has stopped the
    // flusher, asking for durability is refused. Each flush waits for the flusher, so this
    // loop follows shutdown's progress rather than a clock.
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            match core.flush().await {
                Ok(()) => tokio::task::yield_now().await,
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("shutdown stops acknowledging writes");
    assert_eq!(refused.code(), "ServiceUnavailable");

    let err = core
        .apply_token(&root, token_request())
        .await
        .expect_err("not acknowledged after shutdown");
    assert_eq!(err.code(), "ServiceUnavailable");
    let status = mqtt_tokend::grpc::status::to_status(&err, "request-id");
    assert_eq!(status.code(), Code::Unavailable, "not RESOURCE_EXHAUSTED");

    drop(core);
    stopping
        .await
        .expect("shutdown task")
        .expect("clean shutdown");
}

#[tokio::test]
async fn a_watcher_that_stopped_reading_does_not_hold_shutdown() {
    let grace = Duration::from_secs(1);
    let mut ts = TestServer::start_with(|c| c.shutdown_grace = grace).await;
    let root = ts.root.clone();
    // A broker with tiny HTTP/2 windows: once it stops reading, a few hundred events fill
    // every buffer between it and the watcher, whose task then waits for room.
    let channel = Channel::from_shared(format!("http://{}", ts.server().grpc_addr()))
        .expect("uri")
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .expect("connect");
    let mut stalled = RevocationServiceClient::with_interceptor(
        channel,
        mqtt_tokend_client::BearerAuth::new(Some(&root)).expect("ascii key"),
    )
    .watch_revocations(common::from_now())
    .await
    .expect("watch opens")
    .into_inner();

    let n = 1600;
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut tokens = ts.tokens(&root);
        writers.spawn(async move {
            for _ in 0..n / 8 {
                let token = tokens
                    .apply_token(ApplyTokenRequest {
                        instance_id: "post-cn-a".into(),
                        actions: vec![TokenAction::Read as i32],
                        resources: vec!["a".into()],
                        expire_time: now_ms() + 3_600_000,
                    })
                    .await
                    .expect("apply")
                    .into_inner()
                    .token;
                tokens
                    .revoke_token(RevokeTokenRequest {
                        instance_id: "post-cn-a".into(),
                        token,
                    })
                    .await
                    .expect("revoke");
            }
        });
    }
    writers.join_all().await;

    let started = Instant::now();
    ts.stop().await;
    let took = started.elapsed();
    assert!(
        took < grace + Duration::from_secs(3),
        "shutdown took {took:?} with a {grace:?} grace period"
    );
    // Nothing holds the data directory any more: a new server opens it.
    ts.restart().await;

    // The stalled stream ends too; the client may still read what was in flight first.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match stalled.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the stalled stream ends");
    if let Some(status) = ended {
        // UNAVAILABLE if the end got through, otherwise the cut connection's error.
        assert_ne!(status.code(), Code::Ok);
    }
    ts.stop().await;
}

#[tokio::test]
async fn a_watch_with_a_full_stream_ends_at_shutdown() {
    let mut ts = TestServer::start().await;
    let core = ts.server().core().clone();
    let root = core
        .authenticate(&ts.root.id, &ts.root.secret)
        .expect("root authenticates");
    let mut unread = core
        .watch(&root, WatchStart::Now, vec![])
        .expect("watch opens");
    // More events than the stream buffers: the watcher's task waits for room.
    revocations(&core, &root, 300).await;
    drop(core);

    // The task sees shutdown although nobody reads: nothing holds the core, the store
    // closes, and a new server opens the data directory.
    ts.restart().await;
    // The stream says why it ended before anything it still buffered.
    assert!(matches!(
        unread.next().await,
        Some(Err(Error::ServiceUnavailable))
    ));
    assert!(unread.next().await.is_none());
    ts.stop().await;
}
