//! The sled implementation of [`Store`], in one directory: sled's database (`db/`) and the
//! write-ahead log (`wal/`).
//!
//! Atomicity and durability come from the log, not from sled: a batch is accepted into the log
//! (`wal`) and its key writes into an overlay (`overlay`) that every read consults before sled,
//! all at once; [`Store::flush`] writes and syncs the log, then hands the batches to sled as
//! plain key writes. sled is flushed at checkpoints only, and never holds a write the log
//! does not, so a start replays the log (`recovery`) to exactly the acknowledged state. A
//! temporary store (the etcd backend's mirror) has no log: a batch is written at once, behind
//! the overlay (token records to a map in memory, `memory`, the rest to sled), and nothing of
//! it outlives the process. A temporary store is never scanned for token records (the index
//! is built from them only when a durable store opens).
//!
//! Key layout, one sled tree (`be` = big-endian, so byte order is numeric order):
//! - `t/<id:16>` -> TokenRecord; its indexes and counts are in memory (`token_index`). A
//!   revocation is stored as its event only (`r/`), and laid over the record on reads
//!   (`logged`)
//! - `a/<access key id>` -> AccessKeyRecord
//! - `d/<instance>\0<client id>` -> DeviceRecord; `k/<device key id>` -> `<instance>\0<client id>`
//! - `c/<instance>` -> u64 be (credentials in the instance); `g/<instance>\0<group>` -> u64 be
//! - `r/<revision:be8>` -> RevocationRecord; `m/last_rev`, `m/oldest_rev` -> u64 be
//! - `m/x/<name>` -> bytes: named metadata (keyring check values)
//! - `m/n_devices` -> u64 be: device credentials, for the metrics, kept in the same batches as
//!   the records (counted once on first open if missing)
//! - `b/`, `i/`, `e/`: broker sessions and their indexes (see `sessions`)
//! - `s/`: the scope tombstones (see `tokens`)
//!
//! Children: `apply` (operations to key writes), `overlay`, `memory`, `wal`, `wal_record` and `prealloc`
//! (the log, its file format and the zero-filled space ahead of it), `recovery` (the replay at
//! start), `token_index` and `liveness` (the in-memory token indexes), `logged` (revocations
//! stored as events only), `tokens`, `sessions`, `mirror` (what only the etcd mirror calls).

