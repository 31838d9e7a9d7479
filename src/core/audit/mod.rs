//! What the audit log records: one [`AuditEvent`] per mutating operation (whatever its result)
//! and per failed authentication of a caller. The transports fill one in at their choke points
//! and hand it to [`Core::audit`], which writes it before they answer; a write failure becomes
//! the request's `InternalError` (the operation itself may already have taken effect, so "try
//! again" would be the wrong message), never a silent loss.
//!
//! Never in an event: a secret, a password or a whole token. Tokens appear as their
//! fingerprint (the one revocation events carry), keys and credentials by id.
//!
//! Children: `sink` (where the lines go: a 0600 file or stdout, one `write(2)` per line).

mod sink;

use serde::Serialize;

pub use sink::{AuditDestination, AuditLog};

use super::{token::fingerprint, Core, Error, Result};

/// The operations that change state, by their API name. Each leaves exactly one audit line.
pub const MUTATING_OPERATIONS: [&str; 8] = [
    "ApplyToken",
    "RevokeToken",
    "RevokeTokens",
    "RegisterDeviceCredential",
    "RefreshDeviceCredential",
    "UnRegisterDeviceCredential",
    "CreateAccessKey",
    "DeleteAccessKey",
];

/// The keyring rotation's operation name (written by the `keyring rotate` command).
pub const ROTATE_KEYRING: &str = "RotateKeyring";

/// Longest caller-supplied value (a presented key id) copied into a line.
const MAX_UNTRUSTED_LEN: usize = 64;
/// Longest target field copied into a line (CreateAccessKey lists up to 100 instance ids).
const MAX_TARGET_LEN: usize = 8 * 1024;

/// Whether `operation` changes state and so is audited on every call.
pub fn is_mutating(operation: &str) -> bool {
    MUTATING_OPERATIONS.contains(&operation)
}

/// What an operation acted on. Empty fields do not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The instance (several, comma-separated, for CreateAccessKey).
    #[serde(rename = "instance")]
    pub instance_id: String,
    /// The device's client id.
    pub client_id: String,
    /// The token's fingerprint: lowercase hex of the first 16 bytes of its SHA-256.
    pub token_fingerprint: String,
    /// An access key id, device access key id or keyring key id.
    pub key_id: String,
    /// A token's handle (ApplyToken, RevokeTokens by handle); left out of the line when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token_handle: String,
}

impl Target {
    /// An operation on an instance.
    pub fn instance(instance_id: &str) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            ..Self::default()
        }
    }

    /// A token of an instance; only its fingerprint is kept.
    pub fn token(instance_id: &str, token: &str) -> Self {
        Self {
            token_fingerprint: if token.is_empty() {
                String::new()
            } else {
                fingerprint(token)
            },
            ..Self::instance(instance_id)
        }
    }

    /// A device credential.
    pub fn device(instance_id: &str, client_id: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            ..Self::instance(instance_id)
        }
    }

    /// An access key (or another key) by id.
    pub fn key(key_id: &str) -> Self {
        Self {
            key_id: key_id.to_owned(),
            ..Self::default()
        }
    }

    /// The same target with this key id.
    pub fn with_key(self, key_id: &str) -> Self {
        Self {
            key_id: key_id.to_owned(),
            ..self
        }
    }

    /// The same target with this token handle.
    pub fn with_handle(self, token_handle: &str) -> Self {
        Self {
            token_handle: token_handle.to_owned(),
            ..self
        }
    }
}

/// One audit line.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent<'a> {
    /// When, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The request id the client got.
    pub request_id: &'a str,
    /// `grpc`, `rest` or `cli`.
    pub transport: &'static str,
    /// The client's address, if known.
    pub source: String,
    /// The caller's access key id; for a failed authentication the id presented, if any
    /// (cut to 64 bytes: it is the client's text).
    pub caller_key_id: String,
    /// The API operation (e.g. `ApplyToken`), or what the failed call asked for.
    pub operation: &'a str,
    /// What it acted on.
    #[serde(flatten)]
    pub target: Target,
    /// `OK` or the error code the client got.
    pub result: &'a str,
}

impl<'a> AuditEvent<'a> {
    /// An event at the current time; `caller_key_id` is cut to a bounded length.
    pub fn now(
        request_id: &'a str,
        transport: &'static str,
        source: Option<std::net::SocketAddr>,
        caller_key_id: &str,
        operation: &'a str,
        target: Target,
        result: &'a str,
    ) -> Self {
        Self {
            time: rfc3339_ms(super::now_ms()),
            request_id,
            transport,
            source: source.map(|a| a.to_string()).unwrap_or_default(),
            caller_key_id: bounded(caller_key_id, MAX_UNTRUSTED_LEN).to_owned(),
            operation: bounded(operation, MAX_UNTRUSTED_LEN),
            target: Target {
                // Failed calls carry what the client sent: keep lines bounded.
                instance_id: bounded(&target.instance_id, MAX_TARGET_LEN).to_owned(),
                client_id: bounded(&target.client_id, MAX_TARGET_LEN).to_owned(),
                token_fingerprint: target.token_fingerprint,
                key_id: bounded(&target.key_id, MAX_TARGET_LEN).to_owned(),
                token_handle: bounded(&target.token_handle, MAX_UNTRUSTED_LEN).to_owned(),
            },
            result,
        }
    }
}

fn bounded(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let secs = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000
    )
}

impl Core {
    /// Whether audit lines are written: transports skip building an [`AuditEvent`] (a
    /// timestamp and copies of the caller's strings) for every mutating call when not.
    pub fn audit_enabled(&self) -> bool {
        self.config.audit.is_enabled()
    }

    /// Writes one audit line (nothing when the audit log is off).
    ///
    /// # Errors
    /// `InternalError` when the line could not be written; the transport fails the request.
    pub fn audit(&self, event: &AuditEvent<'_>) -> Result<()> {
        self.config.audit.write(event).map_err(|e| {
            self.metrics.audit_failure();
            Error::internal(format!("writing the audit log: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_bounds_untrusted_text() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(rfc3339_ms(951_827_696_007), "2000-02-29T12:34:56.007Z");
        let event = AuditEvent::now(
            "R",
            "grpc",
            None,
            &"é".repeat(40),
            "ApplyToken",
            Target::token("i", "t"),
            "OK",
        );
        assert_eq!(event.caller_key_id.len(), 64);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["instance"], "i");
        assert_eq!(json["token_fingerprint"], fingerprint("t"));
        assert!(is_mutating("RevokeToken") && !is_mutating("QueryToken"));
        assert!(is_mutating("RevokeTokens") && !is_mutating("ListTokens"));
        assert!(json.get("token_handle").is_none(), "left out when empty");
    }
}
