//! What an authenticated MQTT client may do ([`Grant`]) and the decision on one topic action,
//! by the service's rules. The service computes grants; a broker caches them and decides every
//! publish, subscribe and delivery locally with [`Grant::check`] and [`Grant::allows_delivery`],
//! so both sides agree on every topic by construction.

use crate::topic;

/// How a client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Token mode.
    Token = 1,
    /// DeviceCredential mode.
    DeviceCredential = 2,
    /// Signature mode.
    Signature = 3,
}

/// Why a check was denied. The values are the API's `DenyReason` numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// Username is not `<Mode>|<KeyId>|<InstanceId>`.
    MalformedUsername = 1,
    /// Unknown mode.
    UnknownMode = 2,
    /// Password does not have the mode's form.
    MalformedPassword = 3,
    /// Client id is not `GroupId@@@DeviceId`.
    InvalidClientId = 4,
    /// The access key in the username does not exist.
    UnknownAccessKey = 5,
    /// Key or credential not allowed on the instance (or the caller is not).
    InstanceMismatch = 6,
    /// Signature or device password does not match.
    BadSignature = 7,
    /// Device credential does not exist or belongs to another client id.
    CredentialNotFound = 8,
    /// Token garbled, forged, unknown or of another instance.
    TokenInvalid = 9,
    /// Token expired.
    TokenExpired = 10,
    /// Token revoked.
    TokenRevoked = 11,
    /// Password type tag asks for more than the token grants.
    TokenTypeMismatch = 12,
    /// Topic not granted for the action.
    TopicNotGranted = 13,
    /// Topic not a valid name/filter for the action.
    InvalidTopic = 14,
    /// Session handle garbled or forged.
    InvalidSession = 15,
}

/// Publish or subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicAction {
    /// PUBLISH to a topic name.
    Publish,
    /// SUBSCRIBE to a topic filter.
    Subscribe,
}

/// What an authenticated client may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// How it authenticated.
    pub mode: AuthMode,
    /// The instance.
    pub instance_id: String,
    /// Filters it may publish to.
    pub publish: Vec<String>,
    /// Filters it may subscribe within.
    pub subscribe: Vec<String>,
    /// When the grant ends, ms since the Unix epoch; 0 = no expiry.
    pub expire_time: i64,
    /// Fingerprints of the tokens used (Token mode); see [`crate::fingerprint`].
    pub token_fingerprints: Vec<String>,
    /// The access key id or device access key id named in the username. In Token mode it need
    /// not be the key that minted the tokens: that one is in [`Grant::tokens`].
    pub key_id: String,
    /// Token mode: the tokens used, by reference, in the order of `token_fingerprints`; what
    /// scope revocations are matched against. Empty in other modes (and from a server that
    /// predates token handles).
    pub tokens: Vec<GrantToken>,
}

/// One token a Token-mode grant rests on, by reference: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrantToken {
    /// The token's [`crate::fingerprint`].
    pub fingerprint: String,
    /// The token's handle (`th_…`), safe to log.
    pub token_handle: String,
    /// The access key that minted it.
    pub access_key_id: String,
    /// The revocation log's revision when it was minted: a scope revocation event with a
    /// higher revision covers it.
    pub minted_revision: u64,
}

impl Grant {
    /// Whether the grant allows `action` on `topic` (a name for publish, a filter for
    /// subscribe), with MQTT wildcard semantics.
    ///
    /// # Errors
    /// `InvalidTopic` or `TopicNotGranted`.
    pub fn check(&self, action: TopicAction, topic_str: &str) -> Result<(), DenyReason> {
        let granted = match action {
            TopicAction::Publish => {
                topic::validate_name(topic_str).map_err(|_| DenyReason::InvalidTopic)?;
                self.publish.iter().any(|f| topic::matches(f, topic_str))
            }
            TopicAction::Subscribe => {
                topic::validate_filter(topic_str).map_err(|_| DenyReason::InvalidTopic)?;
                self.subscribe.iter().any(|f| topic::covers(f, topic_str))
            }
        };
        if granted {
            Ok(())
        } else {
            Err(DenyReason::TopicNotGranted)
        }
    }

    /// Whether a message published on `topic` may be delivered to this client (a broker
    /// checks deliveries to wildcard subscribers): some subscribe filter matches it.
    pub fn allows_delivery(&self, topic_str: &str) -> bool {
        self.subscribe.iter().any(|f| topic::matches(f, topic_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_checks_use_mqtt_semantics() {
        let grant = Grant {
            mode: AuthMode::Token,
            instance_id: "i".into(),
            publish: vec!["a/b".into()],
            subscribe: vec!["a/#".into()],
            expire_time: 0,
            token_fingerprints: vec![],
            key_id: "k".into(),
            tokens: vec![],
        };
        assert_eq!(grant.check(TopicAction::Publish, "a/b"), Ok(()));
        assert_eq!(
            grant.check(TopicAction::Publish, "a/c"),
            Err(DenyReason::TopicNotGranted)
        );
        assert_eq!(
            grant.check(TopicAction::Publish, "a/+"),
            Err(DenyReason::InvalidTopic)
        );
        assert_eq!(grant.check(TopicAction::Subscribe, "a/+/c"), Ok(()));
        assert_eq!(
            grant.check(TopicAction::Subscribe, "b/#"),
            Err(DenyReason::TopicNotGranted)
        );
        assert!(grant.allows_delivery("a/x/y"));
        assert!(!grant.allows_delivery("b"));
    }
}
