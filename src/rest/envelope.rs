//! Response bodies as Alibaba shapes them: a success body is `RequestId` plus the operation's
//! fields (XML root `<{Action}Response>`); an error body is
//! `{"RequestId","HostId","Code","Message","Recommend"}` (XML root `<Error>`) with the
//! documented HTTP status. Every response carries `x-acs-request-id`, and throttling errors
//! carry `x-acs-retry-after` in milliseconds (the Tea SDK waits that long).
//!
//! The two error mappings here (gateway errors and core errors) are exhaustive, without a
//! catch-all arm, so a new error variant cannot slip through unmapped.

use axum::{
    http::{header, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use crate::core::Error;

/// Request id response header.
pub(crate) const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-acs-request-id");
/// Milliseconds to wait before retrying; the Tea SDK honours it.
pub(crate) const RETRY_AFTER_HEADER: HeaderName = HeaderName::from_static("x-acs-retry-after");

const JSON_CONTENT_TYPE: &str = "application/json;charset=utf-8";
const XML_CONTENT_TYPE: &str = "text/xml;charset=utf-8";

// Copied from Alibaba's error table: internal causes never reach a client.
const MSG_INTERNAL: &str = "An error occurred while processing your request. Try again later.";

/// The response format: JSON unless the client asks for XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Xml,
}

impl Format {
    /// `Format=XML` (any case) wins; without a `Format` parameter an `Accept` header that
    /// names XML and not JSON selects XML.
    pub(crate) fn choose(format_param: Option<&str>, accept: Option<&str>) -> Self {
        match format_param {
            Some(f) if f.eq_ignore_ascii_case("xml") => Format::Xml,
            Some(_) => Format::Json,
            None => match accept {
                Some(a) if a.contains("xml") && !a.contains("json") => Format::Xml,
                _ => Format::Json,
            },
        }
    }
}

/// A response field value. Field order is kept as written.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    Obj(Vec<(&'static str, Value)>),
    /// In XML every item repeats the field's element name.
    List(Vec<Value>),
}

