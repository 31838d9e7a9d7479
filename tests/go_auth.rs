//! mosquitto-go-auth's gRPC backend (`grpc.AuthService`) through a real server, called with a
//! client generated from `compat/go-auth/auth.proto` (wire-compatible with go-auth's
//! `grpc/auth.proto`): every method, in every mode, as go-auth calls them (no credentials).

mod broker_kit;
mod common;

use broker_kit::{
    device_login, forged, session_clients, signature_login, token, token_login, Login, INSTANCE,
};
use common::{Key, TestServer};
use mqtt_tokend::{
    grpc::go_auth::pb::{
        auth_service_client::AuthServiceClient, CheckAclRequest, GetSuperuserRequest,
        GetUserRequest,
    },
    proto::{
        list_credential_sessions_request::Credential, DeleteAccessKeyRequest,
        RefreshDeviceCredentialRequest, RevokeTokenRequest, TokenAction,
        UnRegisterDeviceCredentialRequest,
    },
};
use tonic::{transport::Channel, Code};

const RW: &[TokenAction] = &[TokenAction::Read, TokenAction::Write];
const HOUR: i64 = 3_600_000;
/// Mosquitto's `MOSQ_ACL_*` values.
const READ: i32 = 1;
const WRITE: i32 = 2;
const READWRITE: i32 = 3;
const SUBSCRIBE: i32 = 4;

/// A server serving AuthService as a fresh key allowed on [`INSTANCE`] (the flag names a key,
/// which must exist when the server starts: create it, then restart with the flag).
async fn server_with_go_auth() -> (TestServer, Key) {
    let mut ts = TestServer::start().await;
    let key = ts.create_key(&[INSTANCE]).await;
    ts.config.go_auth_access_key = Some(key.id.clone());
    ts.restart().await;
    (ts, key)
}

/// go-auth's client: a plain channel, no credentials.
fn go_auth(ts: &TestServer) -> AuthServiceClient<Channel> {
    AuthServiceClient::new(ts.conn.channel())
}

async fn get_user(ts: &TestServer, client_id: &str, login: &Login) -> bool {
    go_auth(ts)
        .get_user(GetUserRequest {
            username: login.username.clone(),
            password: login.password.clone(),
            clientid: client_id.into(),
        })
        .await
        .expect("GetUser answers")
        .into_inner()
        .ok
}

async fn check_acl(
    ts: &TestServer,
    client_id: &str,
    username: &str,
    acc: i32,
    topic: &str,
) -> bool {
    go_auth(ts)
        .check_acl(CheckAclRequest {
            username: username.into(),
            topic: topic.into(),
            clientid: client_id.into(),
            acc,
        })
        .await
        .expect("CheckAcl answers")
        .into_inner()
        .ok
}

#[tokio::test]
async fn name_superuser_and_halt() {
    let (ts, _) = server_with_go_auth().await;
    let mut c = go_auth(&ts);
    assert_eq!(
        c.get_name(()).await.unwrap().into_inner().name,
        "mqtt-tokend"
    );
    for username in ["", "admin", &format!("Token|{}|{INSTANCE}", ts.root.id)] {
        let r = c
            .get_superuser(GetSuperuserRequest {
                username: username.into(),
            })
            .await
            .unwrap();
        assert!(!r.into_inner().ok);
    }
    c.halt(()).await.unwrap();
    // Halt releases nothing: the service keeps answering.
    assert_eq!(
        c.get_name(()).await.unwrap().into_inner().name,
        "mqtt-tokend"
    );
}

#[tokio::test]
async fn token_mode() {
    let (ts, key) = server_with_go_auth().await;
    let client = "GID_mosq@@@t1";
    let (tok, _) = token(&ts, RW, &["devices/+/telemetry", "cmd/#"], HOUR).await;
    let login = token_login(&ts, &format!("RW|{tok}"));
    let user = login.username.as_str();

    // No CONNECT yet: go-auth sends no password with CheckAcl, so deny.
    assert!(!check_acl(&ts, client, user, WRITE, "cmd/x").await);
    assert!(
        !get_user(
            &ts,
            client,
            &token_login(&ts, &format!("RW|{}", forged(&tok)))
        )
        .await
    );
    assert!(get_user(&ts, client, &login).await);

    let table: &[(i32, &str, bool)] = &[
        (WRITE, "cmd/reboot", true),
        (WRITE, "devices/7/telemetry", true),
        (WRITE, "devices/7/status", false),
        (WRITE, "cmd/+", false),
        (READ, "devices/7/telemetry", true),
        (READ, "cmd/a/b", true),
        (READ, "other", false),
        (READ, "cmd/#", false), // a delivered message has a topic name, not a filter
        (READWRITE, "cmd/x", true),
        (READWRITE, "devices/7/status", false),
        (SUBSCRIBE, "devices/+/telemetry", true),
        (SUBSCRIBE, "$share/workers/cmd/#", true),
        (SUBSCRIBE, "devices/#", false),
        (SUBSCRIBE, "#", false),
        (0, "cmd/x", false),
        (8, "cmd/x", false),
        (0x11, "cmd/x", false),
    ];
    for &(acc, topic, want) in table {
        assert_eq!(
            check_acl(&ts, client, user, acc, topic).await,
            want,
            "acc {acc} {topic}"
        );
    }
    assert!(!check_acl(&ts, "GID_mosq@@@t2", user, WRITE, "cmd/x").await);
    assert!(!check_acl(&ts, client, "Token|x|y", WRITE, "cmd/x").await);
    // The session is recorded under the go-auth key, for a kicker.
    assert_eq!(
        session_clients(
            &ts,
            &key,
            Credential::TokenFingerprint(mqtt_tokend::core::token::fingerprint(&tok))
        )
        .await,
        [client]
    );

    ts.tokens(&ts.root)
        .revoke_token(RevokeTokenRequest {
            instance_id: INSTANCE.into(),
            token: tok,
        })
        .await
        .unwrap();
    assert!(!check_acl(&ts, client, user, WRITE, "cmd/x").await);
    assert!(!check_acl(&ts, client, user, READ, "cmd/x").await);
    assert!(!get_user(&ts, client, &login).await);
}

