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

use std::{path::Path, sync::Mutex};

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

mod sessions;
mod tokens;

const LAST_REV: &[u8] = b"m/last_rev";
const OLDEST_REV: &[u8] = b"m/oldest_rev";
const N_TOKENS: &[u8] = b"m/n_tokens";
const N_REVOKED: &[u8] = b"m/n_revoked";
const N_DEVICES: &[u8] = b"m/n_devices";

/// A [`Store`] on a sled database in one directory.
pub struct SledStore {
    db: sled::Db,
    /// Serializes `apply`, so counters read and written inside a batch never race. ApplyToken
    /// writes without the core's writer lock; sled's `apply_batch` already takes a global
    /// write lock, so this adds no contention beyond a counter read.
    write: Mutex<()>,
    /// The last ticket handed out by `apply`.
    tickets: std::sync::atomic::AtomicU64,
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

fn expiry_key(expire_ms: i64, id: &TokenId) -> Vec<u8> {
    // Negative expiries cannot be written (validation), but clamp so the order stays sane.
    let at = u64::try_from(expire_ms).unwrap_or(0);
    [b"x/".as_slice(), &at.to_be_bytes(), id].concat()
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
            .cache_capacity(256 * 1024 * 1024);
        // sled's background threads can hold the directory lock for a moment after the last
        // handle is dropped (an in-process restart); wait briefly rather than fail. Another
        // process holding it still fails, after the same bounded wait.
        let mut attempts = 0;
        loop {
            match config.open() {
                Ok(db) => {
                    let store = Self {
                        db,
                        write: Mutex::new(()),
                        tickets: std::sync::atomic::AtomicU64::new(0),
                        closed: tokio::sync::watch::channel(()).0,
                    };
                    store.count_if_uncounted()?;
                    store.index_if_unindexed()?;
                    return Ok(store);
                }
                // sled reports the lock failure as an `Other` I/O error with this text.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock") && attempts < 100 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
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
            write: Mutex::new(()),
            tickets: std::sync::atomic::AtomicU64::new(0),
            closed: tokio::sync::watch::channel(()).0,
        })
    }

    /// Removes one revocation from the log, below or at its end, without touching the bounds:
    /// the mirror's half of a compaction that another replica committed.
    pub(in crate::store) fn remove_revision(&self, revision: u64) -> StoreResult<()> {
        self.db.remove(revision_key(revision))?;
        Ok(())
    }

    /// Sets the last revision of the log: the mirror undoing an event it staged but could not
    /// commit, or taking the counter of a log whose events were all compacted.
    pub(in crate::store) fn set_last_revision(&self, last: u64) -> StoreResult<()> {
        self.db.insert(LAST_REV, &last.to_be_bytes())?;
        Ok(())
    }

    /// Removes a named metadata value: the mirror undoing a check value it staged but could
    /// not commit.
    pub(in crate::store) fn remove_meta(&self, name: &str) -> StoreResult<()> {
        self.db.remove(meta_key(name))?;
        Ok(())
    }

    /// Sets the oldest retained revision without deleting anything (the deletions arrive one
    /// by one from the shared backend).
    pub(in crate::store) fn set_oldest(&self, oldest: u64) -> StoreResult<()> {
        self.db.insert(OLDEST_REV, &oldest.to_be_bytes())?;
        Ok(())
    }

