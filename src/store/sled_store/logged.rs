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
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use super::keys::decode_revocation;
use crate::{
    core::{
        revocation::{RevocationEvent, RevocationKind},
        token::parse_handle,
    },
    store::{StoreResult, TokenId},
};

/// One change to the set: revoked at this time (`Some`), or no longer only in the log.
pub(super) type Update = (TokenId, Option<i64>);

/// Token id -> revocation time, for the revocations stored only as events.
#[derive(Default)]
pub(super) struct LoggedRevocations(RwLock<HashMap<TokenId, i64>>);

impl LoggedRevocations {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<TokenId, i64>> {
        // Each update is applied whole under the lock; a panic cannot leave half of one.
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<TokenId, i64>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    /// When token `id` was revoked, if its revocation is stored only in the log.
    pub(super) fn at(&self, id: &TokenId) -> Option<i64> {
        let map = self.read();
        if map.is_empty() {
            return None;
        }
        map.get(id).copied()
    }

    /// Whether no revocation is held here (compaction then has nothing to fold).
    pub(super) fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Applies a committed batch's updates, in order.
    pub(super) fn apply(&self, updates: &[Update]) {
        if updates.is_empty() {
            return;
        }
        let mut map = self.write();
        for (id, at) in updates {
            match at {
                Some(at) => map.insert(*id, *at),
                None => map.remove(id),
            };
        }
    }

    /// Replaces the set (while the store opens).
    pub(super) fn replace(&self, fresh: HashMap<TokenId, i64>) {
        *self.write() = fresh;
    }
}

/// The token a revocation event revoked, and when: `None` for other events and for events of
/// versions that wrote no handle (those versions stored `revoke_ms` in the record).
pub(super) fn revoked_token(event: &RevocationEvent) -> Option<(TokenId, i64)> {
    if event.kind != RevocationKind::TokenRevoked {
        return None;
    }
    parse_handle(&event.token_handle).map(|id| (id, event.revoke_ms))
}

/// [`revoked_token`] of a stored revocation record.
pub(super) fn revoked_token_in(key: &[u8], value: &[u8]) -> StoreResult<Option<(TokenId, i64)>> {
    Ok(revoked_token(&decode_revocation(key, value)?))
}
