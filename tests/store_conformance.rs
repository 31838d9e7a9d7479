//! One conformance suite for both store backends: the same operations through the `Store`
//! trait, the same answers, on a real sled directory and on a real etcd, where a second
//! replica's mirror sees every write after a read barrier. What only a shared store has (races
//! between replicas, a watch held back or repeated) is in `tests/etcd_mirror.rs`.

#[path = "etcd_kit/mod.rs"]
mod etcd_kit;
#[path = "store_kit/mod.rs"]
mod store_kit;

use etcd_kit::EtcdCluster;
use mqtt_tokend::{
    core::{access_key::AccessKey, device::RegisteredDevice, scope::Tombstone},
    store::{EtcdStore, Op, SledStore, Store, TokenId},
};
use store_kit::*;

/// The tokens the suite revokes as the core does (the record and its event in one batch).
const T6: TokenId = [6; 16];
const T7: TokenId = [7; 16];

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
