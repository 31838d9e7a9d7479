//! The V3 signature: the `Authorization: ACS3-HMAC-SHA256 ...` header, the
//! canonical request built from the signed headers, and HMAC-SHA256 over its hash.

use super::canonical_query;
use crate::core::crypto;

/// The only V3 algorithm the service accepts.
pub(super) const ACS3_HMAC_SHA256: &str = "ACS3-HMAC-SHA256";

/// Parsed `Authorization: ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=<a;b>,Signature=<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Authorization {
    /// The AccessKeyId from `Credential=`.
    pub access_key_id: String,
    /// Header names from `SignedHeaders=`, lowercased, in the order given.
    pub signed_headers: Vec<String>,
    /// The presented signature, as given (the SDKs send lowercase hex).
    pub signature: String,
}

/// Why an `Authorization` header could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The scheme is not `ACS3-HMAC-SHA256` (e.g. `ACS3-HMAC-SM3`, `ACS3-RSA-SHA256`).
    /// Carries the scheme, cut to 64 bytes so a hostile header cannot bloat logs.
    #[error("unsupported signature algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// No (or an empty) `Credential=` field.
    #[error("authorization header lacks Credential")]
    MissingCredential,
    /// No (or an empty) `SignedHeaders=` field.
    #[error("authorization header lacks SignedHeaders")]
    MissingSignedHeaders,
    /// No (or an empty) `Signature=` field.
    #[error("authorization header lacks Signature")]
    MissingSignature,
    /// Anything else structurally wrong; the text says what.
    #[error("malformed authorization header: {0}")]
    Malformed(&'static str),
}

