//! Tokens: format, handles, QueryToken, RevokeToken (ApplyToken is in `token_apply`).
//!
//! A token is `<key id>.<id>.<mac>`: the keyring key id (decimal), 16 random bytes and
//! HMAC-SHA256(token MAC key, instance id || 0 || id), both URL-safe Base64 without padding.
//! It has no `|` (clients put it in `R|<token>|W|<token>` passwords), carries 128 bits of
//! randomness, and binds the instance: a garbled, forged or other-instance token fails the MAC
//! check, in constant time, before any storage read. Rotating keys leaves old tokens valid
//! because each names its key.
//!
//! A token's handle is `th_<id>`: the random id alone, without the MAC that makes a token. It
//! names the token (for ListTokens and RevokeTokens) but cannot pass as one: it has no `.`, so
//! it fails the token check before anything else, and the MAC cannot be derived from it
//! without the keyring. Safe to log and store.
//!
//! A token is live when it is stored, unexpired, not revoked on its own, not covered by a scope
//! tombstone (`super::scope`), and the access key that minted it still exists (deleting a key
//! revokes its tokens in the delete's own write).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use super::crypto;
use super::revocation::Draft;
use super::{
    access_key::check_instance_id, now_ms, Caller, Core, Error, Field, Operation, Result,
    RevocationKind,
};
use crate::store::{Op, TokenId};

/// Shortest lifetime ApplyToken accepts.
pub const MIN_LIFETIME_MS: i64 = 60_000;
/// Longest lifetime; longer requests are capped to it.
pub const MAX_LIFETIME_MS: i64 = 30 * 24 * 3600 * 1000;
/// Most resources one token may carry.
pub const MAX_RESOURCES: usize = 100;
/// Longest string accepted as a token; real ones are about 70 characters.
const MAX_TOKEN_LEN: usize = 128;

/// What a token grants: subscribe (`R`), publish (`W`), or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions {
    /// Subscribe.
    pub read: bool,
    /// Publish.
    pub write: bool,
}

impl Actions {
    /// Parses Alibaba's `Actions` parameter: `R`, `W`, `R,W` (or `W,R`).
    ///
    /// # Errors
    /// `InvalidParameter.Actions` for anything else.
    pub fn parse_alibaba(s: &str) -> Result<Self> {
        let mut actions = Actions::default();
        for part in s.split(',') {
            match part.trim() {
                "R" if !actions.read => actions.read = true,
                "W" if !actions.write => actions.write = true,
                _ => return Err(Error::invalid(Field::Actions, "must be R, W or R,W")),
            }
        }
        Ok(actions)
    }

    /// The Alibaba spelling: `R`, `W` or `R,W`.
    pub fn as_alibaba(self) -> &'static str {
        match (self.read, self.write) {
            (true, true) => "R,W",
            (true, false) => "R",
            (false, true) => "W",
            (false, false) => "",
        }
    }
}

/// ApplyToken input.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The instance.
    pub instance_id: String,
    /// What the token grants; at least one.
    pub actions: Actions,
    /// 1 to 100 topic filters.
    pub resources: Vec<String>,
    /// Absolute expiry, ms since the Unix epoch.
    pub expire_time: i64,
}

/// A token as the service keeps it (the token string itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The instance it was minted for.
    pub instance_id: String,
    /// What it grants.
    pub actions: Actions,
    /// Topic filters, sorted and de-duplicated.
    pub resources: Vec<String>,
    /// Expiry, ms since the Unix epoch.
    pub expire_ms: i64,
    /// The access key that minted it.
    pub creator: String,
    /// Creation time, ms since the Unix epoch.
    pub create_ms: i64,
    /// Revocation time, ms since the Unix epoch, once revoked on its own (RevokeToken,
    /// RevokeTokens by handle); scope revocations do not touch the record.
    pub revoked_ms: Option<i64>,
    /// The revocation log's last revision when it was minted: a scope tombstone with a higher
    /// cut-off covers it. 0 for tokens minted before any revocation (or by a version that did
    /// not record it: every tombstone covers those, rightly, since they are older).
    pub minted_revision: u64,
    /// The keyring key its MAC was made with (to rebuild its fingerprint from its handle); 0
    /// when minted by a version that did not record it.
    pub keyring_id: u32,
}

/// ApplyToken output.
#[derive(Debug, Clone)]
pub struct AppliedToken {
    /// The token.
    pub token: String,
    /// Its handle: names the token without being it.
    pub handle: String,
    /// The expiry granted (after capping), ms since the Unix epoch.
    pub expire_time: i64,
}

/// A token that passed its MAC check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VerifiedToken {
    pub id: TokenId,
}

fn mac(key: &crypto::HmacSha256Key, instance_id: &str, id: &TokenId) -> [u8; 32] {
    key.mac(&[instance_id.as_bytes(), &[0], id])
}

