//! Sessions and time: the sessions a kicker finds for a revoked credential, session TTLs and
//! their sweep, and a token denied once it expires.

use std::time::Duration;

use mqtt_tokend::proto::{
    list_credential_sessions_request::Credential, DeleteAccessKeyRequest,
    ListCredentialSessionsRequest, RefreshDeviceCredentialRequest, RevocationKind,
    RevokeTokenRequest,
};

use crate::{
    acl, allowed,
    broker_kit::{
        device_login, session_clients, sessions_client, signature_login, token, token_login,
        INSTANCE,
    },
    common::{self, now_ms, TestServer},
    contract, denied, Broker, Reply, HOUR, RW,
};

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
        .watch_revocations(common::from_now())
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

/// ~61 s: tokens live at least 60 s. Runs in parallel with the other tests.
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
