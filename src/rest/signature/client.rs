//! The client side of V3: what a caller of the REST shim sends. Used by the tests
//! and the benchmark to sign requests the way the official SDKs do.

use super::v3::{v3_canonical_request, v3_signature, v3_string_to_sign, ACS3_HMAC_SHA256};

/// Client side of V3: the `Authorization` header value for a request in which every header
/// of `headers` (lowercase names, including `host` and the `x-acs-*` ones) is signed.
pub fn v3_authorization(
    access_key_id: &str,
    access_key_secret: &str,
    method: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    payload_sha256_hex: &str,
) -> String {
    let mut signed: Vec<String> = headers.iter().map(|(k, _)| k.clone()).collect();
    signed.sort();
    let canonical = v3_canonical_request(method, "/", query, headers, &signed, payload_sha256_hex);
    let signature = v3_signature(access_key_secret, &v3_string_to_sign(&canonical));
    format!(
        "{ACS3_HMAC_SHA256} Credential={access_key_id},SignedHeaders={},Signature={signature}",
        signed.join(";")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::signature::sha256_hex;

    #[test]
    fn v3_authorization_matches_the_fixed_vector() {
        // The facts-file vector (§11) again, through the client-side helper.
        let query: Vec<(String, String)> = [
            ("Actions", "R,W"),
            ("ExpireTime", "1767229260000"),
            ("InstanceId", "mqtt-test"),
            ("Resources", "TopicA/+,TopicB/#"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let empty = sha256_hex(b"");
        let headers: Vec<(String, String)> = [
            ("host", "onsmqtt.cn-hangzhou.aliyuncs.com"),
            ("x-acs-action", "ApplyToken"),
            ("x-acs-content-sha256", empty.as_str()),
            ("x-acs-date", "2026-01-01T00:00:00Z"),
            ("x-acs-signature-nonce", "nonce-1"),
            ("x-acs-version", "2020-04-20"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let auth = v3_authorization("testid", "testsecret", "POST", &query, &headers, &empty);
        assert!(
            auth.ends_with(
                "Signature=4a132530395732dffefa0e05c76e64a141506076c2b89e5a536cc0d3475dfe4a"
            ),
            "{auth}"
        );
        assert!(
            auth.starts_with("ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=host;x-acs-action;")
        );
    }
}
