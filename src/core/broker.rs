//! The broker's checks: AuthenticateConnect and AuthorizeTopic, for the three CONNECT modes
//! Alibaba Cloud MQTT documents (usernames are `<Mode>|<KeyId>|<InstanceId>`):
//!
//! - `Token|<AccessKeyId>|<InstanceId>`, password `<type>|<token>[|<type>|<token>...]` with
//!   types `R`, `W`, `RW`, at most one token per type; every token must be valid.
//! - `DeviceCredential|<DeviceAccessKeyId>|<InstanceId>`, password
//!   Base64(HMAC-SHA1(key = DeviceAccessKeySecret, data = ClientId)).
//! - `Signature|<AccessKeyId>|<InstanceId>`, password
//!   Base64(HMAC-SHA1(key = AccessKeySecret, data = ClientId)).
//!
//! Both checks are read-only, take no lock across an await, and turn every malformed input into
//! a deny with a reason. A session handle (returned on allow) lets the broker skip resending
//! the password: it is a MAC-protected reference to the credential, re-checked for liveness
//! on every use, so a revoked credential stops authorizing at once.

use super::crypto;
use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use prost::Message;

use super::{
    device::check_client_id,
    now_ms,
    token::{decode_exact, fingerprint, TokenState},
    Caller, Core, Result,
};
use crate::store::TokenId;

/// The grant types live in the client crate so a broker decides topics with the very same
/// code; re-exported here so the core reads as one domain.
pub use mqtt_tokend_client::grant::{AuthMode, DenyReason, Grant, GrantToken, TopicAction};

/// One AuthorizeTopic question: who (credentials or session handle) wants to do what, where.
#[derive(Debug, Clone, Copy)]
pub struct TopicRequest<'a> {
    /// The MQTT client id.
    pub client_id: &'a str,
    /// The MQTT username; ignored when `session_handle` is not empty.
    pub username: &'a str,
    /// The MQTT password; ignored when `session_handle` is not empty.
    pub password: &'a str,
    /// The handle from AuthenticateConnect, or empty.
    pub session_handle: &'a str,
    /// Publish or subscribe.
    pub action: TopicAction,
    /// A topic name (publish) or filter (subscribe).
    pub topic: &'a str,
}

/// The answer to AuthenticateConnect.
#[derive(Debug, Clone)]
pub enum ConnectDecision {
    /// Allowed, with what the client may do and a session handle for AuthorizeTopic.
    Allow {
        /// The grant.
        grant: Grant,
        /// The session handle.
        session_handle: String,
    },
    /// Denied.
    Deny(DenyReason),
}

/// A verified reference to the credential a client connected with; what a session handle
/// carries. Liveness (revocation, expiry, refresh) is checked each time it is resolved.
#[derive(Clone, PartialEq, prost::Message)]
struct Session {
    #[prost(string, tag = "1")]
    client_id: String,
    /// The mode, as a [`mode_code`].
    #[prost(int32, tag = "2")]
    mode: i32,
    #[prost(string, tag = "3")]
    instance_id: String,
    /// Access key id (Token, Signature) or device access key id (DeviceCredential).
    #[prost(string, tag = "4")]
    key_id: String,
    /// Token mode: the tokens, as `tag` (1 R, 2 W, 3 RW) + id.
    #[prost(message, repeated, tag = "5")]
    tokens: Vec<SessionToken>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionToken {
    #[prost(uint32, tag = "1")]
    tag: u32,
    #[prost(bytes = "vec", tag = "2")]
    id: Vec<u8>,
    #[prost(string, tag = "3")]
    fingerprint: String,
}

// The numbers a session handle stores for each mode. Handles are sealed with the keyring and
// outlive a restart (brokers keep them for as long as a client stays connected), so these
// never change, whatever happens to the order of `AuthMode`.
const MODE_TOKEN: i32 = 1;
const MODE_DEVICE_CREDENTIAL: i32 = 2;
const MODE_SIGNATURE: i32 = 3;

/// The number a session handle stores for `mode`.
fn mode_code(mode: AuthMode) -> i32 {
    match mode {
        AuthMode::Token => MODE_TOKEN,
        AuthMode::DeviceCredential => MODE_DEVICE_CREDENTIAL,
        AuthMode::Signature => MODE_SIGNATURE,
    }
}

/// The mode of a stored number; None for a number no version wrote.
fn mode_from_code(code: i32) -> Option<AuthMode> {
    match code {
        MODE_TOKEN => Some(AuthMode::Token),
        MODE_DEVICE_CREDENTIAL => Some(AuthMode::DeviceCredential),
        MODE_SIGNATURE => Some(AuthMode::Signature),
        _ => None,
    }
}

/// Longest MQTT username accepted: `Mode|KeyId|InstanceId` fits in far less.
const MAX_USERNAME_LEN: usize = 512;
/// Longest MQTT password accepted: three typed tokens fit in far less.
const MAX_PASSWORD_LEN: usize = 1024;

const TAG_R: u32 = 1;
const TAG_W: u32 = 2;

/// Base64(HMAC-SHA1(key, client_id)): the Signature and DeviceCredential password.
pub fn mqtt_password(secret: &str, client_id: &str) -> String {
    STANDARD.encode(crypto::hmac_sha1(
        secret.as_bytes(),
        &[client_id.as_bytes()],
    ))
}

fn password_matches(secret: &str, client_id: &str, presented: &str) -> bool {
    let expected = mqtt_password(secret, client_id);
    crypto::constant_time_eq(expected.as_bytes(), presented.as_bytes())
}

type Decision<T> = std::result::Result<T, DenyReason>;

/// What [`Core::resolve`] builds: the whole grant a CONNECT answers with, or only what a topic
/// check reads (the publish and subscribe filters, unsorted; no token references).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    /// AuthenticateConnect: its credential was read and checked by `verify_credentials` for
    /// this very call.
    Connect,
    /// AuthorizeTopic: the credential is looked up again, the grant is only checked.
    Topics,
}

