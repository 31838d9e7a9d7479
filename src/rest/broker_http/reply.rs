//! The answers, in the shape both EMQX 5 (`emqx_authn_http`, `emqx_authz_http`) and rmqtt
//! (`rmqtt-auth-http`) parse: HTTP 200, `content-type: application/json`, and a `result` of
//! `allow` or `deny`. Never `ignore` and never 204: EMQX reads 204 as allow, and rmqtt lets an
//! ignored CONNECT in when `allow_anonymous` is on.
//!
//! An allowed CONNECT also carries `is_superuser` (EMQX) and `superuser` (rmqtt), both false,
//! `expire_at` (Unix seconds; both brokers disconnect the client then, rmqtt with
//! `disconnect_if_expiry = true`), and `acl`: the grant as EMQX 5.8 / rmqtt rules, so the
//! broker decides publish and subscribe without calling back.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};

use crate::core::Grant;

/// Unix seconds of an expiry in ms, rounded down so the broker never disconnects late.
pub fn expire_at(expire_ms: i64) -> i64 {
    expire_ms.div_euclid(1000)
}

/// The ACL of a grant: allow each publish filter, allow each subscribe filter, then deny
/// everything else, so nothing falls through to a broker's permissive default.
///
/// A filter the brokers would not read literally is left out, which denies it: EMQX and rmqtt
/// substitute `${clientid}` and `${username}` in rule topics (rmqtt even after `eq `), and EMQX
/// reads a leading `eq ` as "this exact filter". Leading-wildcard rules never match `$` topics
/// in either broker; those fall through to the authorization endpoint, which decides them.
pub fn acl(grant: &Grant) -> Vec<Value> {
    let literal = |f: &&String| {
        let ok = !f.contains("${") && !f.starts_with("eq ");
        if !ok {
            tracing::debug!(filter = %f, "granted filter left out of the ACL: brokers would not read it literally");
        }
        ok
    };
    let mut rules: Vec<Value> = grant
        .publish
        .iter()
        .filter(literal)
        .map(|f| json!({"permission": "allow", "action": "publish", "topic": f}))
        .collect();
    rules.extend(
        grant
            .subscribe
            .iter()
            .filter(literal)
            .map(|f| json!({"permission": "allow", "action": "subscribe", "topic": f})),
    );
    rules.push(json!({"permission": "deny", "action": "all", "topic": "#"}));
    rules
}

/// An allowed CONNECT.
pub fn connect_allowed(grant: &Grant, expire_ms: i64, request_id: &str) -> Response {
    respond(
        json!({
            "result": "allow",
            "is_superuser": false,
            "superuser": false,
            "expire_at": expire_at(expire_ms),
            "acl": acl(grant),
        }),
        request_id,
    )
}

/// A denied CONNECT.
pub fn connect_denied(request_id: &str) -> Response {
    respond(
        json!({"result": "deny", "is_superuser": false, "superuser": false}),
        request_id,
    )
}

/// A publish or subscribe decision.
pub fn topic_decision(allowed: bool, request_id: &str) -> Response {
    respond(
        json!({"result": if allowed { "allow" } else { "deny" }}),
        request_id,
    )
}

/// The broker did not authenticate: not a decision about any client (see the module docs of
/// `broker_http`). EMQX and rmqtt treat a 4xx as "ignore" and, with mqtt-tokend as their
/// authenticator, refuse the CONNECT.
pub fn unauthenticated(code: &str, message: &str, request_id: &str) -> Response {
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"code": code, "message": message, "request_id": request_id}),
    );
    response.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("Basic realm=\"mqtt-tokend\""),
    );
    add_request_id(&mut response, request_id);
    response
}

fn respond(body: Value, request_id: &str) -> Response {
    let mut response = json_response(StatusCode::OK, &body);
    add_request_id(&mut response, request_id);
    response
}

/// Both brokers parse the body as JSON only when the content type starts with
/// `application/json` (rmqtt falls back to reading plain text, where any unknown word is allow).
fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn add_request_id(response: &mut Response, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::broker::AuthMode;

    #[test]
    fn acl_lists_the_grant_then_denies_the_rest() {
        let grant = Grant {
            mode: AuthMode::Token,
            instance_id: "i".into(),
            publish: vec!["a/${clientid}".into(), "a/b".into()],
            subscribe: vec!["a/#".into(), "eq x".into()],
            expire_time: 0,
            token_fingerprints: vec![],
            key_id: "k".into(),
            tokens: vec![],
        };
        assert_eq!(
            Value::Array(acl(&grant)),
            json!([
                {"permission": "allow", "action": "publish", "topic": "a/b"},
                {"permission": "allow", "action": "subscribe", "topic": "a/#"},
                {"permission": "deny", "action": "all", "topic": "#"},
            ])
        );
    }

    #[test]
    fn expire_at_rounds_down() {
        assert_eq!(expire_at(1_700_000_000_999), 1_700_000_000);
        assert_eq!(expire_at(1_700_000_000_000), 1_700_000_000);
    }
}
