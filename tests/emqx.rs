//! The EMQX 5 / rmqtt HTTP authentication and authorization contract through a real server:
//! the request shapes EMQX's docs configure (POST JSON with `?clientid=${clientid}` in the URL,
//! GET with the body as a query string, form bodies) and rmqtt's (form with `access` 1/2),
//! valid, forged, revoked and expired credentials in the three modes, exact response bodies,
//! and the session lookup a kicker uses.

mod broker_kit;
mod common;

use std::time::Duration;

use broker_kit::{
    device_login, forged, session_clients, sessions_client, signature_login, token, token_login,
    Login, INSTANCE,
};
use common::{now_ms, Key, TestServer};
use mqtt_tokend::proto::{
    list_credential_sessions_request::Credential, DeleteAccessKeyRequest,
    ListCredentialSessionsRequest, RefreshDeviceCredentialRequest, RevocationKind,
    RevokeTokenRequest, StartMode, TokenAction, WatchRevocationsRequest,
};
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

#[tokio::test]
async fn token_mode_connect_in_every_request_shape() {
    let ts = TestServer::start().await;
    let broker_key = ts.create_key(&[INSTANCE]).await;
    let broker = Broker::basic(&ts, &broker_key);
    let client = "GID_car@@@vin0001";
    let (tok, exp) = token(&ts, RW, &["devices/+/telemetry", "cmd/#"], HOUR).await;
    let login = token_login(&ts, &format!("RW|{tok}"));
    let want = allowed(
        exp / 1000,
        acl(
            &["cmd/#", "devices/+/telemetry"],
            &["cmd/#", "devices/+/telemetry"],
        ),
    );
    for reply in [
        broker.auth_post_json(client, &login).await,
        broker.auth_get(client, &login).await,
        broker.auth_form(Method::POST, client, &login).await,
        broker.auth_form(Method::PUT, client, &login).await,
    ] {
        assert_eq!(contract(&reply), &want);
    }

    // Read-only token: the ACL grants subscribe only.
    let (read, exp_r) = token(&ts, &[TokenAction::Read], &["devices/#"], 2 * HOUR).await;
    let r = broker
        .auth_post_json(client, &token_login(&ts, &format!("R|{read}")))
        .await;
    assert_eq!(
        contract(&r),
        &allowed(exp_r / 1000, acl(&[], &["devices/#"]))
    );
    // Two tokens: the grant ends with the earlier one.
    let r = broker
        .auth_post_json(client, &token_login(&ts, &format!("R|{read}|W|{tok}")))
        .await;
    assert_eq!(
        contract(&r),
        &allowed(
            exp.min(exp_r) / 1000,
            acl(&["cmd/#", "devices/+/telemetry"], &["devices/#"])
        )
    );

    for bad in [
        format!("RW|{}", forged(&tok)),
        format!("W|{read}"), // asks for more than the token grants
        format!("RW|{tok}|R|{read}"),
        "RW|".to_owned(),
        String::new(),
    ] {
        let r = broker.auth_post_json(client, &token_login(&ts, &bad)).await;
        assert_eq!(contract(&r), &denied(), "password {bad:?}");
    }
    let wrong_user = Login {
        username: format!("Token|{}", ts.root.id),
        password: format!("RW|{tok}"),
    };
    assert_eq!(
        contract(&broker.auth_get(client, &wrong_user).await),
        &denied()
    );
    assert_eq!(
        contract(&broker.auth_get("not-a-client-id", &login).await),
        &denied()
    );

    ts.tokens(&ts.root)
        .revoke_token(RevokeTokenRequest {
            instance_id: INSTANCE.into(),
            token: tok.clone(),
        })
        .await
        .unwrap();
    for reply in [
        broker.auth_post_json(client, &login).await,
        broker.auth_form(Method::POST, client, &login).await,
    ] {
        assert_eq!(contract(&reply), &denied());
    }
}

