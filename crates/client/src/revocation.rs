//! Revocations as a broker sees them: the typed event of the watch stream, which grants it
//! ends, and the token fingerprint both sides match on.

use sha2::{Digest, Sha256};

use crate::grant::{AuthMode, Grant};

/// What was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    /// RevokeToken.
    TokenRevoked,
    /// RefreshDeviceCredential: the old device key id stopped working.
    DeviceCredentialRefreshed,
    /// UnRegisterDeviceCredential.
    DeviceCredentialUnregistered,
    /// DeleteAccessKey: also revokes every token the key minted.
    AccessKeyDeleted,
    /// RevokeTokens by access key: every token `key_id` minted on `instance_id` before this
    /// event's revision.
    TokensOfKeyRevoked,
    /// RevokeTokens of a whole instance: every token of `instance_id` minted before this
    /// event's revision.
    InstanceTokensRevoked,
    /// A kind this client does not know (a newer server), with its wire number. It ends no
    /// grant here, and a follower still advances past it so the stream never stalls.
    Unknown(i32),
}

/// One revocation from the watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationEvent {
    /// Position in the revocation log; strictly increasing and gap-free over all instances.
    pub revision: u64,
    /// What was revoked.
    pub kind: RevocationKind,
    /// The instance it belonged to; empty for an access key allowed on every instance.
    pub instance_id: String,
    /// For token revocations: the token's [`fingerprint`].
    pub token_fingerprint: String,
    /// For device credential events: the client id.
    pub client_id: String,
    /// For device credential events the device access key id that stopped working; for an
    /// access key deletion the access key id; for [`RevocationKind::TokensOfKeyRevoked`] the
    /// key whose tokens were revoked.
    pub key_id: String,
    /// Why, in words (e.g. "RevokeToken").
    pub reason: String,
    /// When the revoked credential would have expired, ms since the Unix epoch; 0 = never.
    pub expire_time: i64,
    /// When the revocation was written, ms since the Unix epoch.
    pub revoke_time: i64,
    /// For token revocations: the token's handle (`th_…`); empty otherwise.
    pub token_handle: String,
}

impl RevocationEvent {
    /// Whether this revocation ends a session holding `grant`: the token it names was used,
    /// the device credential or access key the grant rests on is gone, or one of its tokens is
    /// in a revoked scope (minted by the key, or on the instance, before the event's revision).
    pub fn hits(&self, grant: &Grant) -> bool {
        if !self.instance_id.is_empty() && self.instance_id != grant.instance_id {
            return false;
        }
        match self.kind {
            // By fingerprint, or by handle: a token revoked by its handle that was minted
            // before records named their keyring key may come without a fingerprint.
            RevocationKind::TokenRevoked => {
                (!self.token_fingerprint.is_empty()
                    && grant.token_fingerprints.contains(&self.token_fingerprint))
                    || (!self.token_handle.is_empty()
                        && grant
                            .tokens
                            .iter()
                            .any(|t| t.token_handle == self.token_handle))
            }
            RevocationKind::DeviceCredentialRefreshed
            | RevocationKind::DeviceCredentialUnregistered => {
                grant.mode == AuthMode::DeviceCredential && grant.key_id == self.key_id
            }
            // Token and Signature usernames both name an access key, and the service stops
            // accepting either once the key is gone; the deletion also revoked every token the
            // key minted, whichever key the username names.
            RevocationKind::AccessKeyDeleted => {
                (matches!(grant.mode, AuthMode::Token | AuthMode::Signature)
                    && grant.key_id == self.key_id)
                    || (grant.mode == AuthMode::Token
                        && grant.tokens.iter().any(|t| t.access_key_id == self.key_id))
            }
            // A scope covers the tokens minted before the event: a client that reconnected
            // with a token minted after it keeps its session.
            RevocationKind::TokensOfKeyRevoked => {
                grant.mode == AuthMode::Token
                    && grant.tokens.iter().any(|t| {
                        t.access_key_id == self.key_id && t.minted_revision < self.revision
                    })
            }
            RevocationKind::InstanceTokensRevoked => {
                grant.mode == AuthMode::Token
                    && !self.instance_id.is_empty()
                    && grant
                        .tokens
                        .iter()
                        .any(|t| t.minted_revision < self.revision)
            }
            RevocationKind::Unknown(_) => false,
        }
    }
}

