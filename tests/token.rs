//! TokenService and AccessKeyService through a real server: validation, auth, permissions,
//! revoke, forged tokens, rate limits, restart persistence, expiry capping.

mod common;

use common::{code_of, now_ms, TestServer};
use mqtt_tokend::proto::{
    ApplyTokenRequest, CreateAccessKeyRequest, DeleteAccessKeyRequest, ListAccessKeysRequest,
    QueryTokenRequest, RevokeTokenRequest, TokenAction,
};
use tonic::Code;

const INSTANCE: &str = "post-cn-test";
const HOUR: i64 = 3600 * 1000;

fn apply(resources: &[&str], actions: &[TokenAction], expire_time: i64) -> ApplyTokenRequest {
    ApplyTokenRequest {
        instance_id: INSTANCE.into(),
        actions: actions.iter().map(|a| *a as i32).collect(),
        resources: resources.iter().map(|s| s.to_string()).collect(),
        expire_time,
    }
}

fn query(token: &str) -> QueryTokenRequest {
    QueryTokenRequest {
        instance_id: INSTANCE.into(),
        token: token.into(),
    }
}

#[tokio::test]
async fn apply_query_revoke_survives_restart() {
    let mut ts = TestServer::start().await;
    let root = ts.root.clone();
    let mut c = ts.tokens(&root);
    let applied = c
        .apply_token(apply(
            &["a/b", "a/#"],
            &[TokenAction::Read, TokenAction::Write],
            now_ms() + HOUR,
        ))
        .await
        .unwrap();
    assert!(applied.metadata().get("x-request-id").is_some());
    let applied = applied.into_inner();
    assert!(!applied.token.contains('|'));
    assert!(!applied.request_id.is_empty());
    let status = c
        .query_token(query(&applied.token))
        .await
        .unwrap()
        .into_inner();
    assert!(status.token_status);
    assert_ne!(status.request_id, applied.request_id);

    let revoked = c
        .revoke_token(RevokeTokenRequest {
            instance_id: INSTANCE.into(),
            token: applied.token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.revision, 1);
    assert!(
        !c.query_token(query(&applied.token))
            .await
            .unwrap()
            .into_inner()
            .token_status
    );
    // Idempotent: a second revoke succeeds and writes no new event.
    let again = c
        .revoke_token(RevokeTokenRequest {
            instance_id: INSTANCE.into(),
            token: applied.token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.revision, 0);

    // A second, live token and the revoked one both keep their state across a restart.
    let live = c
        .apply_token(apply(&["x"], &[TokenAction::Read], now_ms() + HOUR))
        .await
        .unwrap()
        .into_inner()
        .token;
    ts.restart().await;
    let mut c = ts.tokens(&root);
    assert!(
        !c.query_token(query(&applied.token))
            .await
            .unwrap()
            .into_inner()
            .token_status
    );
    assert!(
        c.query_token(query(&live))
            .await
            .unwrap()
            .into_inner()
            .token_status
    );
    ts.stop().await;
}

#[tokio::test]
async fn each_bad_field_gets_its_own_code_and_changes_nothing() {
    let ts = TestServer::start().await;
    let mut c = ts.tokens(&ts.root);
    let later = now_ms() + HOUR;
    let cases: Vec<(ApplyTokenRequest, &str)> = vec![
        (
            ApplyTokenRequest {
                instance_id: "".into(),
                ..apply(&["a"], &[TokenAction::Read], later)
            },
            "InvalidParameter.InstanceId",
        ),
        (
            ApplyTokenRequest {
                instance_id: "bad id!".into(),
                ..apply(&["a"], &[TokenAction::Read], later)
            },
            "InvalidParameter.InstanceId",
        ),
        (apply(&["a"], &[], later), "InvalidParameter.Actions"),
        (
            apply(&["a"], &[TokenAction::Unspecified], later),
            "InvalidParameter.Actions",
        ),
        (
            ApplyTokenRequest {
                actions: vec![7],
                ..apply(&["a"], &[], later)
            },
            "InvalidParameter.Actions",
        ),
        (
            apply(&[], &[TokenAction::Read], later),
            "InvalidParameter.Resources",
        ),
        (
            apply(&["a/#/b"], &[TokenAction::Read], later),
            "InvalidParameter.Resources",
        ),
        (
            apply(&["a+"], &[TokenAction::Read], later),
            "InvalidParameter.Resources",
        ),
        (
            apply(&["a\0b"], &[TokenAction::Read], later),
            "InvalidParameter.Resources",
        ),
        (
            apply(&[""], &[TokenAction::Read], later),
            "InvalidParameter.Resources",
        ),
        (
            apply(&["a"], &[TokenAction::Read], now_ms() + 30_000),
            "InvalidParameter.ExpireTime",
        ),
        (
            apply(&["a"], &[TokenAction::Read], 0),
            "InvalidParameter.ExpireTime",
        ),
        (
            apply(&["a"], &[TokenAction::Read], -5),
            "InvalidParameter.ExpireTime",
        ),
    ];
    for (req, code) in cases {
        let err = c.apply_token(req.clone()).await.expect_err(code);
        assert_eq!(err.code(), Code::InvalidArgument, "{req:?}");
        assert_eq!(code_of(&err), code, "{req:?}");
        assert!(err.message().starts_with(code), "{}", err.message());
    }
    let too_many: Vec<String> = (0..101).map(|i| format!("t/{i}")).collect();
    let err = c
        .apply_token(ApplyTokenRequest {
            resources: too_many,
            ..apply(&[], &[TokenAction::Read], later)
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InvalidParameter.Resources");
    let long = "a".repeat(65536);
    let err = c
        .apply_token(apply(&[&long], &[TokenAction::Read], later))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InvalidParameter.Resources");
    // Nothing was written: no revision, nothing to revoke.
    let err = c
        .revoke_token(RevokeTokenRequest {
            instance_id: INSTANCE.into(),
            token: "".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InvalidParameter.Token");
    let err = c.query_token(query("")).await.unwrap_err();
    assert_eq!(code_of(&err), "InvalidParameter.Token");
}

#[tokio::test]
async fn expiry_is_capped_to_thirty_days_and_resources_normalised() {
    let ts = TestServer::start().await;
    let mut c = ts.tokens(&ts.root);
    let before = now_ms();
    let r = c
        .apply_token(apply(
            &["b", "a", "b", "a/+"],
            &[TokenAction::Write, TokenAction::Write],
            before + 365 * 24 * HOUR,
        ))
        .await
        .unwrap()
        .into_inner();
    let cap = 30 * 24 * HOUR;
    assert!(
        r.expire_time >= before + cap && r.expire_time <= now_ms() + cap,
        "{}",
        r.expire_time
    );
    // Resources are stored sorted and de-duplicated: visible through the broker grant.
    let grant = ts
        .broker(&ts.root)
        .authenticate_connect(mqtt_tokend::proto::AuthenticateConnectRequest {
            client_id: "GID_test@@@dev1".into(),
            username: format!("Token|{}|{INSTANCE}", ts.root.id),
            password: format!("W|{}", r.token),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(grant.allowed, "{grant:?}");
    assert_eq!(grant.grant.unwrap().publish, vec!["a", "a/+", "b"]);
}

#[tokio::test]
async fn every_response_on_one_connection_carries_its_own_request_id() {
    // The header is sent without HPACK indexing; hundreds of responses on one connection (more
    // than a header table holds) must each decode to their own id, equal to the body's, as
    // must an error's.
    let ts = TestServer::start().await;
    let mut c = ts.tokens(&ts.root);
    let mut seen = std::collections::HashSet::new();
    for i in 0..300 {
        let id = if i % 50 == 49 {
            let status = c.query_token(query("")).await.unwrap_err();
            assert_eq!(code_of(&status), "InvalidParameter.Token");
            let header = status.metadata().get("x-request-id").expect("x-request-id");
            header.to_str().unwrap().to_owned()
        } else {
            let response = c.query_token(query("not-a-token")).await.unwrap();
            let header = response
                .metadata()
                .get("x-request-id")
                .expect("x-request-id");
            let header = header.to_str().unwrap().to_owned();
            assert_eq!(header, response.into_inner().request_id);
            header
        };
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(id, id.to_uppercase());
        assert!(seen.insert(id), "request ids repeat");
    }
}

#[tokio::test]
async fn garbled_forged_and_other_instance_tokens_are_false() {
    let ts = TestServer::start().await;
    let mut c = ts.tokens(&ts.root);
    let token = c
        .apply_token(apply(&["a"], &[TokenAction::Read], now_ms() + HOUR))
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let swapped_kid = format!("9.{}.{}", parts[1], parts[2]);
    // Parts one character short or long, padded, or not canonical Base64: the last
    // character of the id carries 4 bits that must be zero (a valid id ends in A, Q, g or w;
    // B sets one of the 4).
    let (kid, id, tag) = (parts[0], parts[1], parts[2]);
    let short_id = format!("{kid}.{}.{tag}", &id[..id.len() - 1]);
    let long_id = format!("{kid}.{id}A.{tag}");
    let short_tag = format!("{kid}.{id}.{}", &tag[..tag.len() - 1]);
    let long_tag = format!("{kid}.{id}.{tag}A");
    let padded_tag = format!("{kid}.{id}.{tag}=");
    let loose_id = format!("{kid}.{}B.{tag}", &id[..id.len() - 1]);
    for bad in [
        "garbage",
        "1.2.3",
        "..",
        "1..",
        &forged,
        &swapped_kid,
        &short_id,
        &long_id,
        &short_tag,
        &long_tag,
        &padded_tag,
        &loose_id,
        &"x".repeat(10_000),
        "🦀.🦀.🦀",
        &format!("{token}.extra"),
    ] {
        assert!(
            !c.query_token(query(bad))
                .await
                .unwrap()
                .into_inner()
                .token_status,
            "{bad}"
        );
    }
    // The same token asked about on another instance is false too.
    let other = c
        .query_token(QueryTokenRequest {
            instance_id: "post-cn-other".into(),
            token: token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!other.token_status);
    // Revoking a forged token is a parameter error, and the real one stays valid.
    let err = c
        .revoke_token(RevokeTokenRequest {
            instance_id: INSTANCE.into(),
            token: forged,
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InvalidParameter.Token");
    assert!(
        c.query_token(query(&token))
            .await
            .unwrap()
            .into_inner()
            .token_status
    );
}

#[tokio::test]
async fn authentication_failures_are_unauthenticated() {
    let ts = TestServer::start().await;
    // Malformed headers cannot come from the client crate, so they are set by hand on a
    // connection without a credential.
    let cases = [
        (None, "MissingAuthorization"),
        (Some("Basic abc".to_string()), "MissingAuthorization"),
        (Some("Bearer nocolon".to_string()), "MissingAuthorization"),
        (
            Some(format!("Bearer MTAKnope:{}", ts.root.secret)),
            "InvalidAccessKeyId.NotFound",
        ),
        (
            Some(format!("Bearer {}:wrong", ts.root.id)),
            "InvalidAccessKeySecret",
        ),
    ];
    for (header, code) in cases {
        let mut request = tonic::Request::new(query("x"));
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        let err = ts.conn.tokens().query_token(request).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert_eq!(code_of(&err), code);
    }
}

#[tokio::test]
async fn keys_are_confined_to_their_instances() {
    let ts = TestServer::start().await;
    let key = ts.create_key(&[INSTANCE]).await;
    let mut mine = ts.tokens(&key);
    let token = mine
        .apply_token(apply(&["a"], &[TokenAction::Read], now_ms() + HOUR))
        .await
        .unwrap()
        .into_inner()
        .token;
    let err = mine
        .apply_token(ApplyTokenRequest {
            instance_id: "post-cn-other".into(),
            ..apply(&["a"], &[TokenAction::Read], now_ms() + HOUR)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(code_of(&err), "InstancePermissionCheckFailed");
    let err = mine
        .query_token(QueryTokenRequest {
            instance_id: "post-cn-other".into(),
            token: token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InstancePermissionCheckFailed");
    // Non-root keys cannot manage keys.
    let err = ts
        .access_keys(&key)
        .create_access_key(CreateAccessKeyRequest {
            instance_ids: vec!["*".into()],
            description: "".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "PermissionCheckFailed");
    // Root lists both keys; deleting the key stops it from authenticating.
    let mut admin = ts.access_keys(&ts.root);
    let list = admin
        .list_access_keys(ListAccessKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.access_keys.len(), 2);
    assert_eq!(list.access_keys.iter().filter(|k| k.root).count(), 1);
    admin
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: key.id.clone(),
        })
        .await
        .unwrap();
    let err = mine.query_token(query(&token)).await.unwrap_err();
    assert_eq!(code_of(&err), "InvalidAccessKeyId.NotFound");
    let err = admin
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: ts.root.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "PermissionCheckFailed");
    let err = admin
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: key.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = admin
        .create_access_key(CreateAccessKeyRequest {
            instance_ids: vec![],
            description: "".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InvalidParameter.InstanceIds");
}

#[tokio::test]
async fn rate_limits_answer_overflow_codes() {
    let ts = TestServer::start_with(|c| {
        c.rate_apply_token = 3;
        c.rate_query_token = 2;
        c.rate_revoke_token = 1;
    })
    .await;
    let mut c = ts.tokens(&ts.root);
    let mut tokens = vec![];
    let mut refused = None;
    for _ in 0..10 {
        match c
            .apply_token(apply(&["a"], &[TokenAction::Read], now_ms() + HOUR))
            .await
        {
            Ok(r) => tokens.push(r.into_inner().token),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert_eq!(tokens.len(), 3);
    let err = refused.expect("the fourth ApplyToken in a second is refused");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(code_of(&err), "ApplyTokenOverFlow");
    let mut codes = vec![];
    for _ in 0..4 {
        if let Err(e) = c.query_token(query(&tokens[0])).await {
            codes.push(code_of(&e));
        }
    }
    assert!(
        codes.contains(&"QueryTokenOverFlow".to_string()),
        "{codes:?}"
    );
    let revoke = |t: &str| RevokeTokenRequest {
        instance_id: INSTANCE.into(),
        token: t.into(),
    };
    c.revoke_token(revoke(&tokens[0])).await.unwrap();
    let err = c.revoke_token(revoke(&tokens[1])).await.unwrap_err();
    assert_eq!(code_of(&err), "RevokeTokenOverFlow");
    // Another key has its own budget.
    let other = ts.create_key(&["*"]).await;
    ts.tokens(&other)
        .apply_token(apply(&["a"], &[TokenAction::Read], now_ms() + HOUR))
        .await
        .unwrap();
}

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
