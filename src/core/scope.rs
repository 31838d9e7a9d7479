//! Revocation by scope (RevokeTokens): one token by handle, every token an access key minted on
//! an instance, or every token of an instance, in one call, with one durable write and one
//! event whatever the number of tokens.
//!
//! A key or instance scope writes no token record. It writes a *tombstone*: "the tokens of
//! (instance, key) / of the instance minted before revision R are revoked", where R is the
//! revision of the scope's own revocation event, in the same atomic batch as that event
//! (`Core::commit_then`). Every token records the revocation log's last applied revision when
//! it was minted (`IssuedToken::minted_revision`), so the rule is exact:
//!
//! - a token whose ApplyToken returned before RevokeTokens was called read a revision below R
//!   (R did not exist yet): covered;
//! - a token whose ApplyToken began after RevokeTokens returned reads R or more: not covered;
//! - a token minted while RevokeTokens runs may go either way, as for any concurrent calls.
//!
//! The tombstones live in memory ([`Tombstones`], loaded at start and changed only after the
//! write that changes them applied), so QueryToken and CONNECT check them in O(1). A tombstone
//! is kept (and its event retained by compaction, as the event's `expire_ms`) until every token
//! it can cover has expired: at most the longest token lifetime after the revocation.

use std::{collections::HashMap, sync::RwLock};

use super::{
    access_key::check_instance_id,
    now_ms,
    revocation::{Draft, RevocationEvent},
    token::{handle, parse_handle, MAX_LIFETIME_MS},
    Caller, Core, Error, Field, Operation, Result, RevocationKind,
};
use crate::store::{Op, Store};

/// Slack added to a tombstone's life, for a token minted concurrently with the revocation
/// whose clock read came a moment after the revocation's.
const UNTIL_MARGIN_MS: i64 = 60_000;

/// What RevokeTokens revokes on an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// One token, by its handle.
    Handle(String),
    /// Every token this access key minted on the instance.
    AccessKey(String),
    /// Every token of the instance.
    Instance,
}

/// A durable scope revocation: the tokens of `instance_id` (minted by `key_id`, or by anyone
/// when `None`) minted before revision `cutoff` are revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The instance.
    pub instance_id: String,
    /// The minting access key; `None` = every token of the instance.
    pub key_id: Option<String>,
    /// Tokens with a `minted_revision` below this are covered: the revision of the event.
    pub cutoff: u64,
    /// When the scope was revoked, ms since the Unix epoch.
    pub revoke_ms: i64,
    /// After this no token it covers can be live, so it can go, ms since the Unix epoch.
    pub until_ms: i64,
}

