//! A temporary store's token records, held in memory instead of in sled.
//!
//! The etcd backend's mirror is a temporary store: nothing of it outlives the process, and a
//! token record is only ever read by its id (the token indexes are in memory already, see
//! `token_index`). sled's insert was 11% of the server's CPU samples per ApplyToken on etcd
//! (docs/benchmarks.md, "The seventh pass"); a map insert costs a fraction of it. A durable
//! store keeps its records in sled, behind the log.

use std::{
    collections::HashMap,
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use sled::IVec;

use crate::store::TokenId;

/// Token records by id.
#[derive(Default)]
pub(super) struct MemoryRecords {
    records: RwLock<HashMap<TokenId, IVec>>,
}

/// The token id of a token record's key (`t/<id:16>`), if `key` is one.
pub(super) fn token_id(key: &[u8]) -> Option<TokenId> {
    key.strip_prefix(b"t/")
        .and_then(|id| TokenId::try_from(id).ok())
}

impl MemoryRecords {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<TokenId, IVec>> {
        // A panic inside a write section can leave part of a batch written: the overlay shows
        // the whole batch until it is settled, and each record on its own is whole.
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<TokenId, IVec>> {
        self.records.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes (`Some`) or removes (`None`) the records of one batch.
    pub(super) fn apply(&self, writes: Vec<(TokenId, Option<Vec<u8>>)>) {
        if writes.is_empty() {
            return;
        }
        let mut records = self.write();
        for (id, value) in writes {
            match value {
                Some(value) => records.insert(id, IVec::from(value)),
                None => records.remove(&id),
            };
        }
    }

    /// The record of token `id`.
    pub(super) fn get(&self, id: &TokenId) -> Option<IVec> {
        self.read().get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_token_records_key_names_a_token() {
        let id: TokenId = [7; 16];
        assert_eq!(token_id(&[b"t/".as_slice(), &id].concat()), Some(id));
        assert_eq!(token_id(b"t/short"), None);
        assert_eq!(token_id(&[b"d/".as_slice(), &id].concat()), None);
    }

    #[test]
    fn a_removed_record_is_gone_and_a_rewritten_one_is_the_newest() {
        let records = MemoryRecords::default();
        let (a, b): (TokenId, TokenId) = ([1; 16], [2; 16]);
        records.apply(vec![(a, Some(b"one".to_vec())), (b, Some(b"two".to_vec()))]);
        records.apply(vec![(a, Some(b"three".to_vec())), (b, None)]);
        assert_eq!(records.get(&a).as_deref(), Some(b"three".as_slice()));
        assert_eq!(records.get(&b), None);
    }
}
