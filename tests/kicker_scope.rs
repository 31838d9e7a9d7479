//! What a kicker of an HTTP-authenticated broker (EMQX, rmqtt) finds for a scope revocation:
//! `Credential::of_revocation` maps TOKENS_OF_KEY_REVOKED to the minting key and
//! INSTANCE_TOKENS_REVOKED to the instance's tokens, and ListCredentialSessions lists exactly
//! the sessions recorded by `/mqtt/auth` that rest on them.

mod broker_kit;
mod common;

use std::time::Duration;

use broker_kit::{sessions_client, signature_login, Login, INSTANCE};
use common::{code_of, now_ms, Key, TestServer};
use mqtt_tokend::{
    core::{broker_session::Credential, RevocationKind as CoreKind},
    proto::{
        list_credential_sessions_request::Credential as ProtoCredential,
        revoke_tokens_request::Scope, watch_revocations_response::Message, ApplyTokenRequest,
        ListCredentialSessionsRequest, RevocationKind, RevokeTokensRequest, StartMode, TokenAction,
        WatchRevocationsRequest,
    },
};
use serde_json::json;

/// `/mqtt/auth` as EMQX posts it; true if allowed.
async fn connect(ts: &TestServer, broker: &Key, client_id: &str, login: &Login) -> bool {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", broker.id, broker.secret));
    let url = format!(
        "http://{}/mqtt/auth?clientid={client_id}",
        ts.server().http_addr().expect("REST on")
    );
    let text = reqwest::Client::new()
        .post(url)
        .header("authorization", format!("Basic {basic}"))
        .header("content-type", "application/json")
        .body(json!({"username": login.username, "password": login.password}).to_string())
        .send()
        .await
        .expect("HTTP round trip")
        .text()
        .await
        .expect("body");
    let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    body["result"] == "allow"
}

/// A token `key` mints, as a Token-mode login naming `key`.
async fn token_login(ts: &TestServer, key: &Key) -> Login {
    let token = ts
        .tokens(key)
        .apply_token(ApplyTokenRequest {
            instance_id: INSTANCE.into(),
            actions: vec![TokenAction::Read as i32, TokenAction::Write as i32],
            resources: vec!["k/#".into()],
            expire_time: now_ms() + 3_600_000,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    Login {
        username: format!("Token|{}|{INSTANCE}", key.id),
        password: format!("RW|{token}"),
    }
}

/// The client ids a kicker lists for `credential` on the event's instance.
async fn listed(ts: &TestServer, broker: &Key, credential: ProtoCredential) -> Vec<String> {
    let mut ids: Vec<String> = sessions_client(ts, broker)
        .list_credential_sessions(ListCredentialSessionsRequest {
            instance_id: INSTANCE.into(),
            credential: Some(credential),
            page_size: 0,
            next_token: String::new(),
        })
        .await
        .expect("ListCredentialSessions")
        .into_inner()
        .sessions
        .into_iter()
        .map(|s| s.client_id)
        .collect();
    ids.sort();
    ids
}

/// The credential a kicker derives from a wire event, as the proto oneof it sends.
fn credential_of(e: &mqtt_tokend::proto::RevocationEvent) -> ProtoCredential {
    let kind = match e.kind() {
        RevocationKind::TokensOfKeyRevoked => CoreKind::TokensOfKeyRevoked,
        RevocationKind::InstanceTokensRevoked => CoreKind::InstanceTokensRevoked,
        other => panic!("not a scope event: {other:?}"),
    };
    match Credential::of_revocation(kind, &e.token_fingerprint, &e.key_id) {
        Credential::MintingKey(id) => ProtoCredential::MintingAccessKeyId(id),
        Credential::InstanceTokens => ProtoCredential::TokenInstanceId(e.instance_id.clone()),
        other => panic!("unexpected credential {other:?}"),
    }
}

async fn next_event(
    watch: &mut tonic::Streaming<mqtt_tokend::proto::WatchRevocationsResponse>,
) -> mqtt_tokend::proto::RevocationEvent {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), watch.message())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap();
        if let Some(Message::Event(e)) = m.message {
            return e;
        }
    }
}

#[tokio::test]
async fn a_kicker_lists_exactly_the_sessions_of_a_revoked_scope() {
    let ts = TestServer::start().await;
    let broker = ts.create_key(&[INSTANCE]).await;
    let a = ts.create_key(&[INSTANCE]).await;
    let b = ts.create_key(&[INSTANCE]).await;
    let mut watch = ts
        .revocations(&broker)
        .watch_revocations(WatchRevocationsRequest {
            start_mode: StartMode::Now as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for c in ["GID_kick@@@a1", "GID_kick@@@a2"] {
        assert!(connect(&ts, &broker, c, &token_login(&ts, &a).await).await);
    }
    assert!(connect(&ts, &broker, "GID_kick@@@b1", &token_login(&ts, &b).await).await);
    // Signature mode with key a: not a token session, in no token scope.
    let sig = signature_login(&a, "GID_kick@@@sig");
    assert!(connect(&ts, &broker, "GID_kick@@@sig", &sig).await);

    let revoke = |scope| {
        let mut t = ts.tokens(&ts.root);
        async move {
            t.revoke_tokens(RevokeTokensRequest {
                instance_id: INSTANCE.into(),
                scope: Some(scope),
            })
            .await
            .unwrap()
        }
    };

    revoke(Scope::AccessKeyId(a.id.clone())).await;
    let e = next_event(&mut watch).await;
    assert_eq!(
        listed(&ts, &broker, credential_of(&e)).await,
        ["GID_kick@@@a1", "GID_kick@@@a2"]
    );
    // Deleting key a would end its Signature session and its token sessions alike.
    assert_eq!(
        listed(&ts, &broker, ProtoCredential::AccessKeyId(a.id.clone())).await,
        ["GID_kick@@@a1", "GID_kick@@@a2", "GID_kick@@@sig"]
    );

    revoke(Scope::AllTokens(true)).await;
    let e = next_event(&mut watch).await;
    assert_eq!(
        listed(&ts, &broker, credential_of(&e)).await,
        ["GID_kick@@@a1", "GID_kick@@@a2", "GID_kick@@@b1"]
    );
    // The instance's tokens need the instance: no listing across every instance.
    let err = sessions_client(&ts, &broker)
        .list_credential_sessions(ListCredentialSessionsRequest {
            instance_id: String::new(),
            credential: Some(ProtoCredential::TokenInstanceId(INSTANCE.into())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InvalidParameter.InstanceId");
}
