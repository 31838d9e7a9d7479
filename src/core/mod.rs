//! The domain: tokens, access keys, device credentials, broker checks, rate limits and the
//! revocation log. Plain Rust: no tonic, HTTP or sled types cross this boundary, so the gRPC
//! services and the REST shim call the very same functions and get the very same errors.
//!
//! Children: `audit` (what the audit log records, and the JSON-lines sink that writes it), `error` (the one error enum), `crypto` (HMAC, hashes, hex, constant-time
//! compare), `keyring` (master keys and derived secrets), `token` (token format and handles,
//! ApplyToken/QueryToken/RevokeToken), `token_list` (ListTokens), `token_liveness` (what QueryToken needs of a
//! stored token), `scope` (RevokeTokens:
//! revocation by handle, key or instance, and the scope tombstones every token check
//! consults), `access_key` (callers and their permissions), `device` (device credentials),
//! `broker` (CONNECT and topic checks), `broker_session` (sessions of brokers that check topics
//! without the password), `topic` (MQTT topic validation and matching), `limits` (rate
//! limits), `durability` (group commit), `revocation` (the revocation log), `watch` (its
//! watchers), `watch_slots` (the per-key limit on watch streams, and their wakers for
//! shutdown), `maintenance` (background sweeps), `metrics` (the Prometheus metrics the core
//! and the transports record into; the operations endpoint only reads them), `hint` (what a
//! client can do about each error).

pub mod access_key;
pub mod audit;
pub mod broker;
pub mod broker_session;
pub mod crypto;
pub mod device;
pub mod durability;
pub mod error;
mod hint;
pub mod keyring;
pub mod limits;
pub mod maintenance;
pub mod metrics;
pub mod revocation;
pub mod scope;
pub mod token;
mod token_apply;
pub mod token_list;
pub mod token_liveness;
/// MQTT topic validation and matching, shared with brokers through the client crate.
pub use mqtt_tokend_client::topic;
pub mod watch;
mod watch_slots;

use std::{
    sync::{Arc, Mutex, MutexGuard, TryLockError, Weak},
    time::Duration,
};

pub use access_key::{AccessKeyInfo, Caller, NewAccessKey};
pub use broker::{ConnectDecision, DenyReason, Grant, TopicAction, TopicRequest};
pub use device::{DeviceCredential, DevicePage};
pub use error::{Error, Field, Result};
pub use keyring::Keyring;
pub use limits::{Operation, RateLimits};
pub use metrics::Metrics;
pub use revocation::{RevocationEvent, RevocationKind};
pub use scope::{TokenScope, Tombstone};
pub use token::{Actions, AppliedToken, TokenRequest};
pub use token_list::{TokenInfo, TokenPage, TokenStatus};
pub use watch::{WatchItem, WatchStart, WatchStream};

use crate::store::{Committed, Store};

/// Times a request yields while the writer lock is held before it blocks on it.
const WRITER_YIELDS: usize = 8;

/// Milliseconds since the Unix epoch, now (the client crate's, so brokers and the service
/// read the clock the same way).
pub use mqtt_tokend_client::now_ms;

/// A new request id: a random (version 4) UUID in Alibaba's upper-case form.
///
/// Every request makes one, so it comes from rand's thread-local generator rather than
/// `Uuid::new_v4` (one `getrandom` syscall per call) and is formatted upper-case in place.
pub fn new_request_id() -> String {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut buf = uuid::Uuid::encode_buffer();
    id.hyphenated().encode_upper(&mut buf).to_owned()
}

/// Knobs of the core, with the defaults documented in the README.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// Per access key and operation rate limits.
    pub rate_limits: RateLimits,
    /// Most device credentials one instance may hold.
    pub max_devices_per_instance: u64,
    /// How often idle watch streams get a progress message.
    pub watch_progress_interval: Duration,
    /// How long revocations of credentials without an expiry (device credentials, access
    /// keys) stay in the log for brokers to resume from.
    pub revocation_retention: Duration,
    /// How often expired tokens are swept and the revocation log is compacted.
    pub maintenance_interval: Duration,
    /// Events a watcher may fall behind the live broadcast before it catches up from storage.
    pub watch_buffer: usize,
    /// Where audit lines go (off by default).
    pub audit: audit::AuditLog,
    /// Longest life of a recorded broker session (see `broker_session`).
    pub broker_session_ttl: Duration,
    /// Most revocation watch streams one access key may hold open at once; 0 = no limit.
    pub max_watches_per_key: usize,
}

