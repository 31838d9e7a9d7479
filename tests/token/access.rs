//! Access keys on the token API: failed authentications, keys confined to their instances,
//! the rate limits' overflow codes.

use mqtt_tokend::proto::{
    ApplyTokenRequest, CreateAccessKeyRequest, DeleteAccessKeyRequest, ListAccessKeysRequest,
    QueryTokenRequest, RevokeTokenRequest, TokenAction,
};
use tonic::Code;

use crate::{
    apply,
    common::{code_of, now_ms, TestServer},
    query, HOUR, INSTANCE,
};

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