/// The token fingerprint brokers match revocation events with: lowercase hex of the first
/// 16 bytes of SHA-256 of the token string, as the client sent it in its password.
pub fn fingerprint(token: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(token.as_bytes());
    // Every AuthenticateConnect in token mode computes one per token: hex by table into one
    // buffer (a `format!` per byte cost 16 allocations, a quarter of the whole check).
    let mut out = String::with_capacity(32);
    for &b in &digest[..16] {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::GrantToken;

    fn grant(mode: AuthMode, key_id: &str, fingerprints: &[&str]) -> Grant {
        Grant {
            mode,
            instance_id: "i".into(),
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
            expire_time: 0,
            token_fingerprints: fingerprints.iter().map(|f| f.to_string()).collect(),
            key_id: key_id.into(),
            tokens: fingerprints
                .iter()
                .map(|f| GrantToken {
                    fingerprint: f.to_string(),
                    token_handle: format!("th_{f}"),
                    access_key_id: "MINTER".into(),
                    minted_revision: 10,
                })
                .collect(),
        }
    }

    fn event(kind: RevocationKind, instance_id: &str, fp: &str, key_id: &str) -> RevocationEvent {
        RevocationEvent {
            revision: 1,
            kind,
            instance_id: instance_id.into(),
            token_fingerprint: fp.into(),
            client_id: String::new(),
            key_id: key_id.into(),
            reason: String::new(),
            expire_time: 0,
            revoke_time: 0,
            token_handle: String::new(),
        }
    }

    #[test]
    fn fingerprint_is_sha256_prefix_hex() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.
        assert_eq!(fingerprint("abc"), "ba7816bf8f01cfea414140de5dae2223");
    }

    #[test]
    fn each_kind_hits_exactly_its_holders() {
        let token = grant(AuthMode::Token, "AK", &["f1"]);
        let signature = grant(AuthMode::Signature, "AK", &[]);
        let device = grant(AuthMode::DeviceCredential, "DK", &[]);
        let revoked = event(RevocationKind::TokenRevoked, "i", "f1", "");
        assert!(revoked.hits(&token) && !revoked.hits(&signature) && !revoked.hits(&device));
        assert!(!event(RevocationKind::TokenRevoked, "i", "", "").hits(&token));
        assert!(!event(RevocationKind::TokenRevoked, "other", "f1", "").hits(&token));
        let deleted = event(RevocationKind::AccessKeyDeleted, "", "", "AK");
        assert!(deleted.hits(&token) && deleted.hits(&signature) && !deleted.hits(&device));
        for kind in [
            RevocationKind::DeviceCredentialRefreshed,
            RevocationKind::DeviceCredentialUnregistered,
        ] {
            let e = event(kind, "i", "", "DK");
            assert!(e.hits(&device) && !e.hits(&token));
            assert!(!event(kind, "i", "", "AK").hits(&signature));
        }
        assert!(!event(RevocationKind::Unknown(9), "", "f1", "AK").hits(&token));
        let by_handle = RevocationEvent {
            token_handle: "th_f1".into(),
            ..event(RevocationKind::TokenRevoked, "i", "", "")
        };
        assert!(by_handle.hits(&token) && !by_handle.hits(&signature));
    }

    #[test]
    fn scope_kinds_hit_the_tokens_minted_before_them() {
        // The token of `token` was minted by MINTER at revision 10; the username names AK.
        let token = grant(AuthMode::Token, "AK", &["f1"]);
        let signature = grant(AuthMode::Signature, "MINTER", &[]);
        let at = |kind, instance: &str, key: &str, revision| RevocationEvent {
            revision,
            ..event(kind, instance, "", key)
        };
        let by_key = RevocationKind::TokensOfKeyRevoked;
        assert!(at(by_key, "i", "MINTER", 11).hits(&token));
        assert!(
            !at(by_key, "i", "MINTER", 10).hits(&token),
            "minted after the cut-off"
        );
        assert!(
            !at(by_key, "i", "AK", 11).hits(&token),
            "the username's key minted nothing"
        );
        assert!(!at(by_key, "other", "MINTER", 11).hits(&token));
        assert!(!at(by_key, "i", "MINTER", 11).hits(&signature));
        let all = RevocationKind::InstanceTokensRevoked;
        assert!(at(all, "i", "", 11).hits(&token));
        assert!(!at(all, "i", "", 10).hits(&token));
        assert!(!at(all, "other", "", 11).hits(&token));
        assert!(!at(all, "i", "", 11).hits(&signature));
        // Deleting the minting key ends the session too, at any revision.
        let deleted = RevocationKind::AccessKeyDeleted;
        assert!(at(deleted, "i", "MINTER", 1).hits(&token));
        assert!(at(deleted, "", "MINTER", 1).hits(&signature));
        assert!(!at(deleted, "i", "ELSE", 1).hits(&token));
    }
}
