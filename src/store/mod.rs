//! Durable state behind a narrow interface. The core reads records with point lookups and
//! ordered scans and writes them with [`Store::apply`], an atomic batch of typed operations;
//! durability is a separate [`Store::flush`] so the core can share one flush among many
//! concurrent writes (group commit). A distributed backend implements the same trait.
//!
//! The trait speaks the core's types; how they are encoded is the store's business and stays
//! inside it.
//!
//! A shared backend (etcd) keeps every record in a local mirror, so reads stay synchronous and
//! local; `apply` stages a batch on the mirror and `flush` commits what is staged in
//! compare-and-swap transactions. A transaction that loses a race with another replica is
//! reported in the [`FlushReport`], the core rolls the staged batches back
//! ([`Store::rollback`]) and runs those writes again on fresh data.
//!
//! Children: `records` (the persisted record types and their conversions), `sessions` (broker
//! sessions and their store trait), `sled_store` (the sled implementation), `etcd` (the etcd
//! implementation, for several replicas).

pub mod etcd;
mod records;
mod sessions;
mod sled_store;

pub use etcd::{EtcdOptions, EtcdStore};
pub use sessions::{BrokerSessionRecord, BrokerSessionStore};
pub use sled_store::{SledStore, StoreClosed};

use std::{future::Future, pin::Pin};

use crate::core::{
    access_key::AccessKey, device::RegisteredDevice, revocation::RevocationEvent, scope::Tombstone,
    token::IssuedToken, token_liveness::TokenLiveness,
};

/// A token's random id: 16 bytes (128 bits) from the OS CSPRNG.
pub type TokenId = [u8; 16];

/// A storage failure. Never shown to clients; the transport logs it and answers InternalError.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption reported by the engine).
    #[error("storage backend: {0}")]
    Backend(String),
    /// The backend cannot be reached (a shared backend's network or cluster is down).
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
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

/// A boxed future, for the store's asynchronous methods (the trait is used as `dyn Store`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// Names one [`Store::apply`] batch, in order, so a flush can say which batches it made
/// durable. An embedded store makes everything durable at once and always answers 0.
pub type Ticket = u64;

/// What a [`Store::flush`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushReport {
    /// Every batch with a ticket up to this one is durable.
    pub durable_through: Ticket,
    /// Why the batches after `durable_through` were not written, if they were not: the core
    /// then calls [`Store::rollback`] and fails or retries them.
    pub failure: Option<FlushFailure>,
}

impl FlushReport {
    /// Everything applied so far is durable.
    pub const ALL_DURABLE: Self = Self {
        durable_through: Ticket::MAX,
        failure: None,
    };
}

/// Why staged batches were not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushFailure {
    /// Another replica wrote first (a compare-and-swap failed): nothing of the failed batches
    /// was written, and running them again on fresh data is safe.
    Conflict,
    /// The backend failed; the batches may or may not have been written.
    Backend(String),
}

