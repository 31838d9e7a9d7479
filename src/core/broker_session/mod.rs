//! Broker sessions: the CONNECT checks of brokers that later ask about topics *without* the
//! password (EMQX and rmqtt HTTP authorization, mosquitto-go-auth `CheckAcl`), and the answer
//! to the kicker's question "which client ids use this revoked credential?".
//!
//! Guarantees:
//! - Decisions are AuthenticateConnect's and AuthorizeTopic's: a session stores the session
//!   handle of the allowed CONNECT, and every topic check resolves it again, so a revoked,
//!   expired, refreshed or deleted credential stops authorizing at once.
//! - One session per (broker access key, client id): the latest allowed CONNECT replaces the
//!   previous one, as the broker's own takeover does, so a client that reconnected with a new
//!   credential is never listed under its old one.
//! - A CONNECT is answered "allow" only after its session is durable and the credential has
//!   been checked live *after* that write. A revocation marks the credential before its event
//!   is published, so whoever handles the event and then lists sessions finds every session
//!   allowed before the revocation; a CONNECT racing the revocation is denied instead.
//! - Bounded: a session expires no later than its credential and at most
//!   `broker_session_ttl` after the CONNECT (a topic check past half that time pushes it out
//!   again while the credential lives); the HTTP integration hands that expiry to the broker
//!   as `expire_at`, so no EMQX or rmqtt connection outlives the record that finds it (rmqtt
//!   disconnects at the next keepalive, so an expired session stays listed for
//!   [`KICK_GRACE`]). The maintenance sweep deletes sessions past that grace.
//!
//! Children: `lookup` (the kicker's listing and the sweep).

use super::{
    broker::AuthMode, now_ms, topic, Caller, ConnectDecision, Core, DenyReason, Error, Grant,
    Result, RevocationKind, TopicAction, TopicRequest,
};
use crate::store::BrokerSessionRecord;

mod lookup;

pub use lookup::{SessionClient, SessionPage, DEFAULT_SESSION_PAGE, KICK_GRACE, MAX_SESSION_PAGE};

/// Compare-and-swap attempts before a CONNECT gives up on a client id that keeps changing.
const SWAP_ATTEMPTS: usize = 16;

/// A credential a session can rest on; what a revocation event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A token, by fingerprint (the revocation event's `token_fingerprint`).
    Token(String),
    /// An access key (Token and Signature usernames name one).
    AccessKey(String),
    /// A device credential, by device access key id.
    DeviceCredential(String),
    /// The tokens an access key minted (Token-mode sessions on one of them).
    MintingKey(String),
    /// Every token of an instance: every Token-mode session. The instance is not part of it:
    /// listings of it are narrowed to one instance by their `instance_id`, which they require.
    InstanceTokens,
}

impl Credential {
    /// The credential a revocation event revokes: `token_fingerprint` for token revocations,
    /// `key_id` for the others, and for an instance scope every token session (list them with
    /// the event's instance id). A scope lists every session of the scope, also one whose
    /// client reconnected with a token minted after the scope's cut-off: kicked, it reconnects.
    pub fn of_revocation(kind: RevocationKind, token_fingerprint: &str, key_id: &str) -> Self {
        match kind {
            RevocationKind::TokenRevoked => Self::Token(token_fingerprint.to_owned()),
            RevocationKind::DeviceCredentialRefreshed
            | RevocationKind::DeviceCredentialUnregistered => {
                Self::DeviceCredential(key_id.to_owned())
            }
            RevocationKind::AccessKeyDeleted => Self::AccessKey(key_id.to_owned()),
            RevocationKind::TokensOfKeyRevoked => Self::MintingKey(key_id.to_owned()),
            RevocationKind::InstanceTokensRevoked => Self::InstanceTokens,
        }
    }

    /// The key the store indexes sessions by.
    pub fn index_key(&self) -> String {
        match self {
            Self::Token(fingerprint) => format!("t:{fingerprint}"),
            Self::AccessKey(id) => format!("k:{id}"),
            Self::DeviceCredential(id) => format!("d:{id}"),
            Self::MintingKey(id) => format!("m:{id}"),
            Self::InstanceTokens => "n:".to_owned(),
        }
    }

