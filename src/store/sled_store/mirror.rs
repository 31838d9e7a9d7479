//! What only the etcd backend's mirror calls: a temporary store, and the single-key changes
//! the mirror makes when etcd reports them or a staged batch is undone.

use std::sync::{Arc, Mutex};

use super::{
    logged, memory, meta_key, overlay::Overlay, revision_key, token_index, token_key, SledStore,
    LAST_REV, OLDEST_REV,
};
use crate::store::{StoreResult, TokenId};

impl SledStore {
    /// A database that lives only as long as this handle (sled's temporary mode: a file that is
    /// removed on drop, never flushed): the etcd backend's local mirror.
    ///
    /// # Errors
    /// The temporary file cannot be created.
    pub(in crate::store) fn temporary() -> StoreResult<Self> {
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        Ok(Self {
            db,
            write: Mutex::new(0),
            overlay: Arc::new(Overlay::default()),
            tokens: token_index::TokenIndex::default(),
            logged: logged::LoggedRevocations::default(),
            wal: None,
            memory: Some(memory::MemoryRecords::default()),
            closed: tokio::sync::watch::channel(()).0,
        })
    }

    /// Removes one revocation from the log, below or at its end, without touching the bounds:
    /// the mirror's half of a compaction that another replica committed.
    pub(in crate::store) fn remove_revision(&self, revision: u64) -> StoreResult<()> {
        self.write_keys(vec![(revision_key(revision), None)])
    }

    /// Sets the last revision of the log: the mirror undoing an event it staged but could not
    /// commit, or taking the counter of a log whose events were all compacted.
    pub(in crate::store) fn set_last_revision(&self, last: u64) -> StoreResult<()> {
        self.write_keys(vec![(LAST_REV.to_vec(), Some(last.to_be_bytes().to_vec()))])
    }

    /// Removes a named metadata value: the mirror undoing a check value it staged but could
    /// not commit.
    pub(in crate::store) fn remove_meta(&self, name: &str) -> StoreResult<()> {
        self.write_keys(vec![(meta_key(name), None)])
    }

    /// Sets the oldest retained revision without deleting anything (the deletions arrive one
    /// by one from the shared backend).
    pub(in crate::store) fn set_oldest(&self, oldest: u64) -> StoreResult<()> {
        self.write_keys(vec![(
            OLDEST_REV.to_vec(),
            Some(oldest.to_be_bytes().to_vec()),
        )])
    }

    /// Whether token `id`'s record is stored encoded exactly as `encoded`: the watch bringing
    /// this replica's own write back finds it so, and has nothing to write.
    pub(in crate::store) fn token_record_is(
        &self,
        id: &TokenId,
        encoded: &[u8],
    ) -> StoreResult<bool> {
        Ok(self
            .get(&token_key(id))?
            .is_some_and(|v| v.as_ref() == encoded))
    }

    /// Whether revocation `revision` is stored encoded exactly as `encoded` (see
    /// [`SledStore::token_record_is`]).
    pub(in crate::store) fn revocation_record_is(
        &self,
        revision: u64,
        encoded: &[u8],
    ) -> StoreResult<bool> {
        Ok(self
            .get(&revision_key(revision))?
            .is_some_and(|v| v.as_ref() == encoded))
    }
}