#[tokio::test]
async fn topic_checks_use_the_recorded_session() {
    let ts = TestServer::start().await;
    let broker_key = ts.create_key(&[INSTANCE]).await;
    let broker = Broker::basic(&ts, &broker_key);
    let client = "GID_car@@@vin0002";
    let (tok, _) = token(&ts, RW, &["devices/+/telemetry", "cmd/#"], HOUR).await;
    let login = token_login(&ts, &format!("RW|{tok}"));
    let user = login.username.as_str();

    // No CONNECT recorded yet: brokers send no password with topic checks, so deny.
    assert!(!broker.topic_allowed(client, user, true, "cmd/x").await);
    assert_eq!(
        contract(&broker.auth_post_json(client, &login).await)["result"],
        "allow"
    );

    let table: &[(bool, &str, bool)] = &[
        (true, "devices/1/telemetry", true),
        (true, "cmd/reboot", true),
        (true, "cmd", true),
        (true, "devices/1/status", false),
        (true, "devices/+/telemetry", false), // a publish topic has no wildcards
        (true, "$SYS/x", false),
        (false, "devices/+/telemetry", true),
        (false, "cmd/#", true),
        (false, "$share/g/cmd/#", true),
        (false, "devices/#", false), // not covered by devices/+/telemetry
        (false, "#", false),
        (false, "$SYS/#", false),
    ];
    for &(publish, topic, want) in table {
        assert_eq!(
            broker.topic_allowed(client, user, publish, topic).await,
            want,
            "{} {topic}",
            if publish { "publish" } else { "subscribe" }
        );
    }
    // Another username or client id than the CONNECT's: no session.
    let other_user = format!("Token|{}|{INSTANCE}", broker_key.id);
    assert!(
        !broker
            .topic_allowed(client, &other_user, true, "cmd/x")
            .await
    );
    assert!(
        !broker
            .topic_allowed("GID_car@@@vin0003", user, true, "cmd/x")
            .await
    );
    // Another broker key: its own sessions only.
    let other_broker = Broker::basic(&ts, &ts.create_key(&[INSTANCE]).await);
    assert!(
        !other_broker
            .topic_allowed(client, user, true, "cmd/x")
            .await
    );

    ts.tokens(&ts.root)
        .revoke_token(RevokeTokenRequest {
            instance_id: INSTANCE.into(),
            token: tok,
        })
        .await
        .unwrap();
    assert!(!broker.topic_allowed(client, user, true, "cmd/x").await);
    assert!(!broker.topic_allowed(client, user, false, "cmd/#").await);
}

#[tokio::test]
async fn device_credential_and_signature_modes() {
    let ts = TestServer::start().await;
    let broker_key = ts.create_key(&[INSTANCE]).await;
    let broker = Broker::basic(&ts, &broker_key);
    let ttl_s = i64::try_from(ts.config.broker_session_ttl.as_secs()).unwrap();
    let everything = acl(&["#"], &["#"]);

    let device = "GID_meter@@@m1";
    let (login, _) = device_login(&ts, device).await;
    let before = now_ms() / 1000;
    let r = broker.auth_post_json(device, &login).await;
    let after = now_ms() / 1000;
    let body = contract(&r);
    // No credential expiry: the session TTL bounds the connection.
    let expire_at = body["expire_at"].as_i64().expect("expire_at");
    assert!(
        (before + ttl_s..=after + ttl_s).contains(&expire_at),
        "{body}"
    );
    assert_eq!(body, &allowed(expire_at, everything.clone()));
    assert!(
        broker
            .topic_allowed(device, &login.username, true, "a/b")
            .await
    );
    let wrong = Login {
        username: login.username.clone(),
        password: "d3Jvbmc=".into(),
    };
    assert_eq!(
        contract(&broker.auth_form(Method::POST, device, &wrong).await),
        &denied()
    );
    // The credential belongs to another client id.
    assert_eq!(
        contract(&broker.auth_get("GID_meter@@@m2", &login).await),
        &denied()
    );
    ts.devices(&ts.root)
        .refresh_device_credential(RefreshDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: device.into(),
        })
        .await
        .unwrap();
    assert_eq!(
        contract(&broker.auth_post_json(device, &login).await),
        &denied()
    );
    assert!(
        !broker
            .topic_allowed(device, &login.username, true, "a/b")
            .await
    );

    let app_key = ts.create_key(&[INSTANCE]).await;
    let signed = "GID_app@@@s1";
    let login = signature_login(&app_key, signed);
    let r = broker.auth_get(signed, &login).await;
    let expire_at = contract(&r)["expire_at"].as_i64().expect("expire_at");
    assert_eq!(contract(&r), &allowed(expire_at, everything));
    assert!(
        broker
            .topic_allowed(signed, &login.username, false, "x/#")
            .await
    );
    // Signed for another client id.
    let forged_sig = signature_login(&app_key, "GID_app@@@s2");
    assert_eq!(
        contract(&broker.auth_get(signed, &forged_sig).await),
        &denied()
    );
    ts.access_keys(&ts.root)
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: app_key.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(contract(&broker.auth_get(signed, &login).await), &denied());
    assert!(
        !broker
            .topic_allowed(signed, &login.username, false, "x/#")
            .await
    );
}

