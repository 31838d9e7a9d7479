//! What the server serves besides the API and what it needs to start: health and reflection
//! for grpcurl, keyring rotation, a wrong keyring, a lost root key file.

use mqtt_tokend::proto::TokenAction;

use crate::{
    apply,
    common::{self, now_ms, TestServer},
    query, HOUR, INSTANCE,
};

#[tokio::test]
async fn health_and_reflection_are_served() {
    let ts = TestServer::start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ts.conn.channel());
    for service in [
        "",
        "mqtt.token.v1.TokenService",
        "mqtt.token.v1.BrokerAuthService",
    ] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut reflection = ServerReflectionClient::new(ts.conn.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "mqtt.token.v1.TokenService",
        "mqtt.token.v1.AccessKeyService",
        "mqtt.token.v1.DeviceCredentialService",
        "mqtt.token.v1.BrokerAuthService",
        "mqtt.token.v1.RevocationService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn keyring_rotation_keeps_live_tokens_and_secrets_working() {
    let mut ts = TestServer::start().await;
    let root = ts.root.clone();
    let old = ts
        .tokens(&root)
        .apply_token(apply(&["a"], &[TokenAction::Read], now_ms() + HOUR))
        .await
        .unwrap()
        .into_inner()
        .token;
    assert!(old.starts_with("1."));
    let device = ts
        .devices(&root)
        .register_device_credential(mqtt_tokend::proto::RegisterDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: "GID_rot@@@d1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .device_credential
        .unwrap();
    ts.stop().await;
    let id = mqtt_tokend::core::Keyring::rotate(&ts.config.keyring, now_ms()).unwrap();
    assert_eq!(id, 2);
    ts.restart().await;
    // The root key (derived with key 1) still authenticates, old tokens stay valid, new ones
    // use key 2, and the device secret is unchanged.
    let mut c = ts.tokens(&root);
    assert!(
        c.query_token(query(&old))
            .await
            .unwrap()
            .into_inner()
            .token_status
    );
    let new = c
        .apply_token(apply(&["a"], &[TokenAction::Read], now_ms() + HOUR))
        .await
        .unwrap()
        .into_inner()
        .token;
    assert!(new.starts_with("2."));
    assert!(
        c.query_token(query(&new))
            .await
            .unwrap()
            .into_inner()
            .token_status
    );
    let again = ts
        .devices(&root)
        .get_device_credential(mqtt_tokend::proto::GetDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: "GID_rot@@@d1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .device_credential
        .unwrap();
    assert_eq!(
        again.device_access_key_secret,
        device.device_access_key_secret
    );
    ts.stop().await;
}

#[tokio::test]
async fn wrong_keyring_refuses_to_start_and_lost_root_file_is_rewritten() {
    let mut ts = TestServer::start().await;
    ts.stop().await;
    // A lost root key file is written again, with the same key, from the keyring.
    std::fs::remove_file(ts.config.root_key_path()).unwrap();
    ts.restart().await;
    let again = common::read_root_key(&ts.config.root_key_path());
    assert_eq!(
        (again.id.as_str(), again.secret.as_str()),
        (ts.root.id.as_str(), ts.root.secret.as_str())
    );
    ts.stop().await;
    // A mistyped keyring path is refused before a new keyring file is created there.
    let mut wrong = ts.config.clone();
    wrong.keyring = ts.dir.path().join("other-keyring.json");
    let err = mqtt_tokend::app::Server::start(wrong.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, mqtt_tokend::app::AppError::KeyringMissing { .. }),
        "{err}"
    );
    assert!(!wrong.keyring.exists(), "no stray keyring file");
    // Another keyring must not silently invalidate everything.
    mqtt_tokend::core::Keyring::create(&wrong.keyring, now_ms()).unwrap();
    let err = mqtt_tokend::app::Server::start(wrong).await.unwrap_err();
    assert!(
        matches!(err, mqtt_tokend::app::AppError::KeyringMismatch { .. }),
        "{err}"
    );
    // The right one still works.
    ts.restart().await;
    ts.stop().await;
}