impl Core {
    /// AuthenticateConnect: checks an MQTT CONNECT's client id, username and password.
    ///
    /// # Errors
    /// Only storage failures; every bad credential is a `ConnectDecision::Deny`.
    pub fn authenticate_connect(
        &self,
        caller: &Caller,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> Result<ConnectDecision> {
        let session = match self.verify_credentials(caller, client_id, username, password)? {
            Ok(s) => s,
            Err(reason) => return Ok(ConnectDecision::Deny(reason)),
        };
        // A device credential was just read and checked by `verify_credentials`: reading it
        // again would answer the same.
        Ok(match self.resolve(caller, &session, Detail::Connect)? {
            Ok(grant) => ConnectDecision::Allow {
                grant,
                session_handle: self.seal(&session),
            },
            Err(reason) => ConnectDecision::Deny(reason),
        })
    }

    /// AuthorizeTopic: checks one publish or subscribe, with either the CONNECT credentials or
    /// the session handle (which wins when not empty).
    ///
    /// # Errors
    /// Only storage failures; every denial is `Ok(Err(reason))`.
    pub fn authorize_topic(&self, caller: &Caller, req: TopicRequest<'_>) -> Result<Decision<()>> {
        let session = if req.session_handle.is_empty() {
            match self.verify_credentials(caller, req.client_id, req.username, req.password)? {
                Ok(s) => s,
                Err(reason) => return Ok(Err(reason)),
            }
        } else {
            match self.unseal(req.session_handle) {
                Some(s) if s.client_id == req.client_id => s,
                _ => return Ok(Err(DenyReason::InvalidSession)),
            }
        };
        // Resolved again (a handle is only a reference): the credential must still be live.
        Ok(self
            .resolve(caller, &session, Detail::Topics)?
            .and_then(|g| g.check(req.action, req.topic)))
    }

    /// Parses the username and password and checks the password; no liveness checks yet.
    fn verify_credentials(
        &self,
        caller: &Caller,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> Result<Decision<Session>> {
        // MQTT allows 64 KiB fields; real credentials are far shorter. Refuse long ones
        // before any work so a hostile CONNECT costs nothing.
        if username.len() > MAX_USERNAME_LEN {
            return Ok(Err(DenyReason::MalformedUsername));
        }
        if password.len() > MAX_PASSWORD_LEN {
            return Ok(Err(DenyReason::MalformedPassword));
        }
        let mut fields = username.split('|');
        let (Some(mode), Some(key_id), Some(instance_id), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Ok(Err(DenyReason::MalformedUsername));
        };
        if key_id.is_empty() || instance_id.is_empty() {
            return Ok(Err(DenyReason::MalformedUsername));
        }
        if check_client_id(client_id).is_err() {
            return Ok(Err(DenyReason::InvalidClientId));
        }
        if !caller.allowed_on(instance_id) {
            return Ok(Err(DenyReason::InstanceMismatch));
        }
        let mut session = Session {
            client_id: client_id.to_owned(),
            mode: 0,
            instance_id: instance_id.to_owned(),
            key_id: key_id.to_owned(),
            tokens: Vec::new(),
        };
        match mode {
            "Token" => {
                session.mode = mode_code(AuthMode::Token);
                match self.parse_token_password(instance_id, password) {
                    Ok(tokens) => session.tokens = tokens,
                    Err(reason) => return Ok(Err(reason)),
                }
            }
            "Signature" => {
                session.mode = mode_code(AuthMode::Signature);
                let Ok(key) = self.access_key(key_id) else {
                    return Ok(Err(DenyReason::UnknownAccessKey));
                };
                if !password_matches(key.secret(), client_id, password) {
                    return Ok(Err(DenyReason::BadSignature));
                }
            }
            "DeviceCredential" => {
                session.mode = mode_code(AuthMode::DeviceCredential);
                let Some((record, secret)) = self.device_by_key(key_id)? else {
                    return Ok(Err(DenyReason::CredentialNotFound));
                };
                if record.instance_id != instance_id {
                    return Ok(Err(DenyReason::InstanceMismatch));
                }
                if record.client_id != client_id {
                    return Ok(Err(DenyReason::CredentialNotFound));
                }
                if !password_matches(&secret, client_id, password) {
                    return Ok(Err(DenyReason::BadSignature));
                }
            }
            _ => return Ok(Err(DenyReason::UnknownMode)),
        }
        Ok(Ok(session))
    }

    /// `R|<token>|W|<token>`, `RW|<token>`...: pairs, known tags, at most one token per tag,
    /// every token MAC-valid for the instance.
    fn parse_token_password(
        &self,
        instance_id: &str,
        password: &str,
    ) -> Decision<Vec<SessionToken>> {
        // At most three type|token pairs; `take` bounds the work whatever the input.
        let parts: Vec<&str> = password.split('|').take(7).collect();
        if !parts.len().is_multiple_of(2) || parts.is_empty() || parts.len() > 6 {
            return Err(DenyReason::MalformedPassword);
        }
        let mut seen = 0u32;
        let mut tokens = Vec::with_capacity(parts.len() / 2);
        for pair in parts.chunks_exact(2) {
            let tag = match pair[0] {
                "R" => TAG_R,
                "W" => TAG_W,
                "RW" => TAG_R | TAG_W,
                _ => return Err(DenyReason::MalformedPassword),
            };
            if seen & tag != 0 {
                return Err(DenyReason::MalformedPassword);
            }
            seen |= tag;
            let verified = self
                .verify_token(instance_id, pair[1])
                .ok_or(DenyReason::TokenInvalid)?;
            tokens.push(SessionToken {
                tag,
                id: verified.id.to_vec(),
                fingerprint: fingerprint(pair[1]),
            });
        }
        Ok(tokens)
    }

    /// Checks the credential behind a session is still live and computes its grant, in the
    /// `detail` the caller needs.
    fn resolve(
        &self,
        caller: &Caller,
        session: &Session,
        detail: Detail,
    ) -> Result<Decision<Grant>> {
        if !caller.allowed_on(&session.instance_id) {
            return Ok(Err(DenyReason::InstanceMismatch));
        }
        let everything = || vec!["#".to_owned()];
        let mut grant = Grant {
            mode: AuthMode::Token,
            instance_id: session.instance_id.clone(),
            publish: Vec::new(),
            subscribe: Vec::new(),
            expire_time: 0,
            token_fingerprints: Vec::new(),
            key_id: session.key_id.clone(),
            tokens: Vec::new(),
        };
        match mode_from_code(session.mode) {
            Some(AuthMode::Token) => {
                // The access key in a Token username must exist and be allowed on the instance.
                match self.access_key(&session.key_id) {
                    Ok(key) if key.allowed_on(&session.instance_id) => {}
                    Ok(_) => return Ok(Err(DenyReason::InstanceMismatch)),
                    Err(_) => return Ok(Err(DenyReason::UnknownAccessKey)),
                }
                let now = now_ms();
                for t in &session.tokens {
                    let Ok(id) = TokenId::try_from(t.id.as_slice()) else {
                        return Ok(Err(DenyReason::InvalidSession));
                    };
                    let record = match self.live_token(super::token::VerifiedToken { id }, now)? {
                        Ok(r) => r,
                        Err(TokenState::Unknown) => return Ok(Err(DenyReason::TokenInvalid)),
                        Err(TokenState::Revoked) => return Ok(Err(DenyReason::TokenRevoked)),
                        Err(TokenState::Expired) => return Ok(Err(DenyReason::TokenExpired)),
                    };
                    if (t.tag & TAG_R != 0 && !record.actions.read)
                        || (t.tag & TAG_W != 0 && !record.actions.write)
                    {
                        return Ok(Err(DenyReason::TokenTypeMismatch));
                    }
                    grant.expire_time = if grant.expire_time == 0 {
                        record.expire_ms
                    } else {
                        grant.expire_time.min(record.expire_ms)
                    };
                    // The record is ours: its filters move into the grant (copied once for RW).
                    match (t.tag & TAG_R != 0, t.tag & TAG_W != 0) {
                        (true, true) => {
                            grant.subscribe.extend(record.resources.iter().cloned());
                            grant.publish.extend(record.resources);
                        }
                        (true, false) => grant.subscribe.extend(record.resources),
                        (false, true) => grant.publish.extend(record.resources),
                        (false, false) => {}
                    }
                    if detail == Detail::Connect {
                        grant.token_fingerprints.push(t.fingerprint.clone());
                        grant.tokens.push(GrantToken {
                            fingerprint: t.fingerprint.clone(),
                            token_handle: super::token::handle(&id),
                            access_key_id: record.creator,
                            minted_revision: record.minted_revision,
                        });
                    }
                }
                // A topic check only asks whether some filter matches: order and duplicates
                // matter to the grant a broker receives, not to the answer.
                if detail == Detail::Connect {
                    grant.publish.sort();
                    grant.publish.dedup();
                    grant.subscribe.sort();
                    grant.subscribe.dedup();
                }
            }
            Some(AuthMode::Signature) => {
                match self.access_key(&session.key_id) {
                    Ok(key) if key.allowed_on(&session.instance_id) => {}
                    Ok(_) => return Ok(Err(DenyReason::InstanceMismatch)),
                    Err(_) => return Ok(Err(DenyReason::UnknownAccessKey)),
                }
                grant.mode = AuthMode::Signature;
                grant.publish = everything();
                grant.subscribe = everything();
            }
            Some(AuthMode::DeviceCredential) => {
                // On CONNECT `verify_credentials` has just read it and checked the same.
                if detail == Detail::Topics {
                    match self.store.device_by_key(&session.key_id)? {
                        Some(r)
                            if r.client_id == session.client_id
                                && r.instance_id == session.instance_id => {}
                        _ => return Ok(Err(DenyReason::CredentialNotFound)),
                    }
                }
                grant.mode = AuthMode::DeviceCredential;
                grant.publish = everything();
                grant.subscribe = everything();
            }
            None => return Ok(Err(DenyReason::InvalidSession)),
        }
        Ok(Ok(grant))
    }

    fn seal(&self, session: &Session) -> String {
        let payload = session.encode_to_vec();
        let tag = self.keyring.session_mac_key().mac(&[&payload]);
        // `<payload>.<tag>`, both URL-safe Base64 without padding, written into one buffer.
        let mut handle = String::with_capacity((payload.len() * 4).div_ceil(3) + 1 + 43);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut handle);
        handle.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut handle);
        handle
    }