#[tokio::test]
async fn device_credential_mode() {
    let (ts, _) = server_with_go_auth().await;
    let client = "GID_mosq@@@d1";
    let (login, _) = device_login(&ts, client).await;
    let wrong = Login {
        username: login.username.clone(),
        password: "d3Jvbmc=".into(),
    };
    assert!(!get_user(&ts, client, &wrong).await);
    assert!(!get_user(&ts, "GID_mosq@@@d2", &login).await);
    assert!(get_user(&ts, client, &login).await);
    for (acc, topic) in [
        (READ, "a/b"),
        (WRITE, "a/b"),
        (READWRITE, "a"),
        (SUBSCRIBE, "a/#"),
    ] {
        assert!(
            check_acl(&ts, client, &login.username, acc, topic).await,
            "{acc} {topic}"
        );
    }
    assert!(!check_acl(&ts, client, &login.username, SUBSCRIBE, "$SYS/#").await);

    ts.devices(&ts.root)
        .refresh_device_credential(RefreshDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: client.into(),
        })
        .await
        .unwrap();
    assert!(!check_acl(&ts, client, &login.username, WRITE, "a/b").await);
    assert!(!get_user(&ts, client, &login).await);

    let other = "GID_mosq@@@d3";
    let (login, _) = device_login(&ts, other).await;
    assert!(get_user(&ts, other, &login).await);
    ts.devices(&ts.root)
        .un_register_device_credential(UnRegisterDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: other.into(),
        })
        .await
        .unwrap();
    assert!(!check_acl(&ts, other, &login.username, READ, "a/b").await);
}

#[tokio::test]
async fn signature_mode_and_the_acting_key() {
    let (ts, go_auth_key) = server_with_go_auth().await;
    let app_key = ts.create_key(&[INSTANCE]).await;
    let client = "GID_mosq@@@s1";
    let login = signature_login(&app_key, client);
    assert!(!get_user(&ts, client, &signature_login(&app_key, "GID_mosq@@@s9")).await);
    assert!(get_user(&ts, client, &login).await);
    assert!(check_acl(&ts, client, &login.username, SUBSCRIBE, "x/#").await);

    // The go-auth key decides only for its instances.
    let elsewhere = ts.create_key(&["post-cn-elsewhere"]).await;
    let login_elsewhere = Login {
        username: format!("Signature|{}|post-cn-elsewhere", elsewhere.id),
        password: broker_kit::python_password(&elsewhere.secret, client),
    };
    assert!(!get_user(&ts, client, &login_elsewhere).await);

    ts.access_keys(&ts.root)
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: app_key.id.clone(),
        })
        .await
        .unwrap();
    assert!(!check_acl(&ts, client, &login.username, SUBSCRIBE, "x/#").await);
    assert!(!get_user(&ts, client, &login).await);

    // Deleting the key the service acts as stops it: errors, which go-auth reads as deny.
    ts.access_keys(&ts.root)
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: go_auth_key.id.clone(),
        })
        .await
        .unwrap();
    let err = go_auth(&ts)
        .get_user(GetUserRequest {
            username: login.username.clone(),
            password: login.password.clone(),
            clientid: client.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn off_unless_a_key_is_named() {
    let mut ts = TestServer::start().await;
    let err = go_auth(&ts).get_name(()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    // A key that does not exist is refused at start, not discovered by denied clients.
    ts.stop().await;
    ts.config.go_auth_access_key = Some("MTAKdoesnotexist".into());
    let refused = mqtt_tokend::app::Server::start(ts.config.clone()).await;
    assert!(refused.is_err());
}