    /// Every credential a grant rests on: its tokens, the access key of a Token username, the
    /// keys that minted its tokens (as minting keys, and as access keys: deleting one revokes
    /// its tokens) and its instance's tokens; the access key of a Signature username; the
    /// device credential of a DeviceCredential one.
    pub fn of_grant(grant: &Grant) -> Vec<Self> {
        let mut out: Vec<Self> = match grant.mode {
            AuthMode::Token => grant
                .token_fingerprints
                .iter()
                .map(|f| Self::Token(f.clone()))
                .chain([Self::AccessKey(grant.key_id.clone()), Self::InstanceTokens])
                .chain(grant.tokens.iter().flat_map(|t| {
                    [
                        Self::MintingKey(t.access_key_id.clone()),
                        Self::AccessKey(t.access_key_id.clone()),
                    ]
                }))
                .collect(),
            AuthMode::Signature => vec![Self::AccessKey(grant.key_id.clone())],
            AuthMode::DeviceCredential => vec![Self::DeviceCredential(grant.key_id.clone())],
        };
        out.dedup();
        out
    }
}

/// What a broker asks about a topic. The numbers are mosquitto-go-auth's `acc` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerAccess {
    /// A message on this topic name may be delivered to the client (`MOSQ_ACL_READ`, 1).
    Read,
    /// The client publishes to this topic name (`MOSQ_ACL_WRITE`, 2).
    Publish,
    /// Both read and publish (`MOSQ_ACL_READWRITE`, 3).
    ReadWrite,
    /// The client subscribes to this filter (`MOSQ_ACL_SUBSCRIBE`, 4); `$share/<group>/` is
    /// stripped first.
    Subscribe,
}

/// The answer to a broker's CONNECT check.
#[derive(Debug, Clone)]
pub enum SessionDecision {
    /// Allowed; the session is recorded.
    Allow {
        /// What the client may do.
        grant: Grant,
        /// When the session ends, ms since the Unix epoch: the credential's expiry or the
        /// session TTL, whichever comes first. The broker should disconnect the client then.
        expire_ms: i64,
    },
    /// Denied; nothing recorded.
    Deny(DenyReason),
}

/// One topic question from a broker that does not resend the password.
#[derive(Debug, Clone, Copy)]
pub struct SessionTopicRequest<'a> {
    /// The MQTT client id.
    pub client_id: &'a str,
    /// The MQTT username; must be the one of the recorded CONNECT.
    pub username: &'a str,
    /// The password, if the broker sends it: used only when no session is recorded.
    pub password: &'a str,
    /// What the client does.
    pub access: BrokerAccess,
    /// A topic name (read, publish) or filter (subscribe).
    pub topic: &'a str,
}

/// `$share/<group>/<filter>` subscribes to `<filter>`; the grant is checked against that.
fn strip_shared(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, f)| f)
}

/// A deny that says the credential is live but not granted this topic: the session stays.
fn credential_live(decision: &std::result::Result<(), DenyReason>) -> bool {
    matches!(
        decision,
        Ok(()) | Err(DenyReason::TopicNotGranted | DenyReason::InvalidTopic)
    )
}

