//! The EMQX 5 / rmqtt HTTP authentication and authorization contract through a real server:
//! the request shapes EMQX's docs configure (POST JSON with `?clientid=${clientid}` in the URL,
//! GET with the body as a query string, form bodies) and rmqtt's (form with `access` 1/2),
//! valid, forged, revoked and expired credentials in the three modes, exact response bodies,
//! and the session lookup a kicker uses.
//!
//! One test binary: this file is the broker side (every request shape) and the checks every
//! answer shares; the tests are in `emqx/` by concern: `connect` (the three credential modes
//! in every request shape, topic checks against the recorded session), `refusals` (requests
//! it cannot read, brokers that do not authenticate), `sessions` (what a kicker finds, session
//! TTLs, token expiry).

mod broker_kit;
mod common;

#[path = "emqx/connect.rs"]
mod connect;
#[path = "emqx/refusals.rs"]
mod refusals;
#[path = "emqx/sessions.rs"]
mod sessions;

use broker_kit::Login;
use common::{Key, TestServer};
use mqtt_tokend::proto::TokenAction;
use reqwest::Method;
use serde_json::{json, Value};

const RW: &[TokenAction] = &[TokenAction::Read, TokenAction::Write];
const HOUR: i64 = 3_600_000;

/// A broker calling the endpoints with an access key.
struct Broker {
    http: reqwest::Client,
    base: String,
    authorization: Option<String>,
}

/// An HTTP answer.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

enum Body<'a> {
    None,
    Json(Value),
    Form(&'a [(&'a str, &'a str)]),
    Raw(&'a str, Vec<u8>),
}

fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

impl Broker {
    /// Authenticates as EMQX does with `headers { Authorization = "Basic …" }`.
    fn basic(ts: &TestServer, key: &Key) -> Self {
        use base64::Engine;
        let pair = format!("{}:{}", key.id, key.secret);
        let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
        Self::with(ts, Some(format!("Basic {b64}")))
    }

    fn with(ts: &TestServer, authorization: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{}", ts.server().http_addr().expect("REST on")),
            authorization,
        }
    }

    async fn send(&self, method: Method, path: &str, body: Body<'_>) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(a) = &self.authorization {
            req = req.header("authorization", a);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req
                .header("content-type", "application/json")
                .body(v.to_string()),
            Body::Form(pairs) => req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(query(pairs)),
            Body::Raw(content_type, bytes) => req.header("content-type", content_type).body(bytes),
        };
        let r = req.send().await.expect("HTTP round trip");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// EMQX authn, `method = post`, `url = ".../mqtt/auth?clientid=${clientid}"`,
    /// `body { username = "${username}", password = "${password}" }` (the docs' example).
    async fn auth_post_json(&self, client_id: &str, login: &Login) -> Reply {
        self.send(
            Method::POST,
            &format!("/mqtt/auth?{}", query(&[("clientid", client_id)])),
            Body::Json(json!({"username": login.username, "password": login.password})),
        )
        .await
    }

    /// EMQX authn, `method = get`: the body template becomes the query string.
    async fn auth_get(&self, client_id: &str, login: &Login) -> Reply {
        let q = query(&[
            ("clientid", client_id),
            ("username", &login.username),
            ("password", &login.password),
        ]);
        self.send(Method::GET, &format!("/mqtt/auth?{q}"), Body::None)
            .await
    }

    /// EMQX authn with `Content-Type = application/x-www-form-urlencoded`, and rmqtt's
    /// default `http_auth_req` (form, `clientid=%c, username=%u, password=%P`).
    async fn auth_form(&self, method: Method, client_id: &str, login: &Login) -> Reply {
        self.send(
            method,
            "/mqtt/auth",
            Body::Form(&[
                ("clientid", client_id),
                ("username", &login.username),
                ("password", &login.password),
            ]),
        )
        .await
    }

    /// EMQX authz, `method = post`, `url = ".../mqtt/acl?clientid=${clientid}"`,
    /// `body { username = "${username}", topic = "${topic}", action = "${action}" }`.
    async fn acl_post_json(
        &self,
        client_id: &str,
        username: &str,
        action: &str,
        topic: &str,
    ) -> Reply {
        self.send(
            Method::POST,
            &format!("/mqtt/acl?{}", query(&[("clientid", client_id)])),
            Body::Json(json!({"username": username, "topic": topic, "action": action})),
        )
        .await
    }

    /// EMQX authz, `method = get`.
    async fn acl_get(&self, client_id: &str, username: &str, action: &str, topic: &str) -> Reply {
        let q = query(&[
            ("clientid", client_id),
            ("username", username),
            ("topic", topic),
            ("action", action),
        ]);
        self.send(Method::GET, &format!("/mqtt/acl?{q}"), Body::None)
            .await
    }

    /// rmqtt's `http_acl_req` (form, `access=%A, username=%u, clientid=%c, ipaddr=%a, topic=%t`).
    async fn acl_rmqtt(&self, client_id: &str, username: &str, access: &str, topic: &str) -> Reply {
        self.send(
            Method::POST,
            "/mqtt/acl",
            Body::Form(&[
                ("access", access),
                ("username", username),
                ("clientid", client_id),
                ("ipaddr", "127.0.0.1"),
                ("topic", topic),
            ]),
        )
        .await
    }

    /// Whether every shape of topic check (EMQX JSON and GET, rmqtt form) says `allowed`.
    async fn topic_allowed(
        &self,
        client_id: &str,
        username: &str,
        publish: bool,
        topic: &str,
    ) -> bool {
        let (action, access) = if publish {
            ("publish", "2")
        } else {
            ("subscribe", "1")
        };
        let answers = [
            self.acl_post_json(client_id, username, action, topic).await,
            self.acl_get(client_id, username, action, topic).await,
            self.acl_rmqtt(client_id, username, access, topic).await,
        ];
        let allowed: Vec<bool> = answers.iter().map(topic_result).collect();
        assert!(
            allowed.iter().all(|a| *a == allowed[0]),
            "request shapes disagree on {topic}: {allowed:?}"
        );
        allowed[0]
    }
}