/// The `N` bytes that `encoded` (URL-safe Base64 without padding) holds, or None if it holds
/// any other number of bytes or is not canonical Base64.
pub(crate) fn decode_exact<const N: usize>(encoded: &str) -> Option<[u8; N]> {
    if encoded.len() != (N * 4).div_ceil(3) {
        return None;
    }
    let mut out = [0u8; N];
    match URL_SAFE_NO_PAD.decode_slice(encoded, &mut out) {
        Ok(n) if n == N => Some(out),
        _ => None,
    }
}

/// What starts every token handle; no token starts with it (tokens start with a digit).
const HANDLE_PREFIX: &str = "th_";

/// The handle of the token with this id: `th_` and the id in URL-safe Base64.
pub fn handle(id: &TokenId) -> String {
    // Built in place: every token CONNECT returns one per token.
    let mut out = String::with_capacity(HANDLE_PREFIX.len() + 22);
    out.push_str(HANDLE_PREFIX);
    URL_SAFE_NO_PAD.encode_string(id, &mut out);
    out
}

/// The token id a handle names, or None if it is not a handle.
pub fn parse_handle(handle: &str) -> Option<TokenId> {
    decode_exact(handle.strip_prefix(HANDLE_PREFIX)?)
}

/// The token fingerprint brokers match revocation events with, from the client crate so both
/// sides compute it the same way.
pub use mqtt_tokend_client::fingerprint;