use std::{
    ops::Bound,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::core::crypto::hex;

use super::{
    records::{AccessKeyRecord, DeviceRecord, TokenRecord},
    FlushReport, Op, RevisionBounds, Store, StoreCounts, StoreError, StoreFuture, StoreResult,
    Ticket, TokenId,
};
use crate::core::{
    access_key::AccessKey, device::RegisteredDevice, revocation::RevocationEvent, scope::Tombstone,
    token::IssuedToken, token_liveness::TokenLiveness,
};

mod apply;
mod keys;
mod liveness;
mod logged;
mod memory;
mod mirror;
mod overlay;
mod prealloc;
mod recovery;
mod sessions;
mod token_index;
mod tokens;
mod wal;
mod wal_record;

use keys::{
    decode, decode_into, decode_revocation, device_index_key, device_key, group_count_key,
    group_of, group_prefix, instance_count_key, meta_key, read_u64, revision_key, token_key,
    LAST_REV, N_DEVICES, OLDEST_REV,
};
use overlay::{Merged, Overlay};
use sled::IVec;
use wal_record::KeyWrite;

/// A [`Store`] on a sled database in one directory.
pub struct SledStore {
    db: sled::Db,
    /// Serializes every write, so what a batch read (record counters, a session to swap) is
    /// still true when it is accepted. ApplyToken writes without the core's writer lock; this
    /// adds no contention beyond a counter read. Holds the last sequence number of a temporary
    /// store (a durable store's come from its log).
    write: Mutex<u64>,
    /// Accepted writes not yet in sled (in a temporary store: a batch being written).
    overlay: Arc<Overlay>,
    /// The token indexes and counts, in memory (see `token_index`).
    tokens: token_index::TokenIndex,
    /// Revocations stored only as their events (see `logged`).
    logged: logged::LoggedRevocations,
    /// The write-ahead log; `None` for a temporary store.
    wal: Option<Arc<wal::Wal>>,
    /// A temporary store's token records, in memory rather than in sled (see `memory`).
    memory: Option<memory::MemoryRecords>,
    // Declared after `db`, so dropped after it: sled closes the database in its drop (a last
    // flush and an fsync, which can take a second on a busy disk), and only then do the
    // receivers of `closed()` hear that the store is closed.
    closed: tokio::sync::watch::Sender<()>,
}

/// Resolves once a [`SledStore`] has been dropped and its database closed.
#[derive(Debug)]
pub struct StoreClosed(tokio::sync::watch::Receiver<()>);

impl StoreClosed {
    /// Waits until the store is closed.
    pub async fn wait(mut self) {
        // Nothing is ever sent: `changed` fails exactly when the sender is dropped.
        while self.0.changed().await.is_ok() {}
    }
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    ///
    /// # Errors
    /// The directory cannot be created or the database is locked by another process or damaged.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        let config = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(256 * 1024 * 1024)
            // The log makes writes durable; sled is flushed at checkpoints (see `wal`).
            .flush_every_ms(None);
        // sled's background threads can hold the directory lock for a moment after the last
        // handle is dropped (an in-process restart); wait briefly rather than fail. Another
        // process holding it still fails, after the same bounded wait.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                // sled reports the lock failure as an `Other` I/O error with this text.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock") && attempts < 100 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let wal_dir = dir.join("wal");
        recovery::replay(&db, &wal_dir)?;
        let overlay = Arc::new(Overlay::default());
        let wal = Arc::new(wal::Wal::create(
            &wal_dir,
            db.clone(),
            overlay.clone(),
            wal::SEGMENT_BYTES,
        )?);
        let store = Self {
            db,
            write: Mutex::new(0),
            overlay,
            tokens: token_index::TokenIndex::default(),
            logged: logged::LoggedRevocations::default(),
            wal: Some(wal.clone()),
            memory: None,
            closed: tokio::sync::watch::channel(()).0,
        };
        store.count_if_uncounted()?;
        store.load_token_index()?;
        // What those wrote is durable, and in sled, before anything else happens.
        wal.flush()?;
        wal.apply_durable()?;
        Ok(store)
    }

    fn lock_write(&self) -> MutexGuard<'_, u64> {
        // A panic mid-write leaves the overlay and the log as they were before `commit` or
        // after it (a batch is accepted whole or refused), so the state is usable.
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `writes` as one atomic batch.
    pub(in crate::store) fn write_keys(&self, writes: Vec<KeyWrite>) -> StoreResult<()> {
        let mut seq = self.lock_write();
        self.commit(&mut seq, writes, &[], &[]).map(|_| ())
    }

    /// Commits `writes` as one atomic batch and returns its sequence number: accepted into
    /// the log (durable at the next flush, visible now), or for a temporary store written to
    /// sled at once. The caller holds the write lock (`seq` is what it guards).
    ///
    /// A temporary store writes key by key, not with sled's `apply_batch`, which would write
    /// out sled's IO buffer on sled's IO threads for every batch (see `wal`); the batch sits
    /// in the overlay meanwhile, so readers see all of it or none. If sled fails halfway, the
    /// batch stays in the overlay (readers keep seeing all of it) and the error is returned.
    ///
    /// The token indexes take `changes` as soon as readers can see the batch. The revocations
    /// stored as events only take `logged`'s insertions just before and its removals just
    /// after, so a token read (which looks at them first) always finds a revocation the batch
    /// moves between them and a record (see `logged`).
    fn commit(
        &self,
        seq: &mut u64,
        writes: Vec<KeyWrite>,
        changes: &[token_index::Change],
        logged: &[logged::Update],
    ) -> StoreResult<u64> {
        self.logged.insert(logged);
        if let Some(wal) = &self.wal {
            let accepted = match wal.accept(writes) {
                Ok(accepted) => accepted,
                Err(e) => {
                    self.logged.undo_insert(logged);
                    return Err(e);
                }
            };
            self.tokens.apply(changes);
            self.logged.remove(logged);
            return Ok(accepted);
        }
        *seq += 1;
        self.overlay.put(*seq, &writes);
        self.tokens.apply(changes);
        self.logged.remove(logged);
        let mut keys = Vec::with_capacity(writes.len());
        let mut records = Vec::new();
        for (key, value) in writes {
            match (&self.memory, memory::token_id(&key)) {
                (Some(_), Some(id)) => records.push((id, value)),
                (_, _) => match value {
                    Some(value) => self.db.insert(&key, value).map(|_| ())?,
                    None => self.db.remove(&key).map(|_| ())?,
                },
            }
            keys.push(key);
        }
        if let Some(memory) = &self.memory {
            memory.apply(records);
        }
        self.overlay.settle(*seq, keys.into_iter());
        Ok(*seq)
    }

    /// The sequence number of the last batch committed.
    fn last_committed(&self, seq: &u64) -> u64 {
        self.wal.as_ref().map_or(*seq, |wal| wal.last_accepted())
    }

    /// Counts the records once for a database written before the counters existed.
    fn count_if_uncounted(&self) -> StoreResult<()> {
        if self.get(N_DEVICES)?.is_some() {
            return Ok(());
        }
        let mut devices = 0u64;
        for item in self.scan_prefix(b"c/") {
            let (key, value) = item?;
            devices += read_u64(&key, &value)?;
        }
        self.write_keys(vec![(
            N_DEVICES.to_vec(),
            Some(devices.to_be_bytes().to_vec()),
        )])
    }

    /// A future that resolves once this store has been dropped (by whoever holds it last)
    /// and the database is closed, so a shutdown can wait for the close it causes.
    pub fn closed(&self) -> StoreClosed {
        StoreClosed(self.closed.subscribe())
    }

    fn get_u64(&self, key: &[u8]) -> StoreResult<u64> {
        match self.get(key)? {
            Some(v) => read_u64(key, &v),
            None => Ok(0),
        }
    }

    /// The value of `key`, writes not yet in sled included.
    fn get(&self, key: &[u8]) -> StoreResult<Option<IVec>> {
        if let Some(pending) = self.overlay.get(key) {
            return Ok(pending);
        }
        match (&self.memory, memory::token_id(key)) {
            (Some(memory), Some(id)) => Ok(memory.get(&id)),
            _ => Ok(self.db.get(key)?),
        }
    }

    /// The entries whose keys start with `prefix`, in order, writes not yet in sled included.
    fn scan_prefix(&self, prefix: &[u8]) -> Merged {
        let end = overlay::prefix_end(prefix);
        self.overlay
            .scan(&self.db, Bound::Included(prefix), end.as_deref())
    }

    /// The entries from `from` (inclusive) to the end of `prefix`, in order.
    fn scan_from(&self, from: &[u8], prefix: &[u8]) -> Merged {
        let end = overlay::prefix_end(prefix);
        self.overlay
            .scan(&self.db, Bound::Included(from), end.as_deref())
    }
}

