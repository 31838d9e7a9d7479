//! The records the store persists, encoded with prost so fields can be added later without a
//! migration (unknown fields are skipped, missing ones default), and their conversions to and
//! from the core's types. The records never leave the store: the core works with its own
//! types, and the numbers and sentinels written to disk are decided here, in one place.

use crate::core::{
    access_key::AccessKey,
    device::RegisteredDevice,
    revocation::{RevocationEvent, RevocationKind},
    scope::Tombstone,
    token::{Actions, IssuedToken},
};

/// A minted token.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct TokenRecord {
    /// The instance it was minted for.
    #[prost(string, tag = "1")]
    pub instance_id: String,
    /// Grants subscribe (Alibaba `R`).
    #[prost(bool, tag = "2")]
    pub read: bool,
    /// Grants publish (Alibaba `W`).
    #[prost(bool, tag = "3")]
    pub write: bool,
    /// Topic filters, sorted and de-duplicated.
    #[prost(string, repeated, tag = "4")]
    pub resources: Vec<String>,
    /// Expiry, ms since the Unix epoch.
    #[prost(int64, tag = "5")]
    pub expire_ms: i64,
    /// The access key that minted it.
    #[prost(string, tag = "6")]
    pub creator: String,
    /// Creation time, ms since the Unix epoch.
    #[prost(int64, tag = "7")]
    pub create_ms: i64,
    /// Revocation time, ms since the Unix epoch; 0 = not revoked.
    #[prost(int64, tag = "8")]
    pub revoke_ms: i64,
    /// The revocation log's last revision when it was minted (0 in records of older
    /// versions, which every scope tombstone then covers: they are older).
    #[prost(uint64, tag = "9")]
    pub minted_revision: u64,
    /// The keyring key of its MAC; 0 = not recorded (older versions).
    #[prost(uint32, tag = "10")]
    pub keyring_id: u32,
}

/// A scope tombstone (RevokeTokens by key or instance). Its key names the scope; the record
/// repeats it so a record alone says what it is.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct TombstoneRecord {
    /// The instance.
    #[prost(string, tag = "1")]
    pub instance_id: String,
    /// The minting access key; empty = every token of the instance.
    #[prost(string, tag = "2")]
    pub key_id: String,
    /// Tokens minted before this revision are covered.
    #[prost(uint64, tag = "3")]
    pub cutoff_revision: u64,
    /// When the scope was revoked, ms.
    #[prost(int64, tag = "4")]
    pub revoke_ms: i64,
    /// When the last token it can cover expires, ms.
    #[prost(int64, tag = "5")]
    pub until_ms: i64,
}

/// An access key. The secret is not stored: it is derived from the keyring.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct AccessKeyRecord {
    /// The key id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Instances it may act on; `*` = all.
    #[prost(string, repeated, tag = "2")]
    pub instance_ids: Vec<String>,
    /// Free text.
    #[prost(string, tag = "3")]
    pub description: String,
    /// Creation time, ms since the Unix epoch.
    #[prost(int64, tag = "4")]
    pub create_ms: i64,
    /// The root key, created on first start.
    #[prost(bool, tag = "5")]
    pub root: bool,
    /// Id of the keyring key its secret is derived from.
    #[prost(uint32, tag = "6")]
    pub keyring_id: u32,
}

/// A device credential. The secret is not stored: it is derived from the keyring.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct DeviceRecord {
    /// The instance.
    #[prost(string, tag = "1")]
    pub instance_id: String,
    /// `GroupId@@@DeviceId`.
    #[prost(string, tag = "2")]
    pub client_id: String,
    /// The current device access key id.
    #[prost(string, tag = "3")]
    pub device_key_id: String,
    /// Creation time, ms since the Unix epoch.
    #[prost(int64, tag = "4")]
    pub create_ms: i64,
    /// Last refresh (or creation) time, ms since the Unix epoch.
    #[prost(int64, tag = "5")]
    pub update_ms: i64,
    /// Id of the keyring key its secret is derived from.
    #[prost(uint32, tag = "6")]
    pub keyring_id: u32,
}

/// One entry of the revocation log.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RevocationRecord {
    /// Position in the log.
    #[prost(uint64, tag = "1")]
    pub revision: u64,
    /// What was revoked, as a [`kind_code`].
    #[prost(int32, tag = "2")]
    pub kind: i32,
    /// The instance; empty for an access key allowed on every instance.
    #[prost(string, tag = "3")]
    pub instance_id: String,
    /// Token fingerprint, for token revocations.
    #[prost(string, tag = "4")]
    pub token_fingerprint: String,
    /// Client id, for device credential events.
    #[prost(string, tag = "5")]
    pub client_id: String,
    /// Device access key id or access key id that stopped working.
    #[prost(string, tag = "6")]
    pub key_id: String,
    /// Why, in words.
    #[prost(string, tag = "7")]
    pub reason: String,
    /// When the revoked credential would have expired, ms; 0 = never.
    #[prost(int64, tag = "8")]
    pub expire_ms: i64,
    /// When it was revoked, ms.
    #[prost(int64, tag = "9")]
    pub revoke_ms: i64,
    /// Token handle, for token revocations.
    #[prost(string, tag = "10")]
    pub token_handle: String,
}

