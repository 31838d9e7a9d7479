//! The etcd store's mirror where only a shared store can go wrong: a write that loses a race
//! with another replica, a revocation built on a stale read, a watch response sent twice, a
//! watch held back while the replica's own writes and another's come back, and the background
//! work's single leader. Real etcd members; the watch proxy of `etcd_kit` holds or repeats.

#[path = "etcd_kit/mod.rs"]
mod etcd_kit;
#[path = "store_kit/mod.rs"]
mod store_kit;

use etcd_kit::EtcdCluster;
use mqtt_tokend::{
    core::token::IssuedToken,
    store::{Committed, EtcdStore, FlushFailure, Op, Store, TokenId},
};
use store_kit::*;

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
