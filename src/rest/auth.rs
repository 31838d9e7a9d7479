//! Request authentication for the REST shim: V1 (`Signature` + HMAC-SHA1 parameters) and V3
//! (`Authorization: ACS3-HMAC-SHA256 ...`). The signature arithmetic lives in `signature`;
//! this file picks the scheme, checks the common parameters, the clock window and the nonce,
//! and looks up the caller's access key in the core.
//!
//! Order of checks: presence and format of common parameters, timestamp window, access key
//! lookup, signature, then the nonce. The nonce is recorded only after the signature holds,
//! so unauthenticated traffic can neither fill the cache nor burn another caller's nonces.

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::HeaderMap;

use super::{
    envelope::RestError,
    params::Params,
    signature::{self, SignatureError},
};
use crate::core::{crypto, Caller, Core, Error};

/// The API version every action belongs to.
pub(crate) const API_VERSION: &str = "2020-04-20";
/// How far a request's timestamp may be from the server's clock (Alibaba: 15 minutes).
pub(crate) const TIMESTAMP_WINDOW_MS: i64 = 15 * 60 * 1000;
/// Longest nonce accepted; the SDKs send 32-36 characters.
const MAX_NONCE_LEN: usize = 128;
/// Most nonces remembered at once. At 40 bytes each this bounds the cache near 40 MiB; past
/// it requests fail with `SystemOverFlow` rather than admit possible replays.
const NONCE_CAPACITY: usize = 1_000_000;
/// Headers a V3 signature must cover, so none of them can be swapped on a replay.
const V3_REQUIRED_SIGNED: [&str; 5] = [
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
];

/// Which signature scheme a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    V1,
    V3,
}

impl Scheme {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::V1 => "v1",
            Scheme::V3 => "v3",
        }
    }
}

/// An authenticated request.
#[derive(Debug)]
pub(crate) struct Authenticated {
    pub caller: Caller,
    pub action: String,
    pub scheme: Scheme,
}

/// The parts of a request authentication looks at.
pub(crate) struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub params: &'a Params,
    pub body: &'a [u8],
}

/// Verifies signatures and remembers nonces.
#[derive(Default)]
pub(crate) struct Authenticator {
    nonces: NonceCache,
}

impl Authenticator {
    /// Authenticates one request at `now_ms` (server clock, ms since the epoch).
    pub(crate) fn authenticate(
        &self,
        core: &Core,
        req: &RequestParts<'_>,
        now_ms: i64,
    ) -> Result<Authenticated, RestError> {
        if let Some(value) = req.headers.get("authorization") {
            let value = value.to_str().map_err(|_| {
                RestError::IncompleteSignature("Authorization is not ASCII.".into())
            })?;
            return self.v3(core, req, value, now_ms);
        }
        self.v1(core, req, now_ms)
    }

    fn v1(
        &self,
        core: &Core,
        req: &RequestParts<'_>,
        now_ms: i64,
    ) -> Result<Authenticated, RestError> {
        let p = req.params;
        let required = |name: &'static str| -> Result<&str, RestError> {
            match p.get(name) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(RestError::MissingParameter(name)),
            }
        };
        let access_key_id = required("AccessKeyId")?;
        let presented = required("Signature")?;
        let method = required("SignatureMethod")?;
        if method != "HMAC-SHA1" {
            return Err(RestError::InvalidSignatureMethod);
        }
        if let Some(v) = p.get("SignatureVersion") {
            if v != "1.0" {
                return Err(RestError::InvalidCommonParameter("SignatureVersion"));
            }
        }
        let action = required("Action")?;
        check_version(required("Version")?)?;
        let timestamp = required("Timestamp")?;
        check_timestamp(timestamp, now_ms)?;
        let nonce = required("SignatureNonce")?;
        check_nonce_shape(nonce)?;

        let caller = core.access_key(access_key_id)?;
        let signed: Vec<(String, String)> = p
            .all()
            .iter()
            .filter(|(k, _)| k != "Signature")
            .cloned()
            .collect();
        let string_to_sign = signature::v1_string_to_sign(req.method, &signed);
        let expected = signature::v1_signature(caller.secret(), &string_to_sign);
        if !signature::signatures_equal(&expected, presented) {
            // The V1 string to sign carries every parameter (tokens included): never logged.
            return Err(RestError::SignatureDoesNotMatch { string_to_sign });
        }
        self.nonces.check_and_record(access_key_id, nonce)?;
        Ok(Authenticated {
            caller,
            action: action.to_owned(),
            scheme: Scheme::V1,
        })
    }

    fn v3(
        &self,
        core: &Core,
        req: &RequestParts<'_>,
        authorization: &str,
        now_ms: i64,
    ) -> Result<Authenticated, RestError> {
        let auth = signature::parse_v3_authorization(authorization).map_err(|e| match e {
            SignatureError::UnsupportedAlgorithm(_) => RestError::InvalidSignatureMethod,
            other => RestError::IncompleteSignature(format!("{other}.")),
        })?;
        for name in V3_REQUIRED_SIGNED {
            if !auth.signed_headers.iter().any(|h| h == name) {
                return Err(RestError::IncompleteSignature(format!(
                    "SignedHeaders must include {name}."
                )));
            }
        }
        let header = |name: &'static str| -> Result<&str, RestError> {
            match req.headers.get(name).map(|v| v.to_str()) {
                Some(Ok(v)) if !v.trim().is_empty() => Ok(v.trim()),
                _ => Err(RestError::MissingParameter(name)),
            }
        };
        let action = header("x-acs-action")?;
        check_version(header("x-acs-version")?)?;
        check_timestamp(header("x-acs-date")?, now_ms)?;
        let nonce = header("x-acs-signature-nonce")?;
        check_nonce_shape(nonce)?;
        let payload_hash = signature::sha256_hex(req.body);
        if !header("x-acs-content-sha256")?.eq_ignore_ascii_case(&payload_hash) {
            return Err(RestError::ContentSha256Mismatch);
        }

        let caller = core.access_key(&auth.access_key_id)?;
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let canonical = signature::v3_canonical_request(
            req.method,
            req.path,
            req.params.query(),
            &headers,
            &auth.signed_headers,
            &payload_hash,
        );
        let string_to_sign = signature::v3_string_to_sign(&canonical);
        let expected = signature::v3_signature(caller.secret(), &string_to_sign);
        if !signature::signatures_equal(&expected, &auth.signature) {
            // Only a hash of the canonical request: safe at debug level (facts §13).
            tracing::debug!(string_to_sign = %string_to_sign, "V3 signature mismatch");
            return Err(RestError::SignatureDoesNotMatch { string_to_sign });
        }
        self.nonces
            .check_and_record(caller.access_key_id(), nonce)?;
        Ok(Authenticated {
            caller,
            action: action.to_owned(),
            scheme: Scheme::V3,
        })
    }
}