impl Tombstone {
    /// The tombstone a scope revocation event brings; None for the other kinds.
    pub(crate) fn of_event(event: &RevocationEvent) -> Option<Self> {
        let key_id = match event.kind {
            RevocationKind::TokensOfKeyRevoked => Some(event.key_id.clone()),
            RevocationKind::InstanceTokensRevoked => None,
            RevocationKind::TokenRevoked
            | RevocationKind::DeviceCredentialRefreshed
            | RevocationKind::DeviceCredentialUnregistered
            | RevocationKind::AccessKeyDeleted => return None,
        };
        Some(Self {
            instance_id: event.instance_id.clone()?,
            key_id,
            cutoff: event.revision,
            revoke_ms: event.revoke_ms,
            until_ms: event.expire_ms.unwrap_or(i64::MAX),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    cutoff: u64,
    revoke_ms: i64,
    until_ms: i64,
}

impl Cut {
    /// The revocation time, if this cut covers a token minted at `minted`.
    fn covers(self, minted: u64) -> Option<i64> {
        (minted < self.cutoff).then_some(self.revoke_ms)
    }
}

#[derive(Debug, Default)]
struct InstanceCuts {
    all: Option<Cut>,
    by_key: HashMap<String, Cut>,
}

/// The tombstones in memory, by instance: two hash lookups per token check.
#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    by_instance: RwLock<HashMap<String, InstanceCuts>>,
}

impl Tombstones {
    /// The table of the stored tombstones.
    pub(crate) fn load(stored: Vec<Tombstone>) -> Self {
        let table = Self::default();
        for t in &stored {
            table.record(t);
        }
        table
    }

    /// Replaces the whole table with the stored tombstones (another replica changed them, or
    /// a write was rolled back).
    pub(crate) fn replace_all(&self, stored: Vec<Tombstone>) {
        let fresh = Self::load(stored);
        let table = fresh
            .by_instance
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        *self.by_instance.write().unwrap_or_else(|p| p.into_inner()) = table;
    }

    /// Adds a tombstone, or raises the scope's cut-off to it (a later revocation of the same
    /// scope covers everything the earlier one did).
    pub(crate) fn record(&self, t: &Tombstone) {
        let cut = Cut {
            cutoff: t.cutoff,
            revoke_ms: t.revoke_ms,
            until_ms: t.until_ms,
        };
        let mut map = self.by_instance.write().unwrap_or_else(|p| p.into_inner());
        let cuts = map.entry(t.instance_id.clone()).or_default();
        let slot = match &t.key_id {
            Some(key) => cuts.by_key.entry(key.clone()).or_insert(cut),
            None => cuts.all.get_or_insert(cut),
        };
        if slot.cutoff <= cut.cutoff {
            *slot = cut;
        }
    }

    /// When the earliest scope covering a token of `instance_id` minted by `creator` at
    /// revision `minted` was revoked; None if no scope covers it.
    pub(crate) fn covering(&self, instance_id: &str, creator: &str, minted: u64) -> Option<i64> {
        let map = self.by_instance.read().unwrap_or_else(|p| p.into_inner());
        let cuts = map.get(instance_id)?;
        let all = cuts.all.and_then(|c| c.covers(minted));
        let key = cuts.by_key.get(creator).and_then(|c| c.covers(minted));
        match (all, key) {
            (Some(a), Some(k)) => Some(a.min(k)),
            (a, k) => a.or(k),
        }
    }

    /// The tombstones whose every covered token has expired by `now`.
    fn expired(&self, now: i64) -> Vec<Tombstone> {
        let map = self.by_instance.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (instance, cuts) in map.iter() {
            let scopes = cuts
                .all
                .iter()
                .map(|c| (None, c))
                .chain(cuts.by_key.iter().map(|(k, c)| (Some(k.clone()), c)));
            for (key_id, cut) in scopes {
                if cut.until_ms <= now {
                    out.push(Tombstone {
                        instance_id: instance.clone(),
                        key_id,
                        cutoff: cut.cutoff,
                        revoke_ms: cut.revoke_ms,
                        until_ms: cut.until_ms,
                    });
                }
            }
        }
        out
    }

    /// Drops a tombstone from memory.
    fn forget(&self, t: &Tombstone) {
        let mut map = self.by_instance.write().unwrap_or_else(|p| p.into_inner());
        let Some(cuts) = map.get_mut(&t.instance_id) else {
            return;
        };
        match &t.key_id {
            Some(key) => {
                cuts.by_key.remove(key);
            }
            None => cuts.all = None,
        }
        if cuts.all.is_none() && cuts.by_key.is_empty() {
            map.remove(&t.instance_id);
        }
    }

    /// How many tombstones are held.
    pub(crate) fn len(&self) -> usize {
        let map = self.by_instance.read().unwrap_or_else(|p| p.into_inner());
        map.values()
            .map(|c| usize::from(c.all.is_some()) + c.by_key.len())
            .sum()
    }
}

impl Core {
    /// RevokeTokens: revokes a scope of tokens on an instance in one durable write, with one
    /// event (see the module documentation for which tokens a scope covers). Returns the
    /// event's revision: 0 when a handle names no live token of the instance, which is not
    /// an error (it may have expired and been swept).
    ///
    /// # Errors
    /// `InvalidParameter.InstanceId|TokenHandle|AccessKeyId`, `InstancePermissionCheckFailed`,
    /// `AccessKeyNotFound` (no such key to revoke the tokens of), `RevokeTokenOverFlow`,
    /// `InternalError`.
    pub async fn revoke_tokens(
        &self,
        caller: &Caller,
        instance_id: &str,
        scope: TokenScope,
    ) -> Result<u64> {
        check_instance_id(instance_id)?;
        caller.check_instance(instance_id)?;
        self.limiter
            .check(caller.access_key_id(), Operation::RevokeToken)?;
        let instance = instance_id.to_owned();
        let (_, revision) = match scope {
            TokenScope::Handle(h) => {
                let id = parse_handle(&h).ok_or_else(|| {
                    Error::invalid(Field::TokenHandle, "not a token handle (th_…)")
                })?;
                self.commit(move |store| {
                    let now = now_ms();
                    let Some(mut record) = store.token(&id)? else {
                        return Ok((vec![], vec![], ()));
                    };
                    // Another instance's token is treated as unknown: a handle reveals nothing
                    // beyond the caller's instances.
                    if record.instance_id != instance
                        || self.revocation_time(&record).is_some()
                        || record.expire_ms <= now
                    {
                        return Ok((vec![], vec![], ()));
                    }
                    let draft = Draft {
                        token_fingerprint: self.fingerprint_of(&id, &record).unwrap_or_default(),
                        token_handle: handle(&id),
                        expire_ms: Some(record.expire_ms),
                        ..Draft::new(
                            RevocationKind::TokenRevoked,
                            Some(&instance),
                            "RevokeTokens",
                            now,
                        )
                    };
                    record.revoked_ms = Some(now);
                    Ok((vec![Op::RevokeToken(id, record)], vec![draft], ()))
                })
                .await?
            }
            TokenScope::AccessKey(key) => {
                if key.is_empty() || key.len() > 64 {
                    return Err(Error::invalid(
                        Field::AccessKeyId,
                        "must be 1 to 64 characters",
                    ));
                }
                self.commit(|store| {
                    // Under the writer lock, so a concurrent delete cannot slip in between.
                    if !self.access_keys.contains(&key) {
                        return Err(Error::AccessKeyIdNotFound);
                    }
                    let now = now_ms();
                    let draft = Draft {
                        key_id: key.clone(),
                        expire_ms: Some(tombstone_until(store, now)?),
                        ..Draft::new(
                            RevocationKind::TokensOfKeyRevoked,
                            Some(&instance),
                            "RevokeTokens",
                            now,
                        )
                    };
                    Ok((vec![], vec![draft], ()))
                })
                .await?
            }
            TokenScope::Instance => {
                self.commit(move |store| {
                    let now = now_ms();
                    let draft = Draft {
                        expire_ms: Some(tombstone_until(store, now)?),
                        ..Draft::new(
                            RevocationKind::InstanceTokensRevoked,
                            Some(&instance),
                            "RevokeTokens",
                            now,
                        )
                    };
                    Ok((vec![], vec![draft], ()))
                })
                .await?
            }
        };
        Ok(revision)
    }

    /// Deletes the tombstones that no longer cover any live token. Returns how many.
    ///
    /// # Errors
    /// The store failed.
    pub async fn sweep_tombstones(&self) -> Result<usize> {
        // Built under the writer lock (in `commit_then`): a revocation of the same scope
        // writing a new tombstone meanwhile must not be deleted with the old one.
        let (expired, _) = self
            .commit_then(
                |store| {
                    // At most one transaction's worth; the rest go at the next tick.
                    let mut expired = self.tombstones.expired(now_ms());
                    expired.truncate(store.max_batch_ops());
                    let ops = expired
                        .iter()
                        .map(|t| Op::DeleteTombstone {
                            instance_id: t.instance_id.clone(),
                            key_id: t.key_id.clone(),
                        })
                        .collect();
                    Ok((ops, Vec::new(), expired))
                },
                |expired| {
                    for t in expired {
                        self.tombstones.forget(t);
                    }
                },
            )
            .await?;
        let swept = expired.len();
        if swept == 0 {
            return Ok(0);
        }
        tracing::debug!(swept, "swept expired scope tombstones");
        Ok(swept)
    }

    /// How many scope tombstones are in force.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }
}

/// When a tombstone written now may go: once every token it can cover has expired. Tokens live
/// at most [`MAX_LIFETIME_MS`] from their minting, which came before now (plus a margin for a
/// concurrent mint); a stored expiry beyond that (the clock stepped back) extends it.
fn tombstone_until(store: &dyn Store, now: i64) -> Result<i64> {
    let lifetime = now.saturating_add(MAX_LIFETIME_MS);
    let newest = store.newest_token_expiry()?.unwrap_or(lifetime);
    Ok(lifetime.max(newest).saturating_add(UNTIL_MARGIN_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tombstone(key: Option<&str>, cutoff: u64, revoke_ms: i64, until_ms: i64) -> Tombstone {
        Tombstone {
            instance_id: "i".into(),
            key_id: key.map(str::to_owned),
            cutoff,
            revoke_ms,
            until_ms,
        }
    }

    #[test]
    fn a_tombstone_covers_exactly_the_tokens_minted_before_its_cutoff() {
        let t = Tombstones::load(vec![tombstone(Some("K"), 10, 100, 1_000)]);
        assert_eq!(t.covering("i", "K", 9), Some(100));
        assert_eq!(
            t.covering("i", "K", 10),
            None,
            "minted at the cut-off's revision"
        );
        assert_eq!(t.covering("i", "L", 0), None, "another key");
        assert_eq!(t.covering("j", "K", 0), None, "another instance");
        t.record(&tombstone(None, 5, 50, 2_000));
        assert_eq!(t.covering("i", "L", 4), Some(50));
        assert_eq!(t.covering("i", "K", 4), Some(50), "the earliest revocation");
        assert_eq!(t.covering("i", "L", 5), None);
        // A later revocation of a scope raises its cut-off; an older one never lowers it.
        t.record(&tombstone(Some("K"), 20, 200, 3_000));
        t.record(&tombstone(Some("K"), 15, 150, 2_500));
        assert_eq!(t.covering("i", "K", 19), Some(200));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn expired_tombstones_are_found_and_forgotten() {
        let t = Tombstones::load(vec![
            tombstone(Some("K"), 10, 100, 1_000),
            tombstone(None, 12, 120, 5_000),
        ]);
        let expired = t.expired(1_000);
        assert_eq!(expired, vec![tombstone(Some("K"), 10, 100, 1_000)]);
        t.forget(&expired[0]);
        assert_eq!(t.covering("i", "K", 11), Some(120));
        assert_eq!(t.len(), 1);
        t.forget(&tombstone(None, 12, 120, 5_000));
        assert_eq!(t.len(), 0);
        assert!(t.by_instance.read().unwrap().is_empty());
    }
}
