//! Valid credentials in the three modes (token, device credential, signature) through every
//! request shape, and topic checks decided by the session CONNECT recorded.

use mqtt_tokend::proto::{
    DeleteAccessKeyRequest, RefreshDeviceCredentialRequest, RevokeTokenRequest, TokenAction,
};
use reqwest::Method;

use crate::{
    acl, allowed,
    broker_kit::{device_login, forged, signature_login, token, token_login, Login, INSTANCE},
    common::{now_ms, TestServer},
    contract, denied, Broker, HOUR, RW,
};

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
