//! RevokeTokens by handle, minting key and instance flips exactly its scope and survives a
//! restart; what it refuses; deleting a key revokes exactly the tokens it minted.

use mqtt_tokend::proto::{
    revoke_tokens_request::Scope, AuthenticateConnectRequest, DeleteAccessKeyRequest,
    RevocationKind, RevokeTokensRequest, StartMode, TokenState, WatchRevocationsRequest,
};

use crate::{
    common::{code_of, now_ms, TestServer},
    live, liveness, mint, mint_many, next_event, revoke, states, HOUR, I1, I2,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_by_handle_key_and_instance_flips_exactly_the_scope_and_survives_restart() {
    let mut ts = TestServer::start().await;
    let a = ts.create_key(&[I1, I2]).await;
    let b = ts.create_key(&[I1]).await;
    let a1 = mint_many(&ts, &a, I1, 3).await;
    let a2 = mint_many(&ts, &a, I2, 2).await;
    let b1 = mint_many(&ts, &b, I1, 3).await;
    let mut w = ts
        .revocations(&ts.root)
        .watch_revocations(WatchRevocationsRequest {
            start_mode: StartMode::Now as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // By handle: that one token.
    let rev = revoke(&ts, &b, I1, Scope::TokenHandle(a1[0].handle.clone())).await;
    assert!(rev > 0);
    let e = next_event(&mut w).await;
    assert_eq!((e.revision, e.kind()), (rev, RevocationKind::TokenRevoked));
    assert_eq!(e.token_handle, a1[0].handle);
    assert_eq!(
        e.token_fingerprint,
        mqtt_tokend_client::fingerprint(&a1[0].token)
    );
    assert_eq!(liveness(&ts, I1, &a1).await, [false, true, true]);
    assert_eq!(liveness(&ts, I1, &b1).await, [true; 3]);
    // Again, or on the wrong instance: nothing to revoke, no event.
    assert_eq!(
        revoke(&ts, &b, I1, Scope::TokenHandle(a1[0].handle.clone())).await,
        0
    );
    assert_eq!(
        revoke(&ts, &a, I2, Scope::TokenHandle(a1[1].handle.clone())).await,
        0
    );
    assert!(live(&ts, I1, &a1[1].token).await);

    // By minting key, on one instance: a's tokens on I1, not on I2, not b's.
    let rev = revoke(&ts, &b, I1, Scope::AccessKeyId(a.id.clone())).await;
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.revision, e.kind()),
        (rev, RevocationKind::TokensOfKeyRevoked)
    );
    assert_eq!(
        (e.instance_id.as_str(), e.key_id.as_str()),
        (I1, a.id.as_str())
    );
    assert!(
        e.expire_time > now_ms() + 29 * 24 * HOUR,
        "kept as long as a token can live"
    );
    assert_eq!(liveness(&ts, I1, &a1).await, [false; 3]);
    assert_eq!(liveness(&ts, I2, &a2).await, [true; 2]);
    assert_eq!(liveness(&ts, I1, &b1).await, [true; 3]);
    // The key still mints, and what it mints now is live.
    let a1_after = mint(&ts, &a, I1).await;
    assert!(live(&ts, I1, &a1_after.token).await);

    // The whole instance: every token of I1 minted before, none of I2.
    let rev_all = revoke(&ts, &a, I1, Scope::AllTokens(true)).await;
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.revision, e.kind(), e.instance_id.as_str()),
        (rev_all, RevocationKind::InstanceTokensRevoked, I1)
    );
    assert_eq!(liveness(&ts, I1, &b1).await, [false; 3]);
    assert!(!live(&ts, I1, &a1_after.token).await);
    assert_eq!(liveness(&ts, I2, &a2).await, [true; 2]);
    let b1_after = mint(&ts, &b, I1).await;
    assert!(live(&ts, I1, &b1_after.token).await);

    // ListTokens says the same, with when.
    let listed = states(&ts, I1).await;
    for m in a1.iter().chain(&b1).chain([&a1_after]) {
        assert_eq!(
            listed[&m.handle].state(),
            TokenState::Revoked,
            "{}",
            m.handle
        );
        assert!(listed[&m.handle].revoke_time > 0);
    }
    assert_eq!(listed[&b1_after.handle].state(), TokenState::Live);
    assert!(listed[&b1_after.handle].minted_revision >= rev_all);

    // The same after a restart: the tombstones are durable and reloaded.
    drop(w);
    ts.restart().await;
    assert_eq!(liveness(&ts, I1, &a1).await, [false; 3]);
    assert_eq!(liveness(&ts, I1, &b1).await, [false; 3]);
    assert!(!live(&ts, I1, &a1_after.token).await);
    assert!(live(&ts, I1, &b1_after.token).await);
    assert_eq!(liveness(&ts, I2, &a2).await, [true; 2]);
    let after_restart = mint(&ts, &a, I1).await;
    assert!(live(&ts, I1, &after_restart.token).await);
}

