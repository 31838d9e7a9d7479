//! A write the store refuses changes nothing the service serves: the core runs on a real sled
//! store wrapped so that `apply` can be made to fail (sled gives a test no failure of its own
//! to provoke), and what callers see is checked through the core's public API.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use mqtt_tokend::{
    core::{now_ms, Core, CoreConfig, Keyring},
    store::{
        BrokerSessionRecord, BrokerSessionStore, FlushReport, Op, RevisionBounds, SledStore, Store,
        StoreCounts, StoreError, StoreFuture, StoreResult, Ticket, TokenId,
    },
};

/// The sled store, with `apply` failing while `fail` is set.
struct FailingApply {
    inner: SledStore,
    fail: AtomicBool,
    /// Makes every flush fail (an fsync error).
    fail_flush: AtomicBool,
}

type Token = mqtt_tokend::core::token::IssuedToken;
type AccessKey = mqtt_tokend::core::access_key::AccessKey;
type Device = mqtt_tokend::core::device::RegisteredDevice;
type Event = mqtt_tokend::core::RevocationEvent;

impl Store for FailingApply {
    fn token(&self, id: &TokenId) -> StoreResult<Option<Token>> {
        self.inner.token(id)
    }
    fn expired_tokens(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<(TokenId, i64)>> {
        self.inner.expired_tokens(now_ms, limit)
    }
    fn newest_token_expiry(&self) -> StoreResult<Option<i64>> {
        self.inner.newest_token_expiry()
    }
    fn instance_tokens(
        &self,
        instance_id: &str,
        creator: Option<&str>,
        after: Option<(&str, &TokenId)>,
        limit: usize,
    ) -> StoreResult<Vec<(TokenId, Token)>> {
        self.inner
            .instance_tokens(instance_id, creator, after, limit)
    }
    fn tombstones(&self) -> StoreResult<Vec<mqtt_tokend::core::Tombstone>> {
        self.inner.tombstones()
    }
    fn access_keys(&self) -> StoreResult<Vec<AccessKey>> {
        self.inner.access_keys()
    }
    fn device(&self, instance_id: &str, client_id: &str) -> StoreResult<Option<Device>> {
        self.inner.device(instance_id, client_id)
    }
    fn device_by_key(&self, device_key_id: &str) -> StoreResult<Option<Device>> {
        self.inner.device_by_key(device_key_id)
    }
    fn device_count(&self, instance_id: &str) -> StoreResult<u64> {
        self.inner.device_count(instance_id)
    }
    fn group_count(&self, instance_id: &str, group_id: &str) -> StoreResult<u64> {
        self.inner.group_count(instance_id, group_id)
    }
    fn device_client_ids(
        &self,
        instance_id: &str,
        group_id: &str,
        after: Option<&str>,
        skip: usize,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.inner
            .device_client_ids(instance_id, group_id, after, skip, limit)
    }
    fn revocations(&self, from: u64, limit: usize) -> StoreResult<Vec<Event>> {
        self.inner.revocations(from, limit)
    }
    fn revision_bounds(&self) -> StoreResult<RevisionBounds> {
        self.inner.revision_bounds()
    }
    fn apply(&self, ops: Vec<Op>) -> StoreResult<Ticket> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("injected write failure".into()));
        }
        self.inner.apply(ops)
    }
    fn meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.meta(name)
    }
    fn flush(&self) -> StoreFuture<'_, FlushReport> {
        if self.fail_flush.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(StoreError::Backend(
                "injected flush failure".into(),
            ))));
        }
        self.inner.flush()
    }
    fn size_on_disk(&self) -> StoreResult<u64> {
        self.inner.size_on_disk()
    }
    fn counts(&self) -> StoreResult<StoreCounts> {
        self.inner.counts()
    }
}

impl BrokerSessionStore for FailingApply {
    fn broker_session(
        &self,
        namespace: &str,
        client_id: &str,
    ) -> StoreResult<Option<BrokerSessionRecord>> {
        self.inner.broker_session(namespace, client_id)
    }
    fn swap_broker_session<'a>(
        &'a self,
        namespace: &'a str,
        client_id: &'a str,
        expected: Option<&'a BrokerSessionRecord>,
        new: Option<&'a BrokerSessionRecord>,
    ) -> StoreFuture<'a, bool> {
        self.inner
            .swap_broker_session(namespace, client_id, expected, new)
    }
    fn broker_sessions_by_credential(
        &self,
        namespace: &str,
        credential: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<BrokerSessionRecord>> {
        self.inner
            .broker_sessions_by_credential(namespace, credential, after, limit)
    }
    fn expired_broker_sessions(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<BrokerSessionRecord>> {
        self.inner.expired_broker_sessions(now_ms, limit)
    }
}

/// A core on a fresh sled directory behind [`FailingApply`], and its root caller. The
/// directory lives as long as the returned guard.
async fn open_core() -> (
    tempfile::TempDir,
    Arc<FailingApply>,
    Arc<Core>,
    mqtt_tokend::core::Caller,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FailingApply {
        inner: SledStore::open(&dir.path().join("data")).expect("store opens"),
        fail: AtomicBool::new(false),
        fail_flush: AtomicBool::new(false),
    });
    let keyring = Keyring::create(&dir.path().join("keyring.json"), now_ms()).expect("keyring");
    let (core, root) = Core::open(store.clone(), keyring, CoreConfig::default())
        .await
        .expect("core opens");
    let root = root.expect("a new store gets a root key");
    let root = core
        .authenticate(&root.access_key_id, &root.access_key_secret)
        .expect("root authenticates");
    (dir, store, core, root)
}

