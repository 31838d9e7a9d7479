//! The sled implementation of [`Store`]. Everything lives in one sled tree under short key
//! prefixes, because a sled batch is atomic only within one tree and every multi-record write
//! (a revocation and its log entry, a credential and its counters) must be atomic.
//!
//! Key layout (`be` = big-endian, so byte order is numeric order):
//! - `t/<id:16>` -> TokenRecord; `x/<expire_ms:be8><id:16>` -> () expiry index
//! - `a/<access key id>` -> AccessKeyRecord
//! - `d/<instance>\0<client id>` -> DeviceRecord; `k/<device key id>` -> `<instance>\0<client id>`
//! - `c/<instance>` -> u64 be (credentials in the instance); `g/<instance>\0<group>` -> u64 be
//! - `r/<revision:be8>` -> RevocationRecord; `m/last_rev`, `m/oldest_rev` -> u64 be
//! - `m/x/<name>` -> bytes: named metadata (keyring check values)
//! - `m/n_tokens`, `m/n_revoked`, `m/n_devices` -> u64 be: record counts for the metrics,
//!   kept in the same batches as the records (counted once on first open if missing)
//! - `b/`, `i/`, `e/`: broker sessions and their indexes (see `sessions`)
//! - `l/`, `s/`: the token listing index and the scope tombstones (see `tokens`)
//!
//! Durability: a batch is accepted into the write-ahead log (`wal`), whose overlay every read
//! consults first; [`Store::flush`] syncs the log and then hands the batches to sled, which is
//! flushed only at checkpoints. A temporary store (the etcd backend's mirror) has no log and
//! writes sled batches directly: nothing of it outlives the process.

use std::{
    ops::Bound,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use prost::Message;

use crate::core::crypto::hex;

use super::{
    records::{AccessKeyRecord, DeviceRecord, RevocationRecord, TokenRecord},
    FlushReport, Op, RevisionBounds, Store, StoreCounts, StoreError, StoreFuture, StoreResult,
    Ticket, TokenId,
};
use crate::core::{
    access_key::AccessKey, device::RegisteredDevice, revocation::RevocationEvent, scope::Tombstone,
    token::IssuedToken,
};

mod apply;
mod overlay;
mod recovery;
mod sessions;
mod token_index;
mod tokens;
mod wal;
mod wal_record;

use overlay::{Merged, Overlay};
use sled::IVec;
use wal_record::KeyWrite;

const LAST_REV: &[u8] = b"m/last_rev";
const OLDEST_REV: &[u8] = b"m/oldest_rev";
const N_DEVICES: &[u8] = b"m/n_devices";

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
    /// The write-ahead log; `None` for a temporary store.
    wal: Option<Arc<wal::Wal>>,
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

fn decode<M: Message + Default>(key: &[u8], bytes: &[u8]) -> StoreResult<M> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt {
        key: hex(key),
        reason: e.to_string(),
    })
}

/// Decodes a record and converts it to the core's type.
fn decode_into<M: Message + Default, T: From<M>>(key: &[u8], bytes: &[u8]) -> StoreResult<T> {
    decode::<M>(key, bytes).map(T::from)
}

fn decode_revocation(key: &[u8], bytes: &[u8]) -> StoreResult<RevocationEvent> {
    RevocationEvent::try_from(decode::<RevocationRecord>(key, bytes)?).map_err(|reason| {
        StoreError::Corrupt {
            key: hex(key),
            reason,
        }
    })
}

fn read_u64(key: &[u8], bytes: &[u8]) -> StoreResult<u64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        key: hex(key),
        reason: format!("expected 8 bytes, found {}", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}

fn token_key(id: &TokenId) -> Vec<u8> {
    [b"t/".as_slice(), id].concat()
}

fn device_key(instance_id: &str, client_id: &str) -> Vec<u8> {
    [b"d/", instance_id.as_bytes(), b"\0", client_id.as_bytes()].concat()
}

fn group_prefix(instance_id: &str, group_id: &str) -> Vec<u8> {
    // Client ids are `<group>@@@<device>`, so a group's credentials share this prefix.
    [
        b"d/",
        instance_id.as_bytes(),
        b"\0",
        group_id.as_bytes(),
        b"@@@",
    ]
    .concat()
}

fn device_index_key(device_key_id: &str) -> Vec<u8> {
    [b"k/", device_key_id.as_bytes()].concat()
}

fn instance_count_key(instance_id: &str) -> Vec<u8> {
    [b"c/", instance_id.as_bytes()].concat()
}

fn group_count_key(instance_id: &str, group_id: &str) -> Vec<u8> {
    [b"g/", instance_id.as_bytes(), b"\0", group_id.as_bytes()].concat()
}

fn group_of(client_id: &str) -> &str {
    client_id.split("@@@").next().unwrap_or(client_id)
}

fn meta_key(name: &str) -> Vec<u8> {
    [b"m/x/", name.as_bytes()].concat()
}