fn check_version(version: &str) -> Result<(), RestError> {
    if version == API_VERSION {
        Ok(())
    } else {
        Err(RestError::InvalidCommonParameter("Version"))
    }
}

fn check_timestamp(value: &str, now_ms: i64) -> Result<(), RestError> {
    let ts = signature::parse_timestamp_ms(value).ok_or(RestError::TimestampFormat)?;
    if ts.abs_diff(now_ms) > TIMESTAMP_WINDOW_MS.unsigned_abs() {
        return Err(RestError::TimestampExpired);
    }
    Ok(())
}

fn check_nonce_shape(nonce: &str) -> Result<(), RestError> {
    if nonce.len() > MAX_NONCE_LEN {
        return Err(RestError::InvalidCommonParameter("SignatureNonce"));
    }
    Ok(())
}

/// Nonces seen in the last two timestamp windows, per access key, bounded in memory.
///
/// A request is accepted only while its timestamp is within the window of the server's
/// clock, and that timestamp is at most one window ahead at arrival, so remembering each
/// nonce for two windows after it was first seen refuses every replay that could otherwise
/// pass. Entries are 128-bit digests of (key id, nonce); expiry is in insertion order.
pub(crate) struct NonceCache {
    inner: Mutex<NonceInner>,
    retention: Duration,
    capacity: usize,
}

#[derive(Default)]
struct NonceInner {
    seen: HashSet<u128>,
    order: VecDeque<(Instant, u128)>,
}

impl Default for NonceCache {
    fn default() -> Self {
        Self::new(
            Duration::from_millis(2 * TIMESTAMP_WINDOW_MS.unsigned_abs()),
            NONCE_CAPACITY,
        )
    }
}

impl NonceCache {
    pub(crate) fn new(retention: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(NonceInner::default()),
            retention,
            capacity,
        }
    }

    /// Records the nonce, or refuses it when seen within the retention.
    pub(crate) fn check_and_record(
        &self,
        access_key_id: &str,
        nonce: &str,
    ) -> Result<(), RestError> {
        let digest = {
            let out = crypto::sha256(&[access_key_id.as_bytes(), &[0], nonce.as_bytes()]);
            let mut first = [0u8; 16];
            first.copy_from_slice(&out[..16]);
            u128::from_be_bytes(first)
        };
        let now = Instant::now();
        // Nothing here can panic while holding the lock, but a poisoned lock would still
        // hold a consistent set, so keep using it.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(expires, d)) = inner.order.front() {
            if expires > now {
                break;
            }
            inner.order.pop_front();
            inner.seen.remove(&d);
        }
        if inner.seen.contains(&digest) {
            return Err(RestError::NonceUsed);
        }
        if inner.seen.len() >= self.capacity {
            return Err(RestError::Core(Error::SystemOverFlow));
        }
        inner.seen.insert(digest);
        inner.order.push_back((now + self.retention, digest));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_cache_refuses_replays_per_key_and_forgets_after_retention() {
        let cache = NonceCache::new(Duration::from_millis(0), 10);
        assert!(cache.check_and_record("k", "n").is_ok());
        // Zero retention: already expired, so accepted again.
        assert!(cache.check_and_record("k", "n").is_ok());

        let cache = NonceCache::new(Duration::from_secs(60), 2);
        assert!(cache.check_and_record("k", "n").is_ok());
        assert!(matches!(
            cache.check_and_record("k", "n"),
            Err(RestError::NonceUsed)
        ));
        assert!(cache.check_and_record("other", "n").is_ok());
        assert!(matches!(
            cache.check_and_record("k", "n2"),
            Err(RestError::Core(Error::SystemOverFlow))
        ));
    }

    #[test]
    fn timestamp_window() {
        let now = signature::parse_timestamp_ms("2026-01-01T00:15:00Z").unwrap_or_default();
        assert!(check_timestamp("2026-01-01T00:00:00Z", now).is_ok());
        assert!(check_timestamp("2026-01-01T00:30:00Z", now).is_ok());
        assert!(matches!(
            check_timestamp("2025-12-31T23:59:59Z", now),
            Err(RestError::TimestampExpired)
        ));
        assert!(matches!(
            check_timestamp("yesterday", now),
            Err(RestError::TimestampFormat)
        ));
    }
}