    /// Counts the records once for a database written before the counters existed.
    fn count_if_uncounted(&self) -> StoreResult<()> {
        if self.db.contains_key(N_TOKENS)? {
            return Ok(());
        }
        let (mut tokens, mut revoked, mut devices) = (0u64, 0u64, 0u64);
        for item in self.db.scan_prefix(b"t/") {
            let (key, value) = item?;
            tokens += 1;
            if decode::<TokenRecord>(&key, &value)?.revoke_ms != 0 {
                revoked += 1;
            }
        }
        for item in self.db.scan_prefix(b"c/") {
            let (key, value) = item?;
            devices += read_u64(&key, &value)?;
        }
        let mut batch = sled::Batch::default();
        batch.insert(N_TOKENS, &tokens.to_be_bytes());
        batch.insert(N_REVOKED, &revoked.to_be_bytes());
        batch.insert(N_DEVICES, &devices.to_be_bytes());
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// A future that resolves once this store has been dropped (by whoever holds it last)
    /// and the database is closed, so a shutdown can wait for the close it causes.
    pub fn closed(&self) -> StoreClosed {
        StoreClosed(self.closed.subscribe())
    }

    fn get_u64(&self, key: &[u8]) -> StoreResult<u64> {
        match self.db.get(key)? {
            Some(v) => read_u64(key, &v),
            None => Ok(0),
        }
    }

    /// Adds `delta` to a counter inside `batch`, reading the current value; `apply` holds
    /// the write lock, and `pending` carries counters already changed earlier in the batch.
    fn bump(
        &self,
        batch: &mut sled::Batch,
        pending: &mut Vec<(Vec<u8>, u64)>,
        key: Vec<u8>,
        delta: i64,
    ) -> StoreResult<()> {
        let current = match pending.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => *v,
            None => self.get_u64(&key)?,
        };
        let next = current.saturating_add_signed(delta);
        batch.insert(key.clone(), &next.to_be_bytes());
        match pending.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = next,
            None => pending.push((key, next)),
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn token(&self, id: &TokenId) -> StoreResult<Option<IssuedToken>> {
        let key = token_key(id);
        self.db
            .get(&key)?
            .map(|v| decode_into::<TokenRecord, _>(&key, &v))
            .transpose()
    }

    fn expired_tokens(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<(TokenId, i64)>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(b"x/").take(limit) {
            let (key, _) = item?;
            let rest = &key[2..];
            let (at, id) = rest.split_at(8.min(rest.len()));
            let at = read_u64(&key, at)?;
            if at > u64::try_from(now_ms).unwrap_or(0) {
                break;
            }
            let id: TokenId = id.try_into().map_err(|_| StoreError::Corrupt {
                key: hex(&key),
                reason: "bad expiry index key".into(),
            })?;
            out.push((id, i64::try_from(at).unwrap_or(i64::MAX)));
        }
        Ok(out)
    }

    fn newest_token_expiry(&self) -> StoreResult<Option<i64>> {
        self.latest_expiry()
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
        self.db
            .scan_prefix(b"a/")
            .map(|item| {
                let (k, v) = item?;
                decode_into::<AccessKeyRecord, _>(&k, &v)
            })
            .collect()
    }

    fn device(&self, instance_id: &str, client_id: &str) -> StoreResult<Option<RegisteredDevice>> {
        let key = device_key(instance_id, client_id);
        self.db
            .get(&key)?
            .map(|v| decode_into::<DeviceRecord, _>(&key, &v))
            .transpose()
    }

    fn device_by_key(&self, device_key_id: &str) -> StoreResult<Option<RegisteredDevice>> {
        let Some(target) = self.db.get(device_index_key(device_key_id))? else {
            return Ok(None);
        };
        let mut key = b"d/".to_vec();
        key.extend_from_slice(&target);
        self.db
            .get(&key)?
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
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match after {
            Some(after) => {
                let mut start = device_key(instance_id, after);
                start.push(0); // strictly after
                Box::new(self.db.range(start..))
            }
            None => Box::new(self.db.scan_prefix(prefix.clone()).skip(skip)),
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
        self.db
            .range(revision_key(from)..revision_key(u64::MAX))
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                decode_revocation(&k, &v)
            })
            .collect()
    }

    fn revision_bounds(&self) -> StoreResult<RevisionBounds> {
        let last = self.get_u64(LAST_REV)?;
        let oldest = match self.db.get(OLDEST_REV)? {
            Some(v) => read_u64(OLDEST_REV, &v)?,
            None => 1,
        };
        Ok(RevisionBounds { oldest, last })
    }

    fn apply(&self, ops: Vec<Op>) -> StoreResult<Ticket> {
        use std::sync::atomic::Ordering;
        if ops.is_empty() {
            return Ok(self.tickets.load(Ordering::SeqCst));
        }
        self.apply_now(ops)?;
        // Increasing, so a failed flush fails exactly the batches applied before it.
        Ok(self.tickets.fetch_add(1, Ordering::SeqCst) + 1)
    }

    fn meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.db.get(meta_key(name))?.map(|v| v.to_vec()))
    }

    fn flush(&self) -> StoreFuture<'_, FlushReport> {
        let db = self.db.clone();
        Box::pin(async move {
            // sled's flush blocks (a write and an fsync): off the async threads.
            match tokio::task::spawn_blocking(move || db.flush()).await {
                Ok(Ok(_)) => Ok(FlushReport::ALL_DURABLE),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(StoreError::Backend(format!("flush task failed: {e}"))),
            }
        })
    }

    fn size_on_disk(&self) -> StoreResult<u64> {
        Ok(self.db.size_on_disk()?)
    }

    fn counts(&self) -> StoreResult<StoreCounts> {
        Ok(StoreCounts {
            tokens: self.get_u64(N_TOKENS)?,
            revoked_tokens: self.get_u64(N_REVOKED)?,
            device_credentials: self.get_u64(N_DEVICES)?,
        })
    }
}