/// Cuts `s` to at most `max` bytes on a char boundary.
fn truncate_for_error(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Parses a V3 `Authorization` header. Tolerates extra spaces around the
/// scheme, after commas and around `=`; rejects unknown or repeated fields
/// (a repeated field would make "which one counts" ambiguous).
pub fn parse_v3_authorization(header: &str) -> Result<V3Authorization, SignatureError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::Malformed("empty header"));
    }
    let (scheme, rest) = match header.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&header[..i], header[i..].trim_start()),
        None => (header, ""),
    };
    if scheme != ACS3_HMAC_SHA256 {
        return Err(SignatureError::UnsupportedAlgorithm(truncate_for_error(
            scheme, 64,
        )));
    }

    let mut credential: Option<&str> = None;
    let mut signed_headers: Option<&str> = None;
    let mut signature: Option<&str> = None;
    if !rest.is_empty() {
        for part in rest.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(SignatureError::Malformed("empty field"));
            }
            let (name, value) = part
                .split_once('=')
                .ok_or(SignatureError::Malformed("field without '='"))?;
            let slot = match name.trim() {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => return Err(SignatureError::Malformed("unknown field")),
            };
            if slot.is_some() {
                return Err(SignatureError::Malformed("repeated field"));
            }
            *slot = Some(value.trim());
        }
    }

    let access_key_id = match credential {
        Some(c) if !c.is_empty() => c.to_owned(),
        _ => return Err(SignatureError::MissingCredential),
    };
    let signed_headers = match signed_headers {
        Some(h) if !h.is_empty() => h
            .split(';')
            .map(|n| {
                let n = n.trim();
                if n.is_empty() {
                    Err(SignatureError::Malformed("empty name in SignedHeaders"))
                } else {
                    Ok(n.to_ascii_lowercase())
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(SignatureError::MissingSignedHeaders),
    };
    let signature = match signature {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => return Err(SignatureError::MissingSignature),
    };
    Ok(V3Authorization {
        access_key_id,
        signed_headers,
        signature,
    })
}

/// V3 canonical request:
/// `METHOD\nURI\nQUERY\nHEADERS\nSIGNED_HEADERS\nPAYLOAD_HASH`.
///
/// `query` holds decoded query params; `headers` lowercase-name/raw-value
/// pairs of the request; `signed_headers` the names from `Authorization`;
/// `payload_sha256_hex` the `x-acs-content-sha256` value or the body's hash.
/// `path` is the path as received (`/` for RPC; empty becomes `/`).
///
/// Signed header names are lowercased, sorted and de-duplicated, because the
/// SDKs build both the header block and the `SignedHeaders` line from a
/// sorted set. A signed header that occurs several times yields its trimmed
/// values sorted and joined with `,` (what Tea's `get_canonicalized_headers`
/// does); one that is absent yields an empty value, so the signature simply
/// fails to match rather than the request being rebuilt differently.
pub fn v3_canonical_request(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    signed_headers: &[String],
    payload_sha256_hex: &str,
) -> String {
    let mut names: Vec<String> = signed_headers
        .iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();

    let mut header_block = String::new();
    for name in &names {
        let mut values: Vec<&str> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect();
        values.sort_unstable();
        header_block.push_str(name);
        header_block.push(':');
        header_block.push_str(&values.join(","));
        header_block.push('\n');
    }

    let uri = if path.is_empty() { "/" } else { path };
    // Every header line ends with '\n' and the parts are joined by '\n', so a
    // blank line separates the header block from the SignedHeaders line.
    format!(
        "{method}\n{uri}\n{query}\n{header_block}\n{signed}\n{payload_sha256_hex}",
        query = canonical_query(query),
        signed = names.join(";"),
    )
}

/// V3 string to sign: `"ACS3-HMAC-SHA256\n"` + hex(sha256(canonical_request)).
pub fn v3_string_to_sign(canonical_request: &str) -> String {
    format!(
        "{ACS3_HMAC_SHA256}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// V3 signature: lowercase hex(HMAC-SHA256(key = secret, string_to_sign)).
/// Unlike V1, the key has no trailing `&`.
pub fn v3_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    crypto::hex(&crypto::hmac_sha256(
        access_key_secret.as_bytes(),
        &[string_to_sign.as_bytes()],
    ))
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    crypto::hex(&crypto::sha256(&[data]))
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- Authorization parsing --------------------------------------------

    #[test]
    fn parse_authorization_good() {
        let a = parse_v3_authorization(
            "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=host;x-acs-date,Signature=abc123",
        )
        .unwrap();
        assert_eq!(
            a,
            V3Authorization {
                access_key_id: "testid".into(),
                signed_headers: vec!["host".into(), "x-acs-date".into()],
                signature: "abc123".into(),
            }
        );
        let spaced = parse_v3_authorization(
            "  ACS3-HMAC-SHA256   Credential = testid , SignedHeaders= Host;X-Acs-Date ,  Signature =abc123  ",
        )
        .unwrap();
        assert_eq!(spaced, a);
        // Field order is free.
        let reordered = parse_v3_authorization(
            "ACS3-HMAC-SHA256 Signature=abc123,Credential=testid,SignedHeaders=host;x-acs-date",
        )
        .unwrap();
        assert_eq!(reordered, a);
    }

    #[test]
    fn parse_authorization_bad() {
        use SignatureError::*;
        let cases: &[(&str, SignatureError)] = &[
            ("", Malformed("empty header")),
            ("   ", Malformed("empty header")),
            (
                "ACS3-HMAC-SM3 Credential=a,SignedHeaders=h,Signature=s",
                UnsupportedAlgorithm("ACS3-HMAC-SM3".into()),
            ),
            (
                "acs3-hmac-sha256 Credential=a,SignedHeaders=h,Signature=s",
                UnsupportedAlgorithm("acs3-hmac-sha256".into()),
            ),
            ("Bearer xyz", UnsupportedAlgorithm("Bearer".into())),
            ("ACS3-HMAC-SHA256", MissingCredential),
            (
                "ACS3-HMAC-SHA256 SignedHeaders=h,Signature=s",
                MissingCredential,
            ),
            (
                "ACS3-HMAC-SHA256 Credential=,SignedHeaders=h,Signature=s",
                MissingCredential,
            ),
            (
                "ACS3-HMAC-SHA256 Credential=a,Signature=s",
                MissingSignedHeaders,
            ),
            (
                "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=h",
                MissingSignature,
            ),
            (
                "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=h,Signature=",
                MissingSignature,
            ),
            (
                "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=h;;x,Signature=s",
                Malformed("empty name in SignedHeaders"),
            ),
            (
                "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=h;,Signature=s",
                Malformed("empty name in SignedHeaders"),
            ),
            (
                "ACS3-HMAC-SHA256 Credential=a,,SignedHeaders=h,Signature=s",
                Malformed("empty field"),
            ),
            (
                "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=h,Signature=s,",
                Malformed("empty field"),
            ),
            (
                "ACS3-HMAC-SHA256 Credential,SignedHeaders=h,Signature=s",
                Malformed("field without '='"),
            ),
            (
                "ACS3-HMAC-SHA256 Credential=a,Credential=b,SignedHeaders=h,Signature=s",
                Malformed("repeated field"),
            ),
            (
                "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=h,Signature=s,Extra=1",
                Malformed("unknown field"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_v3_authorization(input).as_ref(),
                Err(want),
                "input {input:?}"
            );
        }
        // Long or non-ASCII schemes are cut on a char boundary, never panicking.
        let long = "é".repeat(100);
        match parse_v3_authorization(&long) {
            Err(UnsupportedAlgorithm(s)) => assert!(s.len() <= 64 && long.starts_with(&s)),
            other => panic!("unexpected {other:?}"),
        }
        for junk in [
            "=",
            ",",
            ";",
            "ACS3-HMAC-SHA256 =,=;",
            "ACS3-HMAC-SHA256\t\u{0}",
            "\u{FEFF}",
        ] {
            let _ = parse_v3_authorization(junk);
        }
    }
}
