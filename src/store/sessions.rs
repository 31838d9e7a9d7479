//! Broker sessions: which client id, on which broker, authenticated with which credential.
//!
//! The HTTP (EMQX, rmqtt) and mosquitto-go-auth integrations record one session per
//! (namespace, client id) when a CONNECT is allowed, where the namespace is the access key the
//! broker calls with. Brokers allow one connection per client id, and a new CONNECT takes the
//! id over, so the record mirrors the broker: the latest allowed CONNECT replaces the previous
//! one. Each record is indexed by every credential it rests on, so the kicker can ask "which
//! client ids use this revoked credential?", and by its expiry, so a sweep keeps the table
//! bounded.
//!
//! Writes are compare-and-swap on the whole record ([`BrokerSessionStore::swap_broker_session`])
//! with the indexes changed in the same atomic step, so no index entry ever outlives or
//! precedes its record, whatever the interleaving of CONNECTs, sweeps and several service
//! replicas sharing one store.

use super::{StoreFuture, StoreResult};

/// One recorded broker session.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BrokerSessionRecord {
    /// The access key id the broker authenticated with: sessions of different brokers never
    /// mix, even with equal client ids.
    #[prost(string, tag = "1")]
    pub namespace: String,
    /// The MQTT client id.
    #[prost(string, tag = "2")]
    pub client_id: String,
    /// The MQTT username of the CONNECT (`<Mode>|<KeyId>|<InstanceId>`).
    #[prost(string, tag = "3")]
    pub username: String,
    /// The instance from the username.
    #[prost(string, tag = "4")]
    pub instance_id: String,
    /// The credentials the session rests on, as index keys (see
    /// `core::broker_session::Credential::index_key`), sorted and de-duplicated.
    #[prost(string, repeated, tag = "5")]
    pub credentials: Vec<String>,
    /// The session handle AuthenticateConnect returned: a MAC-protected reference to the
    /// credential (never the password), re-checked for liveness on every use.
    #[prost(string, tag = "6")]
    pub session_handle: String,
    /// When the credential itself expires, ms since the Unix epoch; 0 = never.
    #[prost(int64, tag = "7")]
    pub credential_expire_ms: i64,
    /// When this record expires, ms since the Unix epoch: never later than the credential.
    #[prost(int64, tag = "8")]
    pub expire_ms: i64,
    /// When the CONNECT was allowed, ms since the Unix epoch.
    #[prost(int64, tag = "9")]
    pub create_ms: i64,
}

/// Storage of broker sessions. Every method is atomic on its own; none needs a lock in the
/// caller, so a store shared by several service replicas stays consistent.
pub trait BrokerSessionStore {
    /// The session of `client_id` under `namespace`, expired or not.
    fn broker_session(
        &self,
        namespace: &str,
        client_id: &str,
    ) -> StoreResult<Option<BrokerSessionRecord>>;

    /// Replaces the session of (`namespace`, `client_id`) with `new` (None deletes it) if the
    /// current one equals `expected` (None = there is none), updating the credential and expiry
    /// indexes in the same atomic step. Returns false, changing nothing, when the current
    /// session differs. `new`, when given, must have the same namespace and client id.
    fn swap_broker_session<'a>(
        &'a self,
        namespace: &'a str,
        client_id: &'a str,
        expected: Option<&'a BrokerSessionRecord>,
        new: Option<&'a BrokerSessionRecord>,
    ) -> StoreFuture<'a, bool>;

    /// Up to `limit` sessions under `namespace` that rest on `credential` (an index key), in
    /// client id order, strictly after `after` when given.
    fn broker_sessions_by_credential(
        &self,
        namespace: &str,
        credential: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<BrokerSessionRecord>>;

    /// Up to `limit` sessions (any namespace) that expired at or before `now_ms`, soonest first.
    fn expired_broker_sessions(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<BrokerSessionRecord>>;
}