#[tokio::test]
async fn requests_it_cannot_read_are_denied_with_200() {
    let ts = TestServer::start().await;
    let broker = Broker::basic(&ts, &ts.create_key(&[INSTANCE]).await);
    let raw = |ct: &'static str, body: &[u8]| Body::Raw(ct, body.to_vec());
    for (path, body) in [
        ("/mqtt/auth", raw("application/json", b"{\"username\": ")),
        ("/mqtt/auth", raw("application/json", b"[\"username\"]")),
        (
            "/mqtt/auth",
            raw("application/json", b"{\"username\": {\"a\": 1}}"),
        ),
        (
            "/mqtt/auth",
            raw("application/x-www-form-urlencoded", b"username=\xff\xfe"),
        ),
        ("/mqtt/auth", raw("text/plain", b"\x00\x01garbage")),
        (
            "/mqtt/auth?username=a",
            raw("application/x-www-form-urlencoded", b"username=b"),
        ),
        (
            "/mqtt/auth",
            raw("application/json", &vec![b' '; 70 * 1024]),
        ),
        (
            "/mqtt/auth",
            raw(
                "application/json",
                &[
                    b"{\"username\":\"".as_slice(),
                    &vec![b'a'; 70 * 1024],
                    b"\"}",
                ]
                .concat(),
            ),
        ),
        ("/mqtt/auth", Body::None),
    ] {
        let r = broker.send(Method::POST, path, body).await;
        assert_eq!(contract(&r), &denied(), "{path}");
    }
    for (path, body) in [
        ("/mqtt/acl", raw("application/json", b"{\"topic\": ")),
        (
            "/mqtt/acl",
            Body::Json(
                json!({"username": "u", "clientid": "GID_a@@@b", "topic": "t", "action": "all"}),
            ),
        ),
        (
            "/mqtt/acl",
            Body::Json(json!({"username": "u", "clientid": "GID_a@@@b", "topic": "t"})),
        ),
        (
            "/mqtt/acl?access=1",
            Body::Json(json!({"clientid": "GID_a@@@b", "topic": "t", "action": "publish"})),
        ),
        (
            "/mqtt/acl",
            Body::Form(&[("access", "3"), ("clientid", "GID_a@@@b"), ("topic", "t")]),
        ),
    ] {
        let r = broker.send(Method::POST, path, body).await;
        assert_eq!(contract(&r), &json!({"result": "deny"}), "{path}");
    }
}

