//! The revocation log: its events, how they get revisions and become durable, and compaction.
//! Watchers (`super::watch`) read it.
//!
//! Guarantees (the same as etcd's watch): every revocation gets a revision `last + 1`, assigned
//! under the writer lock and written in the same atomic batch as the revocation itself; an event
//! is published only after a flush made it durable, so no watcher sees an event a crash could
//! undo; revisions are gap-free; a watcher that starts from revision N receives every retained
//! event from N on, exactly once, in order, whether it is fast, slow, or resuming after a
//! restart. A slow watcher never blocks writers or other watchers: it falls off the in-memory
//! broadcast and catches up from storage.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::sync::{broadcast, watch};

use super::{durability::Flushed, now_ms, scope::Tombstone, Core, Error, Result};
use crate::store::{Op, RevisionBounds, Store};

/// What was revoked. The store and the API each number these in their own codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    /// RevokeToken.
    TokenRevoked,
    /// RefreshDeviceCredential: the old device key id stopped working.
    DeviceCredentialRefreshed,
    /// UnRegisterDeviceCredential.
    DeviceCredentialUnregistered,
    /// DeleteAccessKey (which also revokes every token the key minted).
    AccessKeyDeleted,
    /// RevokeTokens by access key: the key's tokens on the instance minted before the
    /// event's revision (a scope tombstone, see `super::scope`).
    TokensOfKeyRevoked,
    /// RevokeTokens of a whole instance: its tokens minted before the event's revision.
    InstanceTokensRevoked,
}

/// One entry of the revocation log: what brokers need to drop the clients it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationEvent {
    /// Position in the log: gap-free, from 1.
    pub revision: u64,
    /// What was revoked.
    pub kind: RevocationKind,
    /// The instance, or `None` for an access key allowed on every instance: its deletion
    /// concerns them all.
    pub instance_id: Option<String>,
    /// The token's fingerprint (`TokenRevoked`); empty otherwise.
    pub token_fingerprint: String,
    /// The client id (device credential events); empty otherwise.
    pub client_id: String,
    /// The device access key id or access key id that stopped working, or whose tokens were
    /// revoked (`TokensOfKeyRevoked`); empty for single tokens.
    pub key_id: String,
    /// Why, in words: the operation that caused it.
    pub reason: String,
    /// When the revoked credential would have expired, ms since the Unix epoch; `None` for
    /// credentials that never expire. After it, the event is of no use to anyone.
    pub expire_ms: Option<i64>,
    /// When it was revoked, ms since the Unix epoch.
    pub revoke_ms: i64,
    /// The token's handle (`TokenRevoked`); empty otherwise.
    pub token_handle: String,
}

impl RevocationEvent {
    /// Whether a watch filtering on `instances` (empty: every instance) wants this event.
    /// Events of keys allowed on every instance concern every instance.
    pub(crate) fn concerns(&self, instances: &[String]) -> bool {
        match &self.instance_id {
            None => true,
            Some(id) => instances.is_empty() || instances.contains(id),
        }
    }
}

/// A revocation before it has a revision.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub kind: RevocationKind,
    pub instance_id: Option<String>,
    pub token_fingerprint: String,
    pub client_id: String,
    pub key_id: String,
    pub reason: String,
    pub expire_ms: Option<i64>,
    pub revoke_ms: i64,
    pub token_handle: String,
}

impl Draft {
    /// A revocation of `kind` on `instance_id` (`None`: every instance) at `revoke_ms`, with
    /// no expiry and no identifiers yet; callers fill in what the kind needs.
    pub(crate) fn new(
        kind: RevocationKind,
        instance_id: Option<&str>,
        reason: &str,
        revoke_ms: i64,
    ) -> Self {
        Self {
            kind,
            instance_id: instance_id.map(str::to_owned),
            token_fingerprint: String::new(),
            client_id: String::new(),
            key_id: String::new(),
            reason: reason.to_owned(),
            expire_ms: None,
            revoke_ms,
            token_handle: String::new(),
        }
    }

    fn into_event(self, revision: u64) -> RevocationEvent {
        RevocationEvent {
            revision,
            kind: self.kind,
            instance_id: self.instance_id,
            token_fingerprint: self.token_fingerprint,
            client_id: self.client_id,
            key_id: self.key_id,
            reason: self.reason,
            expire_ms: self.expire_ms,
            revoke_ms: self.revoke_ms,
            token_handle: self.token_handle,
        }
    }
}

struct Pending {
    events: VecDeque<Arc<RevocationEvent>>,
}

