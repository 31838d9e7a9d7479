//! BrokerAuthService through a real server: CONNECT checks in all three modes with correct,
//! wrong, stale and garbled credentials; topic authorisation tables; session handles.
//! MQTT passwords are computed by Python's hmac module, independently of our code.
//!
//! One test binary: the token mode, topic authorisation and session handles are here; the
//! device-credential and signature modes in `broker/device.rs`.

mod common;

#[path = "broker/device.rs"]
mod device;

use common::{now_ms, Key, TestServer};
use mqtt_tokend::proto::{
    ApplyTokenRequest, AuthMode, AuthenticateConnectRequest, AuthenticateConnectResponse,
    AuthorizeTopicRequest, DenyReason, RevokeTokenRequest, TokenAction, TopicAction,
};

const INSTANCE: &str = "post-cn-broker";
const CLIENT: &str = "GID_car@@@vin0001";

/// Base64(HMAC-SHA1(secret, client_id)) computed by Python, not by the code under test.
fn python_password(secret: &str, client_id: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import base64,hashlib,hmac,sys; print(base64.b64encode(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha1).digest()).decode())",
            secret,
            client_id,
        ])
        .output()
        .expect("python3 runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn python_agrees_with_the_published_vector() {
    assert_eq!(
        python_password("testsecret", "GID_Test@@@0001"),
        "2o53J4IhwPZouH+0Qu6KWaZ6foc="
    );
}

async fn connect(
    ts: &TestServer,
    broker: &Key,
    client_id: &str,
    username: &str,
    password: &str,
) -> AuthenticateConnectResponse {
    ts.broker(broker)
        .authenticate_connect(AuthenticateConnectRequest {
            client_id: client_id.into(),
            username: username.into(),
            password: password.into(),
        })
        .await
        .expect("AuthenticateConnect never fails on bad credentials")
        .into_inner()
}

fn denied(r: &AuthenticateConnectResponse) -> DenyReason {
    assert!(!r.allowed, "expected a deny, got {r:?}");
    assert!(r.grant.is_none() && r.session_handle.is_empty());
    DenyReason::try_from(r.reason).unwrap()
}