impl CoreConfig {
    /// The defaults: the one place they are written. The command line's defaults are these.
    pub const DEFAULT: Self = Self {
        rate_limits: RateLimits::DEFAULT,
        max_devices_per_instance: 1_000_000,
        watch_progress_interval: Duration::from_secs(10),
        revocation_retention: Duration::from_secs(7 * 24 * 3600),
        maintenance_interval: Duration::from_secs(60),
        watch_buffer: 4096,
        audit: audit::AuditLog::OFF,
        broker_session_ttl: Duration::from_secs(7 * 24 * 3600),
        max_watches_per_key: 16,
    };
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The service's state and operations. Cheap to share: clone the `Arc`.
pub struct Core {
    store: Arc<dyn Store>,
    keyring: Keyring,
    config: CoreConfig,
    access_keys: access_key::AccessKeys,
    limiter: limits::Limiter,
    durability: durability::GroupCommit,
    revocations: Arc<revocation::RevocationLog>,
    /// Scope tombstones (RevokeTokens by key or instance), mirrored from the store.
    tombstones: scope::Tombstones,
    /// Open watch streams per access key, for `max_watches_per_key`.
    watch_slots: Arc<watch_slots::WatchSlots>,
    /// Serializes writes that read before they write (device credentials, revocations, access
    /// keys). Held only around a synchronous `Store::apply`, never across an await.
    writer: Mutex<()>,
    /// Flips to true when the server begins shutting down; watch streams end on it.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Counters and histograms of this server.
    metrics: Arc<Metrics>,
    /// The store is shared with other replicas: revisions come from it and committed events
    /// are published from its feed (`follow_committed`), not from this process's writes.
    shared: bool,
    /// How many items of the shared store's feed `follow_committed` has handled.
    feed_done: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

/// Record counts, for the metrics gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Tokens issued and not revoked (an expired one counts until the next sweep).
    pub tokens: u64,
    /// Registered device credentials.
    pub device_credentials: u64,
    /// Access keys, root included.
    pub access_keys: u64,
}

/// The root access key, returned by [`Core::open`] when it was just created.
#[derive(Debug, Clone)]
pub struct RootKey {
    /// The key id.
    pub access_key_id: String,
    /// The key secret.
    pub access_key_secret: String,
}

impl Core {
    /// Opens the core on a store: loads access keys, creates the root access key if there is
    /// none yet (returned so the caller can write it out), and starts the group-commit flusher
    /// and, on a shared store, the task that follows what other replicas commit.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// The store cannot be read or written.
    pub async fn open(
        store: Arc<dyn Store>,
        keyring: Keyring,
        config: CoreConfig,
    ) -> Result<(Arc<Self>, Option<RootKey>)> {
        store.sync().await?;
        let records = store.access_keys()?;
        let tombstones = scope::Tombstones::load(store.tombstones()?);
        let bounds = store.revision_bounds()?;
        let committed = store.committed();
        let shared = committed.is_some();
        let revocations = Arc::new(revocation::RevocationLog::new(bounds, config.watch_buffer));
        let metrics = Arc::new(Metrics::new());
        let core = Arc::new_cyclic(|weak: &Weak<Self>| {
            let (before, after) = (revocations.clone(), revocations.clone());
            let on_failure = weak.clone();
            let hooks = durability::Hooks {
                applied: Box::new(move || before.last_applied()),
                flushed: Box::new(move |durable| after.publish_up_to(durable)),
                failed: Box::new(move || on_failure.upgrade().map_or(0, |core| core.roll_back())),
            };
            Self {
                durability: durability::GroupCommit::start(store.clone(), metrics.clone(), hooks),
                revocations,
                tombstones,
                watch_slots: Arc::new(watch_slots::WatchSlots::new(config.max_watches_per_key)),
                access_keys: access_key::AccessKeys::load(&keyring, records),
                limiter: limits::Limiter::new(config.rate_limits.clone()),
                store,
                keyring,
                config,
                writer: Mutex::new(()),
                shutdown: tokio::sync::watch::channel(false).0,
                metrics,
                shared,
                feed_done: tokio::sync::watch::channel(0).0,
            }
        });
        if let Some(feed) = committed {
            tokio::spawn(follow_committed(Arc::downgrade(&core), feed));
        }
        let root = core.ensure_root_key().await?;
        Ok((core, root))
    }

    /// Waits until this replica has seen every write any replica had acknowledged when the
    /// call began, and published every revocation among them: after it, reads here are as
    /// fresh as reads on the replica that took the write. Free on an embedded store.
    ///
    /// # Errors
    /// The shared store cannot be reached (`ServiceUnavailable`).
    pub async fn sync(&self) -> Result<()> {
        if !self.shared {
            return Ok(());
        }
        let sent = self.store.sync().await?;
        self.feed_handled(sent).await;
        Ok(())
    }

