//! The records the store persists, encoded with prost so fields can be added later without a
//! migration (unknown fields are skipped, missing ones default).

/// A token's random id: 16 bytes (128 bits) from the OS CSPRNG.
pub type TokenId = [u8; 16];

/// A minted token.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TokenRecord {
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
}

/// An access key. The secret is not stored: it is derived from the keyring.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AccessKeyRecord {
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
pub struct DeviceRecord {
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
pub struct RevocationRecord {
    /// Position in the log.
    #[prost(uint64, tag = "1")]
    pub revision: u64,
    /// What was revoked; the values of the API's `RevocationKind`.
    #[prost(int32, tag = "2")]
    pub kind: i32,
    /// The instance.
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
}
