//! The `Recommend` field of REST error bodies: what the caller can do about the error. Core
//! errors bring their own hint (the same for every transport); the gateway's own errors
//! (signatures, timestamps, common parameters) get theirs here. Exhaustive, like the status
//! mapping, so a new error cannot go without one.

use super::{envelope::RestError, MAX_BODY_BYTES};

impl RestError {
    /// One sentence on how to fix the request; empty when the message says it all.
    pub(crate) fn recommend(&self) -> String {
        match self {
            RestError::Core(e) => e.recommend(),
            RestError::MissingParameter(name) => format!(
                "Add {name}: V1 requests carry it as a parameter, V3 requests as its x-acs-* header; the official SDKs set both."
            ),
            RestError::InvalidCommonParameter(name) => format!(
                "Check {name}: Version must be 2020-04-20, SignatureVersion 1.0, SignatureNonce non-empty (docs/rest.md)."
            ),
            RestError::InvalidSignatureMethod => {
                "Sign with HMAC-SHA1 (V1, SignatureMethod) or ACS3-HMAC-SHA256 (V3, Authorization).".into()
            }
            RestError::IncompleteSignature(_) => "Use Authorization: ACS3-HMAC-SHA256 Credential=...,SignedHeaders=...,Signature=... signing at least x-acs-action, x-acs-version, x-acs-date, x-acs-signature-nonce and x-acs-content-sha256.".into(),
            RestError::SignatureDoesNotMatch { .. } => "Check the AccessKeySecret, and that nothing changes the request after signing; compare the server's string to sign with yours.".into(),
            RestError::ContentSha256Mismatch => "Set x-acs-content-sha256 to the lowercase hex SHA-256 of the exact body sent.".into(),
            RestError::TimestampFormat => "Send the time in UTC as YYYY-MM-DDThh:mm:ssZ, e.g. 2026-01-31T12:00:00Z.".into(),
            RestError::TimestampExpired => "Sync the client's clock (NTP): the timestamp must be within 15 minutes of the server's, in UTC.".into(),
            RestError::NonceUsed => "Send a fresh random SignatureNonce (x-acs-signature-nonce) with every request.".into(),
            RestError::ApiNotSupport => "Send Action=ApplyToken, QueryToken, RevokeToken, RegisterDeviceCredential, GetDeviceCredential, RefreshDeviceCredential, UnRegisterDeviceCredential or ListDeviceCredentialClientId to the path /.".into(),
            RestError::UnsupportedHttpMethod => "Use GET or POST.".into(),
            RestError::Throttling { retry_after_ms } => format!(
                "Retry after {retry_after_ms} ms; the per-IP limit is the server's --rate-per-ip."
            ),
            RestError::BodyTooLarge { .. } => format!(
                "Send at most {MAX_BODY_BYTES} bytes; a large request usually means too many Resources (at most 100)."
            ),
        }
    }
}