impl Core {
    /// The token string of `id` on `instance_id` made with keyring key `kid`, or None if the
    /// keyring no longer has that key.
    pub(super) fn token_string(&self, kid: u32, instance_id: &str, id: &TokenId) -> Option<String> {
        let key = self.keyring.token_mac_key(kid)?;
        let tag = mac(key, instance_id, id);
        Some(format!(
            "{kid}.{}.{}",
            URL_SAFE_NO_PAD.encode(id),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    /// The fingerprint of a stored token, rebuilt from its id (for a revocation by handle,
    /// whose caller has no token string). None for a token minted before records named their
    /// keyring key, when the keyring has several keys and so the token's key is unknown.
    pub(crate) fn fingerprint_of(&self, id: &TokenId, record: &IssuedToken) -> Option<String> {
        let kid = match record.keyring_id {
            0 if self.keyring.key_count() == 1 => self.keyring.active_id(),
            0 => return None,
            kid => kid,
        };
        self.token_string(kid, &record.instance_id, id)
            .map(|t| fingerprint(&t))
    }

    /// Checks a token's form and MAC for `instance_id`; None if garbled, forged, of another
    /// instance, or made with a key the keyring no longer has. No storage access.
    pub(crate) fn verify_token(&self, instance_id: &str, token: &str) -> Option<VerifiedToken> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let mut parts = token.split('.');
        let (kid, id, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || kid.is_empty() || kid.len() > 10 {
            return None;
        }
        if !kid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let key = self.keyring.token_mac_key(kid.parse().ok()?)?;
        // Decoded into fixed buffers (every QueryToken and CONNECT checks one): a part of
        // the wrong length cannot be a token's, so it is refused before decoding.
        let id: TokenId = decode_exact(id)?;
        let tag: [u8; 32] = decode_exact(tag)?;
        if !crypto::constant_time_eq(&mac(key, instance_id, &id), &tag) {
            return None;
        }
        Some(VerifiedToken { id })
    }

    /// Looks up a verified token's record and says why it is not live, if it is not.
    pub(crate) fn live_token(
        &self,
        verified: VerifiedToken,
        now: i64,
    ) -> Result<std::result::Result<IssuedToken, TokenState>> {
        let Some(record) = self.store.token(&verified.id)? else {
            // Swept after expiry, or never stored (e.g. the store was replaced).
            return Ok(Err(TokenState::Unknown));
        };
        if self.revocation_time(&record).is_some() {
            return Ok(Err(TokenState::Revoked));
        }
        if record.expire_ms <= now {
            return Ok(Err(TokenState::Expired));
        }
        Ok(Ok(record))
    }

    /// Whether a stored token is revoked, and when: on its own, by a scope tombstone, or
    /// (`Some(0)`, the time unknown) by the deletion of the key that minted it. Memory only:
    /// the tombstones and the access keys are kept in memory, so every check stays O(1).
    pub(crate) fn revocation_time(&self, record: &IssuedToken) -> Option<i64> {
        if record.revoked_ms.is_some() {
            return record.revoked_ms;
        }
        self.revoked_with_owner(&record.instance_id, &record.creator, record.minted_revision)
    }

    /// Whether a token of this instance and minting key, minted at this revision, is revoked
    /// by a scope tombstone, or (`Some(0)`) by its key's deletion.
    pub(super) fn revoked_with_owner(
        &self,
        instance_id: &str,
        creator: &str,
        minted_revision: u64,
    ) -> Option<i64> {
        if let Some(at) = self
            .tombstones
            .covering(instance_id, creator, minted_revision)
        {
            return Some(at);
        }
        (!self.access_keys.contains(creator)).then_some(0)
    }

    /// QueryToken: true only for a live token of this instance. Garbled, forged, unknown,
    /// expired, revoked and other-instance tokens are `false`, not errors.
    ///
    /// # Errors
    /// `InvalidParameter.InstanceId|Token` (empty), `InstancePermissionCheckFailed`,
    /// `QueryTokenOverFlow`, `InternalError`.
    pub fn query_token(&self, caller: &Caller, instance_id: &str, token: &str) -> Result<bool> {
        check_instance_id(instance_id)?;
        caller.check_instance(instance_id)?;
        self.limiter
            .check(caller.access_key_id(), Operation::QueryToken)?;
        if token.is_empty() {
            return Err(Error::invalid(Field::Token, "must not be empty"));
        }
        let Some(verified) = self.verify_token(instance_id, token) else {
            return Ok(false);
        };
        // The liveness facts, not the record: a store may keep them in memory (with a million
        // tokens, reading records was a fifth of a QueryToken's CPU).
        let Some(live) = self.store.token_liveness(&verified.id)? else {
            return Ok(false);
        };
        let owner = &live.owner;
        Ok(!live.revoked
            && live.expire_ms > now_ms()
            && self
                .revoked_with_owner(&owner.instance_id, &owner.creator, live.minted_revision)
                .is_none())
    }

    /// RevokeToken: after it returns, the token is invalid everywhere, across restarts, and the
    /// watch stream carries the event. Revoking a revoked or expired token succeeds and writes
    /// nothing. Returns the event's revision (0 if none was written).
    ///
    /// # Errors
    /// `InvalidParameter.InstanceId`, `InvalidParameter.Token` (not a token of this instance),
    /// `InstancePermissionCheckFailed`, `RevokeTokenOverFlow`, `InternalError`.
    pub async fn revoke_token(
        &self,
        caller: &Caller,
        instance_id: &str,
        token: &str,
    ) -> Result<u64> {
        check_instance_id(instance_id)?;
        caller.check_instance(instance_id)?;
        self.limiter
            .check(caller.access_key_id(), Operation::RevokeToken)?;
        let verified = self
            .verify_token(instance_id, token)
            .ok_or_else(|| Error::invalid(Field::Token, "not a token issued for this instance"))?;
        let fingerprint = fingerprint(token);
        let instance = instance_id.to_owned();
        let mut build = |store: &dyn crate::store::Store| {
            // The caller's key as the store reads it under the writer lock: the transport read
            // nothing first, and the write version covers what the build reads, so a key
            // deleted before this point is seen here or makes the commit conflict (and this
            // build run again on data that shows it).
            if self.shared && store.access_key(caller.access_key_id())?.is_none() {
                return Err(Error::AccessKeyNotFound);
            }
            let now = now_ms();
            let Some(mut record) = store.token(&verified.id)? else {
                return Ok((vec![], vec![], ()));
            };
            if self.revocation_time(&record).is_some() || record.expire_ms <= now {
                return Ok((vec![], vec![], ()));
            }
            record.revoked_ms = Some(now);
            let draft = Draft {
                token_fingerprint: fingerprint.clone(),
                token_handle: handle(&verified.id),
                expire_ms: Some(record.expire_ms),
                ..Draft::new(
                    RevocationKind::TokenRevoked,
                    Some(&instance),
                    "RevokeToken",
                    now,
                )
            };
            Ok((vec![Op::RevokeToken(verified.id, record)], vec![draft], ()))
        };
        let (_, revision) = self.commit(&mut build).await?;
        if !self.shared {
            return Ok(revision);
        }
        // On a shared store the transport read nothing from it first. A revocation that was
        // written compared the write version, so nothing another replica read-modify-wrote
        // since this replica's view was missed (the caller's key included, see `build`); once
        // this replica has seen its own write, the caller is checked again against the
        // in-memory table. Nothing written may only mean this replica has not seen the token
        // yet (new tokens compare nothing): that answer is read again after a barrier.
        if revision == 0 {
            self.sync().await?;
            self.recheck_caller(caller, instance_id)?;
            let (_, revision) = self.commit(&mut build).await?;
            return Ok(revision);
        }
        self.settle().await?;
        self.recheck_caller(caller, instance_id)?;
        Ok(revision)
    }
}

/// Why a MAC-valid token is not live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenState {
    /// Not in the store (swept after expiry, or never stored).
    Unknown,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
}