// The numbers the log stores for each revocation kind. They are on disk, so they never
// change (they happen to equal the API's `RevocationKind` numbers, which are fixed too).
const KIND_TOKEN_REVOKED: i32 = 1;
const KIND_DEVICE_CREDENTIAL_REFRESHED: i32 = 2;
const KIND_DEVICE_CREDENTIAL_UNREGISTERED: i32 = 3;
const KIND_ACCESS_KEY_DELETED: i32 = 4;
const KIND_TOKENS_OF_KEY_REVOKED: i32 = 5;
const KIND_INSTANCE_TOKENS_REVOKED: i32 = 6;

/// The stored number of a revocation kind.
fn kind_code(kind: RevocationKind) -> i32 {
    match kind {
        RevocationKind::TokenRevoked => KIND_TOKEN_REVOKED,
        RevocationKind::DeviceCredentialRefreshed => KIND_DEVICE_CREDENTIAL_REFRESHED,
        RevocationKind::DeviceCredentialUnregistered => KIND_DEVICE_CREDENTIAL_UNREGISTERED,
        RevocationKind::AccessKeyDeleted => KIND_ACCESS_KEY_DELETED,
        RevocationKind::TokensOfKeyRevoked => KIND_TOKENS_OF_KEY_REVOKED,
        RevocationKind::InstanceTokensRevoked => KIND_INSTANCE_TOKENS_REVOKED,
    }
}

/// The revocation kind of a stored number; None for a number this version does not know.
fn kind_from_code(code: i32) -> Option<RevocationKind> {
    match code {
        KIND_TOKEN_REVOKED => Some(RevocationKind::TokenRevoked),
        KIND_DEVICE_CREDENTIAL_REFRESHED => Some(RevocationKind::DeviceCredentialRefreshed),
        KIND_DEVICE_CREDENTIAL_UNREGISTERED => Some(RevocationKind::DeviceCredentialUnregistered),
        KIND_ACCESS_KEY_DELETED => Some(RevocationKind::AccessKeyDeleted),
        KIND_TOKENS_OF_KEY_REVOKED => Some(RevocationKind::TokensOfKeyRevoked),
        KIND_INSTANCE_TOKENS_REVOKED => Some(RevocationKind::InstanceTokensRevoked),
        _ => None,
    }
}

/// 0 on disk means "none" for optional times.
fn optional_ms(ms: i64) -> Option<i64> {
    (ms != 0).then_some(ms)
}

impl From<&IssuedToken> for TokenRecord {
    fn from(t: &IssuedToken) -> Self {
        Self {
            instance_id: t.instance_id.clone(),
            read: t.actions.read,
            write: t.actions.write,
            resources: t.resources.clone(),
            expire_ms: t.expire_ms,
            creator: t.creator.clone(),
            create_ms: t.create_ms,
            revoke_ms: t.revoked_ms.unwrap_or(0),
            minted_revision: t.minted_revision,
            keyring_id: t.keyring_id,
        }
    }
}

impl From<TokenRecord> for IssuedToken {
    fn from(r: TokenRecord) -> Self {
        Self {
            instance_id: r.instance_id,
            actions: Actions {
                read: r.read,
                write: r.write,
            },
            resources: r.resources,
            expire_ms: r.expire_ms,
            creator: r.creator,
            create_ms: r.create_ms,
            revoked_ms: optional_ms(r.revoke_ms),
            minted_revision: r.minted_revision,
            keyring_id: r.keyring_id,
        }
    }
}

impl From<&Tombstone> for TombstoneRecord {
    fn from(t: &Tombstone) -> Self {
        Self {
            instance_id: t.instance_id.clone(),
            key_id: t.key_id.clone().unwrap_or_default(),
            cutoff_revision: t.cutoff,
            revoke_ms: t.revoke_ms,
            until_ms: t.until_ms,
        }
    }
}

impl From<TombstoneRecord> for Tombstone {
    fn from(r: TombstoneRecord) -> Self {
        Self {
            instance_id: r.instance_id,
            // Access key ids are never empty: empty is the instance-wide scope.
            key_id: (!r.key_id.is_empty()).then_some(r.key_id),
            cutoff: r.cutoff_revision,
            revoke_ms: r.revoke_ms,
            until_ms: r.until_ms,
        }
    }
}

