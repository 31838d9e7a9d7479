//! The few primitives every secret-handling path shares: HMAC-SHA1 and HMAC-SHA256, SHA-256,
//! lowercase hex and constant-time comparison. Written once, so each invariant lives in one
//! place: HMAC takes a key of any length, and secrets and MACs are compared in constant time.
//!
//! Inputs are given as parts (`&[&[u8]]`) hashed in order, so callers that MAC a structured
//! message (`instance || 0 || id`) need not build it in a buffer first. Keys used on every
//! request are kept as [`HmacSha256Key`], their padded blocks hashed once.

use hmac::{digest::KeyInit, Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

fn keyed<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> M {
    // HMAC hashes keys longer than its block and pads shorter ones: every length is valid.
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// HMAC-SHA256 of the concatenated `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    keyed::<Hmac<Sha256>>(key, parts)
        .finalize()
        .into_bytes()
        .into()
}

/// An HMAC-SHA256 key whose padded inner and outer blocks are already hashed, for keys that
/// MAC on every request (token MACs, session handles, device secrets): a MAC of a short
/// message under it costs two SHA-256 compressions instead of four. It may also carry a
/// prefix of the message (a purpose label), hashed once.
#[derive(Clone)]
pub struct HmacSha256Key(Hmac<Sha256>);

impl HmacSha256Key {
    /// The key `key`, with `prefix` as the start of every message MACed under it.
    pub fn new(key: &[u8], prefix: &[u8]) -> Self {
        Self(keyed::<Hmac<Sha256>>(key, &[prefix]))
    }

    /// HMAC-SHA256 of the prefix followed by the concatenated `parts`: equal to
    /// [`hmac_sha256`] of the same key and bytes.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for HmacSha256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, not even its hashed pads.
        f.write_str("HmacSha256Key(..)")
    }
}

/// HMAC-SHA1 of the concatenated `parts` under `key` (Alibaba's V1 signature and MQTT
/// passwords use it; nothing of ours does).
pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    keyed::<Hmac<Sha1>>(key, parts)
        .finalize()
        .into_bytes()
        .into()
}

/// SHA-256 of the concatenated `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Whether `a` and `b` are equal, comparing contents in constant time. Lengths are not
/// secret (MACs and signatures have a fixed length per algorithm): unequal lengths are
/// simply false.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // RFC 4231 test case 2 and RFC 2202 test case 2.
        assert_eq!(
            hex(&hmac_sha256(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha1(b"Jefe", &[b"what do ya want for nothing?"])),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            hex(&sha256(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // Keys longer than the block are valid too.
        assert_eq!(hmac_sha256(&[7; 200], &[b"x"]).len(), 32);
    }

    #[test]
    fn prehashed_key_macs_like_the_plain_function() {
        let key = HmacSha256Key::new(b"Jefe", b"what do ya want ");
        assert_eq!(
            key.mac(&[b"for nothing?"]),
            hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"])
        );
        // Reusable: each MAC starts again from the prefix.
        assert_eq!(
            key.mac(&[b"x", b"y"]),
            hmac_sha256(b"Jefe", &[b"what do ya want xy"])
        );
        let long = HmacSha256Key::new(&[7; 200], b"");
        assert_eq!(long.mac(&[b"x"]), hmac_sha256(&[7; 200], &[b"x"]));
        assert_eq!(format!("{key:?}"), "HmacSha256Key(..)");
    }

    #[test]
    fn compare_and_hex() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