    fn unseal(&self, handle: &str) -> Option<Session> {
        if handle.len() > 4096 {
            return None;
        }
        let (payload, tag) = handle.split_once('.')?;
        let tag: [u8; 32] = decode_exact(tag)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let expected = self.keyring.session_mac_key().mac(&[&payload]);
        if !crypto::constant_time_eq(&expected, &tag) {
            return None;
        }
        Session::decode(payload.as_slice()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_password_matches_published_vectors() {
        // Vectors from shared/reference/alibaba-facts.md §11, computed with Python's hmac.
        assert_eq!(
            mqtt_password("testsecret", "GID_Test@@@0001"),
            "2o53J4IhwPZouH+0Qu6KWaZ6foc="
        );
        assert_eq!(
            mqtt_password("DC.testdevicesecret", "GID_Test@@@0001"),
            "X08O5nXs4WWbBRcs+uUBf4a3YqE="
        );
    }

    #[test]
    fn session_modes_keep_their_stored_numbers() {
        // Outstanding handles carry these; changing one would misread them.
        let fixed = [
            (AuthMode::Token, 1),
            (AuthMode::DeviceCredential, 2),
            (AuthMode::Signature, 3),
        ];
        for (mode, code) in fixed {
            assert_eq!(mode_code(mode), code);
            assert_eq!(mode_from_code(code), Some(mode));
        }
        assert_eq!(mode_from_code(0), None);
        assert_eq!(mode_from_code(4), None);
    }
}