#[tokio::test]
async fn the_broker_must_authenticate() {
    let ts = TestServer::start().await;
    let key = ts.create_key(&[INSTANCE]).await;
    let client = "GID_car@@@vin0004";
    let (tok, exp) = token(&ts, RW, &["a/#"], HOUR).await;
    let login = token_login(&ts, &format!("RW|{tok}"));
    use base64::Engine;
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    for authorization in [
        None,
        Some(format!("Basic {}", b64(format!("{}:wrong", key.id)))),
        Some(format!("Basic {}", b64(format!("MTAKnope:{}", key.secret)))),
        Some(format!("Basic {}", b64(key.id.clone()))),
        Some("Basic !!!".to_owned()),
        Some(format!("Bearer {}", key.id)),
        Some(format!("Digest {}:{}", key.id, key.secret)),
    ] {
        let broker = Broker::with(&ts, authorization.clone());
        for path in ["/mqtt/auth", "/mqtt/acl"] {
            let r = broker.send(Method::GET, path, Body::None).await;
            assert_eq!(r.status, 401, "{authorization:?} {path}");
            assert_eq!(
                r.headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Basic realm=\"mqtt-tokend\"")
            );
            assert!(r.body["code"].as_str().is_some());
        }
    }
    // Bearer id:secret, as the gRPC API takes it.
    let bearer = Broker::with(&ts, Some(format!("Bearer {}:{}", key.id, key.secret)));
    assert_eq!(
        contract(&bearer.auth_post_json(client, &login).await),
        &allowed(exp / 1000, acl(&["a/#"], &["a/#"]))
    );
    // A key not allowed on the client's instance decides nothing for it.
    let elsewhere = Broker::basic(&ts, &ts.create_key(&["post-cn-other"]).await);
    assert_eq!(
        contract(&elsewhere.auth_post_json(client, &login).await),
        &denied()
    );
    assert!(
        !elsewhere
            .topic_allowed(client, &login.username, true, "a/b")
            .await
    );
}

/// The next revocation event, as a kicker's follower sees it.
async fn next_event(
    watch: &mut tonic::Streaming<mqtt_tokend::proto::WatchRevocationsResponse>,
) -> mqtt_tokend::proto::RevocationEvent {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), watch.message())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("stream open");
        if let Some(mqtt_tokend::proto::watch_revocations_response::Message::Event(e)) = msg.message
        {
            return e;
        }
    }
}

