//! One conformance suite for both store backends: the same operations through the `Store`
//! trait, the same answers, on a real sled directory and on a real etcd. On etcd it also checks
//! what only a shared store has: a second replica's mirror sees every write after a read
//! barrier, and a read-modify-write that lost the race is reported and rolled back.

#[path = "etcd_kit/mod.rs"]
mod etcd_kit;

use etcd_kit::EtcdCluster;
use mqtt_tokend::{
    core::{
        access_key::AccessKey,
        device::RegisteredDevice,
        revocation::{RevocationEvent, RevocationKind},
        scope::Tombstone,
        token::{handle, Actions, IssuedToken},
        token_liveness::TokenLiveness,
    },
    store::{
        BrokerSessionRecord, Committed, EtcdOptions, EtcdStore, FlushFailure, Op, SledStore, Store,
        TokenId,
    },
};

fn token(instance: &str, creator: &str, expire_ms: i64) -> IssuedToken {
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
fn revoked(instance: &str, creator: &str, expire_ms: i64, revoked_ms: i64) -> IssuedToken {
    IssuedToken {
        revoked_ms: Some(revoked_ms),
        ..token(instance, creator, expire_ms)
    }
}

fn device(client_id: &str, key: &str) -> RegisteredDevice {
    RegisteredDevice {
        instance_id: "i1".into(),
        client_id: client_id.into(),
        device_key_id: key.into(),
        create_ms: 1,
        update_ms: 1,
        keyring_id: 1,
    }
}

fn event(revision: u64, expire_ms: Option<i64>) -> RevocationEvent {
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
fn token_event(revision: u64, id: &TokenId, expire_ms: i64, revoke_ms: i64) -> RevocationEvent {
    RevocationEvent {
        token_handle: handle(id),
        revoke_ms,
        ..event(revision, Some(expire_ms))
    }
}

/// The tokens the suite revokes as the core does (the record and its event in one batch).
const T6: TokenId = [6; 16];
const T7: TokenId = [7; 16];

fn session(client_id: &str, expire_ms: i64) -> BrokerSessionRecord {
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
fn stored(store: &dyn Store, id: &TokenId) -> Option<IssuedToken> {
    let token = store.token(id).expect("token");
    assert_eq!(
        store.token_liveness(id).expect("liveness"),
        token.as_ref().map(TokenLiveness::from),
        "the liveness of {id:?}"
    );
    token
}

/// Applies `ops` as one batch and waits until it is durable.
async fn write(store: &dyn Store, ops: Vec<Op>) {
    let ticket = store.apply(ops).expect("apply");
    let report = store.flush().await.expect("flush");
    assert_eq!(report.failure, None);
    assert!(report.durable_through >= ticket, "the batch is durable");
}

/// The suite: every read answers what the writes before it wrote.
async fn conformance(store: &dyn Store) {
    // Tokens, their listing and expiry indexes, and the counters.
    let (t1, t2, t3): (TokenId, TokenId, TokenId) = ([1; 16], [2; 16], [3; 16]);
    write(
        store,
        vec![
            Op::PutToken(t1, token("i1", "k1", 1_000)),
            Op::PutToken(t2, token("i1", "k2", 9_000)),
            // A freshly minted token: stored without reading for an old record.
            Op::InsertToken(t3, token("i2", "k1", 2_000)),
        ],
    )
    .await;
    assert_eq!(stored(store, &t1), Some(token("i1", "k1", 1_000)));
    assert_eq!(stored(store, &t3), Some(token("i2", "k1", 2_000)));
    assert_eq!(store.counts().unwrap().tokens, 3);
    assert_eq!(
        store.expired_tokens(5_000, 10).unwrap(),
        vec![(t1, 1_000), (t3, 2_000)]
    );
    assert_eq!(store.expired_tokens(5_000, 1).unwrap(), vec![(t1, 1_000)]);
    let listed = store.instance_tokens("i2", None, None, 10).unwrap();
    assert_eq!(
        listed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![t3]
    );
    write(store, vec![Op::DeleteToken(t3, 2_000)]).await;
    assert_eq!(store.counts().unwrap().tokens, 2);
    assert!(store
        .instance_tokens("i2", None, None, 10)
        .unwrap()
        .is_empty());
    assert_eq!(store.newest_token_expiry().unwrap(), Some(9_000));
    let listed = store.instance_tokens("i1", Some("k2"), None, 10).unwrap();
    assert_eq!(
        listed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![t2]
    );
    let revoked2 = revoked("i1", "k2", 9_000, 7);
    write(
        store,
        vec![
            Op::PutToken(t2, revoked2.clone()),
            Op::DeleteToken(t1, 1_000),
        ],
    )
    .await;
    assert_eq!(stored(store, &t1), None);
    assert_eq!(stored(store, &t2), Some(revoked2));
    let counts = store.counts().unwrap();
    assert_eq!((counts.tokens, counts.revoked_tokens), (1, 1));

    // A revocation keeps the token where the indexes had it: listed, swept at its expiry.
    // The second token is minted and revoked in one batch.
    let (t4, t5): (TokenId, TokenId) = ([4; 16], [5; 16]);
    write(store, vec![Op::InsertToken(t4, token("i3", "k1", 3_000))]).await;
    let (revoked4, revoked5) = (revoked("i3", "k1", 3_000, 8), revoked("i3", "k2", 4_000, 9));
    write(
        store,
        vec![
            Op::RevokeToken(t4, revoked4.clone()),
            Op::InsertToken(t5, token("i3", "k2", 4_000)),
            Op::RevokeToken(t5, revoked5.clone()),
        ],
    )
    .await;
    assert_eq!(stored(store, &t4), Some(revoked4));
    assert_eq!(stored(store, &t5), Some(revoked5));
    let counts = store.counts().unwrap();
    assert_eq!((counts.tokens, counts.revoked_tokens), (3, 3));
    let listed = store.instance_tokens("i3", None, None, 10).unwrap();
    assert_eq!(
        listed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![t4, t5]
    );
    assert_eq!(
        store.expired_tokens(5_000, 10).unwrap(),
        vec![(t4, 3_000), (t5, 4_000)]
    );
    write(
        store,
        vec![Op::DeleteToken(t4, 3_000), Op::DeleteToken(t5, 4_000)],
    )
    .await;
    let counts = store.counts().unwrap();
    assert_eq!((counts.tokens, counts.revoked_tokens), (1, 1));

    // Device credentials: lookups by client id and key id, counts, group listing.
    let d1 = device("GID_group1@@@a", "dk1");
    let d2 = device("GID_group1@@@b", "dk2");
    let put = |record: &RegisteredDevice, replaces: Option<&str>| Op::PutDevice {
        record: record.clone(),
        replaces: replaces.map(str::to_owned),
    };
    write(store, vec![put(&d1, None), put(&d2, None)]).await;
    assert_eq!(
        store.device("i1", "GID_group1@@@a").unwrap(),
        Some(d1.clone())
    );
    assert_eq!(store.device_by_key("dk2").unwrap(), Some(d2.clone()));
    assert_eq!(store.device_count("i1").unwrap(), 2);
    assert_eq!(store.group_count("i1", "GID_group1").unwrap(), 2);
    assert_eq!(
        store
            .device_client_ids("i1", "GID_group1", None, 0, 10)
            .unwrap(),
        vec!["GID_group1@@@a".to_owned(), "GID_group1@@@b".to_owned()]
    );
    let refreshed = device("GID_group1@@@a", "dk3");
    write(
        store,
        vec![put(&refreshed, Some("dk1")), Op::DeleteDevice(d2)],
    )
    .await;
    assert_eq!(store.device_by_key("dk1").unwrap(), None);
    assert_eq!(store.device_by_key("dk3").unwrap(), Some(refreshed));
    assert_eq!(store.device_count("i1").unwrap(), 1);
    assert_eq!(store.counts().unwrap().device_credentials, 1);

    // Access keys, tombstones, metadata.
    let key = AccessKey {
        id: "k1".into(),
        instance_ids: vec!["i1".into()],
        description: "d".into(),
        create_ms: 1,
        root: false,
        keyring_id: 1,
    };
    let tombstone = Tombstone {
        instance_id: "i1".into(),
        key_id: Some("k1".into()),
        cutoff: 3,
        revoke_ms: 4,
        until_ms: 5,
    };
    write(
        store,
        vec![
            Op::PutAccessKey(key.clone()),
            Op::PutTombstone(tombstone.clone()),
            Op::PutMeta("check".into(), b"v".to_vec()),
        ],
    )
    .await;
    assert_eq!(store.access_keys().unwrap(), vec![key]);
    assert_eq!(store.tombstones().unwrap(), vec![tombstone]);
    assert_eq!(store.meta("check").unwrap(), Some(b"v".to_vec()));
    write(
        store,
        vec![
            Op::DeleteAccessKey("k1".into()),
            Op::DeleteTombstone {
                instance_id: "i1".into(),
                key_id: Some("k1".into()),
            },
        ],
    )
    .await;
    assert!(store.access_keys().unwrap().is_empty());
    assert!(store.tombstones().unwrap().is_empty());

    // The revocation log: appended in order, compacted from below.
    write(
        store,
        (1..=4)
            .map(|r| Op::AppendRevocation(event(r, Some(10))))
            .collect(),
    )
    .await;
    let bounds = store.revision_bounds().unwrap();
    assert_eq!((bounds.oldest, bounds.last), (1, 4));
    assert_eq!(
        store.revocations(2, 2).unwrap(),
        vec![event(2, Some(10)), event(3, Some(10))]
    );
    write(store, vec![Op::CompactRevocationsBelow(3)]).await;
    assert_eq!(store.revision_bounds().unwrap().oldest, 3);

    // Broker sessions: compare-and-swap on the whole record.
    let s1 = session("c1", 100);
    assert!(store
        .swap_broker_session("broker", "c1", None, Some(&s1))
        .await
        .unwrap());
    assert!(!store
        .swap_broker_session("broker", "c1", None, Some(&s1))
        .await
        .unwrap());
    assert_eq!(
        store.broker_session("broker", "c1").unwrap(),
        Some(s1.clone())
    );
    assert_eq!(
        store
            .broker_sessions_by_credential("broker", "t/fp1", None, 10)
            .unwrap(),
        vec![s1.clone()]
    );
    assert_eq!(
        store.expired_broker_sessions(200, 10).unwrap(),
        vec![s1.clone()]
    );
    assert!(store
        .swap_broker_session("broker", "c1", Some(&s1), None)
        .await
        .unwrap());
    assert_eq!(store.broker_session("broker", "c1").unwrap(), None);

    // A revocation as the core writes it: the revoked record and its event in one batch. (The
    // sled store stores only the event and lays it over the record on reads.)
    write(
        store,
        vec![
            Op::InsertToken(T6, token("i4", "k1", 20)),
            Op::InsertToken(T7, token("i4", "k1", 30_000)),
        ],
    )
    .await;
    let (revoked6, revoked7) = (revoked("i4", "k1", 20, 11), revoked("i4", "k1", 30_000, 12));
    for (rev, id, rec) in [(5, T6, &revoked6), (6, T7, &revoked7)] {
        let event = token_event(rev, &id, rec.expire_ms, 11 + rev as i64 - 5);
        write(
            store,
            vec![
                Op::RevokeToken(id, rec.clone()),
                Op::AppendRevocation(event),
            ],
        )
        .await;
    }
    assert_eq!(stored(store, &T6), Some(revoked6.clone()));
    assert_eq!(stored(store, &T7), Some(revoked7.clone()));
    let counts = store.counts().unwrap();
    assert_eq!((counts.tokens, counts.revoked_tokens), (3, 3));
    assert_eq!(
        store.instance_tokens("i4", None, None, 10).unwrap(),
        vec![(T6, revoked6.clone()), (T7, revoked7.clone())]
    );
    // Compacting the event of a token that expired but is not swept yet keeps it revoked.
    write(store, vec![Op::CompactRevocationsBelow(6)]).await;
    assert_eq!(store.revision_bounds().unwrap().oldest, 6);
    assert_eq!(stored(store, &T6), Some(revoked6));
    assert_eq!(stored(store, &T7), Some(revoked7));
    let counts = store.counts().unwrap();
    assert_eq!((counts.tokens, counts.revoked_tokens), (3, 3));
}

#[tokio::test]
async fn sled_store_conforms_and_a_reopened_store_reads_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path()).expect("sled opens");
    conformance(&store).await;
    // What the in-memory indexes and the stored records answer.
    let seen = |store: &SledStore| {
        (
            store.counts().unwrap(),
            store.expired_tokens(i64::MAX, 100).unwrap(),
            store.newest_token_expiry().unwrap(),
            store.instance_tokens("i1", None, None, 100).unwrap(),
            store.instance_tokens("i4", None, None, 100).unwrap(),
            store.revision_bounds().unwrap(),
            store.access_keys().unwrap(),
        )
    };
    let before = seen(&store);
    drop(store);
    // The token indexes are rebuilt from the records (a revocation stored only as its event
    // from the log), the rest read back from disk.
    let store = SledStore::open(dir.path()).expect("sled opens again");
    assert_eq!(before, seen(&store));
    assert!(stored(&store, &T7).is_some_and(|t| t.revoked_ms == Some(12)));

    // Sweeping a token revoked that way forgets the revocation with the token.
    write(&store, vec![Op::DeleteToken(T7, 30_000)]).await;
    let counts = store.counts().unwrap();
    assert_eq!((counts.tokens, counts.revoked_tokens), (2, 2));
    drop(store);
    let store = SledStore::open(dir.path()).expect("sled opens a third time");
    assert_eq!(stored(&store, &T7), None);
    let counts = store.counts().unwrap();
    assert_eq!((counts.tokens, counts.revoked_tokens), (2, 2));
}

fn options(etcd: &EtcdCluster, prefix: &str) -> EtcdOptions {
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
fn revocation_of(id: TokenId) -> Vec<Op> {
    vec![
        Op::RevokeToken(id, revoked("i1", "k1", i64::MAX, 3)),
        Op::AppendRevocation(token_event(1, &id, i64::MAX, 3)),
    ]
}

/// A replica on `prefix` whose etcd traffic goes through a proxy that can hold its watch back
/// or send a watch response twice.
async fn through_proxy(
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
async fn two_replicas(etcd: &EtcdCluster) -> (EtcdStore, EtcdStore) {
    let prefix = etcd_kit::unique_prefix();
    let a = EtcdStore::connect(&options(etcd, &prefix))
        .await
        .expect("etcd");
    let b = EtcdStore::connect(&options(etcd, &prefix))
        .await
        .expect("etcd");
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms_and_a_second_replica_sees_the_same() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let prefix = etcd_kit::unique_prefix();
    let store = EtcdStore::connect(&options(&etcd, &prefix))
        .await
        .expect("etcd");
    conformance(&store).await;

    // Another replica, started afterwards, loads the same state; one started before follows it.
    let other = EtcdStore::connect(&options(&etcd, &prefix))
        .await
        .expect("etcd");
    other.sync().await.expect("barrier");
    assert_eq!(store.counts().unwrap(), other.counts().unwrap());
    assert_eq!(
        store.revision_bounds().unwrap(),
        other.revision_bounds().unwrap()
    );
    assert_eq!(
        store.revocations(3, 10).unwrap(),
        other.revocations(3, 10).unwrap()
    );
    let next = store.revision_bounds().unwrap().last + 1;
    write(&store, vec![Op::AppendRevocation(event(next, None))]).await;
    other.sync().await.expect("barrier");
    assert_eq!(other.revision_bounds().unwrap().last, next);
    assert_eq!(other.revocations(next, 1).unwrap(), vec![event(next, None)]);
    assert_eq!(stored(&other, &T7), stored(&store, &T7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_the_write_that_loses_a_race_is_reported_and_rolled_back() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (a, b) = two_replicas(&etcd).await;
    // Both build on the same (empty) state and append revision 1.
    a.begin_write();
    b.begin_write();
    let ta = a.apply(vec![Op::AppendRevocation(event(1, None))]).unwrap();
    let tb = b
        .apply(vec![Op::AppendRevocation(event(1, Some(7)))])
        .unwrap();
    let ra = a.flush().await.expect("flush a");
    assert_eq!(ra.failure, None);
    assert!(ra.durable_through >= ta);
    let rb = b.flush().await.expect("flush b");
    assert_eq!(
        rb.failure,
        Some(FlushFailure::Conflict),
        "the second write loses"
    );
    assert!(rb.durable_through < tb);
    assert!(b.rollback() >= tb, "the rollback drops the losing batch");
    // Built again, the write finds nothing to do: its empty batch must not name the dropped
    // ticket (its writer would hear of the conflict again and again).
    let nothing = b.apply(Vec::new()).unwrap();
    assert!(nothing < tb, "an empty batch waits on no dropped ticket");
    assert!(b.flush().await.expect("flush b").durable_through >= nothing);
    b.sync().await.expect("barrier");
    assert_eq!(
        b.revocations(1, 10).unwrap(),
        vec![event(1, None)],
        "the winner's event"
    );
    assert_eq!(b.revision_bounds().unwrap().last, 1);
}

/// A replica reads a live token to revoke it; before its batch is applied, another replica
/// revokes (or sweeps) the token and the watch brings that into the first one's mirror. The
/// first batch loses its compare and is rolled back, and both replicas count the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_a_revocation_built_on_a_stale_read_leaves_the_counts_right() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    for other_deletes in [false, true] {
        let (a, b) = two_replicas(&etcd).await;
        let (t, kept): (TokenId, TokenId) = ([7; 16], [8; 16]);
        write(
            &a,
            vec![
                Op::InsertToken(t, token("i1", "k1", i64::MAX)),
                Op::InsertToken(kept, token("i1", "k1", i64::MAX)),
            ],
        )
        .await;
        b.sync().await.expect("barrier");

        // A, as its core would under the writer lock: begins and reads the live token.
        a.begin_write();
        let read = a.token(&t).unwrap().expect("live");
        // B revokes or sweeps it first; A's watch applies that to A's mirror.
        b.begin_write();
        let op = if other_deletes {
            Op::DeleteToken(t, i64::MAX)
        } else {
            Op::PutToken(t, revoked("i1", "k1", i64::MAX, 3))
        };
        b.apply(vec![op, Op::AppendRevocation(event(1, None))])
            .unwrap();
        assert_eq!(b.flush().await.expect("flush b").failure, None);
        a.sync().await.expect("barrier");

        let stale = IssuedToken {
            revoked_ms: Some(4),
            ..read
        };
        a.apply(vec![
            Op::RevokeToken(t, stale),
            Op::AppendRevocation(event(1, None)),
        ])
        .unwrap();
        assert_eq!(
            a.flush().await.expect("flush a").failure,
            Some(FlushFailure::Conflict)
        );
        a.rollback();
        a.sync().await.expect("barrier");
        let (ca, cb) = (a.counts().unwrap(), b.counts().unwrap());
        assert_eq!(
            (ca.tokens, ca.revoked_tokens),
            (cb.tokens, cb.revoked_tokens),
            "other replica deleted it: {other_deletes}"
        );
        assert_eq!(
            (cb.tokens, cb.revoked_tokens),
            if other_deletes { (1, 0) } else { (2, 1) }
        );
    }
}

/// etcd 3.4 sometimes sends a watch response again (etcd#17247). Applied again, an old put
/// would turn a revoked token live in that replica's mirror, with no revocation key in it to
/// trip the gap check: the replica skips events at or below the revision it has applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_a_watch_response_sent_twice_does_not_bring_a_revoked_token_back() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let prefix = etcd_kit::unique_prefix();
    let (proxy, follower) = through_proxy(&etcd, &prefix).await;
    proxy.repeat_once();
    let writer = EtcdStore::connect(&options(&etcd, &prefix))
        .await
        .expect("etcd");
    let (t, later): (TokenId, TokenId) = ([7; 16], [8; 16]);
    write(
        &writer,
        vec![Op::InsertToken(t, token("i1", "k1", i64::MAX))],
    )
    .await;
    follower.sync().await.expect("barrier");
    assert_eq!(stored(&follower, &t), Some(token("i1", "k1", i64::MAX)));

    // The revocation's response is followed by the token's first put, sent again.
    write(&writer, revocation_of(t)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !proxy.repeated() {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never repeated"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The watch delivers in order: once the follower has a later write, it has handled the
    // repeat.
    write(
        &writer,
        vec![Op::InsertToken(later, token("i1", "k1", i64::MAX))],
    )
    .await;
    follower.sync().await.expect("barrier");
    assert!(stored(&follower, &later).is_some());
    assert_eq!(
        stored(&follower, &t),
        Some(revoked("i1", "k1", i64::MAX, 3)),
        "the repeated put was applied again"
    );
    assert_eq!(follower.revision_bounds().unwrap().last, 1);
    let counts = follower.counts().unwrap();
    assert_eq!((counts.tokens, counts.revoked_tokens), (2, 1));
}

/// The watch brings a replica's own writes back; what its mirror already holds as it is, it
/// skips. With the watch held back over a token's insert and then its revocation, the older
/// write comes back after the newer one was staged: the mirror must end at the newest, and the
/// core must still hear of the revocation, which it publishes only as the watch delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_a_replica_s_own_writes_coming_back_leave_the_newest_and_report_revocations() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let prefix = etcd_kit::unique_prefix();
    let (proxy, held) = through_proxy(&etcd, &prefix).await;
    let mut feed = held.committed().expect("a shared store has a feed");
    let t: TokenId = [9; 16];
    proxy.hold(true);
    write(&held, vec![Op::InsertToken(t, token("i1", "k1", i64::MAX))]).await;
    write(&held, revocation_of(t)).await;
    proxy.hold(false);
    held.sync().await.expect("the watch catches up");
    assert_eq!(
        stored(&held, &t),
        Some(revoked("i1", "k1", i64::MAX, 3)),
        "the insert coming back last-but-one undid the revocation"
    );
    let counts = held.counts().unwrap();
    assert_eq!((counts.tokens, counts.revoked_tokens), (1, 1));
    let mut heard = Vec::new();
    while let Ok(item) = feed.try_recv() {
        if let Committed::Revocation(event) = item {
            heard.push(event.revision);
        }
    }
    assert_eq!(heard, vec![1], "the core hears of its own revocation once");
    let other = EtcdStore::connect(&options(&etcd, &prefix))
        .await
        .expect("etcd");
    assert_eq!(stored(&other, &t), Some(revoked("i1", "k1", i64::MAX, 3)));
}

/// The core numbers a revocation after the mirror's last revision. While the watch applies
/// revocations committed below one this replica has staged, that number must never drop below
/// the staged one: a write built in that moment took a revision already committed, overwrote
/// that revocation in etcd, and the watch then reported a gap (seen in the benchmark's
/// RevokeToken cell, which fell to a few hundred calls a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_the_last_revision_never_goes_back_while_the_watch_catches_up() {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let prefix = etcd_kit::unique_prefix();
    let (proxy, held) = through_proxy(&etcd, &prefix).await;
    let held = Arc::new(held);
    let other = EtcdStore::connect(&options(&etcd, &prefix))
        .await
        .expect("etcd");
    // Another replica commits 300 revocations, 25 per transaction, while this one's watch is
    // held back; then this one stages a revocation numbered after them.
    const COMMITTED: u64 = 300;
    proxy.hold(true);
    for first in (1..=COMMITTED).step_by(25) {
        let ops = (first..first + 25)
            .map(|revision| Op::AppendRevocation(event(revision, None)))
            .collect();
        write(&other, ops).await;
    }
    held.apply(vec![Op::AppendRevocation(event(COMMITTED + 1, None))])
        .expect("stage");
    assert_eq!(held.revision_bounds().unwrap().last, COMMITTED + 1);

    // What a writer building the next batch would read, as often as it can, while the watch
    // applies the 300 events.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (held, stop) = (held.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut lowest, mut reads) = (u64::MAX, 0u64);
            while !stop.load(Ordering::SeqCst) {
                lowest = lowest.min(held.revision_bounds().expect("bounds").last);
                reads += 1;
            }
            (lowest, reads)
        })
    };
    proxy.hold(false);
    held.sync().await.expect("the watch catches up");
    stop.store(true, Ordering::SeqCst);
    let (lowest, reads) = poller.join().expect("the poller");
    assert!(reads > 0, "the poller read");
    assert_eq!(
        lowest,
        COMMITTED + 1,
        "the last revision went back while the watch caught up"
    );
    // The staged batch was built on a view without the other replica's writes: it loses.
    let report = held.flush().await.expect("flush");
    assert_eq!(report.failure, Some(FlushFailure::Conflict));
    held.rollback();
    assert_eq!(held.revision_bounds().unwrap().last, COMMITTED);
    assert_eq!(held.revocations(1, usize::MAX).unwrap().len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_one_replica_at_a_time_runs_the_background_work() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (a, b) = two_replicas(&etcd).await;
    assert!(a.lead().await.expect("a asks"), "the first to ask leads");
    assert!(!b.lead().await.expect("b asks"), "the other does not");
    assert!(
        a.lead().await.expect("a asks again"),
        "and the leader keeps leading"
    );
    // The lead goes with its holder's lease: once `a` is gone and its lease revoked or
    // expired, `b` takes over. Dropping `a` ends its keep-alive; the lease lapses within 15 s.
    drop(a);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(25);
    loop {
        if b.lead().await.expect("b asks") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "b took over");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