async fn token(ts: &TestServer, actions: &[TokenAction], resources: &[&str]) -> String {
    ts.tokens(&ts.root)
        .apply_token(ApplyTokenRequest {
            instance_id: INSTANCE.into(),
            actions: actions.iter().map(|a| *a as i32).collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            expire_time: now_ms() + 3_600_000,
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

#[tokio::test]
async fn token_mode() {
    let ts = TestServer::start().await;
    let broker = ts.create_key(&[INSTANCE]).await;
    let app = ts.create_key(&[INSTANCE]).await;
    let user = format!("Token|{}|{INSTANCE}", app.id);
    let r = token(&ts, &[TokenAction::Read], &["cars/+/cmd"]).await;
    let w = token(&ts, &[TokenAction::Write], &["cars/vin0001/telemetry"]).await;
    let rw = token(&ts, &[TokenAction::Read, TokenAction::Write], &["shared/#"]).await;

    let ok = connect(&ts, &broker, CLIENT, &user, &format!("R|{r}|W|{w}")).await;
    assert!(ok.allowed, "{ok:?}");
    let grant = ok.grant.clone().unwrap();
    assert_eq!(grant.mode, AuthMode::Token as i32);
    assert_eq!(grant.instance_id, INSTANCE);
    assert_eq!(grant.subscribe, vec!["cars/+/cmd"]);
    assert_eq!(grant.publish, vec!["cars/vin0001/telemetry"]);
    assert!(grant.expire_time > now_ms());
    assert_eq!(grant.token_fingerprints.len(), 2);
    // Order is free; RW carries both.
    assert!(
        connect(&ts, &broker, CLIENT, &user, &format!("W|{w}|R|{r}"))
            .await
            .allowed
    );
    let both = connect(&ts, &broker, CLIENT, &user, &format!("RW|{rw}")).await;
    assert_eq!(both.grant.unwrap().publish, vec!["shared/#"]);

    let forged = format!("{}x", &r[..r.len() - 1]);
    let cases: Vec<(String, String, String, DenyReason)> = vec![
        (
            CLIENT.into(),
            user.clone(),
            format!("R|{forged}"),
            DenyReason::TokenInvalid,
        ),
        (
            CLIENT.into(),
            user.clone(),
            "R|garbage".into(),
            DenyReason::TokenInvalid,
        ),
        (
            CLIENT.into(),
            user.clone(),
            format!("W|{r}"),
            DenyReason::TokenTypeMismatch,
        ),
        (
            CLIENT.into(),
            user.clone(),
            format!("RW|{r}"),
            DenyReason::TokenTypeMismatch,
        ),
        (
            CLIENT.into(),
            user.clone(),
            format!("R|{r}|R|{r}"),
            DenyReason::MalformedPassword,
        ),
        (
            CLIENT.into(),
            user.clone(),
            format!("X|{r}"),
            DenyReason::MalformedPassword,
        ),
        (
            CLIENT.into(),
            user.clone(),
            r.clone(),
            DenyReason::MalformedPassword,
        ),
        (
            CLIENT.into(),
            user.clone(),
            String::new(),
            DenyReason::MalformedPassword,
        ),
        (
            CLIENT.into(),
            format!("Token|{}", app.id),
            format!("R|{r}"),
            DenyReason::MalformedUsername,
        ),
        (
            CLIENT.into(),
            format!("Token|{}|{INSTANCE}|x", app.id),
            format!("R|{r}"),
            DenyReason::MalformedUsername,
        ),
        (
            CLIENT.into(),
            "".into(),
            format!("R|{r}"),
            DenyReason::MalformedUsername,
        ),
        (
            CLIENT.into(),
            format!("Tok|{}|{INSTANCE}", app.id),
            format!("R|{r}"),
            DenyReason::UnknownMode,
        ),
        (
            CLIENT.into(),
            format!("Token|MTAKnope|{INSTANCE}"),
            format!("R|{r}"),
            DenyReason::UnknownAccessKey,
        ),
        (
            CLIENT.into(),
            format!("Token|{}|post-cn-else", app.id),
            format!("R|{r}"),
            DenyReason::InstanceMismatch,
        ),
        (
            "not-a-client-id".into(),
            user.clone(),
            format!("R|{r}"),
            DenyReason::InvalidClientId,
        ),
    ];
    for (client, username, password, reason) in cases {
        let resp = connect(&ts, &broker, &client, &username, &password).await;
        assert_eq!(denied(&resp), reason, "{username} / {password}");
    }

    // Revoked: the same password is refused at once, and the session handle stops working.
    let handle = ok.session_handle.clone();
    ts.tokens(&ts.root)
        .revoke_token(RevokeTokenRequest {
            instance_id: INSTANCE.into(),
            token: r.clone(),
        })
        .await
        .unwrap();
    let resp = connect(&ts, &broker, CLIENT, &user, &format!("R|{r}|W|{w}")).await;
    assert_eq!(denied(&resp), DenyReason::TokenRevoked);
    let t = by_handle(
        &ts,
        &broker,
        CLIENT,
        &handle,
        TopicAction::Publish,
        "cars/vin0001/telemetry",
    )
    .await;
    assert_eq!(t, Err(DenyReason::TokenRevoked));
}

/// AuthorizeTopic with a session handle instead of the username and password.
async fn by_handle(
    ts: &TestServer,
    broker: &Key,
    client_id: &str,
    handle: &str,
    action: TopicAction,
    topic: &str,
) -> Result<(), DenyReason> {
    authorize(ts, broker, client_id, "", "", handle, action, topic).await
}

#[allow(clippy::too_many_arguments)] // mirrors the RPC's fields one to one
async fn authorize(
    ts: &TestServer,
    broker: &Key,
    client_id: &str,
    username: &str,
    password: &str,
    handle: &str,
    action: TopicAction,
    topic: &str,
) -> Result<(), DenyReason> {
    let r = ts
        .broker(broker)
        .authorize_topic(AuthorizeTopicRequest {
            client_id: client_id.into(),
            username: username.into(),
            password: password.into(),
            session_handle: handle.into(),
            action: action as i32,
            topic: topic.into(),
        })
        .await
        .unwrap()
        .into_inner();
    if r.allowed {
        Ok(())
    } else {
        Err(DenyReason::try_from(r.reason).unwrap())
    }
}

#[tokio::test]
async fn topic_authorisation_table() {
    let ts = TestServer::start().await;
    let broker = ts.create_key(&[INSTANCE]).await;
    let user = format!("Token|{}|{INSTANCE}", ts.root.id);
    let r = token(
        &ts,
        &[TokenAction::Read],
        &["a/#", "x/+/z", "$SYS/broker/#"],
    )
    .await;
    let w = token(&ts, &[TokenAction::Write], &["a/b/c", "p/+"]).await;
    let password = format!("R|{r}|W|{w}");
    let ok = connect(&ts, &broker, CLIENT, &user, &password).await;
    assert!(ok.allowed);
    use TopicAction::{Publish as P, Subscribe as S};
    let table: &[(TopicAction, &str, Result<(), DenyReason>)] = &[
        (P, "a/b/c", Ok(())),
        (P, "p/q", Ok(())),
        (P, "p/q/r", Err(DenyReason::TopicNotGranted)),
        (P, "a/b", Err(DenyReason::TopicNotGranted)),
        (P, "a/+/c", Err(DenyReason::InvalidTopic)),
        (P, "a/#", Err(DenyReason::InvalidTopic)),
        (S, "a/#", Ok(())),
        (S, "a", Ok(())),
        (S, "a/+/c", Ok(())),
        (S, "a/b/c/d", Ok(())),
        (S, "x/y/z", Ok(())),
        (S, "x/+/z", Ok(())),
        (S, "x/#", Err(DenyReason::TopicNotGranted)),
        (S, "x/+/+", Err(DenyReason::TopicNotGranted)),
        (S, "#", Err(DenyReason::TopicNotGranted)),
        (S, "$SYS/broker/load", Ok(())),
        (S, "$SYS/#", Err(DenyReason::TopicNotGranted)),
        (S, "a/#/b", Err(DenyReason::InvalidTopic)),
        (S, "a+", Err(DenyReason::InvalidTopic)),
    ];
    for (action, topic, expected) in table {
        // With the credentials and with the session handle: the same answer.
        let by_password =
            authorize(&ts, &broker, CLIENT, &user, &password, "", *action, topic).await;
        let handled = by_handle(&ts, &broker, CLIENT, &ok.session_handle, *action, topic).await;
        assert_eq!(by_password, *expected, "{action:?} {topic}");
        assert_eq!(handled, *expected, "{action:?} {topic} (handle)");
    }
    // A handle is bound to its client id and cannot be forged.
    let other = by_handle(
        &ts,
        &broker,
        "GID_car@@@other",
        &ok.session_handle,
        P,
        "a/b/c",
    )
    .await;
    assert_eq!(other, Err(DenyReason::InvalidSession));
    let mut forged = ok.session_handle.clone();
    forged.insert(3, 'A');
    for bad in [forged.as_str(), "x.y", "...", "🦀"] {
        assert_eq!(
            by_handle(&ts, &broker, CLIENT, bad, P, "a/b/c").await,
            Err(DenyReason::InvalidSession)
        );
    }
    // Signature-mode clients get the whole instance, but never `$` topics through `#`.
    let sig_user = format!("Signature|{}|{INSTANCE}", ts.root.id);
    let sig_pass = python_password(&ts.root.secret, CLIENT);
    assert_eq!(
        authorize(
            &ts,
            &broker,
            CLIENT,
            &sig_user,
            &sig_pass,
            "",
            S,
            "any/thing/#"
        )
        .await,
        Ok(())
    );
    assert_eq!(
        authorize(&ts, &broker, CLIENT, &sig_user, &sig_pass, "", S, "$SYS/x").await,
        Err(DenyReason::TopicNotGranted)
    );
}

#[tokio::test]
async fn oversized_credentials_are_denied_cheaply() {
    let ts = TestServer::start().await;
    let user = format!("Token|{}|{INSTANCE}", ts.root.id);
    let pipes = "|".repeat(60_000);
    assert_eq!(
        denied(&connect(&ts, &ts.root, CLIENT, &user, &pipes).await),
        DenyReason::MalformedPassword
    );
    let long_user = format!("Token|{}|{}", ts.root.id, "i".repeat(60_000));
    assert_eq!(
        denied(&connect(&ts, &ts.root, CLIENT, &long_user, "R|x").await),
        DenyReason::MalformedUsername
    );
    // Past the broker service's 64 KiB message limit the call is refused outright.
    let err = ts
        .broker(&ts.root)
        .authenticate_connect(AuthenticateConnectRequest {
            client_id: CLIENT.into(),
            username: user,
            password: "x".repeat(100_000),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange);
}
