//! Token revocations whose only record on disk is their event in the revocation log.
//!
//! A RevokeToken used to write two sled keys: its event and the token's record again, with
//! `revoke_ms` set. The record was the costly one, a copy-on-write of a cold leaf somewhere in
//! the token keys (about a fifth of a revocation's server CPU, docs/benchmarks.md). The event
//! already names the token (its handle is the id) and the time, and it is kept at least until
//! the token expires, so the sled store writes only the event and keeps the revoked ids here:
//! - filled by the batch that writes the event (`apply`), and from the log when the store
//!   opens, for tokens still stored (`tokens`);
//! - laid over every token record read, so callers see `revoked_ms` as if it were stored;
//! - emptied of a token when the token is deleted, or when compaction removes its event while
//!   the token is still stored: that compaction writes the record with `revoke_ms` first.
//!
//! A batch that revokes a token without its event (none does today) still writes the record.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
};

use super::keys::decode;
use crate::{
    core::{
        revocation::{RevocationEvent, RevocationKind},
        token::parse_handle,
    },
    store::{records::RevocationRecord, StoreResult, TokenId},
};

/// One change to the set: revoked at this time (`Some`), or no longer only in the log.
pub(super) type Update = (TokenId, Option<i64>);

/// Token id -> revocation time, for the revocations stored only as events.
///
/// A batch's insertions are made before the batch becomes visible and its removals after
/// (`SledStore::commit`), and a read looks here before it reads the record: so a reader never
/// sees neither the event's revocation nor the record's.
#[derive(Default)]
pub(super) struct LoggedRevocations {
    map: RwLock<HashMap<TokenId, i64>>,
    /// Whether `map` has entries: lets every token read skip the lock while it has none.
    any: AtomicBool,
}

impl LoggedRevocations {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<TokenId, i64>> {
        // Each update is applied whole under the lock; a panic cannot leave half of one.
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<TokenId, i64>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// When token `id` was revoked, if its revocation is stored only in the log.
    pub(super) fn at(&self, id: &TokenId) -> Option<i64> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.read().get(id).copied()
    }

    /// Whether no revocation is held here (compaction then has nothing to fold).
    pub(super) fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// Applies the insertions among `updates` (before their batch becomes visible).
    pub(super) fn insert(&self, updates: &[Update]) {
        self.change(updates.iter().filter(|(_, at)| at.is_some()));
    }

    /// Applies the removals among `updates` (after their batch became visible). Most name
    /// tokens that were never here (every swept token does): those take no write lock.
    pub(super) fn remove(&self, updates: &[Update]) {
        if updates.is_empty() || self.is_empty() {
            return;
        }
        let present: Vec<Update> = {
            let map = self.read();
            updates
                .iter()
                .filter(|(id, at)| at.is_none() && map.contains_key(id))
                .copied()
                .collect()
        };
        self.change(present.iter());
    }

    /// Takes back the insertions among `updates`: their batch was refused.
    pub(super) fn undo_insert(&self, updates: &[Update]) {
        let undo: Vec<Update> = updates
            .iter()
            .filter(|(_, at)| at.is_some())
            .map(|(id, _)| (*id, None))
            .collect();
        self.change(undo.iter());
    }

    fn change<'a>(&self, updates: impl Iterator<Item = &'a Update>) {
        let mut updates = updates.peekable();
        if updates.peek().is_none() {
            return;
        }
        let mut map = self.write();
        for (id, at) in updates {
            match at {
                Some(at) => map.insert(*id, *at),
                None => map.remove(id),
            };
        }
        self.any.store(!map.is_empty(), Ordering::Release);
    }

    /// Replaces the set (while the store opens).
    pub(super) fn replace(&self, fresh: HashMap<TokenId, i64>) {
        let mut map = self.write();
        *map = fresh;
        self.any.store(!map.is_empty(), Ordering::Release);
    }
}

/// Each token's last update among `updates`, in the order of those: what a batch leaves, so that
/// its insertions and removals can be applied on either side of its commit.
pub(super) fn net(updates: Vec<Update>) -> Vec<Update> {
    if updates.len() < 2 {
        return updates;
    }
    let mut last: HashMap<TokenId, usize> = HashMap::with_capacity(updates.len());
    for (i, (id, _)) in updates.iter().enumerate() {
        last.insert(*id, i);
    }
    updates
        .into_iter()
        .enumerate()
        .filter(|(i, (id, _))| last.get(id) == Some(i))
        .map(|(_, update)| update)
        .collect()
}

/// The token a revocation event revoked, and when: `None` for other events and for events of
/// versions that wrote no handle (those versions stored `revoke_ms` in the record).
pub(super) fn revoked_token(event: &RevocationEvent) -> Option<(TokenId, i64)> {
    if event.kind != RevocationKind::TokenRevoked {
        return None;
    }
    parse_handle(&event.token_handle).map(|id| (id, event.revoke_ms))
}

/// [`revoked_token`] of a stored revocation record. A record that is not protobuf is an error
/// (it might have been a revocation); one of a kind this version does not know is not a token
/// revocation of ours and is skipped (reading it on the watch stream reports it).
pub(super) fn revoked_token_in(key: &[u8], value: &[u8]) -> StoreResult<Option<(TokenId, i64)>> {
    let record = decode::<RevocationRecord>(key, value)?;
    Ok(RevocationEvent::try_from(record)
        .ok()
        .and_then(|event| revoked_token(&event)))
}