/// The answer to an allowed CONNECT.
fn allowed(expire_at: i64, acl: Value) -> Value {
    json!({"result": "allow", "is_superuser": false, "superuser": false, "expire_at": expire_at, "acl": acl})
}

fn denied() -> Value {
    json!({"result": "deny", "is_superuser": false, "superuser": false})
}

const DENY_REST: &str = r##"{"permission": "deny", "action": "all", "topic": "#"}"##;

/// The ACL of a grant: publish rules, subscribe rules, deny the rest.
fn acl(publish: &[&str], subscribe: &[&str]) -> Value {
    let mut rules: Vec<Value> = publish
        .iter()
        .map(|t| json!({"permission": "allow", "action": "publish", "topic": t}))
        .collect();
    rules.extend(
        subscribe
            .iter()
            .map(|t| json!({"permission": "allow", "action": "subscribe", "topic": t})),
    );
    rules.push(serde_json::from_str(DENY_REST).unwrap());
    Value::Array(rules)
}

/// Checks the parts of the contract every answer shares and returns the body.
#[track_caller]
fn contract(r: &Reply) -> &Value {
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert!(r.headers.contains_key("x-request-id"));
    // rmqtt makes any client with this header a superuser.
    assert!(!r.headers.contains_key("x-superuser"));
    assert!(!r.headers.contains_key("x-cache"));
    &r.body
}

#[track_caller]
fn topic_result(r: &Reply) -> bool {
    match contract(r)["result"].as_str() {
        Some("allow") => {
            assert_eq!(r.body, json!({"result": "allow"}));
            true
        }
        Some("deny") => {
            assert_eq!(r.body, json!({"result": "deny"}));
            false
        }
        other => panic!("neither allow nor deny: {other:?}"),
    }
}