    /// After a write of this replica became durable: waits until this replica has seen it and
    /// every write any replica had acknowledged before it was sent ([`Store::settle`]), with
    /// what they brought in handled. A write whose caller and reads are checked again after
    /// this needs no [`Core::sync`] before it: its commit is the barrier, and no read of the
    /// shared store is made. Free on an embedded store.
    ///
    /// # Errors
    /// The shared store cannot be reached (`ServiceUnavailable`).
    pub(crate) async fn settle(&self) -> Result<()> {
        if !self.shared {
            return Ok(());
        }
        let sent = self.store.settle().await?;
        self.feed_handled(sent).await;
        Ok(())
    }

    /// Waits until the feed's first `sent` items (revocations, key and tombstone changes) are
    /// handled: then the in-memory tables are as fresh as the store's reads.
    async fn feed_handled(&self, sent: u64) {
        let mut done = self.feed_done.subscribe();
        let _ = done.wait_for(|handled| *handled >= sent).await;
    }

    /// Whether the store is shared with other replicas (etcd): then reads may lag behind
    /// writes acknowledged elsewhere until [`Core::sync`] or [`Core::settle`].
    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    /// The configuration the core runs with.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Bytes the store occupies on disk.
    ///
    /// # Errors
    /// The store cannot tell.
    pub fn store_size(&self) -> Result<u64> {
        Ok(self.store.size_on_disk()?)
    }

    /// The metrics this core and its transports record into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Record counts for the gauges: live tokens, device credentials and access keys. Read
    /// from counters the store keeps in step with every write, so this costs no scan.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn counts(&self) -> Result<Counts> {
        let stored = self.store.counts()?;
        Ok(Counts {
            tokens: stored.tokens.saturating_sub(stored.revoked_tokens),
            device_credentials: stored.device_credentials,
            access_keys: self.access_keys.len() as u64,
        })
    }

    /// Whether the server should get traffic: not shutting down, and the store answers.
    ///
    /// # Errors
    /// `ServiceUnavailable` while shutting down; the store's error when it cannot be read.
    pub fn ready(&self) -> Result<()> {
        if *self.shutdown.borrow() {
            return Err(Error::ServiceUnavailable);
        }
        self.store.revision_bounds()?;
        Ok(())
    }

    /// Waits until every write applied so far is durable.
    ///
    /// # Errors
    /// The flush failed.
    pub async fn flush(&self) -> Result<()> {
        // A batch that lost a race was rolled back: nothing of it is left to make durable.
        self.durability
            .wait(self.store.apply(Vec::new())?)
            .await
            .map(|_| ())
    }

    /// Begins shutdown: open watch streams end with `ServiceUnavailable` so brokers resume
    /// elsewhere or later, instead of holding the server's graceful shutdown open.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        // Idle streams wait on nothing the flag wakes: wake them so they end now.
        self.watch_slots.wake_all();
    }

    /// Ends shutdown, once in-flight calls have drained and the final flush is done: the
    /// group-commit flusher flushes what is still queued and stops. A write that comes later
    /// (a call that outlived the drain, a caller holding the core) is not acknowledged: it
    /// fails with `ServiceUnavailable`.
    pub fn finish_shutdown(&self) {
        self.begin_shutdown();
        self.durability.close();
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave the store half-written (apply is atomic),
        // so a poisoned lock is safe to keep using.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer lock for a request: while it is held, yields to the runtime a few times
    /// before blocking. The guard is never held across an `.await`, so the holder is another
    /// thread in the middle of a write (~10 µs); meanwhile this worker serves other calls
    /// instead of sleeping in the kernel and being woken (futex waits and wake-ups were ~5% of
    /// a RevokeToken's server CPU at 64 in flight).
    async fn writer_turn(&self) -> MutexGuard<'_, ()> {
        for _ in 0..WRITER_YIELDS {
            match self.writer.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
            tokio::task::yield_now().await;
        }
        self.lock_writer()
    }
}

/// Follows what a shared store reports as committed (by any replica) and mirrors it: events
/// are published to this replica's watchers in revision order, and the access keys and
/// tombstones are reloaded when another replica changed them. Ends with the core.
async fn follow_committed(
    core: Weak<Core>,
    mut feed: tokio::sync::mpsc::UnboundedReceiver<Committed>,
) {
    while let Some(item) = feed.recv().await {
        let Some(core) = core.upgrade() else { return };
        match item {
            Committed::Revocation(event) => core.revocations.publish_committed(event),
            Committed::Oldest(oldest) => core.revocations.set_oldest(oldest),
            Committed::AccessKeys | Committed::Tombstones => {
                let _w = core.lock_writer();
                if let Err(e) = core.reload_mirrors() {
                    tracing::error!(error = %e, "reloading what another replica changed failed");
                }
            }
        }
        core.feed_done.send_modify(|handled| *handled += 1);
    }
}
