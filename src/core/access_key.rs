//! Access keys: who may call the API, and on which instances. Secrets are derived from the
//! keyring, never stored; the in-memory table makes authentication a hash lookup and a
//! constant-time compare, with no storage read on the hot path.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use super::revocation::Draft;
use super::{
    crypto,
    keyring::{random_bytes, Keyring},
    now_ms, Core, Error, Field, RevocationKind, RootKey,
};
use crate::store::{Op, Store};

/// The instance wildcard: a key allowed on every instance.
pub const ALL_INSTANCES: &str = "*";
const MAX_DESCRIPTION: usize = 256;
const MAX_INSTANCE_IDS: usize = 100;

/// An access key as the service keeps it (the secret is derived, never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The key id.
    pub id: String,
    /// Instances it may act on; `*` = all.
    pub instance_ids: Vec<String>,
    /// Free text.
    pub description: String,
    /// Creation time, ms since the Unix epoch.
    pub create_ms: i64,
    /// The root key, created on first start.
    pub root: bool,
    /// Id of the keyring key its secret is derived from.
    pub keyring_id: u32,
}

/// An authenticated caller: one access key and what it may touch.
#[derive(Clone)]
pub struct Caller(Arc<KeyEntry>);

struct KeyEntry {
    record: AccessKey,
    secret: String,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("access_key_id", &self.0.record.id)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// The access key id.
    pub fn access_key_id(&self) -> &str {
        &self.0.record.id
    }

    /// The secret, for transports that verify request signatures with it (REST V1/V3).
    pub fn secret(&self) -> &str {
        &self.0.secret
    }

    /// Whether this is the root key.
    pub fn is_root(&self) -> bool {
        self.0.record.root
    }

    /// Whether the key may act on `instance_id`.
    pub fn allowed_on(&self, instance_id: &str) -> bool {
        self.0
            .record
            .instance_ids
            .iter()
            .any(|i| i == ALL_INSTANCES || i == instance_id)
    }

    /// Whether the key may act on every instance.
    pub fn allowed_on_all(&self) -> bool {
        self.0
            .record
            .instance_ids
            .iter()
            .any(|i| i == ALL_INSTANCES)
    }

    /// Checks the key may act on `instance_id`.
    ///
    /// # Errors
    /// `InstancePermissionCheckFailed` when it may not.
    pub fn check_instance(&self, instance_id: &str) -> Result<(), Error> {
        if self.allowed_on(instance_id) {
            Ok(())
        } else {
            Err(Error::InstancePermissionCheckFailed)
        }
    }

    /// Checks the secret presented by a client in constant time.
    pub fn secret_matches(&self, presented: &str) -> bool {
        crypto::constant_time_eq(self.0.secret.as_bytes(), presented.as_bytes())
    }
}

/// One access key as listed (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKeyInfo {
    /// The key id.
    pub access_key_id: String,
    /// Instances it may act on; `*` = all.
    pub instance_ids: Vec<String>,
    /// Free text.
    pub description: String,
    /// Creation time, ms since the Unix epoch.
    pub create_time: i64,
    /// The root key.
    pub root: bool,
}

/// A freshly created access key, with its secret (shown once).
#[derive(Debug, Clone)]
pub struct NewAccessKey {
    /// The key id.
    pub access_key_id: String,
    /// The secret.
    pub access_key_secret: String,
}

/// The in-memory table of access keys, loaded at start and kept in step with the store.
pub(crate) struct AccessKeys {
    by_id: RwLock<HashMap<String, Caller>>,
    removals: Removals,
}

/// Counts the changes to the table that can remove a key, so a watch stream looks its key up
/// again only after one: an atomic load per event instead of a lock that 10,000 streams share.
#[derive(Clone, Default)]
pub(crate) struct Removals(Arc<AtomicU64>);

