//! What the endpoints refuse: requests they cannot read are denied with 200 (the broker must
//! not fall through to its next authenticator), and a broker must authenticate itself.

use reqwest::Method;
use serde_json::json;

use crate::{
    acl, allowed,
    broker_kit::{token, token_login, INSTANCE},
    common::TestServer,
    contract, denied, Body, Broker, HOUR, RW,
};

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