impl Store for SledStore {
    fn token(&self, id: &TokenId) -> StoreResult<Option<IssuedToken>> {
        // The revocations stored as events first: a compaction that moves one into the
        // record makes the record visible before it drops it here (see `commit`).
        let logged = self.logged.at(id);
        let key = token_key(id);
        let Some(value) = self.get(&key)? else {
            return Ok(None);
        };
        let mut token: IssuedToken = decode_into::<TokenRecord, _>(&key, &value)?;
        if token.revoked_ms.is_none() {
            token.revoked_ms = logged;
        }
        Ok(Some(token))
    }

    fn token_liveness(&self, id: &TokenId) -> StoreResult<Option<TokenLiveness>> {
        // The index is changed with every batch as it becomes visible, revocations stored as
        // events included (`apply`), and rebuilt from the records and the log at open.
        Ok(self.tokens.liveness(id))
    }

    fn expired_tokens(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<(TokenId, i64)>> {
        Ok(self.tokens.expired(now_ms, limit))
    }

    fn newest_token_expiry(&self) -> StoreResult<Option<i64>> {
        Ok(self.tokens.newest_expiry())
    }

    fn instance_tokens(
        &self,
        instance_id: &str,
        creator: Option<&str>,
        after: Option<(&str, &TokenId)>,
        limit: usize,
    ) -> StoreResult<Vec<(TokenId, IssuedToken)>> {
        self.list_instance_tokens(instance_id, creator, after, limit)
    }

    fn tombstones(&self) -> StoreResult<Vec<Tombstone>> {
        self.stored_tombstones()
    }

    fn access_keys(&self) -> StoreResult<Vec<AccessKey>> {
        self.scan_prefix(b"a/")
            .map(|item| {
                let (k, v) = item?;
                decode_into::<AccessKeyRecord, _>(&k, &v)
            })
            .collect()
    }

    fn access_key(&self, id: &str) -> StoreResult<Option<AccessKey>> {
        let key = [b"a/".as_slice(), id.as_bytes()].concat();
        self.get(&key)?
            .map(|v| decode_into::<AccessKeyRecord, _>(&key, &v))
            .transpose()
    }

    fn device(&self, instance_id: &str, client_id: &str) -> StoreResult<Option<RegisteredDevice>> {
        let key = device_key(instance_id, client_id);
        self.get(&key)?
            .map(|v| decode_into::<DeviceRecord, _>(&key, &v))
            .transpose()
    }

    fn device_by_key(&self, device_key_id: &str) -> StoreResult<Option<RegisteredDevice>> {
        let Some(target) = self.get(&device_index_key(device_key_id))? else {
            return Ok(None);
        };
        let mut key = b"d/".to_vec();
        key.extend_from_slice(&target);
        self.get(&key)?
            .map(|v| decode_into::<DeviceRecord, _>(&key, &v))
            .transpose()
    }

    fn device_count(&self, instance_id: &str) -> StoreResult<u64> {
        self.get_u64(&instance_count_key(instance_id))
    }

    fn group_count(&self, instance_id: &str, group_id: &str) -> StoreResult<u64> {
        self.get_u64(&group_count_key(instance_id, group_id))
    }

    fn device_client_ids(
        &self,
        instance_id: &str,
        group_id: &str,
        after: Option<&str>,
        skip: usize,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let prefix = group_prefix(instance_id, group_id);
        let strip = device_key(instance_id, "").len();
        // Both scans stay inside the group's prefix, so a huge `skip` ends at the group's end.
        let iter: Box<dyn Iterator<Item = StoreResult<(IVec, IVec)>>> = match after {
            Some(after) => {
                let mut start = device_key(instance_id, after);
                start.push(0); // strictly after
                Box::new(self.scan_from(&start, &prefix))
            }
            None => Box::new(self.scan_prefix(&prefix).skip(skip)),
        };
        let mut out = Vec::with_capacity(limit);
        for item in iter {
            let (key, _) = item?;
            if !key.starts_with(&prefix) || out.len() == limit {
                break;
            }
            let client =
                String::from_utf8(key[strip..].to_vec()).map_err(|_| StoreError::Corrupt {
                    key: hex(&key),
                    reason: "client id is not UTF-8".into(),
                })?;
            out.push(client);
        }
        Ok(out)
    }

    fn revocations(&self, from: u64, limit: usize) -> StoreResult<Vec<RevocationEvent>> {
        self.scan_from(&revision_key(from), b"r/")
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                decode_revocation(&k, &v)
            })
            .collect()
    }

    fn revision_bounds(&self) -> StoreResult<RevisionBounds> {
        let last = self.get_u64(LAST_REV)?;
        let oldest = match self.get(OLDEST_REV)? {
            Some(v) => read_u64(OLDEST_REV, &v)?,
            None => 1,
        };
        Ok(RevisionBounds { oldest, last })
    }

    fn apply(&self, ops: Vec<Op>) -> StoreResult<Ticket> {
        // The batch's sequence number is its ticket: increasing, so a failed flush fails
        // exactly the batches applied before it.
        self.apply_now(ops)
    }

    fn meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.get(&meta_key(name))?.map(|v| v.to_vec()))
    }

    fn flush(&self) -> StoreFuture<'_, FlushReport> {
        // A temporary store has nothing to make durable.
        let Some(wal) = self.wal.clone() else {
            return Box::pin(std::future::ready(Ok(FlushReport::ALL_DURABLE)));
        };
        Box::pin(async move {
            // A write and an fdatasync, then sled's inserts: off the async threads. The
            // writers hear as soon as their batches are durable; sled's inserts follow on the
            // same thread while they answer their clients and the next flush starts.
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::task::spawn_blocking(move || {
                let flushed = wal.flush();
                let ok = flushed.is_ok();
                if ok && wal.behind() {
                    // sled cannot keep up: catch up before answering, which slows the writers.
                    let _ = wal.apply_durable();
                }
                // A flush nobody waits for any more (shutdown) still gets applied.
                let _ = tx.send(flushed);
                if ok {
                    // A failure stops the log and is logged there; this flush stands.
                    let _ = wal.apply_durable();
                }
            });
            match rx.await {
                Ok(Ok(through)) => Ok(FlushReport {
                    durable_through: through,
                    failure: None,
                }),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(StoreError::Backend(
                    "the flush task ended unanswered".into(),
                )),
            }
        })
    }

    fn size_on_disk(&self) -> StoreResult<u64> {
        let log = self.wal.as_ref().map_or(0, |wal| wal.size_on_disk());
        Ok(self.db.size_on_disk()? + log)
    }

    fn counts(&self) -> StoreResult<StoreCounts> {
        let (tokens, revoked_tokens) = self.tokens.counts();
        Ok(StoreCounts {
            tokens,
            revoked_tokens,
            device_credentials: self.get_u64(N_DEVICES)?,
        })
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Whatever was accepted reaches the log and sled, and sled is flushed before the log
        // files go, so a clean stop leaves nothing for the next start to replay.
        if let Some(wal) = &self.wal {
            if let Err(e) = wal.close() {
                tracing::error!(error = %e, "closing the store: the last writes could not be made durable");
            }
        }
    }
}

#[cfg(test)]
mod tests;
