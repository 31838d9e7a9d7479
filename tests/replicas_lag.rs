//! A replica whose view of etcd lags still answers ApplyToken and RevokeToken as if it were up
//! to date. It reads nothing from etcd before the write (no read barrier): once the write is
//! committed it waits until its watch has brought everything acknowledged before, checks the
//! caller again and mints again if a token was born covered; a revocation that found nothing
//! to write looks again after a barrier. A proxy holds the lagging replica's watch back while
//! another replica deletes a key, revokes a key's tokens, creates a key or mints a token.
//! Real etcd, real servers, real gRPC clients.

mod common;
#[path = "etcd_kit/mod.rs"]
mod etcd_kit;

use std::time::Duration;

use common::{code_of, now_ms, Key, TestServer};
use etcd_kit::{watch_proxy::WatchProxy, EtcdCluster};
use mqtt_tokend::{
    config::StoreKind,
    proto::{revoke_tokens_request::Scope, RevokeTokensRequest},
};
use mqtt_tokend_client::proto::{
    ApplyTokenRequest, ApplyTokenResponse, DeleteAccessKeyRequest, QueryTokenRequest,
    RevokeTokenRequest,
};
use tonic::{Response, Status};

/// How long a call must stay unanswered while the watch is held, to show it waits for it.
const HELD: Duration = Duration::from_millis(300);

/// Replica A reaches etcd through the proxy, replica B directly; one prefix, one keyring.
async fn lagging_pair(
    etcd: &EtcdCluster,
) -> (tempfile::TempDir, WatchProxy, TestServer, TestServer) {
    let shared = tempfile::tempdir().expect("tempdir");
    let keyring = shared.path().join("keyring.json");
    let prefix = etcd_kit::unique_prefix();
    let proxy = WatchProxy::start(&etcd.member_endpoint(0)).await;
    let mut servers = Vec::new();
    for endpoint in [proxy.endpoint.clone(), etcd.member_endpoint(0)] {
        let (keyring, prefix) = (keyring.clone(), prefix.clone());
        servers.push(
            TestServer::start_with(move |c| {
                c.keyring = keyring;
                c.store.kind = StoreKind::Etcd;
                c.store.etcd_endpoints = vec![endpoint];
                c.store.etcd_prefix = prefix;
            })
            .await,
        );
    }
    let b = servers.pop().expect("B");
    let a = servers.pop().expect("A");
    (shared, proxy, a, b)
}

fn apply_request() -> ApplyTokenRequest {
    ApplyTokenRequest {
        instance_id: "i1".into(),
        actions: vec![mqtt_tokend_client::proto::TokenAction::Read as i32],
        resources: vec!["a/b".into()],
        expire_time: now_ms() + 3_600_000,
    }
}

/// A token minted with `key` on `ts`.
async fn apply(ts: &TestServer, key: &Key) -> String {
    ts.tokens(key)
        .apply_token(apply_request())
        .await
        .expect("apply")
        .into_inner()
        .token
}

/// Deletes `key` through `ts` (acknowledged when this returns).
async fn delete_key(ts: &TestServer, key: &Key) {
    ts.access_keys(&ts.root)
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: key.id.clone(),
        })
        .await
        .expect("delete the key");
}

async fn valid(ts: &TestServer, token: &str) -> bool {
    ts.tokens(&ts.root)
        .query_token(QueryTokenRequest {
            instance_id: "i1".into(),
            token: token.into(),
        })
        .await
        .expect("query")
        .into_inner()
        .token_status
}

/// Runs `call` while the proxy holds the watch, checks it is still waiting after [`HELD`],
/// then releases the watch and returns the answer.
async fn while_held<T: Send + 'static>(
    proxy: &WatchProxy,
    call: impl std::future::Future<Output = Result<Response<T>, Status>> + Send + 'static,
) -> Result<Response<T>, Status> {
    let call = tokio::spawn(call);
    tokio::time::sleep(HELD).await;
    assert!(
        !call.is_finished(),
        "answered before the replica saw what came before the call"
    );
    proxy.hold(false);
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the call answers once the watch flows")
        .expect("the call's task")
}

/// ApplyToken with `key` on `ts`, [`while_held`].
async fn apply_while_held(
    proxy: &WatchProxy,
    ts: &TestServer,
    key: &Key,
) -> Result<Response<ApplyTokenResponse>, Status> {
    let mut tokens = ts.tokens(key);
    while_held(
        proxy,
        async move { tokens.apply_token(apply_request()).await },
    )
    .await
}

