//! The audit log with real clients: every mutating gRPC call and REST action leaves exactly one
//! JSON line with the right fields (success or failure), reads leave none, failed
//! authentications (unknown key, wrong secret, bad signature, replayed nonce) leave a failure
//! line, and no secret or token the test handled appears anywhere in the file. A log that
//! cannot be written fails the request with InternalError; `keyring rotate` records itself.

mod common;
mod production;

use std::path::Path;

use common::{code_of, Key, TestServer};
use mqtt_tokend::{
    core::token::fingerprint,
    proto::{
        ApplyTokenRequest, CreateAccessKeyRequest, DeleteAccessKeyRequest,
        GetDeviceCredentialRequest, QueryTokenRequest, RefreshDeviceCredentialRequest,
        RegisterDeviceCredentialRequest, RevokeTokenRequest, UnRegisterDeviceCredentialRequest,
    },
};
use production::v1_query;
use serde_json::Value;

const INSTANCE: &str = "post-cn-audit";
const CLIENT_ID: &str = "GID_audit@@@dev-1";
const REST_CLIENT_ID: &str = "GID_audit@@@dev-rest";

fn audit_path(ts: &TestServer) -> std::path::PathBuf {
    ts.dir.path().join("audit.log")
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Checks one line's fields; empty expectations must be empty in the line.
#[track_caller]
fn check(line: &Value, transport: &str, operation: &str, result: &str, target: [&str; 4]) {
    let [instance, client_id, token_fingerprint, key_id] = target;
    for (field, want) in [
        ("transport", transport),
        ("operation", operation),
        ("result", result),
        ("instance", instance),
        ("client_id", client_id),
        ("token_fingerprint", token_fingerprint),
        ("key_id", key_id),
    ] {
        assert_eq!(line[field].as_str(), Some(want), "{field} of {line}");
    }
    let request_id = line["request_id"].as_str().unwrap_or_default();
    assert_eq!(request_id.len(), 36, "request id of {line}");
    assert!(
        line["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
        "time of {line}"
    );
    assert!(
        line["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "source of {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_and_failed_authentication_leaves_one_line_without_secrets() {
    let mut ts = TestServer::start_with(|_| {}).await;
    // The harness knows the directory only after start: restart with the log switched on.
    ts.config.observe.audit_log = Some(audit_path(&ts).to_str().unwrap().parse().unwrap());
    ts.restart().await;
    let root = ts.root.clone();

    // gRPC: every mutating RPC, one failing one, and reads.
    let created = ts
        .access_keys(&root)
        .create_access_key(CreateAccessKeyRequest {
            instance_ids: vec![INSTANCE.into()],
            description: "audited".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let key = common::Key {
        id: created.access_key_id.clone(),
        secret: created.access_key_secret.clone(),
    };
    let token = ts
        .tokens(&key)
        .apply_token(ApplyTokenRequest {
            instance_id: INSTANCE.into(),
            actions: vec![1],
            resources: vec!["a/#".into()],
            expire_time: common::now_ms() + 3_600_000,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    ts.tokens(&key)
        .query_token(QueryTokenRequest {
            instance_id: INSTANCE.into(),
            token: token.clone(),
        })
        .await
        .unwrap();
    ts.tokens(&key)
        .revoke_token(RevokeTokenRequest {
            instance_id: INSTANCE.into(),
            token: token.clone(),
        })
        .await
        .unwrap();
    let devices = || ts.devices(&key);
    let registered = devices()
        .register_device_credential(RegisterDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: CLIENT_ID.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .device_credential
        .unwrap();
    let again = devices()
        .register_device_credential(RegisterDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: CLIENT_ID.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&again), "DeviceCredentialExsit");
    devices()
        .get_device_credential(GetDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: CLIENT_ID.into(),
        })
        .await
        .unwrap();
    let refreshed = devices()
        .refresh_device_credential(RefreshDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: CLIENT_ID.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .device_credential
        .unwrap();
    devices()
        .un_register_device_credential(UnRegisterDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: CLIENT_ID.into(),
        })
        .await
        .unwrap();
    // Failed authentications: wrong secret, unknown key.
    let wrong = Key::new(key.id.clone(), "not-the-secret");
    ts.tokens(&wrong)
        .query_token(QueryTokenRequest::default())
        .await
        .unwrap_err();
    let unknown = Key::new("MTAKunknown", "whatever");
    ts.tokens(&unknown)
        .revoke_token(RevokeTokenRequest::default())
        .await
        .unwrap_err();

    // REST: a V1-signed ApplyToken, RegisterDeviceCredential, a read, a bad signature and a
    // replayed nonce.
    let rest = format!("http://{}", ts.server().http_addr().expect("REST on"));
    let http = reqwest::Client::new();
    let post = |query: String| {
        let http = http.clone();
        let url = format!("{rest}/?{query}");
        async move {
            let r = http.post(url).send().await.expect("REST");
            let status = r.status().as_u16();
            let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            (status, body)
        }
    };
    let expire = (common::now_ms() + 3_600_000).to_string();
    let (status, body) = post(v1_query(
        &key.id,
        &key.secret,
        "ApplyToken",
        &[
            ("InstanceId", INSTANCE),
            ("Actions", "R"),
            ("Resources", "b/#"),
            ("ExpireTime", &expire),
        ],
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let rest_token = body["Token"].as_str().unwrap().to_owned();
    let register = v1_query(
        &key.id,
        &key.secret,
        "RegisterDeviceCredential",
        &[("InstanceId", INSTANCE), ("ClientId", REST_CLIENT_ID)],
    );
    let (status, body) = post(register.clone()).await;
    assert_eq!(status, 200, "{body}");
    let rest_device = body["DeviceCredential"].clone();
    let (status, _) = post(v1_query(
        &key.id,
        &key.secret,
        "QueryToken",
        &[("InstanceId", INSTANCE), ("Token", &rest_token)],
    ))
    .await;
    assert_eq!(status, 200);
    let (_, body) = post(v1_query(
        &key.id,
        "not-the-secret",
        "RevokeToken",
        &[("InstanceId", INSTANCE), ("Token", &rest_token)],
    ))
    .await;
    assert_eq!(body["Code"], "SignatureDoesNotMatch");
    let (_, body) = post(register).await;
    assert_eq!(body["Code"], "SignatureNonceUsed");

    // Deleting the key last: its own calls above are audited under it.
    ts.access_keys(&root)
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: key.id.clone(),
        })
        .await
        .unwrap();

    let lines = read_lines(&audit_path(&ts));
    let ops: Vec<&str> = lines
        .iter()
        .map(|l| l["operation"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        ops,
        [
            "CreateAccessKey",
            "ApplyToken",
            "RevokeToken",
            "RegisterDeviceCredential",
            "RegisterDeviceCredential",
            "RefreshDeviceCredential",
            "UnRegisterDeviceCredential",
            "QueryToken",
            "RevokeToken",
            "ApplyToken",
            "RegisterDeviceCredential",
            "RevokeToken",
            "RegisterDeviceCredential",
            "DeleteAccessKey",
        ],
        "exactly one line per mutation and per failed authentication, none for reads"
    );
    let fp = fingerprint(&token);
    let rest_fp = fingerprint(&rest_token);
    let (g, r) = ("grpc", "rest");
    check(
        &lines[0],
        g,
        "CreateAccessKey",
        "OK",
        [INSTANCE, "", "", &key.id],
    );
    check(&lines[1], g, "ApplyToken", "OK", [INSTANCE, "", &fp, ""]);
    check(&lines[2], g, "RevokeToken", "OK", [INSTANCE, "", &fp, ""]);
    let registered_key = registered.device_access_key_id.as_str();
    check(
        &lines[3],
        g,
        "RegisterDeviceCredential",
        "OK",
        [INSTANCE, CLIENT_ID, "", registered_key],
    );
    check(
        &lines[4],
        g,
        "RegisterDeviceCredential",
        "DeviceCredentialExsit",
        [INSTANCE, CLIENT_ID, "", ""],
    );
    let refreshed_key = refreshed.device_access_key_id.as_str();
    check(
        &lines[5],
        g,
        "RefreshDeviceCredential",
        "OK",
        [INSTANCE, CLIENT_ID, "", refreshed_key],
    );
    check(
        &lines[6],
        g,
        "UnRegisterDeviceCredential",
        "OK",
        [INSTANCE, CLIENT_ID, "", ""],
    );
    check(
        &lines[7],
        g,
        "QueryToken",
        "InvalidAccessKeySecret",
        ["", "", "", ""],
    );
    check(
        &lines[8],
        g,
        "RevokeToken",
        "InvalidAccessKeyId.NotFound",
        ["", "", "", ""],
    );
    check(
        &lines[9],
        r,
        "ApplyToken",
        "OK",
        [INSTANCE, "", &rest_fp, ""],
    );
    let rest_key = rest_device["DeviceAccessKeyId"].as_str().unwrap();
    check(
        &lines[10],
        r,
        "RegisterDeviceCredential",
        "OK",
        [INSTANCE, REST_CLIENT_ID, "", rest_key],
    );
    check(
        &lines[11],
        r,
        "RevokeToken",
        "SignatureDoesNotMatch",
        ["", "", "", ""],
    );
    check(
        &lines[12],
        r,
        "RegisterDeviceCredential",
        "SignatureNonceUsed",
        ["", "", "", ""],
    );
    check(
        &lines[13],
        g,
        "DeleteAccessKey",
        "OK",
        ["", "", "", &key.id],
    );
    // Callers: the key that called, or the one presented when authentication failed.
    for (i, caller) in [
        (0, root.id.as_str()),
        (1, &key.id),
        (7, &key.id),
        (8, "MTAKunknown"),
        (11, &key.id),
        (13, &root.id),
    ] {
        assert_eq!(lines[i]["caller_key_id"], caller, "caller of {}", lines[i]);
    }

    let log = std::fs::read_to_string(audit_path(&ts)).unwrap();
    for secret in [
        root.secret.as_str(),
        &key.secret,
        &token,
        &rest_token,
        &registered.device_access_key_secret,
        &refreshed.device_access_key_secret,
        rest_device["DeviceAccessKeySecret"].as_str().unwrap(),
        "not-the-secret",
        "whatever",
    ] {
        assert!(
            !log.contains(secret),
            "the audit log holds a secret or token"
        );
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(audit_path(&ts)).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_log_fails_the_request() {
    // /dev/full accepts the open and refuses every write (ENOSPC).
    let ts =
        TestServer::start_with(|c| c.observe.audit_log = Some("/dev/full".parse().unwrap())).await;
    let err = ts
        .tokens(&ts.root)
        .apply_token(ApplyTokenRequest {
            instance_id: INSTANCE.into(),
            actions: vec![1],
            resources: vec!["a/#".into()],
            expire_time: common::now_ms() + 3_600_000,
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InternalError");
    assert_eq!(err.code(), tonic::Code::Internal);
    // Reads are not audited, so they keep working.
    ts.tokens(&ts.root)
        .query_token(QueryTokenRequest {
            instance_id: INSTANCE.into(),
            token: "1.x.y".into(),
        })
        .await
        .expect("reads are not audited");
}

#[test]
fn keyring_rotation_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.json");
    mqtt_tokend::core::Keyring::create(&keyring, common::now_ms()).unwrap();
    let log = dir.path().join("audit.log");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mqtt-tokend"))
        .args(["keyring", "rotate", "--keyring"])
        .arg(&keyring)
        .arg("--audit-log")
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = read_lines(&log);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["operation"], "RotateKeyring");
    assert_eq!(lines[0]["transport"], "cli");
    assert_eq!(lines[0]["result"], "OK");
    assert_eq!(lines[0]["key_id"], "keyring:2");
}

#[tokio::test]
async fn scope_revocations_leave_one_line_each_naming_the_scope() {
    use mqtt_tokend::proto::{revoke_tokens_request::Scope, RevokeTokensRequest};
    let mut ts = TestServer::start_with(|_| {}).await;
    ts.config.observe.audit_log = Some(audit_path(&ts).to_str().unwrap().parse().unwrap());
    ts.restart().await;
    let root = ts.root.clone();
    let applied = ts
        .tokens(&root)
        .apply_token(ApplyTokenRequest {
            instance_id: INSTANCE.into(),
            actions: vec![1],
            resources: vec!["a/#".into()],
            expire_time: common::now_ms() + 3_600_000,
        })
        .await
        .unwrap()
        .into_inner();
    let revoke = |scope| {
        let mut t = ts.tokens(&root);
        async move {
            t.revoke_tokens(RevokeTokensRequest {
                instance_id: INSTANCE.into(),
                scope,
            })
            .await
        }
    };
    revoke(Some(Scope::TokenHandle(applied.token_handle.clone())))
        .await
        .unwrap();
    revoke(Some(Scope::AccessKeyId(root.id.clone())))
        .await
        .unwrap();
    revoke(Some(Scope::AllTokens(true))).await.unwrap();
    let err = revoke(None).await.unwrap_err();
    assert_eq!(code_of(&err), "ParameterCheckFailed");
    // Listing is a read: no line.
    ts.tokens(&root)
        .list_tokens(mqtt_tokend::proto::ListTokensRequest {
            instance_id: INSTANCE.into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let lines = read_lines(&audit_path(&ts));
    let ops: Vec<&str> = lines
        .iter()
        .map(|l| l["operation"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        ops,
        [
            "ApplyToken",
            "RevokeTokens",
            "RevokeTokens",
            "RevokeTokens",
            "RevokeTokens"
        ]
    );
    let fp = fingerprint(&applied.token);
    check(
        &lines[0],
        "grpc",
        "ApplyToken",
        "OK",
        [INSTANCE, "", &fp, ""],
    );
    assert_eq!(lines[0]["token_handle"], applied.token_handle.as_str());
    check(
        &lines[1],
        "grpc",
        "RevokeTokens",
        "OK",
        [INSTANCE, "", "", ""],
    );
    assert_eq!(lines[1]["token_handle"], applied.token_handle.as_str());
    check(
        &lines[2],
        "grpc",
        "RevokeTokens",
        "OK",
        [INSTANCE, "", "", &root.id],
    );
    check(
        &lines[3],
        "grpc",
        "RevokeTokens",
        "OK",
        [INSTANCE, "", "", ""],
    );
    assert!(lines[3].get("token_handle").is_none());
    check(
        &lines[4],
        "grpc",
        "RevokeTokens",
        "ParameterCheckFailed",
        [INSTANCE, "", "", ""],
    );
    let text = std::fs::read_to_string(audit_path(&ts)).unwrap();
    assert!(!text.contains(&applied.token), "no token in the audit log");
}
