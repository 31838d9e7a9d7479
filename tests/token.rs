//! TokenService and AccessKeyService through a real server: validation, auth, permissions,
//! revoke, forged tokens, rate limits, restart persistence, expiry capping.
//!
//! One test binary: the token calls are tested here; `token/access.rs` holds authentication,
//! key confinement and rate limits, `token/serving.rs` health, reflection and the keyring.

mod common;

#[path = "token/access.rs"]
mod access;
#[path = "token/serving.rs"]
mod serving;

use common::{code_of, now_ms, TestServer};
use mqtt_tokend::proto::{ApplyTokenRequest, QueryTokenRequest, RevokeTokenRequest, TokenAction};
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
