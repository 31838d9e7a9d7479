//! The wire codec of the domain types: generated proto messages on one side, [`Grant`],
//! [`DenyReason`] and [`RevocationEvent`] on the other. Exhaustive matches both ways, so a
//! variant added on either side fails to compile here instead of being mis-numbered.

use crate::{
    grant::{AuthMode, DenyReason, Grant, GrantToken},
    proto,
    revocation::{RevocationEvent, RevocationKind},
};

impl From<AuthMode> for proto::AuthMode {
    fn from(m: AuthMode) -> Self {
        match m {
            AuthMode::Token => Self::Token,
            AuthMode::DeviceCredential => Self::DeviceCredential,
            AuthMode::Signature => Self::Signature,
        }
    }
}

impl From<DenyReason> for proto::DenyReason {
    fn from(r: DenyReason) -> Self {
        match r {
            DenyReason::MalformedUsername => Self::MalformedUsername,
            DenyReason::UnknownMode => Self::UnknownMode,
            DenyReason::MalformedPassword => Self::MalformedPassword,
            DenyReason::InvalidClientId => Self::InvalidClientId,
            DenyReason::UnknownAccessKey => Self::UnknownAccessKey,
            DenyReason::InstanceMismatch => Self::InstanceMismatch,
            DenyReason::BadSignature => Self::BadSignature,
            DenyReason::CredentialNotFound => Self::CredentialNotFound,
            DenyReason::TokenInvalid => Self::TokenInvalid,
            DenyReason::TokenExpired => Self::TokenExpired,
            DenyReason::TokenRevoked => Self::TokenRevoked,
            DenyReason::TokenTypeMismatch => Self::TokenTypeMismatch,
            DenyReason::TopicNotGranted => Self::TopicNotGranted,
            DenyReason::InvalidTopic => Self::InvalidTopic,
            DenyReason::InvalidSession => Self::InvalidSession,
        }
    }
}

impl From<Grant> for proto::Grant {
    fn from(g: Grant) -> Self {
        Self {
            mode: proto::AuthMode::from(g.mode).into(),
            instance_id: g.instance_id,
            publish: g.publish,
            subscribe: g.subscribe,
            expire_time: g.expire_time,
            token_fingerprints: g.token_fingerprints,
            key_id: g.key_id,
            tokens: g.tokens.into_iter().map(proto::GrantToken::from).collect(),
        }
    }
}

impl From<GrantToken> for proto::GrantToken {
    fn from(t: GrantToken) -> Self {
        Self {
            fingerprint: t.fingerprint,
            token_handle: t.token_handle,
            access_key_id: t.access_key_id,
            minted_revision: t.minted_revision,
        }
    }
}

impl From<proto::GrantToken> for GrantToken {
    fn from(t: proto::GrantToken) -> Self {
        Self {
            fingerprint: t.fingerprint,
            token_handle: t.token_handle,
            access_key_id: t.access_key_id,
            minted_revision: t.minted_revision,
        }
    }
}

/// The grant a BrokerAuthService client received, or None if its mode is unknown or unset.
/// Brokers use it to decide topic actions with the service's own rules ([`Grant::check`]).
pub fn grant_from_proto(g: proto::Grant) -> Option<Grant> {
    let mode = match proto::AuthMode::try_from(g.mode).ok()? {
        proto::AuthMode::Token => AuthMode::Token,
        proto::AuthMode::DeviceCredential => AuthMode::DeviceCredential,
        proto::AuthMode::Signature => AuthMode::Signature,
        proto::AuthMode::Unspecified => return None,
    };
    Some(Grant {
        mode,
        instance_id: g.instance_id,
        publish: g.publish,
        subscribe: g.subscribe,
        expire_time: g.expire_time,
        token_fingerprints: g.token_fingerprints,
        key_id: g.key_id,
        tokens: g.tokens.into_iter().map(GrantToken::from).collect(),
    })
}

impl From<proto::RevocationEvent> for RevocationEvent {
    fn from(e: proto::RevocationEvent) -> Self {
        let kind = match proto::RevocationKind::try_from(e.kind) {
            Ok(proto::RevocationKind::TokenRevoked) => RevocationKind::TokenRevoked,
            Ok(proto::RevocationKind::DeviceCredentialRefreshed) => {
                RevocationKind::DeviceCredentialRefreshed
            }
            Ok(proto::RevocationKind::DeviceCredentialUnregistered) => {
                RevocationKind::DeviceCredentialUnregistered
            }
            Ok(proto::RevocationKind::AccessKeyDeleted) => RevocationKind::AccessKeyDeleted,
            Ok(proto::RevocationKind::TokensOfKeyRevoked) => RevocationKind::TokensOfKeyRevoked,
            Ok(proto::RevocationKind::InstanceTokensRevoked) => {
                RevocationKind::InstanceTokensRevoked
            }
            Ok(proto::RevocationKind::Unspecified) | Err(_) => RevocationKind::Unknown(e.kind),
        };
        Self {
            revision: e.revision,
            kind,
            instance_id: e.instance_id,
            token_fingerprint: e.token_fingerprint,
            client_id: e.client_id,
            key_id: e.key_id,
            reason: e.reason,
            expire_time: e.expire_time,
            revoke_time: e.revoke_time,
            token_handle: e.token_handle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_round_trips_and_unknown_modes_are_refused() {
        for mode in [
            AuthMode::Token,
            AuthMode::DeviceCredential,
            AuthMode::Signature,
        ] {
            let g = Grant {
                mode,
                instance_id: "i".into(),
                publish: vec!["a".into()],
                subscribe: vec!["b/#".into()],
                expire_time: 7,
                token_fingerprints: vec!["f".into()],
                key_id: "k".into(),
                tokens: vec![GrantToken {
                    fingerprint: "f".into(),
                    token_handle: "th_x".into(),
                    access_key_id: "MTAK".into(),
                    minted_revision: 3,
                }],
            };
            assert_eq!(grant_from_proto(g.clone().into()), Some(g));
        }
        let unset = proto::Grant::default();
        assert_eq!(grant_from_proto(unset.clone()), None);
        assert_eq!(grant_from_proto(proto::Grant { mode: 99, ..unset }), None);
    }

    #[test]
    fn unknown_revocation_kinds_keep_their_number() {
        let e = |kind| {
            RevocationEvent::from(proto::RevocationEvent {
                kind,
                ..Default::default()
            })
        };
        assert_eq!(e(1).kind, RevocationKind::TokenRevoked);
        assert_eq!(e(4).kind, RevocationKind::AccessKeyDeleted);
        assert_eq!(e(5).kind, RevocationKind::TokensOfKeyRevoked);
        assert_eq!(e(6).kind, RevocationKind::InstanceTokensRevoked);
        assert_eq!(e(0).kind, RevocationKind::Unknown(0));
        assert_eq!(e(42).kind, RevocationKind::Unknown(42));
    }
}
