//! Credentials in the three modes for the broker-integration tests (EMQX/rmqtt HTTP,
//! mosquitto-go-auth), made through the real APIs; MQTT passwords come from Python's hmac.
#![allow(dead_code)]

use crate::common::{now_ms, Key, TestServer};
use mqtt_tokend::proto::{
    broker_session_service_client::BrokerSessionServiceClient, ApplyTokenRequest,
    ListCredentialSessionsRequest, ListCredentialSessionsResponse, RegisterDeviceCredentialRequest,
    TokenAction,
};

pub const INSTANCE: &str = "post-cn-brokers";

/// Base64(HMAC-SHA1(secret, client_id)) computed by Python, not by the code under test.
pub fn python_password(secret: &str, client_id: &str) -> String {
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

/// A token from the root key, and its expiry in ms.
pub async fn token(
    ts: &TestServer,
    actions: &[TokenAction],
    resources: &[&str],
    life_ms: i64,
) -> (String, i64) {
    let r = ts
        .tokens(&ts.root)
        .apply_token(ApplyTokenRequest {
            instance_id: INSTANCE.into(),
            actions: actions.iter().map(|a| *a as i32).collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            expire_time: now_ms() + life_ms,
        })
        .await
        .unwrap()
        .into_inner();
    (r.token, r.expire_time)
}

/// A username and password in each mode.
pub struct Login {
    pub username: String,
    pub password: String,
}

/// Token mode with the root key in the username.
pub fn token_login(ts: &TestServer, password: &str) -> Login {
    Login {
        username: format!("Token|{}|{INSTANCE}", ts.root.id),
        password: password.to_owned(),
    }
}

/// A registered device credential for `client_id`: (login, device key id).
pub async fn device_login(ts: &TestServer, client_id: &str) -> (Login, String) {
    let cred = ts
        .devices(&ts.root)
        .register_device_credential(RegisterDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: client_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .device_credential
        .unwrap();
    (
        Login {
            username: format!("DeviceCredential|{}|{INSTANCE}", cred.device_access_key_id),
            password: python_password(&cred.device_access_key_secret, client_id),
        },
        cred.device_access_key_id,
    )
}

/// Signature mode with `key`.
pub fn signature_login(key: &Key, client_id: &str) -> Login {
    Login {
        username: format!("Signature|{}|{INSTANCE}", key.id),
        password: python_password(&key.secret, client_id),
    }
}

/// The token with its last MAC character changed: well-formed, forged.
pub fn forged(token: &str) -> String {
    let mut t = token.to_owned();
    let last = t.pop().unwrap();
    t.push(if last == 'A' { 'B' } else { 'A' });
    t
}

/// A BrokerSessionService client calling with `key`.
pub fn sessions_client(
    ts: &TestServer,
    key: &Key,
) -> BrokerSessionServiceClient<mqtt_tokend_client::AuthChannel> {
    ts.client(key).broker_sessions()
}

/// ListCredentialSessions with `key`: the client ids listed for one credential.
pub async fn session_clients(
    ts: &TestServer,
    key: &Key,
    credential: mqtt_tokend::proto::list_credential_sessions_request::Credential,
) -> Vec<String> {
    let r: ListCredentialSessionsResponse = sessions_client(ts, key)
        .list_credential_sessions(ListCredentialSessionsRequest {
            instance_id: String::new(),
            credential: Some(credential),
            page_size: 0,
            next_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.next_token.is_empty());
    r.sessions.into_iter().map(|s| s.client_id).collect()
}