#[tokio::test]
async fn revoke_tokens_refuses_what_it_cannot_do() {
    let ts = TestServer::start().await;
    let a = ts.create_key(&[I1]).await;
    let tokens = ts.tokens(&a);
    let call = |scope: Option<Scope>, instance: &str| {
        let mut tokens = tokens.clone();
        let instance = instance.to_owned();
        async move {
            tokens
                .revoke_tokens(RevokeTokensRequest {
                    instance_id: instance,
                    scope,
                })
                .await
                .map(|r| r.into_inner().revision)
                .map_err(|e| code_of(&e))
        }
    };
    assert_eq!(call(None, I1).await, Err("ParameterCheckFailed".into()));
    assert_eq!(
        call(Some(Scope::AllTokens(false)), I1).await,
        Err("ParameterCheckFailed".into())
    );
    assert_eq!(
        call(Some(Scope::TokenHandle("1.abc.def".into())), I1).await,
        Err("InvalidParameter.TokenHandle".into())
    );
    assert_eq!(
        call(Some(Scope::AccessKeyId("MTAKnosuchkey".into())), I1).await,
        Err("AccessKeyNotFound".into())
    );
    assert_eq!(
        call(Some(Scope::AllTokens(true)), I2).await,
        Err("InstancePermissionCheckFailed".into())
    );
    // A well-formed handle of no token: nothing to do, not an error.
    assert_eq!(
        call(
            Some(Scope::TokenHandle(format!("th_{}", "A".repeat(22)))),
            I1
        )
        .await,
        Ok(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_key_revokes_exactly_the_tokens_it_minted() {
    let mut ts = TestServer::start().await;
    let a = ts.create_key(&[I1]).await;
    let b = ts.create_key(&[I1]).await;
    let of_a = mint_many(&ts, &a, I1, 4).await;
    let of_b = mint_many(&ts, &b, I1, 4).await;
    // A client that names key b in its username but holds a token a minted.
    let connect = |token: String| {
        let mut broker = ts.broker(&ts.root);
        let username = format!("Token|{}|{I1}", b.id);
        async move {
            broker
                .authenticate_connect(AuthenticateConnectRequest {
                    client_id: "GID_keydel@@@d1".into(),
                    username,
                    password: format!("RW|{token}"),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert!(connect(of_a[0].token.clone()).await.allowed);

    ts.access_keys(&ts.root)
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: a.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(liveness(&ts, I1, &of_a).await, [false; 4]);
    assert_eq!(liveness(&ts, I1, &of_b).await, [true; 4]);
    let denied = connect(of_a[0].token.clone()).await;
    assert!(!denied.allowed);
    assert_eq!(
        denied.reason(),
        mqtt_tokend::proto::DenyReason::TokenRevoked
    );
    assert!(connect(of_b[0].token.clone()).await.allowed);
    let listed = states(&ts, I1).await;
    assert!(of_a
        .iter()
        .all(|m| listed[&m.handle].state() == TokenState::Revoked));
    assert!(of_b
        .iter()
        .all(|m| listed[&m.handle].state() == TokenState::Live));

    ts.restart().await;
    assert_eq!(liveness(&ts, I1, &of_a).await, [false; 4]);
    assert_eq!(liveness(&ts, I1, &of_b).await, [true; 4]);
}
