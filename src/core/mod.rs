//! The domain: tokens, access keys, device credentials, broker checks, rate limits and the
//! revocation log. Plain Rust: no tonic, HTTP or sled types cross this boundary, so the gRPC
//! services and the REST shim call the very same functions and get the very same errors.
//!
//! Children: `error` (the one error enum), `keyring` (master keys and derived secrets),
//! `token` (token format, ApplyToken/QueryToken/RevokeToken), `access_key` (callers and their
//! permissions), `device` (device credentials), `broker` (CONNECT and topic checks), `topic`
//! (MQTT topic validation and matching), `limits` (rate limits), `durability` (group commit),
//! `revocation` (the revocation log and its watchers), `maintenance` (background sweeps),
//! `hint` (what a client can do about each error).

pub mod access_key;
pub mod broker;
pub mod device;
pub mod durability;
pub mod error;
mod hint;
pub mod keyring;
pub mod limits;
pub mod maintenance;
pub mod revocation;
pub mod token;
pub mod topic;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use access_key::{AccessKeyInfo, Caller, NewAccessKey};
pub use broker::{ConnectDecision, DenyReason, Grant, TopicAction, TopicRequest};
pub use device::{DeviceCredential, DevicePage};
pub use error::{Error, Field, Result};
pub use keyring::Keyring;
pub use limits::{Operation, RateLimits};
pub use revocation::{RevocationKind, WatchItem, WatchStart};
pub use token::{Actions, AppliedToken, TokenRequest};

use crate::store::Store;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

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
#[derive(Debug, Clone)]
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
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            rate_limits: RateLimits::default(),
            max_devices_per_instance: 1_000_000,
            watch_progress_interval: Duration::from_secs(10),
            revocation_retention: Duration::from_secs(7 * 24 * 3600),
            maintenance_interval: Duration::from_secs(60),
            watch_buffer: 4096,
        }
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
    /// Serializes writes that read before they write (device credentials, revocations, access
    /// keys). Held only around a synchronous `Store::apply`, never across an await.
    writer: Mutex<()>,
    /// Flips to true when the server begins shutting down; watch streams end on it.
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
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
    /// none yet (returned so the caller can write it out), and starts the group-commit flusher.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// The store cannot be read or written.
    pub fn open(
        store: Arc<dyn Store>,
        keyring: Keyring,
        config: CoreConfig,
    ) -> Result<(Arc<Self>, Option<RootKey>)> {
        let records = store.access_keys()?;
        let bounds = store.revision_bounds()?;
        let revocations = Arc::new(revocation::RevocationLog::new(bounds, config.watch_buffer));
        let (before, after) = (revocations.clone(), revocations.clone());
        let durability = durability::GroupCommit::start(
            store.clone(),
            move || before.last_applied(),
            move |durable| after.publish_up_to(durable),
        );
        let core = Arc::new(Self {
            durability,
            revocations,
            access_keys: access_key::AccessKeys::load(&keyring, records),
            limiter: limits::Limiter::new(config.rate_limits.clone()),
            store,
            keyring,
            config,
            writer: Mutex::new(()),
            shutdown: tokio::sync::watch::channel(false).0,
        });
        let root = core.ensure_root_key()?;
        Ok((core, root))
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

    /// Waits until every write applied so far is durable.
    ///
    /// # Errors
    /// The flush failed.
    pub async fn flush(&self) -> Result<()> {
        self.durability.wait().await
    }

    /// Begins shutdown: open watch streams end with `ServiceUnavailable` so brokers resume
    /// elsewhere or later, instead of holding the server's graceful shutdown open.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave the store half-written (apply is atomic),
        // so a poisoned lock is safe to keep using.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}
