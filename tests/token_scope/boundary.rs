//! The scope's cut-off revision: exact under concurrent ApplyToken calls, and the one event
//! a broker resuming from an older revision receives and matches against its grants.

use std::time::Instant;

use mqtt_tokend::proto::{
    revoke_tokens_request::Scope, watch_revocations_response::Message, ApplyTokenRequest,
    AuthenticateConnectRequest, RevocationKind, StartMode, TokenAction, WatchRevocationsRequest,
};
use mqtt_tokend_client::{grant_from_proto, RevocationEvent};

use crate::{
    common::{self, now_ms, Key, TestServer},
    live, mint, revoke, states, Minted, HOUR, I1, WAIT,
};

/// ApplyToken calls racing RevokeTokens: every token whose ApplyToken returned before the
/// revocation was called is revoked, every token whose ApplyToken began after it returned is
/// live, and each token's state is exactly "minted before the cut-off revision".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scope_boundary_is_exact_under_concurrent_apply_token() {
    let ts = TestServer::start().await;
    let key = ts.create_key(&[I1]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // How many tokens the minters have, so the test revokes mid-stream without sleeping.
    let (progress, mut minted_so_far) = tokio::sync::watch::channel(0usize);
    let progress = std::sync::Arc::new(progress);
    let mut minters = Vec::new();
    for _ in 0..8 {
        let tokens = ts.tokens(&key);
        let (stop, progress) = (stop.clone(), progress.clone());
        minters.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                let r = tokens
                    .clone()
                    .apply_token(ApplyTokenRequest {
                        instance_id: I1.into(),
                        actions: vec![TokenAction::Read as i32],
                        resources: vec!["a".into()],
                        expire_time: now_ms() + HOUR,
                    })
                    .await
                    .expect("ApplyToken")
                    .into_inner();
                out.push((started, Instant::now(), r.token, r.token_handle));
                progress.send_modify(|n| *n += 1);
            }
            out
        }));
    }
    // Let the minters get going, then revoke in the middle of their stream.
    minted_so_far.wait_for(|n| *n >= 40).await.unwrap();
    let called = Instant::now();
    let cutoff = revoke(&ts, &ts.root, I1, Scope::AccessKeyId(key.id.clone())).await;
    let returned = Instant::now();
    let until = *minted_so_far.borrow() + 40;
    minted_so_far.wait_for(|n| *n >= until).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut minted = Vec::new();
    for m in minters {
        minted.extend(m.await.unwrap());
    }
    let listed = states(&ts, I1).await;
    let (mut before, mut after) = (0, 0);
    for (started, finished, token, handle) in &minted {
        let is_live = live(&ts, I1, token).await;
        // Exact: live if and only if minted at or after the cut-off revision.
        assert_eq!(
            is_live,
            listed[handle].minted_revision >= cutoff,
            "{handle}"
        );
        if *finished < called {
            assert!(!is_live, "{handle} was minted before the call and is live");
            before += 1;
        }
        if *started > returned {
            assert!(is_live, "{handle} was minted after the call and is revoked");
            after += 1;
        }
    }
    assert!(before >= 40 && after >= 1, "before {before}, after {after}");
}

#[tokio::test]
async fn a_broker_resuming_from_an_older_revision_learns_of_the_scope_and_its_grant_matches() {
    let ts = TestServer::start().await;
    let a = ts.create_key(&[I1]).await;
    let b = ts.create_key(&[I1]).await;
    let grant_of = |key: Key, m: Minted| {
        let mut broker = ts.broker(&ts.root);
        async move {
            let r = broker
                .authenticate_connect(AuthenticateConnectRequest {
                    client_id: "GID_grants@@@d1".into(),
                    username: format!("Token|{}|{I1}", key.id),
                    password: format!("RW|{}", m.token),
                })
                .await
                .unwrap()
                .into_inner();
            grant_from_proto(r.grant.expect("allowed")).unwrap()
        }
    };
    let of_a = grant_of(a.clone(), mint(&ts, &a, I1).await).await;
    let of_b = grant_of(b.clone(), mint(&ts, &b, I1).await).await;
    // Some history first, so the broker resumes from an older revision.
    common::revoke_one(&ts, &ts.root, I1).await;
    let rev = revoke(&ts, &ts.root, I1, Scope::AccessKeyId(a.id.clone())).await;
    let fresh = grant_of(a.clone(), mint(&ts, &a, I1).await).await;

    for start in [
        WatchRevocationsRequest {
            start_mode: StartMode::Revision as i32,
            start_revision: 1,
            ..Default::default()
        },
        // etcd's rule: a start revision alone resumes from it.
        WatchRevocationsRequest {
            start_revision: 1,
            ..Default::default()
        },
        WatchRevocationsRequest {
            start_mode: StartMode::Snapshot as i32,
            ..Default::default()
        },
    ] {
        let mut s = ts
            .revocations(&ts.root)
            .watch_revocations(start)
            .await
            .unwrap()
            .into_inner();
        let scope = loop {
            let m = tokio::time::timeout(WAIT, s.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            match m.message {
                Some(Message::Event(e)) if e.revision == rev => break RevocationEvent::from(e),
                Some(Message::Event(_) | Message::Progress(_)) => {}
                other => panic!("no scope event before {other:?}"),
            }
        };
        assert!(scope.hits(&of_a), "a session on a token of key a");
        assert!(!scope.hits(&of_b), "a session on a token of key b");
        assert!(
            !scope.hits(&fresh),
            "a token of key a minted after the revocation"
        );
    }
    // The grants say why: the minting key and the revision each token was minted at.
    assert_eq!(of_a.tokens[0].access_key_id, a.id);
    assert!(of_a.tokens[0].minted_revision < rev && fresh.tokens[0].minted_revision >= rev);
    assert!(RevocationEvent {
        kind: mqtt_tokend_client::RevocationKind::InstanceTokensRevoked,
        instance_id: I1.into(),
        revision: rev,
        ..RevocationEvent::from(mqtt_tokend::proto::RevocationEvent::default())
    }
    .hits(&of_b));
    // A deleted key's event ends sessions on its tokens, whatever the username names.
    let mut hit = RevocationEvent::from(mqtt_tokend::proto::RevocationEvent {
        kind: RevocationKind::AccessKeyDeleted as i32,
        instance_id: I1.into(),
        key_id: a.id.clone(),
        ..Default::default()
    });
    assert!(hit.hits(&of_a) && !hit.hits(&of_b));
    hit.key_id = b.id.clone();
    assert!(hit.hits(&of_b));
}