#[tokio::test]
async fn the_kicker_finds_exactly_the_sessions_of_a_revoked_credential() {
    let mut ts = TestServer::start().await;
    let broker_key = ts.create_key(&[INSTANCE]).await;
    let broker = Broker::basic(&ts, &broker_key);
    let mut watch = ts
        .revocations(&broker_key)
        .watch_revocations(WatchRevocationsRequest {
            start_mode: StartMode::Now as i32,
            start_revision: 0,
            instance_ids: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let allow = |r: Reply| assert_eq!(contract(&r)["result"], "allow");

    let (t1, _) = token(&ts, RW, &["a/#"], HOUR).await;
    let (t2, _) = token(&ts, RW, &["a/#"], HOUR).await;
    for c in ["GID_kick@@@a", "GID_kick@@@b"] {
        allow(
            broker
                .auth_post_json(c, &token_login(&ts, &format!("RW|{t1}")))
                .await,
        );
    }
    // `a` reconnects with another token: it no longer uses t1.
    allow(
        broker
            .auth_post_json("GID_kick@@@a", &token_login(&ts, &format!("RW|{t2}")))
            .await,
    );
    let (device, _) = device_login(&ts, "GID_kick@@@c").await;
    allow(broker.auth_post_json("GID_kick@@@c", &device).await);
    let app_key = ts.create_key(&[INSTANCE]).await;
    allow(
        broker
            .auth_get("GID_kick@@@d", &signature_login(&app_key, "GID_kick@@@d"))
            .await,
    );

    ts.tokens(&ts.root)
        .revoke_token(RevokeTokenRequest {
            instance_id: INSTANCE.into(),
            token: t1.clone(),
        })
        .await
        .unwrap();
    let e = next_event(&mut watch).await;
    assert_eq!(e.kind, RevocationKind::TokenRevoked as i32);
    assert_eq!(
        session_clients(
            &ts,
            &broker_key,
            Credential::TokenFingerprint(e.token_fingerprint.clone())
        )
        .await,
        ["GID_kick@@@b"]
    );
    // A CONNECT with the revoked token is denied and leaves `a`'s session alone.
    assert_eq!(
        contract(
            &broker
                .auth_post_json("GID_kick@@@a", &token_login(&ts, &format!("RW|{t1}")))
                .await
        ),
        &denied()
    );
    let t2_fingerprint = mqtt_tokend::core::token::fingerprint(&t2);
    assert_eq!(
        session_clients(
            &ts,
            &broker_key,
            Credential::TokenFingerprint(t2_fingerprint.clone())
        )
        .await,
        ["GID_kick@@@a"]
    );

    ts.devices(&ts.root)
        .refresh_device_credential(RefreshDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: "GID_kick@@@c".into(),
        })
        .await
        .unwrap();
    let e = next_event(&mut watch).await;
    assert_eq!(e.kind, RevocationKind::DeviceCredentialRefreshed as i32);
    assert_eq!(
        session_clients(
            &ts,
            &broker_key,
            Credential::DeviceAccessKeyId(e.key_id.clone())
        )
        .await,
        ["GID_kick@@@c"]
    );

    ts.access_keys(&ts.root)
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: app_key.id.clone(),
        })
        .await
        .unwrap();
    let e = next_event(&mut watch).await;
    assert_eq!(e.kind, RevocationKind::AccessKeyDeleted as i32);
    assert_eq!(
        session_clients(&ts, &broker_key, Credential::AccessKeyId(e.key_id.clone())).await,
        ["GID_kick@@@d"]
    );
    // Token-mode sessions rest on the username's access key too (here the root key).
    assert_eq!(
        session_clients(
            &ts,
            &broker_key,
            Credential::AccessKeyId(ts.root.id.clone())
        )
        .await,
        ["GID_kick@@@a", "GID_kick@@@b"]
    );
    // Another broker's key sees none of these sessions.
    let other = ts.create_key(&[INSTANCE]).await;
    assert!(session_clients(
        &ts,
        &other,
        Credential::TokenFingerprint(t2_fingerprint.clone())
    )
    .await
    .is_empty());

    // Durable: the same answers after a restart.
    ts.restart().await;
    assert_eq!(
        session_clients(
            &ts,
            &broker_key,
            Credential::TokenFingerprint(t2_fingerprint)
        )
        .await,
        ["GID_kick@@@a"]
    );

    // Pages.
    let mut sessions = sessions_client(&ts, &broker_key);
    let mut seen = Vec::new();
    let mut next_token = String::new();
    loop {
        let page = sessions
            .list_credential_sessions(ListCredentialSessionsRequest {
                instance_id: INSTANCE.into(),
                credential: Some(Credential::AccessKeyId(ts.root.id.clone())),
                page_size: 1,
                next_token: next_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.sessions.into_iter().map(|s| s.client_id));
        if page.next_token.is_empty() {
            break;
        }
        next_token = page.next_token;
    }
    assert_eq!(seen, ["GID_kick@@@a", "GID_kick@@@b"]);
    let err = sessions
        .list_credential_sessions(ListCredentialSessionsRequest {
            instance_id: String::new(),
            credential: None,
            page_size: 0,
            next_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(common::code_of(&err), "ParameterCheckFailed");
    let err = sessions
        .list_credential_sessions(ListCredentialSessionsRequest {
            instance_id: "post-cn-other".into(),
            credential: Some(Credential::AccessKeyId(ts.root.id.clone())),
            page_size: 0,
            next_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(common::code_of(&err), "InstancePermissionCheckFailed");
}

#[tokio::test]
async fn sessions_end_with_their_ttl_and_are_swept() {
    let ts = TestServer::start_with(|c| c.broker_session_ttl = Duration::from_secs(2)).await;
    let broker_key = ts.create_key(&[INSTANCE]).await;
    let broker = Broker::basic(&ts, &broker_key);
    let (tok, _) = token(&ts, RW, &["a/#"], HOUR).await;
    let fingerprint = Credential::TokenFingerprint(mqtt_tokend::core::token::fingerprint(&tok));
    let login = token_login(&ts, &format!("RW|{tok}"));
    let allowed_now = |client: &'static str| {
        let broker = &broker;
        let user = login.username.clone();
        async move { broker.topic_allowed(client, &user, true, "a/b").await }
    };
    // Time has to pass; no event announces it. Every wait is measured from `connected`, after
    // which both sessions were written with an expiry of at most `connected + 2 s`.
    let until = |at: i64| {
        tokio::time::sleep(Duration::from_millis(
            u64::try_from(at - now_ms()).unwrap_or(0),
        ))
    };

    // `short` is only checked right after CONNECT; `busy` is checked again once past half its
    // TTL, which extends its session while the token lives.
    let before = now_ms();
    for c in ["GID_ttl1@@@short", "GID_ttl1@@@busy"] {
        let r = broker.auth_post_json(c, &login).await;
        let expire_at = contract(&r)["expire_at"].as_i64().unwrap();
        // The token lives an hour: the 2 s TTL bounds the session and the connection.
        assert!((before / 1000 + 2..=now_ms() / 1000 + 2).contains(&expire_at));
    }
    let connected = now_ms();
    assert!(allowed_now("GID_ttl1@@@short").await);
    until(connected + 1_200).await;
    assert!(allowed_now("GID_ttl1@@@busy").await);
    until(connected + 2_100).await;
    assert!(!allowed_now("GID_ttl1@@@short").await);
    assert!(allowed_now("GID_ttl1@@@busy").await);
    // An expired session stays listed for the kick grace (capped at the TTL, here 2 s), for
    // brokers that disconnect at the next keepalive rather than at `expire_at`.
    assert_eq!(
        session_clients(&ts, &broker_key, fingerprint.clone()).await,
        ["GID_ttl1@@@busy", "GID_ttl1@@@short"]
    );
    assert_eq!(ts.server().core().sweep_broker_sessions().await.unwrap(), 0);
    until(connected + 4_100).await;
    assert_eq!(
        session_clients(&ts, &broker_key, fingerprint.clone()).await,
        ["GID_ttl1@@@busy"]
    );
    assert_eq!(ts.server().core().sweep_broker_sessions().await.unwrap(), 1);
    assert_eq!(ts.server().core().sweep_broker_sessions().await.unwrap(), 0);
    // A new CONNECT starts a new session.
    assert_eq!(
        contract(&broker.auth_post_json("GID_ttl1@@@short", &login).await)["result"],
        "allow"
    );
    assert!(allowed_now("GID_ttl1@@@short").await);
}

/// ~61 s: tokens live at least 60 s. Runs in parallel with the tests above.
#[tokio::test]
async fn an_expired_token_is_denied_and_expire_at_is_its_expiry() {
    let ts = TestServer::start().await;
    let broker = Broker::basic(&ts, &ts.create_key(&[INSTANCE]).await);
    let client = "GID_exp1@@@x";
    let (tok, exp) = token(&ts, RW, &["a/#"], 60_500).await;
    let login = token_login(&ts, &format!("RW|{tok}"));
    assert_eq!(
        contract(&broker.auth_post_json(client, &login).await),
        &allowed(exp / 1000, acl(&["a/#"], &["a/#"]))
    );
    assert!(
        broker
            .topic_allowed(client, &login.username, true, "a/b")
            .await
    );
    // Time has to pass; no event announces an expiry.
    let wait = u64::try_from(exp - now_ms() + 100).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_eq!(
        contract(&broker.auth_post_json(client, &login).await),
        &denied()
    );
    assert_eq!(contract(&broker.auth_get(client, &login).await), &denied());
    assert!(
        !broker
            .topic_allowed(client, &login.username, true, "a/b")
            .await
    );
}
