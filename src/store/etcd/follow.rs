//! Loading the mirror and following etcd.
//!
//! etcd's watch history is not trusted alone: etcd 3.4 (Debian's) has known watch bugs (events
//! lost after a compaction, etcd#17529; dropped delete events, #18089; progress notifications
//! racing events, #15220; events sent twice, #17247). So the mirror is loaded with a range read,
//! the watch starts at that read's revision + 1, an event at or below a revision already
//! applied is skipped as a repeat, every revocation must arrive as `last + 1`, and on a gap, a
//! compaction or a cancelled watch the whole prefix is read again. Progress notifications are
//! not used: the read barrier waits for the revision of the `w` key every transaction writes.

use std::sync::{atomic::Ordering, Arc, Weak};

use etcd_client::{EventType, GetOptions, WatchOptions};

use super::{keys, Inner};
use crate::store::{Committed, SledStore, StoreError, StoreResult};

/// Keys per range read page.
const PAGE: i64 = 1000;

/// The smallest key after every key with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Reads the whole prefix at one revision into a fresh mirror, replays the staged batches on
/// it and puts it in place. With `report`, tells the core what it missed (revocations after
/// the last one it heard of, and that keys and tombstones may have changed). Returns the
/// revision read.
pub(super) async fn load(inner: &Inner, report: bool) -> StoreResult<i64> {
    let fresh = SledStore::temporary()?;
    let kv = inner.client.kv_client();
    let end = prefix_end(&inner.prefix);
    let mut from = inner.prefix.clone();
    let mut revision = 0;
    let mut version = 0;
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let page = super::with_retry(super::transient, || {
            let (mut kv, from, options) = (kv.clone(), from.clone(), options.clone());
            async move { kv.get(from, Some(options)).await }
        })
        .await
        .map_err(super::etcd_err)?;
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        for item in page.kvs() {
            let sub = &item.key()[inner.prefix.len()..];
            if sub == keys::VERSION {
                version = parse_version(item.value())?;
            }
            keys::apply_change(&fresh, sub, Some(item.value()))?;
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                from = [last.key(), b"\0".as_slice()].concat();
            }
            _ => break,
        }
    }
    let fresh = Arc::new(fresh);
    let committed_revision = {
        use crate::store::Store;
        fresh.revision_bounds()?.last
    };
    let mut state = inner.state();
    // What the core missed, read before the staged batches are replayed on top: their events
    // are not committed (and may even reuse a revision another replica committed).
    let missed = if report {
        use crate::store::Store;
        fresh.revocations(state.committed_revision + 1, usize::MAX)?
    } else {
        Vec::new()
    };
    // Staged batches stay staged: their undo values come from the fresh read.
    let staged: Vec<_> = state.staged.iter().flat_map(|s| s.writes.clone()).collect();
    state.undo.clear();
    for write in &staged {
        if let Some(key) = write.key() {
            if !state.undo.contains_key(key) {
                let committed = keys::current(&fresh, key)?;
                state.undo.insert(key.to_vec(), committed);
            }
            let value = match write {
                keys::Write::Put(_, v) => Some(v.as_slice()),
                _ => None,
            };
            keys::apply_change(&fresh, key, value)?;
        }
    }
    let oldest = {
        use crate::store::Store;
        fresh.revision_bounds()?.oldest
    };
    state.committed_revision = committed_revision;
    // Assigned, not raised: a commit of this replica after the range read is not in the fresh
    // mirror, so builds on it must compare with the version read (and conflict until the
    // watch brings that commit).
    state.committed_version = version;
    *inner.mirror.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    // Told after the swap: the core reloads its tables from the mirror when it hears.
    if report {
        for event in missed {
            inner.send(Committed::Revocation(event));
        }
        inner.send(Committed::Oldest(oldest));
        inner.send(Committed::AccessKeys);
    }
    drop(state);
    inner.applied.send_modify(|a| *a = (*a).max(revision));
    Ok(revision)
}

fn parse_version(value: &[u8]) -> StoreResult<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt {
            key: "v".into(),
            reason: "not a decimal write version".into(),
        })
}

