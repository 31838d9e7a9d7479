//! The plugin enforces CONNECT, topics and revocations, over plaintext gRPC and over mutual
//! TLS.

use mqtt_tokend::{
    core::broker::mqtt_password,
    proto::{RefreshDeviceCredentialRequest, UnRegisterDeviceCredentialRequest},
};

use crate::{
    broker::mosquitto_binary,
    client::{mqtt, ok, Ev},
    setup_with, INSTANCE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_enforces_connect_topics_and_revocations() {
    enforces_connect_topics_and_revocations(false).await;
}

/// The same over mutual TLS: the service refuses any connection without a certificate from
/// its client CA, so every CONNECT check and the revocation stream prove the plugin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_over_mutual_tls_enforces_connect_topics_and_revocations() {
    enforces_connect_topics_and_revocations(true).await;
}

async fn enforces_connect_topics_and_revocations(mutual_tls: bool) {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let mut s = setup_with(&binary, mutual_tls).await;
    let port = s.broker.port;
    if mutual_tls {
        s.broker
            .wait_log("plugin loaded, service https://127.0.0.1:")
            .await;
        s.broker.wait_log("client certificate").await;
    }

    // Token mode: valid connects; wrong, forged and malformed are refused.
    let t_a = s.token(&["dev/a/#"]).await;
    let t_b = s.token(&["dev/b/#"]).await;
    let mut a = s
        .token_client("GID_test@@@a", &t_a)
        .await
        .expect("valid token connects");
    let mut forged = t_a.clone();
    let last = forged.pop().expect("non-empty token");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert!(
        s.token_client("GID_test@@@x", &forged).await.is_err(),
        "forged token"
    );
    assert!(
        s.token_client("GID_test@@@x", "garbage").await.is_err(),
        "wrong token"
    );
    assert!(
        mqtt(port, "GID_test@@@x", "nobody", "x").await.is_err(),
        "bad username"
    );

    // Signature mode: a subscriber to everything (its grant is `#`).
    let sig_id = "GID_test@@@sig";
    let sig_user = format!("Signature|{}|{INSTANCE}", s.app.id);
    assert!(
        mqtt(port, sig_id, &sig_user, &mqtt_password("wrong", sig_id))
            .await
            .is_err()
    );
    let mut sig = mqtt(
        port,
        sig_id,
        &sig_user,
        &mqtt_password(&s.app.secret, sig_id),
    )
    .await
    .expect("signature connects");
    assert!(ok(&sig.subscribe("#").await));

    // Publish: the denied one is sent first; in-order QoS 1 delivery means it would arrive
    // first if it were not dropped.
    a.publish("other/x").await;
    a.publish("dev/a/x").await;
    match sig.next().await {
        Ev::Publish(topic) => assert_eq!(topic, "dev/a/x", "ungranted publish was delivered"),
        other => panic!("expected a delivery, got {other:?}"),
    }

    // Subscribe: inside the grant succeeds, outside fails, containment is MQTT's.
    assert!(ok(&a.subscribe("dev/a/+").await));
    assert!(ok(&a.subscribe("dev/a/#").await));
    assert!(!ok(&a.subscribe("dev/#").await));
    assert!(!ok(&a.subscribe("other/#").await));
    assert!(!ok(&a.subscribe("#").await));

    // Device credential mode.
    let (d1_user, d1_pass) = s.device("GID_test@@@d1").await;
    let (d2_user, d2_pass) = s.device("GID_test@@@d2").await;
    assert!(mqtt(
        port,
        "GID_test@@@d1",
        &d1_user,
        &mqtt_password("wrong", "GID_test@@@d1")
    )
    .await
    .is_err());
    assert!(
        mqtt(port, "GID_test@@@d2", &d1_user, &d1_pass)
            .await
            .is_err(),
        "other client id"
    );
    let mut d1 = mqtt(port, "GID_test@@@d1", &d1_user, &d1_pass)
        .await
        .expect("device connects");
    let mut d2 = mqtt(port, "GID_test@@@d2", &d2_user, &d2_pass)
        .await
        .expect("device connects");
    let mut b = s
        .token_client("GID_test@@@b", &t_b)
        .await
        .expect("b connects");

    // RevokeToken kicks exactly A.
    s.revoke(&t_a).await;
    a.assert_kicked().await;
    b.assert_alive().await;
    d1.assert_alive().await;
    assert!(
        s.token_client("GID_test@@@a", &t_a).await.is_err(),
        "revoked token"
    );

    // RefreshDeviceCredential kicks exactly D1.
    s.ts.devices(&s.app)
        .refresh_device_credential(RefreshDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: "GID_test@@@d1".into(),
        })
        .await
        .expect("refresh");
    d1.assert_kicked().await;
    d2.assert_alive().await;
    b.assert_alive().await;
    assert!(
        mqtt(port, "GID_test@@@d1", &d1_user, &d1_pass)
            .await
            .is_err(),
        "refreshed away"
    );

    // UnRegisterDeviceCredential kicks exactly D2.
    s.ts.devices(&s.app)
        .un_register_device_credential(UnRegisterDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: "GID_test@@@d2".into(),
        })
        .await
        .expect("unregister");
    d2.assert_kicked().await;
    b.assert_alive().await;
    sig.assert_alive().await;

    // Service down: new CONNECTs are refused, existing sessions keep their grants.
    let grpc = s.ts.config.grpc_addr.clone();
    s.ts.stop().await;
    let t_c = {
        // Tokens cannot be applied while the service is down; this one is made afterwards.
        String::from("not-yet")
    };
    assert!(
        s.token_client("GID_test@@@c", &t_c).await.is_err(),
        "fail closed"
    );
    b.publish("dev/b/1").await;
    match sig.next().await {
        Ev::Publish(topic) => assert_eq!(topic, "dev/b/1"),
        other => panic!("expected a delivery while the service is down, got {other:?}"),
    }
    b.assert_alive().await;

    // A revocation the plugin cannot see live: made while the service listens elsewhere.
    s.ts.config.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    s.ts.restart().await;
    s.revoke(&t_b).await;
    s.ts.stop().await;
    s.ts.config.grpc_addr = grpc;
    s.ts.restart().await;
    // The plugin reconnects, resumes from its persisted revision and kicks B.
    b.assert_kicked().await;
    sig.assert_alive().await;
    let t_c = s.token(&["dev/c/#"]).await;
    let mut c = s
        .token_client("GID_test@@@c", &t_c)
        .await
        .expect("service back: connects");
    c.assert_alive().await;
    let rev: u64 = std::fs::read_to_string(&s.broker.state_file)
        .expect("state file written")
        .trim()
        .parse()
        .expect("a revision");
    assert!(rev >= 4, "state file holds the last revision, got {rev}");
}