/// Errors the REST gateway itself raises (authentication, envelope, limits), next to the
/// core's errors.
#[derive(Debug)]
pub(crate) enum RestError {
    /// A core error: same code as over gRPC.
    Core(Error),
    /// A mandatory common parameter or header is absent.
    MissingParameter(&'static str),
    /// A common parameter has a value we do not accept (`Invalid<Name>`).
    InvalidCommonParameter(&'static str),
    /// `SignatureMethod` is not `HMAC-SHA1`, or the V3 algorithm is not `ACS3-HMAC-SHA256`.
    InvalidSignatureMethod,
    /// The V3 `Authorization` header is malformed or leaves required headers unsigned.
    IncompleteSignature(String),
    /// The signature does not match; carries the server's string to sign.
    SignatureDoesNotMatch { string_to_sign: String },
    /// `x-acs-content-sha256` is not the hash of the body received.
    ContentSha256Mismatch,
    /// The timestamp is not `YYYY-MM-DDThh:mm:ssZ`.
    TimestampFormat,
    /// The timestamp is more than the allowed window away from the server's clock.
    TimestampExpired,
    /// The nonce was seen within the window.
    NonceUsed,
    /// Unknown `Action`.
    ApiNotSupport,
    /// Neither GET nor POST.
    UnsupportedHttpMethod,
    /// The per-source-IP limit.
    Throttling { retry_after_ms: u64 },
    /// The body exceeds the size limit.
    BodyTooLarge { limit: usize },
}

impl From<Error> for RestError {
    fn from(e: Error) -> Self {
        RestError::Core(e)
    }
}

impl RestError {
    /// HTTP status, code and message.
    pub(crate) fn describe(&self) -> (StatusCode, String, String) {
        use StatusCode as S;
        let (status, code, message): (StatusCode, String, String) = match self {
            RestError::Core(e) => {
                let (status, message) = core_status_message(e);
                (status, e.code(), message)
            }
            RestError::MissingParameter(name) => (
                S::BAD_REQUEST,
                "MissingParameter".into(),
                format!("The input parameter \"{name}\" that is mandatory for processing this request is not supplied."),
            ),
            RestError::InvalidCommonParameter(name) => (
                S::BAD_REQUEST,
                format!("Invalid{name}"),
                format!("Specified parameter {name} is not valid."),
            ),
            RestError::InvalidSignatureMethod => (
                S::BAD_REQUEST,
                "InvalidSignatureMethod".into(),
                "Specified signature method is not valid.".into(),
            ),
            RestError::IncompleteSignature(detail) => (
                S::BAD_REQUEST,
                "IncompleteSignature".into(),
                format!("The request signature does not conform to Aliyun standards. {detail}"),
            ),
            RestError::SignatureDoesNotMatch { string_to_sign } => (
                S::BAD_REQUEST,
                "SignatureDoesNotMatch".into(),
                format!("Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}"),
            ),
            RestError::ContentSha256Mismatch => (
                S::BAD_REQUEST,
                "SignatureDoesNotMatch".into(),
                "Specified signature is not matched with our calculation. x-acs-content-sha256 is not the SHA-256 of the request body.".into(),
            ),
            RestError::TimestampFormat => (
                S::BAD_REQUEST,
                "InvalidTimeStamp.Format".into(),
                "Specified time stamp or date value is not well formatted.".into(),
            ),
            RestError::TimestampExpired => (
                S::BAD_REQUEST,
                "InvalidTimeStamp.Expired".into(),
                "Specified time stamp or date value is expired.".into(),
            ),
            RestError::NonceUsed => (
                S::BAD_REQUEST,
                "SignatureNonceUsed".into(),
                "Specified signature nonce was used already.".into(),
            ),
            RestError::ApiNotSupport => (
                S::NOT_FOUND,
                "ApiNotSupport".into(),
                "The specified API is not supported.".into(),
            ),
            RestError::UnsupportedHttpMethod => (
                S::BAD_REQUEST,
                "UnsupportedHTTPMethod".into(),
                "Specified HTTP method is not supported; use GET or POST.".into(),
            ),
            RestError::Throttling { .. } => (
                S::BAD_REQUEST,
                "Throttling.User".into(),
                "Request was denied due to user flow control.".into(),
            ),
            RestError::BodyTooLarge { limit } => (
                S::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge".into(),
                format!("The request body exceeds {limit} bytes."),
            ),
        };
        (status, code, message)
    }

    fn retry_after_ms(&self) -> Option<u64> {
        match self {
            RestError::Core(e) => e.retry_after_ms(),
            RestError::Throttling { retry_after_ms } => Some(*retry_after_ms),
            RestError::MissingParameter(_)
            | RestError::InvalidCommonParameter(_)
            | RestError::InvalidSignatureMethod
            | RestError::IncompleteSignature(_)
            | RestError::SignatureDoesNotMatch { .. }
            | RestError::ContentSha256Mismatch
            | RestError::TimestampFormat
            | RestError::TimestampExpired
            | RestError::NonceUsed
            | RestError::ApiNotSupport
            | RestError::UnsupportedHttpMethod
            | RestError::BodyTooLarge { .. } => None,
        }
    }
}

/// HTTP status and client-facing message of a core error. Internal causes never reach the
/// message.
fn core_status_message(e: &Error) -> (StatusCode, String) {
    use StatusCode as S;
    match e {
        // Alibaba's sentence with the detail gRPC gives: which field, and what is wrong.
        Error::ParameterCheckFailed(_)
        | Error::InvalidParameter { .. }
        | Error::PermissionCheckFailed(_)
        | Error::InstancePermissionCheckFailed
        | Error::Unauthenticated(_)
        | Error::AccessKeySecretMismatch
        | Error::ApplyTokenOverFlow { .. }
        | Error::QueryTokenOverFlow { .. }
        | Error::RevokeTokenOverFlow { .. }
        | Error::DeviceCredentialExsit
        | Error::DeviceCredentialNotFound
        | Error::DeviceCredentialNumExceed
        | Error::RevisionCompacted { .. }
        | Error::FutureRevision { .. }
        | Error::WatchStreamNumExceed { .. } => (S::BAD_REQUEST, e.to_string()),
        Error::AccessKeyNotFound | Error::AccessKeyIdNotFound => (S::NOT_FOUND, e.to_string()),
        Error::SystemOverFlow => (S::INTERNAL_SERVER_ERROR, e.to_string()),
        Error::ServiceUnavailable => (S::SERVICE_UNAVAILABLE, e.to_string()),
        Error::Internal(_) => (S::INTERNAL_SERVER_ERROR, MSG_INTERNAL.into()),
    }
}

/// A success response: `RequestId` first, then `fields`.
pub(crate) fn success(
    action: &str,
    request_id: &str,
    format: Format,
    fields: Vec<(&'static str, Value)>,
) -> Response {
    let mut all = Vec::with_capacity(fields.len() + 1);
    all.push(("RequestId", Value::Str(request_id.to_owned())));
    all.extend(fields);
    let body = match format {
        Format::Json => render_json_object(&all),
        Format::Xml => render_xml_document(&format!("{action}Response"), &all),
    };
    finish(StatusCode::OK, format, body, request_id, None)
}

/// An error response. Internal errors are logged here, once, with their cause.
pub(crate) fn error(err: &RestError, request_id: &str, host_id: &str, format: Format) -> Response {
    let (status, code, message) = err.describe();
    if let RestError::Core(Error::Internal(source)) = err {
        tracing::error!(request_id, error = %source, "internal error");
    }
    let fields = vec![
        ("RequestId", Value::Str(request_id.to_owned())),
        ("HostId", Value::Str(host_id.to_owned())),
        ("Code", Value::Str(code)),
        ("Message", Value::Str(message)),
        ("Recommend", Value::Str(err.recommend())),
    ];
    let body = match format {
        Format::Json => render_json_object(&fields),
        Format::Xml => render_xml_document("Error", &fields),
    };
    finish(status, format, body, request_id, err.retry_after_ms())
}

fn finish(
    status: StatusCode,
    format: Format,
    body: String,
    request_id: &str,
    retry_after_ms: Option<u64>,
) -> Response {
    let content_type = match format {
        Format::Json => JSON_CONTENT_TYPE,
        Format::Xml => XML_CONTENT_TYPE,
    };
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    // Request ids are upper-case UUIDs we generate, so they are always valid header values.
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, v);
    }
    if let Some(ms) = retry_after_ms {
        headers.insert(RETRY_AFTER_HEADER, HeaderValue::from(ms.max(1)));
    }
    response
}

fn render_json_object(fields: &[(&'static str, Value)]) -> String {
    let mut out = String::new();
    write_json(&Value::Obj(fields.to_vec()), &mut out);
    out
}

fn write_json(value: &Value, out: &mut String) {
    match value {
        // serde_json's Display of a string value is its escaped JSON literal, infallibly.
        Value::Str(s) => out.push_str(&serde_json::Value::String(s.clone()).to_string()),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Obj(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('"');
                out.push_str(k);
                out.push_str("\":");
                write_json(v, out);
            }
            out.push('}');
        }
        Value::List(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(v, out);
            }
            out.push(']');
        }
    }
}

fn render_xml_document(root: &str, fields: &[(&'static str, Value)]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    write_xml_element(root, &Value::Obj(fields.to_vec()), &mut out);
    out
}

fn write_xml_element(name: &str, value: &Value, out: &mut String) {
    if let Value::List(items) = value {
        for item in items {
            write_xml_element(name, item, out);
        }
        return;
    }
    out.push('<');
    out.push_str(name);
    out.push('>');
    match value {
        Value::Str(s) => xml_escape_into(s, out),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Obj(fields) => {
            for (k, v) in fields {
                write_xml_element(k, v, out);
            }
        }
        Value::List(_) => {} // handled above
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Escapes XML text; drops the control characters XML 1.0 cannot carry at all.
fn xml_escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_choice() {
        assert_eq!(Format::choose(Some("XML"), None), Format::Xml);
        assert_eq!(
            Format::choose(Some("xml"), Some("application/json")),
            Format::Xml
        );
        assert_eq!(Format::choose(Some("JSON"), Some("text/xml")), Format::Json);
        assert_eq!(Format::choose(None, Some("application/xml")), Format::Xml);
        assert_eq!(Format::choose(None, Some("application/json")), Format::Json);
        assert_eq!(Format::choose(None, None), Format::Json);
    }

    #[test]
    fn json_and_xml_rendering_escape() {
        let fields = vec![
            ("A", Value::Str("x\"<&>\u{1}".into())),
            (
                "B",
                Value::List(vec![Value::Str("1".into()), Value::Str("2".into())]),
            ),
            (
                "C",
                Value::Obj(vec![("D", Value::Bool(true)), ("E", Value::Int(-3))]),
            ),
        ];
        assert_eq!(
            render_json_object(&fields),
            r#"{"A":"x\"<&>\u0001","B":["1","2"],"C":{"D":true,"E":-3}}"#
        );
        assert_eq!(
            render_xml_document("R", &fields),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><R><A>x&quot;&lt;&amp;&gt;</A><B>1</B><B>2</B><C><D>true</D><E>-3</E></C></R>"
        );
    }

    #[test]
    fn statuses_follow_the_documented_table() {
        let cases: Vec<(RestError, u16, &str)> = vec![
            (
                Error::invalid(crate::core::Field::ExpireTime, "x").into(),
                400,
                "InvalidParameter.ExpireTime",
            ),
            (
                Error::AccessKeyNotFound.into(),
                404,
                "InvalidAccessKeyId.NotFound",
            ),
            (
                Error::ApplyTokenOverFlow { retry_after_ms: 5 }.into(),
                400,
                "ApplyTokenOverFlow",
            ),
            (Error::internal("disk on fire").into(), 500, "InternalError"),
            (RestError::ApiNotSupport, 404, "ApiNotSupport"),
            (RestError::NonceUsed, 400, "SignatureNonceUsed"),
            (RestError::TimestampExpired, 400, "InvalidTimeStamp.Expired"),
            (
                RestError::Throttling { retry_after_ms: 1 },
                400,
                "Throttling.User",
            ),
            (
                RestError::MissingParameter("Timestamp"),
                400,
                "MissingParameter",
            ),
            (
                RestError::InvalidCommonParameter("Version"),
                400,
                "InvalidVersion",
            ),
        ];
        for (err, status, code) in cases {
            let (s, c, m) = err.describe();
            assert_eq!((s.as_u16(), c.as_str()), (status, code));
            assert!(!m.contains("disk"), "internal causes stay out of messages");
        }
    }
}