/// RevokeToken of `token` by the root key on `ts`, [`while_held`]; the event's revision.
async fn revoke_while_held(proxy: &WatchProxy, ts: &TestServer, token: &str) -> u64 {
    let mut tokens = ts.tokens(&ts.root);
    let request = RevokeTokenRequest {
        instance_id: "i1".into(),
        token: token.into(),
    };
    while_held(proxy, async move { tokens.revoke_token(request).await })
        .await
        .expect("revoke")
        .into_inner()
        .revision
}

/// Gives A its first watch event (so the proxy knows the watch stream), then holds it.
async fn hold_after_first_event(proxy: &WatchProxy, a: &TestServer, key: &Key) {
    let token = apply(a, key).await;
    assert!(valid(a, &token).await);
    proxy.hold(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_replica_refuses_apply_token_of_a_key_deleted_elsewhere() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (_keyring, proxy, a, b) = lagging_pair(&etcd).await;
    let key = b.create_key(&["i1"]).await;
    hold_after_first_event(&proxy, &a, &key).await;
    delete_key(&b, &key).await;

    let refused = apply_while_held(&proxy, &a, &key)
        .await
        .expect_err("a key deleted before the call is refused");
    assert_eq!(code_of(&refused), "InvalidAccessKeyId.NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_replica_mints_past_a_scope_revocation_made_elsewhere() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (_keyring, proxy, a, b) = lagging_pair(&etcd).await;
    let key = b.create_key(&["i1"]).await;
    hold_after_first_event(&proxy, &a, &key).await;
    let revision = b
        .tokens(&b.root)
        .revoke_tokens(RevokeTokensRequest {
            instance_id: "i1".into(),
            scope: Some(Scope::AccessKeyId(key.id.clone())),
        })
        .await
        .expect("revoke the key's tokens on B")
        .into_inner()
        .revision;
    assert!(revision > 0);

    // Minted after the revocation was acknowledged, the token is not covered by it.
    let token = apply_while_held(&proxy, &a, &key)
        .await
        .expect("apply on A")
        .into_inner()
        .token;
    assert!(
        valid(&a, &token).await,
        "valid on the replica that minted it"
    );
    assert!(valid(&b, &token).await, "valid on the other replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_replica_accepts_a_key_created_elsewhere() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (_keyring, proxy, a, b) = lagging_pair(&etcd).await;
    hold_after_first_event(&proxy, &a, &a.root.clone()).await;
    let key = b.create_key(&["i1"]).await;

    let token = apply_while_held(&proxy, &a, &key)
        .await
        .expect("a key acknowledged before the call authenticates")
        .into_inner()
        .token;
    assert!(valid(&a, &token).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_replica_revokes_a_token_minted_elsewhere() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (_keyring, proxy, a, b) = lagging_pair(&etcd).await;
    hold_after_first_event(&proxy, &a, &a.root.clone()).await;
    let token = apply(&b, &b.root).await;

    let revision = revoke_while_held(&proxy, &a, &token).await;
    assert!(revision > 0, "a revocation was written");
    assert!(
        !valid(&b, &token).await,
        "revoked on the replica that minted it"
    );
    assert!(!valid(&a, &token).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_replica_does_not_revoke_again_what_was_revoked_elsewhere() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (_keyring, proxy, a, b) = lagging_pair(&etcd).await;
    let token = apply(&a, &a.root).await;
    assert!(valid(&a, &token).await);
    proxy.hold(true);
    let first = b
        .tokens(&b.root)
        .revoke_token(RevokeTokenRequest {
            instance_id: "i1".into(),
            token: token.clone(),
        })
        .await
        .expect("revoke on B")
        .into_inner()
        .revision;
    assert!(first > 0);

    assert_eq!(
        revoke_while_held(&proxy, &a, &token).await,
        0,
        "already revoked: no second event"
    );
    assert_eq!(
        a.server().core().revision_bounds().1,
        first,
        "one event in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_replica_refuses_revoke_token_of_a_key_deleted_elsewhere() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (_keyring, proxy, a, b) = lagging_pair(&etcd).await;
    let key = b.create_key(&["i1"]).await;
    // Another key's token, which the deleted key must not get to revoke.
    let token = apply(&b, &b.root).await;
    hold_after_first_event(&proxy, &a, &key).await;
    delete_key(&b, &key).await;

    let mut tokens = a.tokens(&key);
    let request = RevokeTokenRequest {
        instance_id: "i1".into(),
        token: token.clone(),
    };
    let refused = while_held(&proxy, async move { tokens.revoke_token(request).await })
        .await
        .expect_err("a key deleted before the call is refused");
    assert_eq!(code_of(&refused), "InvalidAccessKeyId.NotFound");
    assert!(valid(&b, &token).await, "nothing was revoked");
    assert!(valid(&a, &token).await);
}