impl From<&AccessKey> for AccessKeyRecord {
    fn from(k: &AccessKey) -> Self {
        Self {
            id: k.id.clone(),
            instance_ids: k.instance_ids.clone(),
            description: k.description.clone(),
            create_ms: k.create_ms,
            root: k.root,
            keyring_id: k.keyring_id,
        }
    }
}

impl From<AccessKeyRecord> for AccessKey {
    fn from(r: AccessKeyRecord) -> Self {
        Self {
            id: r.id,
            instance_ids: r.instance_ids,
            description: r.description,
            create_ms: r.create_ms,
            root: r.root,
            keyring_id: r.keyring_id,
        }
    }
}

impl From<&RegisteredDevice> for DeviceRecord {
    fn from(d: &RegisteredDevice) -> Self {
        Self {
            instance_id: d.instance_id.clone(),
            client_id: d.client_id.clone(),
            device_key_id: d.device_key_id.clone(),
            create_ms: d.create_ms,
            update_ms: d.update_ms,
            keyring_id: d.keyring_id,
        }
    }
}

impl From<DeviceRecord> for RegisteredDevice {
    fn from(r: DeviceRecord) -> Self {
        Self {
            instance_id: r.instance_id,
            client_id: r.client_id,
            device_key_id: r.device_key_id,
            create_ms: r.create_ms,
            update_ms: r.update_ms,
            keyring_id: r.keyring_id,
        }
    }
}

impl From<&RevocationEvent> for RevocationRecord {
    fn from(e: &RevocationEvent) -> Self {
        Self {
            revision: e.revision,
            kind: kind_code(e.kind),
            instance_id: e.instance_id.clone().unwrap_or_default(),
            token_fingerprint: e.token_fingerprint.clone(),
            client_id: e.client_id.clone(),
            key_id: e.key_id.clone(),
            reason: e.reason.clone(),
            expire_ms: e.expire_ms.unwrap_or(0),
            revoke_ms: e.revoke_ms,
            token_handle: e.token_handle.clone(),
        }
    }
}

impl TryFrom<RevocationRecord> for RevocationEvent {
    /// What is wrong with the record.
    type Error = String;

    fn try_from(r: RevocationRecord) -> Result<Self, String> {
        let kind =
            kind_from_code(r.kind).ok_or_else(|| format!("unknown revocation kind {}", r.kind))?;
        Ok(Self {
            revision: r.revision,
            kind,
            instance_id: (!r.instance_id.is_empty()).then_some(r.instance_id),
            token_fingerprint: r.token_fingerprint,
            client_id: r.client_id,
            key_id: r.key_id,
            reason: r.reason,
            expire_ms: optional_ms(r.expire_ms),
            revoke_ms: r.revoke_ms,
            token_handle: r.token_handle,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_kinds_keep_their_stored_numbers() {
        // Written by every earlier version; changing one would change what old logs mean.
        let fixed = [
            (RevocationKind::TokenRevoked, 1),
            (RevocationKind::DeviceCredentialRefreshed, 2),
            (RevocationKind::DeviceCredentialUnregistered, 3),
            (RevocationKind::AccessKeyDeleted, 4),
            (RevocationKind::TokensOfKeyRevoked, 5),
            (RevocationKind::InstanceTokensRevoked, 6),
        ];
        for (kind, code) in fixed {
            assert_eq!(kind_code(kind), code);
            assert_eq!(kind_from_code(code), Some(kind));
        }
        assert_eq!(kind_from_code(0), None);
        assert_eq!(kind_from_code(7), None);
    }

    #[test]
    fn revocation_events_round_trip_with_their_sentinels() {
        let event = RevocationEvent {
            revision: 7,
            kind: RevocationKind::AccessKeyDeleted,
            instance_id: None,
            token_fingerprint: String::new(),
            client_id: String::new(),
            key_id: "MTAKx".into(),
            reason: "DeleteAccessKey".into(),
            expire_ms: None,
            revoke_ms: 1_000,
            token_handle: String::new(),
        };
        let record = RevocationRecord::from(&event);
        assert_eq!((record.instance_id.as_str(), record.expire_ms), ("", 0));
        assert_eq!(RevocationEvent::try_from(record), Ok(event));

        let unknown = RevocationRecord {
            kind: 9,
            ..RevocationRecord::default()
        };
        assert_eq!(
            RevocationEvent::try_from(unknown),
            Err("unknown revocation kind 9".to_owned())
        );
    }

    #[test]
    fn tombstones_round_trip_with_the_instance_scope_as_an_empty_key() {
        for key_id in [None, Some("MTAKx".to_owned())] {
            let t = Tombstone {
                instance_id: "i".into(),
                key_id: key_id.clone(),
                cutoff: 9,
                revoke_ms: 1,
                until_ms: 2,
            };
            let record = TombstoneRecord::from(&t);
            assert_eq!(record.key_id, key_id.clone().unwrap_or_default());
            assert_eq!(Tombstone::from(record), t);
        }
    }
}