impl Core {
    fn session_ttl_ms(&self) -> i64 {
        i64::try_from(self.config.broker_session_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// A broker's CONNECT check: AuthenticateConnect, and on allow a durable session record
    /// under the caller's access key (see the module guarantees).
    ///
    /// # Errors
    /// Storage failures only; every bad credential is a [`SessionDecision::Deny`].
    pub async fn open_broker_session(
        &self,
        caller: &Caller,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> Result<SessionDecision> {
        let (grant, session_handle) =
            match self.authenticate_connect(caller, client_id, username, password)? {
                ConnectDecision::Allow {
                    grant,
                    session_handle,
                } => (grant, session_handle),
                ConnectDecision::Deny(reason) => return Ok(SessionDecision::Deny(reason)),
            };
        let now = now_ms();
        let bound = now.saturating_add(self.session_ttl_ms());
        let expire_ms = match grant.expire_time {
            0 => bound,
            at => at.min(bound),
        };
        let mut credentials: Vec<String> = Credential::of_grant(&grant)
            .iter()
            .map(Credential::index_key)
            .collect();
        credentials.sort();
        credentials.dedup();
        let record = BrokerSessionRecord {
            namespace: caller.access_key_id().to_owned(),
            client_id: client_id.to_owned(),
            username: username.to_owned(),
            instance_id: grant.instance_id.clone(),
            credentials,
            session_handle,
            credential_expire_ms: grant.expire_time,
            expire_ms,
            create_ms: now,
        };
        let previous = self.replace_broker_session(&record).await?;
        self.flush().await?;
        // Checked again after the write: a revocation applied before this read is denied here;
        // one applied after it publishes its event after our record is durable, so whoever
        // lists sessions for that event finds this one.
        match self.authenticate_connect(caller, client_id, username, password)? {
            ConnectDecision::Allow { .. } => Ok(SessionDecision::Allow { grant, expire_ms }),
            ConnectDecision::Deny(reason) => {
                // Put back the session of the connection the broker keeps (it refuses this
                // CONNECT), unless someone replaced ours meanwhile.
                self.store
                    .swap_broker_session(
                        &record.namespace,
                        client_id,
                        Some(&record),
                        previous.as_ref(),
                    )
                    .await?;
                Ok(SessionDecision::Deny(reason))
            }
        }
    }

    /// Writes `record` over whatever session its client id has; returns the one it replaced.
    async fn replace_broker_session(
        &self,
        record: &BrokerSessionRecord,
    ) -> Result<Option<BrokerSessionRecord>> {
        for _ in 0..SWAP_ATTEMPTS {
            let current = self
                .store
                .broker_session(&record.namespace, &record.client_id)?;
            if self
                .store
                .swap_broker_session(
                    &record.namespace,
                    &record.client_id,
                    current.as_ref(),
                    Some(record),
                )
                .await?
            {
                return Ok(current);
            }
        }
        Err(Error::internal(format!(
            "the session of client id {} changed {SWAP_ATTEMPTS} times during one CONNECT",
            record.client_id
        )))
    }

    /// A broker's topic check without the password: decided with the session the client's
    /// CONNECT recorded under the caller's access key (or, when none is recorded and the broker
    /// sent the password, with the credentials, as AuthorizeTopic does).
    ///
    /// # Errors
    /// Storage failures only; every denial is `Ok(Err(reason))` (`InvalidSession` when no
    /// live session for this client id and username is recorded).
    pub fn authorize_broker_session(
        &self,
        caller: &Caller,
        req: SessionTopicRequest<'_>,
    ) -> Result<std::result::Result<(), DenyReason>> {
        let now = now_ms();
        let record = self
            .store
            .broker_session(caller.access_key_id(), req.client_id)?
            .filter(|r| r.expire_ms > now && r.username == req.username);
        let Some(record) = record else {
            if req.password.is_empty() {
                return Ok(Err(DenyReason::InvalidSession));
            }
            return self.decide_access(caller, req, "");
        };
        let decision = self.decide_access(caller, req, &record.session_handle)?;
        if credential_live(&decision) {
            self.extend_broker_session(&record, now)?;
        }
        Ok(decision)
    }

    fn decide_access(
        &self,
        caller: &Caller,
        req: SessionTopicRequest<'_>,
        session_handle: &str,
    ) -> Result<std::result::Result<(), DenyReason>> {
        let ask = |action, topic| {
            self.authorize_topic(
                caller,
                TopicRequest {
                    client_id: req.client_id,
                    username: req.username,
                    password: req.password,
                    session_handle,
                    action,
                    topic,
                },
            )
        };
        // Delivery of a message on a topic name: for a valid name, "covered by a subscribe
        // filter" is exactly "matched by a subscribe filter" (`Grant::allows_delivery`).
        let read = || {
            if topic::validate_name(req.topic).is_err() {
                return Ok(Err(DenyReason::InvalidTopic));
            }
            ask(TopicAction::Subscribe, req.topic)
        };
        match req.access {
            BrokerAccess::Publish => ask(TopicAction::Publish, req.topic),
            BrokerAccess::Subscribe => ask(TopicAction::Subscribe, strip_shared(req.topic)),
            BrokerAccess::Read => read(),
            BrokerAccess::ReadWrite => match ask(TopicAction::Publish, req.topic)? {
                Ok(()) => read(),
                denied => Ok(denied),
            },
        }
    }

    /// Pushes a session's expiry out by the TTL once it is past half of it and its credential
    /// lives longer, so a long connection of a broker that has no expiry of its own (Mosquitto)
    /// keeps its session. Not waited for: a lost extension is redone on the next check.
    fn extend_broker_session(&self, record: &BrokerSessionRecord, now: i64) -> Result<()> {
        let ttl = self.session_ttl_ms();
        if record.expire_ms.saturating_sub(now) >= ttl / 2 {
            return Ok(());
        }
        let bound = now.saturating_add(ttl);
        let target = match record.credential_expire_ms {
            0 => bound,
            at => at.min(bound),
        };
        if target <= record.expire_ms {
            return Ok(());
        }
        let extended = BrokerSessionRecord {
            expire_ms: target,
            ..record.clone()
        };
        // Losing the race to a new CONNECT is fine: that one wrote a fresh session. Off the
        // check's path: a shared store's compare-and-swap is a network round trip.
        let store = self.store.clone();
        let record = record.clone();
        tokio::spawn(async move {
            let swapped = store
                .swap_broker_session(
                    &record.namespace,
                    &record.client_id,
                    Some(&record),
                    Some(&extended),
                )
                .await;
            if let Err(e) = swapped {
                tracing::warn!(error = %e, "extending a broker session failed; the next check retries");
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_revocation_kinds() {
        assert_eq!(
            Credential::of_revocation(RevocationKind::TokenRevoked, "ab", "MTAK1").index_key(),
            "t:ab"
        );
        for kind in [
            RevocationKind::DeviceCredentialRefreshed,
            RevocationKind::DeviceCredentialUnregistered,
        ] {
            assert_eq!(
                Credential::of_revocation(kind, "", "DC.x").index_key(),
                "d:DC.x"
            );
        }
        assert_eq!(
            Credential::of_revocation(RevocationKind::AccessKeyDeleted, "", "MTAK1").index_key(),
            "k:MTAK1"
        );
        assert_eq!(
            Credential::of_revocation(RevocationKind::TokensOfKeyRevoked, "", "MTAK1").index_key(),
            "m:MTAK1"
        );
        assert_eq!(
            Credential::of_revocation(RevocationKind::InstanceTokensRevoked, "", "").index_key(),
            "n:"
        );
    }

    #[test]
    fn a_token_grant_rests_on_its_minting_keys_and_instance() {
        let grant = Grant {
            mode: AuthMode::Token,
            instance_id: "i".into(),
            publish: vec![],
            subscribe: vec![],
            expire_time: 0,
            token_fingerprints: vec!["f".into()],
            key_id: "USER".into(),
            tokens: vec![crate::core::broker::GrantToken {
                fingerprint: "f".into(),
                token_handle: "th_x".into(),
                access_key_id: "MINTER".into(),
                minted_revision: 1,
            }],
        };
        let mut keys: Vec<String> = Credential::of_grant(&grant)
            .iter()
            .map(Credential::index_key)
            .collect();
        keys.sort();
        assert_eq!(keys, ["k:MINTER", "k:USER", "m:MINTER", "n:", "t:f"]);
    }

    #[test]
    fn shared_subscriptions_are_checked_on_their_filter() {
        assert_eq!(strip_shared("$share/g/a/#"), "a/#");
        assert_eq!(strip_shared("$share/g"), "$share/g");
        assert_eq!(strip_shared("a/b"), "a/b");
    }
}
