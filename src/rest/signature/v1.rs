//! The V1 RPC signature: every parameter but `Signature`, canonicalised into a
//! string to sign, signed with HMAC-SHA1 under `secret + "&"`.

use base64::Engine as _;

use super::{canonical_query, percent_encode};
use crate::core::crypto;

/// V1 string to sign: `METHOD&%2F&` + percent_encode(canonicalized query).
///
/// `params` are all decoded request parameters (query plus form body) except
/// `Signature`. The method is used as given; pass the request's actual method.
pub fn v1_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    let canonical = canonical_query(params);
    let mut out = String::with_capacity(method.len() + 5 + canonical.len() * 2);
    out.push_str(method);
    out.push_str("&%2F&");
    out.push_str(&percent_encode(&canonical));
    out
}

/// V1 signature: Base64(HMAC-SHA1(key = secret + "&", string_to_sign)).
pub fn v1_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let mut key = Vec::with_capacity(access_key_secret.len() + 1);
    key.extend_from_slice(access_key_secret.as_bytes());
    key.push(b'&');
    base64::engine::general_purpose::STANDARD
        .encode(crypto::hmac_sha1(&key, &[string_to_sign.as_bytes()]))
}
