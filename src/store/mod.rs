//! Durable state behind a narrow interface. The core reads records with point lookups and
//! ordered scans and writes them with [`Store::apply`], an atomic batch of typed operations;
//! durability is a separate [`Store::flush`] so the core can share one flush among many
//! concurrent writes (group commit). A distributed backend implements the same trait.
//!
//! Children: `records` (the persisted record types), `sled_store` (the sled implementation).

mod records;
mod sled_store;

pub use records::{AccessKeyRecord, DeviceRecord, RevocationRecord, TokenId, TokenRecord};
pub use sled_store::{SledStore, StoreClosed};

/// A storage failure. Never shown to clients; the transport logs it and answers InternalError.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption reported by the engine).
    #[error("storage backend: {0}")]
    Backend(String),
    /// A stored record did not decode: the data directory is damaged or from another version.
    #[error("corrupt record under key {key}: {reason}")]
    Corrupt {
        /// The key, hex-encoded.
        key: String,
        /// What failed.
        reason: String,
    },
}

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The revision range the revocation log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevisionBounds {
    /// The oldest retained revision; `last + 1` when the log is empty.
    pub oldest: u64,
    /// The newest written revision; 0 before the first.
    pub last: u64,
}

/// One write inside an atomic [`Store::apply`] batch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or replace a token (and its expiry index entry).
    PutToken(TokenId, TokenRecord),
    /// Delete a token and its expiry index entry.
    DeleteToken(TokenId, i64),
    /// Insert or replace an access key.
    PutAccessKey(AccessKeyRecord),
    /// Delete an access key.
    DeleteAccessKey(String),
    /// Insert or replace a device credential. `replaces` is the device access key id of the
    /// record it replaces (None for a new credential, which bumps the counters).
    PutDevice {
        /// The new record.
        record: DeviceRecord,
        /// The key id it replaces, if it replaces one.
        replaces: Option<String>,
    },
    /// Delete a device credential (and its key index entry; decrements the counters).
    DeleteDevice(DeviceRecord),
    /// Append an event to the revocation log; its revision must be `last + 1`.
    AppendRevocation(RevocationRecord),
    /// Set a named metadata value.
    PutMeta(String, Vec<u8>),
    /// Drop every revocation below this revision.
    CompactRevocationsBelow(u64),
}

/// The storage interface the core uses.
///
/// Writes that read before they write (device counters, revocation revisions) are serialized
/// by the core; `apply` itself only has to be atomic.
pub trait Store: Send + Sync + 'static {
    /// Looks a token up by id.
    fn token(&self, id: &TokenId) -> StoreResult<Option<TokenRecord>>;
    /// Ids and expiry times of up to `limit` tokens that expired at or before `now_ms`.
    fn expired_tokens(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<(TokenId, i64)>>;
    /// Every access key.
    fn access_keys(&self) -> StoreResult<Vec<AccessKeyRecord>>;
    /// The credential of a client id.
    fn device(&self, instance_id: &str, client_id: &str) -> StoreResult<Option<DeviceRecord>>;
    /// The credential with this device access key id.
    fn device_by_key(&self, device_key_id: &str) -> StoreResult<Option<DeviceRecord>>;
    /// How many credentials an instance has.
    fn device_count(&self, instance_id: &str) -> StoreResult<u64>;
    /// How many credentials a group of an instance has.
    fn group_count(&self, instance_id: &str, group_id: &str) -> StoreResult<u64>;
    /// Up to `limit` client ids of a group in order, strictly after `after` when given,
    /// otherwise after skipping `skip` entries.
    fn device_client_ids(
        &self,
        instance_id: &str,
        group_id: &str,
        after: Option<&str>,
        skip: usize,
        limit: usize,
    ) -> StoreResult<Vec<String>>;
    /// Up to `limit` revocations from revision `from` on, in order.
    fn revocations(&self, from: u64, limit: usize) -> StoreResult<Vec<RevocationRecord>>;
    /// The retained revision range.
    fn revision_bounds(&self) -> StoreResult<RevisionBounds>;
    /// Applies the operations atomically: all or none.
    fn apply(&self, ops: Vec<Op>) -> StoreResult<()>;
    /// A named metadata value.
    fn meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Makes every applied write durable. Blocking; the core calls it from a blocking thread
    /// and shares one call among concurrent writers.
    fn flush(&self) -> StoreResult<()>;
    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> StoreResult<u64>;
}
