//! Durable state behind a narrow interface. The core reads records with point lookups and
//! ordered scans and writes them with [`Store::apply`], an atomic batch of typed operations;
//! durability is a separate [`Store::flush`] so the core can share one flush among many
//! concurrent writes (group commit). A distributed backend implements the same trait.
//!
//! The trait speaks the core's types; how they are encoded is the store's business and stays
//! inside it.
//!
//! Children: `records` (the persisted record types and their conversions), `sessions` (broker
//! sessions and their store trait), `sled_store` (the sled implementation).

mod records;
mod sessions;
mod sled_store;

pub use sessions::{BrokerSessionRecord, BrokerSessionStore};
pub use sled_store::{SledStore, StoreClosed};

use crate::core::{
    access_key::AccessKey, device::RegisteredDevice, revocation::RevocationEvent, scope::Tombstone,
    token::IssuedToken,
};

/// A token's random id: 16 bytes (128 bits) from the OS CSPRNG.
pub type TokenId = [u8; 16];

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

/// Record counts the store keeps in step with its writes, so reading them costs no scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreCounts {
    /// Token records stored (issued and not yet swept after expiry), revoked ones included.
    pub tokens: u64,
    /// Of those, the revoked ones.
    pub revoked_tokens: u64,
    /// Device credentials, across every instance.
    pub device_credentials: u64,
}

/// One write inside an atomic [`Store::apply`] batch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or replace a token (and its expiry and listing index entries).
    PutToken(TokenId, IssuedToken),
    /// Delete a token and its expiry and listing index entries.
    DeleteToken(TokenId, i64),
    /// Insert or replace the tombstone of a scope (its instance and key).
    PutTombstone(Tombstone),
    /// Delete the tombstone of a scope.
    DeleteTombstone {
        /// The instance.
        instance_id: String,
        /// The minting key; `None` for the instance-wide scope.
        key_id: Option<String>,
    },
    /// Insert or replace an access key.
    PutAccessKey(AccessKey),
    /// Delete an access key.
    DeleteAccessKey(String),
    /// Insert or replace a device credential. `replaces` is the device access key id of the
    /// record it replaces (None for a new credential, which bumps the counters).
    PutDevice {
        /// The new record.
        record: RegisteredDevice,
        /// The key id it replaces, if it replaces one.
        replaces: Option<String>,
    },
    /// Delete a device credential (and its key index entry; decrements the counters).
    DeleteDevice(RegisteredDevice),
    /// Append an event to the revocation log; its revision must be `last + 1`.
    AppendRevocation(RevocationEvent),
    /// Set a named metadata value.
    PutMeta(String, Vec<u8>),
    /// Drop every revocation below this revision.
    CompactRevocationsBelow(u64),
}

/// The storage interface the core uses.
///
/// Writes that read before they write (device counters, revocation revisions) are serialized
/// by the core; `apply` itself only has to be atomic.
pub trait Store: BrokerSessionStore + Send + Sync + 'static {
    /// Looks a token up by id.
    fn token(&self, id: &TokenId) -> StoreResult<Option<IssuedToken>>;
    /// Ids and expiry times of up to `limit` tokens that expired at or before `now_ms`.
    fn expired_tokens(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<(TokenId, i64)>>;
    /// The latest expiry of any stored token, if any is stored.
    fn newest_token_expiry(&self) -> StoreResult<Option<i64>>;
    /// Up to `limit` tokens of an instance (only those `creator` minted, when given), ordered
    /// by (creator, id), strictly after `after` = (creator, id) when given.
    fn instance_tokens(
        &self,
        instance_id: &str,
        creator: Option<&str>,
        after: Option<(&str, &TokenId)>,
        limit: usize,
    ) -> StoreResult<Vec<(TokenId, IssuedToken)>>;
    /// Every scope tombstone.
    fn tombstones(&self) -> StoreResult<Vec<Tombstone>>;
    /// Every access key.
    fn access_keys(&self) -> StoreResult<Vec<AccessKey>>;
    /// The credential of a client id.
    fn device(&self, instance_id: &str, client_id: &str) -> StoreResult<Option<RegisteredDevice>>;
    /// The credential with this device access key id.
    fn device_by_key(&self, device_key_id: &str) -> StoreResult<Option<RegisteredDevice>>;
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
    /// Up to `limit` revocations from revision `from` on, in order. A stored event this
    /// version cannot decode (e.g. an unknown kind) is [`StoreError::Corrupt`].
    fn revocations(&self, from: u64, limit: usize) -> StoreResult<Vec<RevocationEvent>>;
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
    /// The record counts, without a scan.
    fn counts(&self) -> StoreResult<StoreCounts>;
}
