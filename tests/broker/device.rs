//! The device-credential and signature modes: register, refresh and unregister through the
//! API and the CONNECT that follows each, and a broker key's scope.

use mqtt_tokend::proto::{
    AuthMode, DenyReason, RefreshDeviceCredentialRequest, RegisterDeviceCredentialRequest,
    TopicAction, UnRegisterDeviceCredentialRequest,
};

use crate::{by_handle, common::TestServer, connect, denied, python_password, CLIENT, INSTANCE};

#[tokio::test]
async fn device_credential_mode() {
    let ts = TestServer::start().await;
    let broker = ts.create_key(&[INSTANCE]).await;
    let mut devices = ts.devices(&ts.root);
    let cred = devices
        .register_device_credential(RegisterDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: CLIENT.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .device_credential
        .unwrap();
    let user = format!("DeviceCredential|{}|{INSTANCE}", cred.device_access_key_id);
    let pass = python_password(&cred.device_access_key_secret, CLIENT);
    let ok = connect(&ts, &broker, CLIENT, &user, &pass).await;
    assert!(ok.allowed, "{ok:?}");
    let grant = ok.grant.unwrap();
    assert_eq!(grant.mode, AuthMode::DeviceCredential as i32);
    assert_eq!(grant.key_id, cred.device_access_key_id);
    assert_eq!(grant.expire_time, 0);

    assert_eq!(
        denied(&connect(&ts, &broker, CLIENT, &user, "wrong").await),
        DenyReason::BadSignature
    );
    assert_eq!(
        denied(
            &connect(
                &ts,
                &broker,
                CLIENT,
                &user,
                &python_password("DC.other", CLIENT)
            )
            .await
        ),
        DenyReason::BadSignature
    );
    // Someone else's client id with this credential.
    let other = "GID_car@@@vin0002";
    assert_eq!(
        denied(
            &connect(
                &ts,
                &broker,
                other,
                &user,
                &python_password(&cred.device_access_key_secret, other)
            )
            .await
        ),
        DenyReason::CredentialNotFound
    );
    assert_eq!(
        denied(
            &connect(
                &ts,
                &broker,
                CLIENT,
                &format!(
                    "DeviceCredential|{}|post-cn-else",
                    cred.device_access_key_id
                ),
                &pass
            )
            .await
        ),
        DenyReason::InstanceMismatch
    );
    assert_eq!(
        denied(
            &connect(
                &ts,
                &broker,
                CLIENT,
                &format!("DeviceCredential|DC.nope|{INSTANCE}"),
                &pass
            )
            .await
        ),
        DenyReason::CredentialNotFound
    );

    // Refresh: the old pair is stale at once, the new pair works.
    let fresh = devices
        .refresh_device_credential(RefreshDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: CLIENT.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .device_credential
        .unwrap();
    assert_eq!(
        denied(&connect(&ts, &broker, CLIENT, &user, &pass).await),
        DenyReason::CredentialNotFound
    );
    let new_user = format!("DeviceCredential|{}|{INSTANCE}", fresh.device_access_key_id);
    let new_pass = python_password(&fresh.device_access_key_secret, CLIENT);
    let ok = connect(&ts, &broker, CLIENT, &new_user, &new_pass).await;
    assert!(ok.allowed);

    // Unregister: stale at once, also through the session handle.
    devices
        .un_register_device_credential(UnRegisterDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: CLIENT.into(),
        })
        .await
        .unwrap();
    assert_eq!(
        denied(&connect(&ts, &broker, CLIENT, &new_user, &new_pass).await),
        DenyReason::CredentialNotFound
    );
    assert_eq!(
        by_handle(
            &ts,
            &broker,
            CLIENT,
            &ok.session_handle,
            TopicAction::Publish,
            "a"
        )
        .await,
        Err(DenyReason::CredentialNotFound)
    );
}

#[tokio::test]
async fn signature_mode_and_broker_key_scope() {
    let ts = TestServer::start().await;
    let broker = ts.create_key(&[INSTANCE]).await;
    let app = ts.create_key(&[INSTANCE]).await;
    let user = format!("Signature|{}|{INSTANCE}", app.id);
    let pass = python_password(&app.secret, CLIENT);
    let ok = connect(&ts, &broker, CLIENT, &user, &pass).await;
    assert!(ok.allowed, "{ok:?}");
    assert_eq!(ok.grant.as_ref().unwrap().mode, AuthMode::Signature as i32);
    assert_eq!(
        denied(
            &connect(
                &ts,
                &broker,
                CLIENT,
                &user,
                &python_password(&app.secret, "GID_car@@@x")
            )
            .await
        ),
        DenyReason::BadSignature
    );
    assert_eq!(
        denied(
            &connect(
                &ts,
                &broker,
                CLIENT,
                &format!("Signature|MTAKnope|{INSTANCE}"),
                &pass
            )
            .await
        ),
        DenyReason::UnknownAccessKey
    );
    // A broker key not allowed on the instance gets denies, not data.
    let outsider = ts.create_key(&["post-cn-else"]).await;
    assert_eq!(
        denied(&connect(&ts, &outsider, CLIENT, &user, &pass).await),
        DenyReason::InstanceMismatch
    );
    // Deleting the access key kills Signature-mode sessions.
    ts.access_keys(&ts.root)
        .delete_access_key(mqtt_tokend::proto::DeleteAccessKeyRequest {
            access_key_id: app.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        by_handle(
            &ts,
            &broker,
            CLIENT,
            &ok.session_handle,
            TopicAction::Publish,
            "a"
        )
        .await,
        Err(DenyReason::UnknownAccessKey)
    );
}
