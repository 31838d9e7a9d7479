//! Alibaba Cloud API request signatures: the V1 RPC signature (HMAC-SHA1,
//! `SignatureVersion=1.0`) and the V3 signature (`ACS3-HMAC-SHA256` in the
//! `Authorization` header), their timestamps, and the client side of V3.
//!
//! Everything here is a pure function over already-decoded request parts, with
//! no HTTP types, so the REST shim can feed it whatever its HTTP stack yields
//! and the canonicalisation can be tested against fixed vectors.
//!
//! Callers must hand in *decoded* query/form parameters. Note that the Tea SDK
//! puts spaces on the wire as `+` (form encoding) but signs them as `%20`, so
//! the query string has to be decoded with `application/x-www-form-urlencoded`
//! rules (`+` = space) before it reaches this module.
//!
//! Children: `v1` (string to sign and signature), `v3` (the `Authorization`
//! header, canonical request and signature), `timestamp` (the `Timestamp` /
//! `x-acs-date` format), `client` (signing requests, for tests and benchmarks).
//! What is shared by V1 and V3 (percent-encoding, the canonical query, the
//! constant-time comparison) lives here.

mod client;
mod timestamp;
mod v1;
mod v3;
#[cfg(test)]
mod vectors;

pub use client::v3_authorization;
pub use timestamp::{format_timestamp_ms, parse_timestamp_ms};
pub use v1::{v1_signature, v1_string_to_sign};
pub use v3::{
    parse_v3_authorization, sha256_hex, v3_canonical_request, v3_signature, v3_string_to_sign,
    SignatureError, V3Authorization,
};

use crate::core::crypto;

/// RFC 3986 percent-encoding as Alibaba uses it: `A-Z a-z 0-9 - _ . ~` kept,
/// every other UTF-8 byte becomes `%XY` (uppercase hex); space is `%20`.
pub fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
        }
    }
    out
}

/// Sorts parameters by name (byte order, stable for equal names) and joins
/// them as percent-encoded `k=v` pairs with `&`. Shared by V1 and V3.
///
/// Sorting happens on the decoded names, as both SDKs do; empty values stay
/// in as `k=`. Repeated names cannot come from the SDKs (they use maps), so
/// they are simply kept in arrival order.
fn canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // `str`'s Ord is byte order, and `sort_by` is stable.
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::new();
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&percent_encode(k));
        out.push('=');
        out.push_str(&percent_encode(v));
    }
    out
}

/// Constant-time comparison of two signature strings. Lengths are public
/// (they are fixed per algorithm), so only the content comparison needs to be
/// constant-time; unequal lengths are simply false.
pub fn signatures_equal(expected: &str, presented: &str) -> bool {
    crypto::constant_time_eq(expected.as_bytes(), presented.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- percent encoding -------------------------------------------------

    #[test]
    fn percent_encode_rules() {
        assert_eq!(percent_encode("*"), "%2A");
        assert_eq!(percent_encode("~"), "~");
        assert_eq!(percent_encode(" "), "%20");
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("+"), "%2B");
        assert_eq!(percent_encode("%"), "%25");
        assert_eq!(percent_encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode("主题"), "%E4%B8%BB%E9%A2%98");
        assert_eq!(percent_encode("😀"), "%F0%9F%98%80");
        assert_eq!(percent_encode(""), "");
    }

    // ---- signature comparison ---------------------------------------------

    #[test]
    fn signatures_equal_cases() {
        assert!(signatures_equal("abc", "abc"));
        assert!(signatures_equal("", ""));
        assert!(!signatures_equal("abc", "abd"));
        assert!(!signatures_equal("abc", "ab"));
        assert!(!signatures_equal("abc", "ABC"));
    }
}