/// The in-memory side of the log: revision counter, publish queue, broadcast.
pub(crate) struct RevocationLog {
    /// The last revision applied to the store. Changed only under the core's writer lock.
    last_applied: Mutex<u64>,
    pending: Mutex<Pending>,
    /// Durable events, in revision order, for watchers that are caught up.
    pub(crate) live: broadcast::Sender<Arc<RevocationEvent>>,
    /// The durable revision range; bumped after the events up to it went on `live`.
    pub(crate) durable: watch::Sender<RevisionBounds>,
}

impl RevocationLog {
    pub(crate) fn new(bounds: RevisionBounds, buffer: usize) -> Self {
        let (live, _) = broadcast::channel(buffer.max(16));
        let (durable, _) = watch::channel(bounds);
        Self {
            last_applied: Mutex::new(bounds.last),
            pending: Mutex::new(Pending {
                events: VecDeque::new(),
            }),
            live,
            durable,
        }
    }

    /// The last revision applied to the store (durable or not).
    pub(crate) fn last_applied(&self) -> u64 {
        *self.last_applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes every pending event up to `revision`, which the caller knows is durable.
    pub(crate) fn publish_up_to(&self, revision: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut published = None;
        while pending
            .events
            .front()
            .is_some_and(|e| e.revision <= revision)
        {
            if let Some(event) = pending.events.pop_front() {
                published = Some(event.revision);
                // No receivers is fine: nobody is watching.
                let _ = self.live.send(event);
            }
        }
        if let Some(rev) = published {
            self.durable.send_modify(|b| b.last = b.last.max(rev));
        }
    }

    pub(crate) fn set_oldest(&self, oldest: u64) {
        self.durable
            .send_modify(|b| b.oldest = b.oldest.max(oldest));
    }

    /// Publishes one event another replica (or this one) committed to a shared store. Events
    /// arrive in revision order, gap-free; one already published is skipped.
    pub(crate) fn publish_committed(&self, event: RevocationEvent) {
        if event.revision <= self.bounds().last {
            return;
        }
        let revision = event.revision;
        let _ = self.live.send(Arc::new(event));
        self.durable.send_modify(|b| b.last = b.last.max(revision));
    }

    /// Current durable bounds.
    pub(crate) fn bounds(&self) -> RevisionBounds {
        *self.durable.borrow()
    }
}

/// How many times a write is built again after losing a race with another replica before the
/// client is told to retry (`ServiceUnavailable`). Each attempt first waits for this replica to
/// see the write that won, so this only runs out under extreme contention on one record.
pub(crate) const MAX_ATTEMPTS: usize = 32;

impl Core {
    /// Runs a read-modify-write under the writer lock: `build` reads what it needs and returns
    /// the store operations, the revocations they cause, and a value. Revocations get the next
    /// revisions and go into the same atomic batch. Returns after the batch is durable and its
    /// events are published, with the value and the last revision written (0 if none).
    ///
    /// On a shared store `build` runs again whenever another replica changed what it read
    /// (the store's compare-and-swap failed), on data that includes the winning write.
    pub(crate) async fn commit<T>(
        &self,
        build: impl FnMut(&dyn Store) -> Result<(Vec<Op>, Vec<Draft>, T)>,
    ) -> Result<(T, u64)> {
        self.commit_then(build, |_| {}).await
    }