#[tokio::test]
async fn a_delete_the_store_refuses_leaves_the_key_working() {
    let (_dir, store, core, root) = open_core().await;
    let key = core
        .create_access_key(&root, vec!["post-cn-a".into()], "app".into())
        .await
        .expect("key created");

    store.fail.store(true, Ordering::SeqCst);
    let err = core
        .delete_access_key(&root, &key.access_key_id)
        .await
        .expect_err("the write fails");
    assert_eq!(err.code(), "InternalError");
    // Still on disk, so still served: it authenticates, is listed, and no revocation went out.
    assert!(core
        .authenticate(&key.access_key_id, &key.access_key_secret)
        .is_ok());
    let listed = core.list_access_keys(&root).expect("list");
    assert!(listed.iter().any(|k| k.access_key_id == key.access_key_id));
    assert_eq!(core.revision_bounds().1, 0);

    // Once the store takes the write, the delete goes through as usual.
    store.fail.store(false, Ordering::SeqCst);
    core.delete_access_key(&root, &key.access_key_id)
        .await
        .expect("deleted");
    let gone = core
        .authenticate(&key.access_key_id, &key.access_key_secret)
        .expect_err("deleted keys do not authenticate");
    assert_eq!(gone.code(), "InvalidAccessKeyId.NotFound");
    assert_eq!(core.revision_bounds().1, 1);
}

#[tokio::test]
async fn a_scope_revocation_the_store_refuses_leaves_the_tokens_live() {
    use mqtt_tokend::core::{Actions, TokenRequest, TokenScope};
    let (_dir, store, core, root) = open_core().await;
    let token = core
        .apply_token(
            &root,
            TokenRequest {
                instance_id: "post-cn-a".into(),
                actions: Actions {
                    read: true,
                    write: false,
                },
                resources: vec!["a".into()],
                expire_time: now_ms() + 3_600_000,
            },
        )
        .await
        .expect("minted")
        .token;

    store.fail.store(true, Ordering::SeqCst);
    for scope in [
        TokenScope::Instance,
        TokenScope::AccessKey(root.access_key_id().to_owned()),
    ] {
        let err = core
            .revoke_tokens(&root, "post-cn-a", scope)
            .await
            .expect_err("the write fails");
        assert_eq!(err.code(), "InternalError");
    }
    // Nothing was written, so the in-memory tombstones did not change either.
    assert!(core.query_token(&root, "post-cn-a", &token).expect("query"));
    assert_eq!(core.tombstone_count(), 0);
    assert_eq!(core.revision_bounds().1, 0);

    store.fail.store(false, Ordering::SeqCst);
    let revision = core
        .revoke_tokens(&root, "post-cn-a", TokenScope::Instance)
        .await
        .expect("revoked");
    assert_eq!(revision, 1);
    assert!(!core.query_token(&root, "post-cn-a", &token).expect("query"));
    assert_eq!(core.tombstone_count(), 1);
}

#[tokio::test]
async fn a_write_whose_flush_fails_is_not_acknowledged_and_later_writes_are() {
    use mqtt_tokend::core::{Actions, TokenRequest};
    let (_dir, store, core, root) = open_core().await;
    let request = || TokenRequest {
        instance_id: "post-cn-a".into(),
        actions: Actions {
            read: true,
            write: false,
        },
        resources: vec!["a".into()],
        expire_time: now_ms() + 3_600_000,
    };
    store.fail_flush.store(true, Ordering::SeqCst);
    let err = core
        .apply_token(&root, request())
        .await
        .expect_err("not durable, so not acknowledged");
    assert_eq!(err.code(), "InternalError");
    store.fail_flush.store(false, Ordering::SeqCst);
    core.apply_token(&root, request())
        .await
        .expect("the next write is acknowledged once flushes work again");
}