impl SledStore {
    /// [`Store::apply`]: one atomic sled batch, counters included.
    pub(in crate::store) fn apply_now(&self, ops: Vec<Op>) -> StoreResult<()> {
        let _write = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = sled::Batch::default();
        let mut counters = Vec::new();
        for op in ops {
            match op {
                Op::PutToken(id, rec) => {
                    let existing = self.token(&id)?;
                    let existed = existing.is_some();
                    let was_revoked = existing.is_some_and(|t| t.revoked_ms.is_some());
                    if !existed {
                        self.bump(&mut batch, &mut counters, N_TOKENS.to_vec(), 1)?;
                    }
                    let revoked = i64::from(rec.revoked_ms.is_some()) - i64::from(was_revoked);
                    if revoked != 0 {
                        self.bump(&mut batch, &mut counters, N_REVOKED.to_vec(), revoked)?;
                    }
                    batch.insert(expiry_key(rec.expire_ms, &id), &[]);
                    batch.insert(
                        tokens::listing_key(&rec.instance_id, &rec.creator, &id),
                        &[],
                    );
                    batch.insert(token_key(&id), TokenRecord::from(&rec).encode_to_vec());
                }
                Op::DeleteToken(id, expire_ms) => {
                    if let Some(existing) = self.token(&id)? {
                        self.bump(&mut batch, &mut counters, N_TOKENS.to_vec(), -1)?;
                        if existing.revoked_ms.is_some() {
                            self.bump(&mut batch, &mut counters, N_REVOKED.to_vec(), -1)?;
                        }
                        batch.remove(tokens::listing_key(
                            &existing.instance_id,
                            &existing.creator,
                            &id,
                        ));
                    }
                    batch.remove(expiry_key(expire_ms, &id));
                    batch.remove(token_key(&id));
                }
                Op::PutTombstone(t) => batch.insert(
                    tokens::tombstone_key(&t.instance_id, t.key_id.as_deref()),
                    tokens::encode_tombstone(&t),
                ),
                Op::DeleteTombstone {
                    instance_id,
                    key_id,
                } => batch.remove(tokens::tombstone_key(&instance_id, key_id.as_deref())),
                Op::PutAccessKey(rec) => {
                    let value = AccessKeyRecord::from(&rec).encode_to_vec();
                    batch.insert([b"a/", rec.id.as_bytes()].concat(), value);
                }
                Op::DeleteAccessKey(id) => batch.remove([b"a/", id.as_bytes()].concat()),
                Op::PutDevice { record, replaces } => {
                    let dkey = device_key(&record.instance_id, &record.client_id);
                    match replaces {
                        Some(old) => batch.remove(device_index_key(&old)),
                        None => {
                            self.bump(&mut batch, &mut counters, N_DEVICES.to_vec(), 1)?;
                            self.bump(
                                &mut batch,
                                &mut counters,
                                instance_count_key(&record.instance_id),
                                1,
                            )?;
                            self.bump(
                                &mut batch,
                                &mut counters,
                                group_count_key(&record.instance_id, group_of(&record.client_id)),
                                1,
                            )?;
                        }
                    }
                    batch.insert(device_index_key(&record.device_key_id), &dkey[2..]);
                    batch.insert(dkey, DeviceRecord::from(&record).encode_to_vec());
                }
                Op::DeleteDevice(record) => {
                    batch.remove(device_key(&record.instance_id, &record.client_id));
                    batch.remove(device_index_key(&record.device_key_id));
                    self.bump(&mut batch, &mut counters, N_DEVICES.to_vec(), -1)?;
                    self.bump(
                        &mut batch,
                        &mut counters,
                        instance_count_key(&record.instance_id),
                        -1,
                    )?;
                    self.bump(
                        &mut batch,
                        &mut counters,
                        group_count_key(&record.instance_id, group_of(&record.client_id)),
                        -1,
                    )?;
                }
                Op::AppendRevocation(rec) => {
                    batch.insert(LAST_REV, &rec.revision.to_be_bytes());
                    let value = RevocationRecord::from(&rec).encode_to_vec();
                    batch.insert(revision_key(rec.revision), value);
                }
                Op::PutMeta(name, value) => batch.insert(meta_key(&name), value),
                Op::CompactRevocationsBelow(below) => {
                    let oldest = self.revision_bounds()?.oldest;
                    for rev in oldest..below {
                        batch.remove(revision_key(rev));
                    }
                    batch.insert(OLDEST_REV, &below.to_be_bytes());
                }
            }
        }
        self.db.apply_batch(batch)?;
        Ok(())
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
}