/// Follows the prefix from `revision + 1` until the store is dropped, reloading on any
/// anomaly (and after a failed reload, again after a pause).
pub(super) async fn run(inner: Weak<Inner>, mut revision: i64) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if *strong.applied.borrow() < 0 {
            return;
        }
        match watch(&inner, &strong, revision).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "following etcd: reloading the mirror"),
        }
        drop(strong);
        loop {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            match load(&strong, true).await {
                Ok(r) => {
                    revision = r;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reloading the mirror from etcd failed; retrying");
                    drop(strong);
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// One watch from `revision + 1`: `Ok` when the store was dropped, `Err` when the mirror must
/// be reloaded.
async fn watch(weak: &Weak<Inner>, inner: &Arc<Inner>, revision: i64) -> StoreResult<()> {
    let options = WatchOptions::new()
        .with_range(prefix_end(&inner.prefix))
        .with_start_revision(revision + 1);
    let mut stream = inner
        .client
        .watch_client()
        .watch(inner.prefix.clone(), Some(options))
        .await
        .map_err(super::etcd_err)?;
    let mut closed = inner.closed.subscribe();
    // The newest etcd revision applied. Revisions only grow along a watch, so an event at or
    // below it is a repeat: applying it again would turn a key back to an older value (a
    // revoked token live again). etcd never splits one revision's events between responses
    // (fragmenting is not asked for), so the comparison is exact.
    let mut seen = revision;
    loop {
        let message = tokio::select! {
            m = stream.message() => m.map_err(super::etcd_err)?,
            _ = closed.wait_for(|c| *c) => return Ok(()),
            () = inner.resync.notified() => {
                return Err(StoreError::Unavailable("a read barrier timed out".into()));
            }
        };
        let Some(response) = message else {
            return Err(StoreError::Unavailable("the watch ended".into()));
        };
        if response.canceled() || response.compact_revision() > 0 {
            return Err(StoreError::Unavailable(format!(
                "the watch was cancelled (compacted at {})",
                response.compact_revision()
            )));
        }
        let Some(inner) = weak.upgrade() else {
            return Ok(());
        };
        let (fresh, repeats): (Vec<_>, Vec<_>) = response
            .events()
            .iter()
            .filter(|e| e.kv().is_some())
            .partition(|e| e.kv().is_some_and(|kv| kv.mod_revision() > seen));
        if !repeats.is_empty() {
            tracing::warn!(
                events = repeats.len(),
                applied_through = seen,
                "etcd sent events this replica had applied already; skipped them"
            );
        }
        seen = seen.max(apply_events(&inner, &fresh)?);
    }
}

/// Applies one watch response's new events to the mirror, under the state lock so a batch
/// being staged sees all of one transaction or none of it. Returns the newest revision applied
/// (0 for none).
fn apply_events(inner: &Inner, events: &[&etcd_client::Event]) -> StoreResult<i64> {
    let mirror = inner.mirror();
    let mut state = inner.state();
    let mut newest = 0;
    for event in events {
        let Some(kv) = event.kv() else { continue };
        newest = newest.max(kv.mod_revision());
        let sub = &kv.key()[inner.prefix.len().min(kv.key().len())..];
        let value = match event.event_type() {
            EventType::Put => Some(kv.value()),
            EventType::Delete => None,
        };
        if sub == keys::VERSION {
            if let Some(v) = value {
                state.committed_version = state.committed_version.max(parse_version(v)?);
            }
            continue;
        }
        if let (Some(revision), Some(_)) = (keys::revision_of(sub), value) {
            if revision != state.committed_revision + 1 {
                return Err(StoreError::Unavailable(format!(
                    "revocation {revision} arrived after {}: a gap in the watch",
                    state.committed_revision
                )));
            }
            state.committed_revision = revision;
        }
        if let Some(committed) = state.undo.get_mut(sub) {
            // A staged key: the mirror keeps the staged value, the undo log the committed
            // one. The core still hears of a committed revocation.
            *committed = value.map(<[u8]>::to_vec);
            if let (Some(_), Some(v)) = (keys::revision_of(sub), value) {
                inner.send(Committed::Revocation(keys::decode_revocation(sub, v)?));
            }
            continue;
        }
        if let Some(v) = value {
            if keys::holds(&mirror, sub, v)? {
                // Already so in the mirror: this replica's own write coming back (staged there
                // before its commit). Writing it again would cost a decode and a store write;
                // the core still hears of a revocation (it publishes a shared store's
                // revocations as they come back committed). Compared by value, not by whose
                // write it was, so an older write applied late never hides a newer one.
                if keys::revision_of(sub).is_some() {
                    inner.send(Committed::Revocation(keys::decode_revocation(sub, v)?));
                }
                continue;
            }
        }
        if let Some(item) = keys::apply_change(&mirror, sub, value)? {
            inner.send(item);
        }
    }
    drop(state);
    if newest > 0 {
        inner.applied.send_modify(|a| *a = (*a).max(newest));
    }
    Ok(newest)
}

/// The read barrier: reads the `w` key (linearizably, so it sees every acknowledged write),
/// waits until the mirror has applied its revision, and returns how many feed items were sent
/// by then.
pub(super) async fn barrier(inner: &Arc<Inner>) -> StoreResult<u64> {
    let target = shared_read(inner).await?;
    applied_through(inner, target).await
}

/// [`Store::settle`](crate::store::Store::settle): waits until the mirror has applied this
/// replica's newest committed transaction. Every transaction writes `w`, so the watch brings
/// each one back, and with it everything etcd committed before it, which includes every write
/// acknowledged before this replica sent it.
pub(super) async fn settle(inner: &Arc<Inner>) -> StoreResult<u64> {
    let (target, unknown) = {
        let mut state = inner.state();
        (
            state.own_commit,
            std::mem::take(&mut state.own_commit_unknown),
        )
    };
    if unknown {
        // A commit whose response named no revision (etcd always names one): the barrier
        // covers it.
        return barrier(inner).await;
    }
    applied_through(inner, target).await
}

/// Waits until the mirror has applied etcd revision `target`; returns how many feed items
/// were sent by then.
async fn applied_through(inner: &Arc<Inner>, target: i64) -> StoreResult<u64> {
    let mut applied = inner.applied.subscribe();
    let reached = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        applied.wait_for(|a| *a >= target),
    )
    .await;
    match reached {
        Ok(Ok(_)) => Ok(inner.feed_sent.load(Ordering::SeqCst)),
        _ => {
            // The watch may be stuck (a member cut off from the quorum): start it again.
            inner.resync.notify_one();
            Err(StoreError::Unavailable(format!(
                "the mirror did not reach etcd revision {target} in 10 s"
            )))
        }
    }
}

/// The revision of `w` from a linearizable read that began after this call did, shared with
/// every concurrent caller: a read already in flight began too early to count, so callers that
/// arrive during it share the next one, as group commit shares a flush. One etcd read then
/// serves a whole burst of requests. The reads run in a task of their own, so a cancelled
/// request never strands the others.
async fn shared_read(inner: &Arc<Inner>) -> StoreResult<i64> {
    let mut done = inner.read_done.subscribe();
    let needed = {
        let mut reads = inner.reads.lock().unwrap_or_else(|p| p.into_inner());
        let needed = reads.started + 1;
        reads.wanted = reads.wanted.max(needed);
        if !reads.running {
            reads.running = true;
            tokio::spawn(run_reads(Arc::downgrade(inner)));
        }
        needed
    };
    loop {
        {
            let (generation, result) = &*done.borrow_and_update();
            if *generation >= needed {
                return result.clone().map_err(StoreError::Unavailable);
            }
        }
        if done.changed().await.is_err() {
            return Err(StoreError::Unavailable("the store is closing".into()));
        }
    }
}

/// Reads `w` while callers want a newer read than the last, publishing each result.
async fn run_reads(inner: Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let generation = {
            let mut reads = inner.reads.lock().unwrap_or_else(|p| p.into_inner());
            if reads.wanted <= reads.started {
                reads.running = false;
                return;
            }
            reads.started += 1;
            reads.started
        };
        let result = read_touch(&inner).await;
        let _previous = inner.read_done.send_replace((generation, result));
    }
}

/// One linearizable read of `w`: its revision (0 before the first write).
async fn read_touch(inner: &Inner) -> Result<i64, String> {
    let key = inner.key(keys::TOUCH);
    let resp = super::with_retry(super::transient, || {
        let (mut kv, key) = (inner.client.kv_client(), key.clone());
        async move { kv.get(key, None).await }
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(resp.kvs().first().map_or(0, |kv| kv.mod_revision()))
}