fn revision_key(revision: u64) -> Vec<u8> {
    [b"r/".as_slice(), &revision.to_be_bytes()].concat()
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
            wal: Some(wal.clone()),
            closed: tokio::sync::watch::channel(()).0,
        };
        store.count_if_uncounted()?;
        store.load_token_index()?;
        // What those wrote is durable before anything else happens.
        wal.flush()?;
        Ok(store)
    }

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
            wal: None,
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

    fn lock_write(&self) -> MutexGuard<'_, u64> {
        // A panic mid-write leaves sled and the log as they were before `commit` or after it
        // (sled's batch is atomic and the log append cannot fail), so the state is usable.
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `writes` as one atomic batch.
    pub(in crate::store) fn write_keys(&self, writes: Vec<KeyWrite>) -> StoreResult<()> {
        let mut seq = self.lock_write();
        self.commit(&mut seq, writes).map(|_| ())
    }

    /// Commits `writes` as one atomic batch and returns its sequence number: accepted into
    /// the log (durable at the next flush, visible now), or for a temporary store written to
    /// sled at once. The caller holds the write lock (`seq` is what it guards).
    ///
    /// A temporary store writes key by key, not with sled's `apply_batch`, which would write
    /// out sled's IO buffer on sled's IO threads for every batch (see `wal`); the batch sits
    /// in the overlay meanwhile, so readers see all of it or none. If sled fails halfway, the
    /// batch stays in the overlay (readers keep seeing all of it) and the error is returned.
    fn commit(&self, seq: &mut u64, writes: Vec<KeyWrite>) -> StoreResult<u64> {
        if let Some(wal) = &self.wal {
            return Ok(wal.accept(writes));
        }
        *seq += 1;
        self.overlay.put(*seq, &writes);
        let mut keys = Vec::with_capacity(writes.len());
        for (key, value) in writes {
            match value {
                Some(value) => self.db.insert(&key, value).map(|_| ())?,
                None => self.db.remove(&key).map(|_| ())?,
            }
            keys.push(key);
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
        match self.overlay.get(key) {
            Some(pending) => Ok(pending),
            None => Ok(self.db.get(key)?),
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
        let key = token_key(id);
        self.get(&key)?
            .map(|v| decode_into::<TokenRecord, _>(&key, &v))
            .transpose()
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
            // A write and an fdatasync: off the async threads.
            match tokio::task::spawn_blocking(move || wal.flush()).await {
                Ok(Ok(through)) => Ok(FlushReport {
                    durable_through: through,
                    failure: None,
                }),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(StoreError::Backend(format!("flush task failed: {e}"))),
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
        // Whatever was accepted reaches the log and sled before sled closes (its own drop
        // flushes it), so a clean stop leaves nothing for the next start to replay.
        if let Some(wal) = &self.wal {
            if let Err(e) = wal.flush() {
                tracing::error!(error = %e, "closing the store: the last writes could not be made durable");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_stored_revocation_kind_is_a_corrupt_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        let record = RevocationRecord {
            revision: 1,
            kind: 99,
            ..RevocationRecord::default()
        };
        store
            .db
            .insert(revision_key(1), record.encode_to_vec())
            .expect("insert");
        match store.revocations(1, 10) {
            Err(StoreError::Corrupt { key, reason }) => {
                assert_eq!(key, hex(&revision_key(1)));
                assert!(reason.contains("unknown revocation kind 99"), "{reason}");
            }
            other => panic!("expected a corrupt record, got {other:?}"),
        }
    }

    #[test]
    fn a_database_with_the_old_on_disk_token_indexes_loses_them_and_keeps_its_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id: TokenId = [7; 16];
        let record = TokenRecord {
            instance_id: "i1".into(),
            creator: "k1".into(),
            expire_ms: 5_000,
            read: true,
            ..TokenRecord::default()
        };
        {
            // What an earlier version left: the record, its two index entries and counters.
            let db = sled::Config::new()
                .path(dir.path().join("db"))
                .open()
                .expect("sled opens");
            db.insert(token_key(&id), record.encode_to_vec())
                .expect("insert");
            db.insert(
                [b"x/".as_slice(), &5_000u64.to_be_bytes(), &id].concat(),
                b"",
            )
            .expect("insert");
            db.insert([b"l/i1\0k1\0".as_slice(), &id].concat(), b"")
                .expect("insert");
            for key in ["m/token_index", "m/n_tokens", "m/n_revoked"] {
                db.insert(key, &1u64.to_be_bytes()).expect("insert");
            }
            db.flush().expect("flush");
        }
        let store = SledStore::open(dir.path()).expect("open");
        assert_eq!(
            store.expired_tokens(i64::MAX, 10).unwrap(),
            vec![(id, 5_000)]
        );
        assert_eq!(
            store.instance_tokens("i1", None, None, 10).unwrap().len(),
            1
        );
        assert_eq!(store.counts().unwrap().tokens, 1);
        for prefix in [b"x/".as_slice(), b"l/".as_slice()] {
            assert_eq!(
                store.db.scan_prefix(prefix).count(),
                0,
                "old index entries are gone"
            );
        }
        assert!(store.db.get("m/n_tokens").expect("read").is_none());
    }
}