impl Removals {
    /// The count so far. A key removed before this call is gone from the table by now.
    pub(crate) fn count(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

fn entry(keyring: &Keyring, record: AccessKey) -> Option<Caller> {
    let secret = keyring.access_key_secret(record.keyring_id, &record.id)?;
    Some(Caller(Arc::new(KeyEntry { record, secret })))
}

impl AccessKeys {
    pub(crate) fn load(keyring: &Keyring, records: Vec<AccessKey>) -> Self {
        let mut by_id = HashMap::new();
        for record in records {
            let id = record.id.clone();
            match entry(keyring, record) {
                Some(caller) => {
                    by_id.insert(id, caller);
                }
                None => tracing::error!(
                    access_key_id = %id,
                    "access key derived from a key missing from the keyring; it cannot authenticate"
                ),
            }
        }
        Self {
            by_id: RwLock::new(by_id),
            removals: Removals::default(),
        }
    }

    /// Replaces the whole table with the stored keys (another replica changed them, or a
    /// write was rolled back).
    pub(crate) fn replace_all(&self, keyring: &Keyring, records: Vec<AccessKey>) {
        let fresh = Self::load(keyring, records);
        let table = fresh.by_id.into_inner().unwrap_or_else(|p| p.into_inner());
        *self.by_id.write().unwrap_or_else(|p| p.into_inner()) = table;
        self.removals.bump();
    }

    /// The removal counter (see [`Removals`]).
    pub(crate) fn removals(&self) -> Removals {
        self.removals.clone()
    }

    pub(crate) fn get(&self, id: &str) -> Option<Caller> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Whether a key with this id exists (no clone: on every token check).
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    fn insert(&self, caller: Caller) {
        self.by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(caller.access_key_id().to_owned(), caller);
    }

    fn remove(&self, id: &str) -> Option<Caller> {
        let removed = self
            .by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        // After the table changed, so whoever sees the new count finds the key gone.
        self.removals.bump();
        removed
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn all(&self) -> Vec<Caller> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

fn new_access_key_id() -> String {
    // 15 random bytes -> 20 URL-safe characters; the prefix tells keys of this service apart.
    format!("MTAK{}", URL_SAFE_NO_PAD.encode(random_bytes::<15>()))
}

fn validate_instance_id(instance_id: &str, field: Field) -> Result<(), Error> {
    if instance_id.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if instance_id.len() > 64 {
        return Err(Error::invalid(field, "must be at most 64 characters"));
    }
    if !instance_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::invalid(
            field,
            "may contain only letters, digits, '-' and '_'",
        ));
    }
    Ok(())
}

/// Checks an instance id: 1 to 64 letters, digits, `-` or `_`.
///
/// # Errors
/// `InvalidParameter.InstanceId`.
pub fn check_instance_id(instance_id: &str) -> Result<(), Error> {
    validate_instance_id(instance_id, Field::InstanceId)
}

impl Core {
    /// Authenticates a caller by access key id and secret (gRPC bearer credentials).
    ///
    /// # Errors
    /// `InvalidAccessKeyId.NotFound` or `InvalidAccessKeySecret`.
    /// Transports call [`Core::sync`] first, so on a shared store a key deleted on one replica
    /// fails here at once, and whatever the request reads afterwards is as fresh.
    pub fn authenticate(&self, access_key_id: &str, secret: &str) -> Result<Caller, Error> {
        let caller = self
            .access_keys
            .get(access_key_id)
            .ok_or(Error::AccessKeyNotFound)?;
        if caller.secret_matches(secret) {
            Ok(caller)
        } else {
            Err(Error::AccessKeySecretMismatch)
        }
    }

    /// Checks `caller` again against the table as it is now: the key still exists with the
    /// same secret and may still act on `instance_id`. For a write that read nothing before
    /// its commit (see [`Core::settle`]).
    ///
    /// # Errors
    /// `InvalidAccessKeyId.NotFound`, `InvalidAccessKeySecret`, `InstancePermissionCheckFailed`.
    pub(crate) fn recheck_caller(&self, caller: &Caller, instance_id: &str) -> Result<(), Error> {
        let now = self
            .access_keys
            .get(caller.access_key_id())
            .ok_or(Error::AccessKeyNotFound)?;
        if !now.secret_matches(caller.secret()) {
            return Err(Error::AccessKeySecretMismatch);
        }
        now.check_instance(instance_id)
    }

    /// The access key with this id, for transports that verify a signature made with its
    /// secret rather than the secret itself.
    ///
    /// # Errors
    /// `InvalidAccessKeyId.NotFound`.
    /// Transports call [`Core::sync`] first, as for [`Core::authenticate`].
    pub fn access_key(&self, access_key_id: &str) -> Result<Caller, Error> {
        self.access_keys
            .get(access_key_id)
            .ok_or(Error::AccessKeyNotFound)
    }

    /// The root access key with its (derived) secret, so a lost root key file can be
    /// written again from the keyring.
    pub fn root_key(&self) -> Option<RootKey> {
        self.access_keys
            .all()
            .into_iter()
            .find(Caller::is_root)
            .map(|c| RootKey {
                access_key_id: c.access_key_id().to_owned(),
                access_key_secret: c.secret().to_owned(),
            })
    }

    pub(super) async fn ensure_root_key(&self) -> Result<Option<RootKey>, Error> {
        if self.access_keys.all().iter().any(Caller::is_root) {
            return Ok(None);
        }
        let created = self
            .insert_access_key(vec![ALL_INSTANCES.to_owned()], "root".into(), true)
            .await?;
        let Some(created) = created else {
            // Another replica created the root key first.
            return Ok(None);
        };
        Ok(Some(RootKey {
            access_key_id: created.access_key_id,
            access_key_secret: created.access_key_secret,
        }))
    }

    /// Creates and stores a key; durable on return. A root key is created only while there is
    /// none (`None`: another replica created one first).
    async fn insert_access_key(
        &self,
        instance_ids: Vec<String>,
        description: String,
        root: bool,
    ) -> Result<Option<NewAccessKey>, Error> {
        let record = AccessKey {
            id: new_access_key_id(),
            instance_ids,
            description,
            create_ms: now_ms(),
            root,
            keyring_id: self.keyring.active_id(),
        };
        let caller = entry(&self.keyring, record.clone())
            .ok_or_else(|| Error::internal("active keyring key is missing"))?;
        let (inserted, _) = self
            .commit_then(
                |store| {
                    if root && store.access_keys()?.iter().any(|k| k.root) {
                        return Ok((Vec::new(), Vec::new(), false));
                    }
                    Ok((vec![Op::PutAccessKey(record.clone())], Vec::new(), true))
                },
                |inserted| {
                    if *inserted {
                        self.access_keys.insert(caller.clone());
                    }
                },
            )
            .await?;
        Ok(inserted.then(|| NewAccessKey {
            access_key_id: caller.access_key_id().to_owned(),
            access_key_secret: caller.secret().to_owned(),
        }))
    }

    /// Creates an access key allowed on `instance_ids` (`*` = all). Root only. Durable on return.
    ///
    /// # Errors
    /// `PermissionCheckFailed` for a non-root caller; `InvalidParameter.InstanceIds` or
    /// `InvalidParameter.Description` for bad input.
    pub async fn create_access_key(
        &self,
        caller: &Caller,
        instance_ids: Vec<String>,
        description: String,
    ) -> Result<NewAccessKey, Error> {
        require_root(caller)?;
        if instance_ids.is_empty() {
            return Err(Error::invalid(
                Field::InstanceIds,
                "at least one instance id (or \"*\") is required",
            ));
        }
        if instance_ids.len() > MAX_INSTANCE_IDS {
            return Err(Error::invalid(
                Field::InstanceIds,
                format!("at most {MAX_INSTANCE_IDS} instance ids"),
            ));
        }
        for id in &instance_ids {
            if id != ALL_INSTANCES {
                validate_instance_id(id, Field::InstanceIds)?;
            }
        }
        if description.len() > MAX_DESCRIPTION {
            return Err(Error::invalid(
                Field::Description,
                format!("must be at most {MAX_DESCRIPTION} bytes"),
            ));
        }
        let mut instance_ids = instance_ids;
        instance_ids.sort();
        instance_ids.dedup();
        let created = self
            .insert_access_key(instance_ids, description, false)
            .await?
            .ok_or_else(|| Error::internal("a non-root key is always inserted"))?;
        Ok(created)
    }

    /// Lists every access key, ordered by id. Root only.
    ///
    /// # Errors
    /// `PermissionCheckFailed` for a non-root caller.
    pub fn list_access_keys(&self, caller: &Caller) -> Result<Vec<AccessKeyInfo>, Error> {
        require_root(caller)?;
        let mut keys: Vec<AccessKeyInfo> = self
            .access_keys
            .all()
            .into_iter()
            .map(|c| AccessKeyInfo {
                access_key_id: c.0.record.id.clone(),
                instance_ids: c.0.record.instance_ids.clone(),
                description: c.0.record.description.clone(),
                create_time: c.0.record.create_ms,
                root: c.0.record.root,
            })
            .collect();
        keys.sort_by(|a, b| a.access_key_id.cmp(&b.access_key_id));
        Ok(keys)
    }

    /// Deletes an access key and publishes ACCESS_KEY_DELETED revocations (one per instance it
    /// was allowed on) so brokers drop the sessions that used it. Every token the key minted is
    /// revoked by the same durable write: a token is live only while its minting key exists
    /// (key ids are random and never reused), so the delete needs no write per token. Root
    /// only; the root key itself cannot be deleted. Durable on return.
    ///
    /// # Errors
    /// `PermissionCheckFailed` (non-root caller, or deleting the root key),
    /// `AccessKeyNotFound`.
    pub async fn delete_access_key(
        &self,
        caller: &Caller,
        access_key_id: &str,
    ) -> Result<(), Error> {
        require_root(caller)?;
        // Under the writer lock, so two concurrent deletes emit one set of events.
        let build = |_: &dyn Store| {
            let target = self
                .access_keys
                .get(access_key_id)
                .ok_or(Error::AccessKeyIdNotFound)?;
            if target.is_root() {
                return Err(Error::PermissionCheckFailed(
                    "the root access key cannot be deleted",
                ));
            }
            let now = now_ms();
            let drafts = target
                .0
                .record
                .instance_ids
                .iter()
                .map(|instance| {
                    // A key allowed everywhere revokes on every instance.
                    let instance = (instance != ALL_INSTANCES).then_some(instance.as_str());
                    Draft {
                        key_id: access_key_id.to_owned(),
                        ..Draft::new(
                            RevocationKind::AccessKeyDeleted,
                            instance,
                            "DeleteAccessKey",
                            now,
                        )
                    }
                })
                .collect();
            Ok((
                vec![Op::DeleteAccessKey(access_key_id.to_owned())],
                drafts,
                (),
            ))
        };
        // The key leaves memory once the delete is applied, before the flush and the publish:
        // a broker acting on the event must find it gone, and denying early is safe. Not
        // before: if the write fails, the key is still on disk and must keep working.
        self.commit_then(build, |()| {
            self.access_keys.remove(access_key_id);
        })
        .await?;
        Ok(())
    }
}

fn require_root(caller: &Caller) -> Result<(), Error> {
    if caller.is_root() {
        Ok(())
    } else {
        Err(Error::PermissionCheckFailed(
            "only the root access key may manage access keys",
        ))
    }
}
