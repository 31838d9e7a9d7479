//! The token side of the sled store: one record per token (`t/<id:16>`, in the parent), the
//! in-memory indexes built from those records when the store opens (`token_index`) with the
//! revocations stored as events only (`logged`), and the scope tombstones. Keys, in the same tree as everything else:
//! - `s/<instance>\0<key id>` -> TombstoneRecord (empty key id: the instance-wide scope;
//!   instance ids and access key ids never contain NUL)
//!
//! Versions before the in-memory indexes kept them on disk (`x/<expiry:be8><id>` and
//! `l/<instance>\0<creator>\0<id>`, with `m/token_index`, `m/n_tokens`, `m/n_revoked`): they
//! are removed when such a database is first opened.

use std::collections::HashMap;

use prost::Message;

use super::{
    decode_into, hex, logged::revoked_token_in, token_index::Indexed, wal_record::KeyWrite,
    SledStore,
};
use crate::core::{scope::Tombstone, token::IssuedToken};
use crate::store::{
    records::{TokenRecord, TombstoneRecord},
    Store, StoreError, StoreResult, TokenId,
};

/// Keys of the on-disk token indexes of earlier versions, removed on open.
const OLD_META: [&[u8]; 3] = [b"m/token_index", b"m/n_tokens", b"m/n_revoked"];
/// Keys removed per batch when clearing the old indexes.
const INDEX_BATCH: usize = 10_000;

/// The key of a scope's tombstone.
pub(super) fn tombstone_key(instance_id: &str, key_id: Option<&str>) -> Vec<u8> {
    [
        b"s/",
        instance_id.as_bytes(),
        b"\0",
        key_id.unwrap_or("").as_bytes(),
    ]
    .concat()
}

/// The tombstone record of `t`, encoded.
pub(super) fn encode_tombstone(t: &Tombstone) -> Vec<u8> {
    TombstoneRecord::from(t).encode_to_vec()
}

impl SledStore {
    /// Builds the in-memory token indexes from the records, after removing the on-disk
    /// indexes and counters that versions before them kept (once).
    pub(super) fn load_token_index(&self) -> StoreResult<()> {
        for prefix in [b"x/".as_slice(), b"l/".as_slice()] {
            loop {
                let stale: Vec<KeyWrite> = self
                    .scan_prefix(prefix)
                    .take(INDEX_BATCH)
                    .map(|item| item.map(|(key, _)| (key.to_vec(), None)))
                    .collect::<StoreResult<_>>()?;
                if stale.is_empty() {
                    break;
                }
                self.write_keys(stale)?;
            }
        }
        let mut old_meta: Vec<KeyWrite> = Vec::new();
        for key in OLD_META {
            if self.get(key)?.is_some() {
                old_meta.push((key.to_vec(), None));
            }
        }
        if !old_meta.is_empty() {
            self.write_keys(old_meta)?;
        }
        // The revocations stored as events only, kept for the tokens still stored.
        let mut in_log = HashMap::new();
        for item in self.scan_prefix(b"r/") {
            let (key, value) = item?;
            if let Some((id, at)) = revoked_token_in(&key, &value)? {
                in_log.insert(id, at);
            }
        }
        let mut logged = HashMap::new();
        self.tokens.rebuild(self.scan_prefix(b"t/").map(|item| {
            let (key, value) = item?;
            let id: TokenId = key[2..].try_into().map_err(|_| StoreError::Corrupt {
                key: hex(&key),
                reason: "bad token key".into(),
            })?;
            let mut record: IssuedToken = decode_into::<TokenRecord, _>(&key, &value)?;
            if record.revoked_ms.is_none() {
                if let Some(&at) = in_log.get(&id) {
                    record.revoked_ms = Some(at);
                    logged.insert(id, at);
                }
            }
            Ok::<_, StoreError>((id, Indexed::from(&record)))
        }))?;
        self.logged.replace(logged);
        Ok(())
    }

    pub(super) fn list_instance_tokens(
        &self,
        instance_id: &str,
        creator: Option<&str>,
        after: Option<(&str, &TokenId)>,
        limit: usize,
    ) -> StoreResult<Vec<(TokenId, IssuedToken)>> {
        let mut out = Vec::with_capacity(limit.min(1024));
        for (_, id) in self.tokens.owned(instance_id, creator, after, limit) {
            // Removed from the index with its record; one deleted since the index was read is
            // simply not listed.
            if let Some(token) = self.token(&id)? {
                out.push((id, token));
            }
        }
        Ok(out)
    }

    pub(super) fn stored_tombstones(&self) -> StoreResult<Vec<Tombstone>> {
        self.scan_prefix(b"s/")
            .map(|item| {
                let (k, v) = item?;
                decode_into::<TombstoneRecord, _>(&k, &v)
            })
            .collect()
    }
}
