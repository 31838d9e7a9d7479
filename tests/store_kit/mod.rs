//! What the store tests share: records to write, a batch written durably, a token read back
//! through both of the store's answers, and etcd replicas (directly or through the watch
//! proxy of `etcd_kit`).

#![allow(dead_code)]

use crate::etcd_kit::{self, EtcdCluster};
use mqtt_tokend::{
    core::{
        device::RegisteredDevice,
        revocation::{RevocationEvent, RevocationKind},
        token::{handle, Actions, IssuedToken},
        token_liveness::TokenLiveness,
    },
    store::{BrokerSessionRecord, EtcdOptions, EtcdStore, Op, Store, TokenId},
};

pub fn token(instance: &str, creator: &str, expire_ms: i64) -> IssuedToken {
    IssuedToken {
        instance_id: instance.into(),
        actions: Actions {
            read: true,
            write: false,
        },
        resources: vec!["a/b".into()],
        expire_ms,
        creator: creator.into(),
        create_ms: 1,
        revoked_ms: None,
        minted_revision: 0,
        keyring_id: 1,
    }
}

/// [`token`], revoked at `revoked_ms`.
pub fn revoked(instance: &str, creator: &str, expire_ms: i64, revoked_ms: i64) -> IssuedToken {
    IssuedToken {
        revoked_ms: Some(revoked_ms),
        ..token(instance, creator, expire_ms)
    }
}

pub fn device(client_id: &str, key: &str) -> RegisteredDevice {
    RegisteredDevice {
        instance_id: "i1".into(),
        client_id: client_id.into(),
        device_key_id: key.into(),
        create_ms: 1,
        update_ms: 1,
        keyring_id: 1,
    }
}

pub fn event(revision: u64, expire_ms: Option<i64>) -> RevocationEvent {
    RevocationEvent {
        revision,
        kind: RevocationKind::TokenRevoked,
        instance_id: Some("i1".into()),
        token_fingerprint: format!("fp{revision}"),
        client_id: String::new(),
        key_id: String::new(),
        reason: "test".into(),
        expire_ms,
        revoke_ms: 5,
        token_handle: String::new(),
    }
}

/// The event the core writes with a token's revocation, naming the token by its handle.
pub fn token_event(revision: u64, id: &TokenId, expire_ms: i64, revoke_ms: i64) -> RevocationEvent {
    RevocationEvent {
        token_handle: handle(id),
        revoke_ms,
        ..event(revision, Some(expire_ms))
    }
}

pub fn session(client_id: &str, expire_ms: i64) -> BrokerSessionRecord {
    BrokerSessionRecord {
        namespace: "broker".into(),
        client_id: client_id.into(),
        username: "Token|k|i1".into(),
        instance_id: "i1".into(),
        credentials: vec!["t/fp1".into()],
        session_handle: "h".into(),
        credential_expire_ms: 0,
        expire_ms,
        create_ms: 1,
    }
}

/// `store.token(id)`, after checking that `token_liveness` answers the same of it (a store
/// may keep those facts apart from the records, as sled does).
pub fn stored(store: &dyn Store, id: &TokenId) -> Option<IssuedToken> {
    let token = store.token(id).expect("token");
    assert_eq!(
        store.token_liveness(id).expect("liveness"),
        token.as_ref().map(TokenLiveness::from),
        "the liveness of {id:?}"
    );
    token
}

/// Applies `ops` as one batch and waits until it is durable.
pub async fn write(store: &dyn Store, ops: Vec<Op>) {
    let ticket = store.apply(ops).expect("apply");
    let report = store.flush().await.expect("flush");
    assert_eq!(report.failure, None);
    assert!(report.durable_through >= ticket, "the batch is durable");
}

pub fn options(etcd: &EtcdCluster, prefix: &str) -> EtcdOptions {
    EtcdOptions {
        endpoints: etcd.endpoints(),
        prefix: prefix.to_owned(),
        user: None,
        ca_file: None,
        client_cert: None,
        max_txn_ops: EtcdOptions::DEFAULT_MAX_TXN_OPS,
    }
}

/// Token `id`'s revocation as the core writes it: the revoked record and revocation 1, in one
/// batch.
pub fn revocation_of(id: TokenId) -> Vec<Op> {
    vec![
        Op::RevokeToken(id, revoked("i1", "k1", i64::MAX, 3)),
        Op::AppendRevocation(token_event(1, &id, i64::MAX, 3)),
    ]
}

/// A replica on `prefix` whose etcd traffic goes through a proxy that can hold its watch back
/// or send a watch response twice.
pub async fn through_proxy(
    etcd: &EtcdCluster,
    prefix: &str,
) -> (etcd_kit::watch_proxy::WatchProxy, EtcdStore) {
    let proxy = etcd_kit::watch_proxy::WatchProxy::start(&etcd.member_endpoint(0)).await;
    let store = EtcdStore::connect(&EtcdOptions {
        endpoints: vec![proxy.endpoint.clone()],
        ..options(etcd, prefix)
    })
    .await
    .expect("etcd through the proxy");
    (proxy, store)
}

/// Two stores on one fresh prefix of `etcd`: two replicas.
pub async fn two_replicas(etcd: &EtcdCluster) -> (EtcdStore, EtcdStore) {
    let prefix = etcd_kit::unique_prefix();
    let a = EtcdStore::connect(&options(etcd, &prefix))
        .await
        .expect("etcd");
    let b = EtcdStore::connect(&options(etcd, &prefix))
        .await
        .expect("etcd");
    (a, b)
}