    /// [`Core::commit`], and `applied` runs once the batch is applied, still under the writer
    /// lock and before the flush and the publish: where in-memory state mirrors the store, it
    /// changes only after the write succeeded, and before anyone hears of it. (A rolled-back
    /// batch reloads that state from the store, see [`Core::roll_back`].)
    ///
    /// A scope revocation event brings its tombstone (`super::scope`) into the same batch, with
    /// the event's revision as the cut-off, and into the in-memory table the same way.
    pub(crate) async fn commit_then<T>(
        &self,
        mut build: impl FnMut(&dyn Store) -> Result<(Vec<Op>, Vec<Draft>, T)>,
        mut applied: impl FnMut(&T),
    ) -> Result<(T, u64)> {
        for _ in 0..MAX_ATTEMPTS {
            let (value, last_rev, ticket) = {
                let _w = self.writer_turn().await;
                self.store.begin_write();
                let (mut ops, drafts, value) = build(self.store.as_ref())?;
                let mut last = self
                    .revocations
                    .last_applied
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if self.shared {
                    // Other replicas append too: the next revision is the store's.
                    *last = self.store.revision_bounds()?.last;
                }
                let mut events = Vec::with_capacity(drafts.len());
                let mut tombstones = Vec::new();
                let mut rev = *last;
                for draft in drafts {
                    rev += 1;
                    let event = Arc::new(draft.into_event(rev));
                    if let Some(tombstone) = Tombstone::of_event(&event) {
                        ops.push(Op::PutTombstone(tombstone.clone()));
                        tombstones.push(tombstone);
                    }
                    ops.push(Op::AppendRevocation(event.as_ref().clone()));
                    events.push(event);
                }
                let ticket = self.store.apply(ops)?;
                for tombstone in &tombstones {
                    self.tombstones.record(tombstone);
                }
                applied(&value);
                let wrote = !events.is_empty();
                *last = rev;
                drop(last);
                // A shared store reports committed events itself, in the order every replica
                // agrees on (see `follow_committed`); only an embedded one publishes from here.
                if !self.shared {
                    self.revocations
                        .pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .events
                        .extend(events);
                }
                (value, if wrote { rev } else { 0 }, ticket)
            };
            // The flusher publishes every event its flush made durable (see `GroupCommit`), so
            // the event goes out even if this request is cancelled while it waits.
            match self.durability.wait(ticket).await? {
                Flushed::Durable => return Ok((value, last_rev)),
                Flushed::Conflict => {
                    self.metrics.write_conflict();
                    // See the write that won before building again, in the in-memory tables
                    // too (a build reads tombstones and access keys from them).
                    self.sync().await?;
                }
            }
        }
        Err(Error::ServiceUnavailable)
    }

    /// Writes `ops` as they are (no reads behind them, no revocations), retrying after a
    /// conflict: for sweeps and other writes that stay right whatever another replica did.
    pub(crate) async fn write(&self, ops: Vec<Op>) -> Result<()> {
        self.commit(|_| Ok((ops.clone(), Vec::new(), ()))).await?;
        Ok(())
    }

    /// After a failed flush: drops the batches the store had staged and reloads what the core
    /// mirrors in memory (access keys, tombstones, the next revision) from the store, under the
    /// writer lock. Returns the last ticket dropped (see `GroupCommit`).
    pub(crate) fn roll_back(&self) -> crate::store::Ticket {
        let _w = self.lock_writer();
        let dropped = self.store.rollback();
        if let Err(e) = self.reload_mirrors() {
            tracing::error!(error = %e, "reloading after a rolled-back write failed");
        }
        dropped
    }

    /// Reloads the access keys and tombstones from the store (after a rollback, or when
    /// another replica changed them).
    pub(crate) fn reload_mirrors(&self) -> Result<()> {
        self.access_keys
            .replace_all(&self.keyring, self.store.access_keys()?);
        self.tombstones.replace_all(self.store.tombstones()?);
        if self.shared {
            *self
                .revocations
                .last_applied
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = self.store.revision_bounds()?.last;
        }
        Ok(())
    }

    /// The retained revision range of the revocation log, as durable.
    pub fn revision_bounds(&self) -> (u64, u64) {
        let b = self.revocations.bounds();
        (b.oldest, b.last)
    }

    /// Drops the prefix of the log whose events no broker needs any more: events of
    /// credentials that have expired, and events without an expiry older than the retention.
    /// Returns the new oldest revision.
    ///
    /// # Errors
    /// The store failed.
    pub async fn compact_revocations(&self) -> Result<u64> {
        let now = now_ms();
        let retention =
            i64::try_from(self.config.revocation_retention.as_millis()).unwrap_or(i64::MAX);
        let bounds = self.revocations.bounds();
        let mut below = bounds.oldest;
        'scan: while below <= bounds.last {
            let batch = self.store.revocations(below, 1024)?;
            if batch.is_empty() {
                break;
            }
            for rec in batch {
                if rec.revision > bounds.last {
                    break 'scan;
                }
                let done = match rec.expire_ms {
                    Some(expire_ms) => expire_ms <= now,
                    None => rec.revoke_ms.saturating_add(retention) <= now,
                };
                if !done {
                    break 'scan;
                }
                below = rec.revision + 1;
            }
        }
        if below > bounds.oldest {
            // Raise the bound before deleting, so a watcher that finds a hole always reads an
            // `oldest` above it.
            self.revocations.set_oldest(below);
            self.write(vec![Op::CompactRevocationsBelow(below)]).await?;
            tracing::debug!(oldest = below, "compacted the revocation log");
        }
        Ok(below)
    }
}