/// What a shared backend reports about writes committed by any replica, in commit order.
#[derive(Debug, Clone)]
pub enum Committed {
    /// A revocation was committed (revisions arrive gap-free and in order).
    Revocation(RevocationEvent),
    /// The log was compacted: revisions below this one are gone.
    Oldest(u64),
    /// The access keys changed.
    AccessKeys,
    /// The scope tombstones changed.
    Tombstones,
}

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
    /// Insert a token minted with a fresh random id: there is no record to replace (a 128-bit
    /// random id never collides), so the store need not read one first.
    InsertToken(TokenId, IssuedToken),
    /// Insert or replace a token (and its expiry and listing index entries).
    PutToken(TokenId, IssuedToken),
    /// Replace a live, unrevoked token that the same batch's builder has just read with its
    /// revoked copy (`revoked_ms` set, nothing else changed). Its index entries stay where
    /// they are, so the store need not read the record again to find them (a second read was
    /// ~5% of a RevokeToken's server CPU).
    RevokeToken(TokenId, IssuedToken),
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
/// by the core within a process; `apply` itself only has to be atomic. Across processes a
/// shared backend detects conflicting writes in `flush` (see the module documentation).
pub trait Store: BrokerSessionStore + Send + Sync + 'static {
    /// Looks a token up by id.
    fn token(&self, id: &TokenId) -> StoreResult<Option<IssuedToken>>;
    /// A token's liveness facts: what [`Store::token`] answers, without the grant. The same
    /// answer, always; a store that keeps them in memory answers without reading the record.
    fn token_liveness(&self, id: &TokenId) -> StoreResult<Option<TokenLiveness>> {
        Ok(self.token(id)?.as_ref().map(TokenLiveness::from))
    }
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
    /// One access key by id, as this process reads it now.
    fn access_key(&self, id: &str) -> StoreResult<Option<AccessKey>> {
        Ok(self.access_keys()?.into_iter().find(|k| k.id == id))
    }
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
    /// Applies the operations atomically (all or none) to what this process reads, and
    /// returns the batch's ticket; it is durable once a [`Store::flush`] reports it.
    fn apply(&self, ops: Vec<Op>) -> StoreResult<Ticket>;
    /// A named metadata value.
    fn meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Makes applied batches durable. The core shares one call among concurrent writers.
    fn flush(&self) -> StoreFuture<'_, FlushReport>;
    /// Marks the start of a read-modify-write: the next [`Store::apply`] batch was built on
    /// what reads returned from now on. A shared store compares against this point, so a write
    /// another replica commits while the batch is being built makes it conflict. Called under
    /// the core's writer lock.
    fn begin_write(&self) {}
    /// Drops every applied batch that is not durable, after a failed flush, so reads show the
    /// committed state again. Returns the last ticket dropped. Called under the core's writer
    /// lock, so no batch is being built meanwhile.
    fn rollback(&self) -> Ticket {
        0
    }
    /// Waits until this process reads every write any process had acknowledged when the call
    /// began (a linearizable read barrier), and returns how many [`Committed`] items the feed
    /// had sent by then, so the core can wait until it has handled them too. An embedded store
    /// is always up to date (and has no feed: 0).
    fn sync(&self) -> StoreFuture<'_, u64> {
        Box::pin(std::future::ready(Ok(0)))
    }
    /// Waits until this process reads every write it has itself made durable so far, and with
    /// them every write any process had acknowledged before those were sent; returns the
    /// [`Committed`] items sent by then, as [`Store::sync`] does. It reads nothing from a
    /// shared backend: a write that just became durable is the barrier, so a writer that
    /// checks what it read after its commit needs no read before it. An embedded store is
    /// always up to date (0).
    fn settle(&self) -> StoreFuture<'_, u64> {
        Box::pin(std::future::ready(Ok(0)))
    }
    /// The revision a token minted now records: the newest committed one (a shared store's
    /// reads may include revocations staged but not yet committed, which must not count).
    fn minting_revision(&self) -> StoreResult<u64> {
        Ok(self.revision_bounds()?.last)
    }
    /// Most operations one [`Store::apply`] batch may carry (a shared store's transaction
    /// limit); sweeps split their deletions to fit.
    fn max_batch_ops(&self) -> usize {
        usize::MAX
    }
    /// Whether this process should run the background work (sweeps, log compaction) now: a
    /// shared backend elects one process at a time. Running it twice is still correct.
    fn lead(&self) -> StoreFuture<'_, bool> {
        Box::pin(std::future::ready(Ok(true)))
    }
    /// Writes committed by any process, for a shared backend (`None` for an embedded one,
    /// where this process makes every write itself). Taken once, by the core.
    fn committed(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Committed>> {
        None
    }
    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> StoreResult<u64>;
    /// The record counts, without a scan.
    fn counts(&self) -> StoreResult<StoreCounts>;
}
