//! Token handles, ListTokens and RevokeTokens through a real server: paging by cursor, handles
//! that cannot pass as tokens or passwords, revocation by handle, minting key and instance
//! flipping exactly their scope (across a restart), key deletion revoking its tokens, the
//! exact boundary against concurrent ApplyToken calls, and the one event per scope that
//! brokers match against their grants.

mod common;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use common::{code_of, now_ms, Key, TestServer};
use mqtt_tokend::proto::{
    revoke_tokens_request::Scope, token_service_client::TokenServiceClient,
    watch_revocations_response::Message, ApplyTokenRequest, AuthenticateConnectRequest,
    DeleteAccessKeyRequest, ListTokensRequest, QueryTokenRequest, RevocationKind,
    RevokeTokenRequest, RevokeTokensRequest, StartMode, TokenAction, TokenInfo, TokenState,
    WatchRevocationsRequest, WatchRevocationsResponse,
};
use mqtt_tokend_client::{grant_from_proto, AuthChannel, RevocationEvent};
use tonic::{Code, Streaming};

const I1: &str = "post-cn-one";
const I2: &str = "post-cn-two";
const HOUR: i64 = 3_600_000;
const WAIT: Duration = Duration::from_secs(20);

/// A minted token: the secret and its handle.
#[derive(Debug, Clone)]
struct Minted {
    token: String,
    handle: String,
}

async fn mint(ts: &TestServer, key: &Key, instance: &str) -> Minted {
    mint_with(&mut ts.tokens(key), instance).await
}

async fn mint_with(tokens: &mut TokenServiceClient<AuthChannel>, instance: &str) -> Minted {
    let r = tokens
        .apply_token(ApplyTokenRequest {
            instance_id: instance.into(),
            actions: vec![TokenAction::Read as i32, TokenAction::Write as i32],
            resources: vec!["devices/+/up".into()],
            expire_time: now_ms() + HOUR,
        })
        .await
        .expect("ApplyToken")
        .into_inner();
    Minted {
        token: r.token,
        handle: r.token_handle,
    }
}

/// `n` tokens of `key` on `instance`, minted by 16 tasks.
async fn mint_many(ts: &TestServer, key: &Key, instance: &str, n: usize) -> Vec<Minted> {
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let mut tokens = ts.tokens(key);
            let instance = instance.to_owned();
            let share = n / 16 + usize::from(t < n % 16);
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(share);
                for _ in 0..share {
                    out.push(mint_with(&mut tokens, &instance).await);
                }
                out
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.extend(t.await.expect("minting task"));
    }
    out
}

/// The next revocation event on a stream, skipping heartbeats.
async fn next_event(
    s: &mut Streaming<WatchRevocationsResponse>,
) -> mqtt_tokend::proto::RevocationEvent {
    loop {
        let m = tokio::time::timeout(WAIT, s.message())
            .await
            .expect("an event in time")
            .expect("stream ok")
            .expect("stream open");
        if let Some(Message::Event(e)) = m.message {
            return e;
        }
    }
}

async fn live(ts: &TestServer, instance: &str, token: &str) -> bool {
    ts.tokens(&ts.root)
        .query_token(QueryTokenRequest {
            instance_id: instance.into(),
            token: token.into(),
        })
        .await
        .expect("QueryToken")
        .into_inner()
        .token_status
}

async fn revoke(ts: &TestServer, key: &Key, instance: &str, scope: Scope) -> u64 {
    ts.tokens(key)
        .revoke_tokens(RevokeTokensRequest {
            instance_id: instance.into(),
            scope: Some(scope),
        })
        .await
        .expect("RevokeTokens")
        .into_inner()
        .revision
}

/// Every token of `instance` (of `key_id`, if not empty), page by page; returns the pages.
async fn list_pages(
    ts: &TestServer,
    instance: &str,
    key_id: &str,
    page_size: u32,
) -> Vec<Vec<TokenInfo>> {
    let mut pages = Vec::new();
    let mut next_token = String::new();
    loop {
        let page = ts
            .tokens(&ts.root)
            .list_tokens(ListTokensRequest {
                instance_id: instance.into(),
                access_key_id: key_id.into(),
                page_size,
                next_token,
            })
            .await
            .expect("ListTokens")
            .into_inner();
        pages.push(page.tokens);
        if page.next_token.is_empty() {
            return pages;
        }
        next_token = page.next_token;
    }
}

async fn states(ts: &TestServer, instance: &str) -> HashMap<String, TokenInfo> {
    list_pages(ts, instance, "", 1000)
        .await
        .into_iter()
        .flatten()
        .map(|t| (t.token_handle.clone(), t))
        .collect()
}

/// Whether each token is live, checked through QueryToken.
async fn liveness(ts: &TestServer, instance: &str, tokens: &[Minted]) -> Vec<bool> {
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        out.push(live(ts, instance, &t.token).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tokens_pages_a_thousand_tokens_of_two_keys_by_cursor_without_the_tokens() {
    let ts = TestServer::start().await;
    let a = ts.create_key(&[I1]).await;
    let b = ts.create_key(&[I1]).await;
    let of_a = mint_many(&ts, &a, I1, 600).await;
    let of_b = mint_many(&ts, &b, I1, 400).await;
    let minted: HashMap<&str, &Key> = of_a
        .iter()
        .map(|m| (m.handle.as_str(), &a))
        .chain(of_b.iter().map(|m| (m.handle.as_str(), &b)))
        .collect();

    // The whole instance, 128 at a time: 7 full pages and one of 104, each handle once.
    let pages = list_pages(&ts, I1, "", 128).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [128, 128, 128, 128, 128, 128, 128, 104]);
    let listed: Vec<&TokenInfo> = pages.iter().flatten().collect();
    let handles: HashSet<&str> = listed.iter().map(|t| t.token_handle.as_str()).collect();
    assert_eq!(handles.len(), 1000);
    assert_eq!(handles, minted.keys().copied().collect());
    for t in &listed {
        assert_eq!(t.access_key_id, minted[t.token_handle.as_str()].id);
        assert_eq!(t.state(), TokenState::Live);
        assert_eq!(t.resources, ["devices/+/up"]);
        assert_eq!(t.actions.len(), 2);
        assert!(t.create_time > 0 && t.expire_time > t.create_time);
        assert_eq!(t.revoke_time, 0);
    }
    // Ordered by minting key: all of one key's tokens, then the other's.
    let keys: Vec<&str> = listed.iter().map(|t| t.access_key_id.as_str()).collect();
    let switches = keys.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(switches, 1);

    // One key at a time: exact counts, exact pages.
    let pages = list_pages(&ts, I1, &a.id, 100).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [100; 6]);
    let pages = list_pages(&ts, I1, &b.id, 150).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [150, 150, 100]
    );
    assert!(pages.iter().flatten().all(|t| t.access_key_id == b.id));
    assert!(list_pages(&ts, I2, "", 100).await[0].is_empty());

    // No response carries a token: none of the MACs (the part that makes a token) appears in
    // anything ListTokens sent.
    let macs: HashSet<&str> = of_a
        .iter()
        .chain(&of_b)
        .map(|m| m.token.rsplit('.').next().expect("a MAC"))
        .collect();
    let text = format!("{:?}", list_pages(&ts, I1, "", 1000).await);
    let leaked = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|word| macs.contains(word))
        .count();
    assert_eq!(leaked, 0);
    assert!(!of_a.iter().any(|m| text.contains(&m.token)));

    // Bad input.
    let err = ts
        .tokens(&ts.root)
        .list_tokens(ListTokensRequest {
            instance_id: I1.into(),
            page_size: 1001,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InvalidParameter.PageSize");
    let err = ts
        .tokens(&ts.root)
        .list_tokens(ListTokensRequest {
            instance_id: I1.into(),
            next_token: "garbage!".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InvalidParameter.NextToken");
    let err = ts
        .tokens(&a)
        .list_tokens(ListTokensRequest {
            instance_id: I2.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_handle_is_not_a_token_nor_a_password() {
    let ts = TestServer::start().await;
    let key = ts.create_key(&[I1]).await;
    let m = mint(&ts, &key, I1).await;
    assert!(
        m.handle.starts_with("th_") && m.handle.len() == 25,
        "{}",
        m.handle
    );
    let mac = m.token.rsplit('.').next().unwrap();
    assert!(!m.handle.contains(mac));

    assert!(live(&ts, I1, &m.token).await);
    assert!(!live(&ts, I1, &m.handle).await, "QueryToken with a handle");
    let err = ts
        .tokens(&key)
        .revoke_token(RevokeTokenRequest {
            instance_id: I1.into(),
            token: m.handle.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InvalidParameter.Token");
    let username = format!("Token|{}|{I1}", key.id);
    for password in [
        format!("RW|{}", m.handle),
        format!("R|{}", m.handle),
        format!("R|{}|W|{}", m.token, m.handle),
    ] {
        let r = ts
            .broker(&key)
            .authenticate_connect(AuthenticateConnectRequest {
                client_id: "GID_handle@@@d1".into(),
                username: username.clone(),
                password,
            })
            .await
            .expect("AuthenticateConnect")
            .into_inner();
        assert!(!r.allowed);
        assert_eq!(r.reason(), mqtt_tokend::proto::DenyReason::TokenInvalid);
    }
    // The token itself still connects, and its grant names it by handle and minting key.
    let r = ts
        .broker(&key)
        .authenticate_connect(AuthenticateConnectRequest {
            client_id: "GID_handle@@@d1".into(),
            username,
            password: format!("RW|{}", m.token),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.allowed);
    let grant = grant_from_proto(r.grant.unwrap()).unwrap();
    assert_eq!(grant.tokens.len(), 1);
    assert_eq!(grant.tokens[0].token_handle, m.handle);
    assert_eq!(grant.tokens[0].access_key_id, key.id);
    assert_eq!(
        grant.tokens[0].fingerprint,
        mqtt_tokend_client::fingerprint(&m.token)
    );
}

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

/// Runs `mqtt-tokend <args>` against the test server with its root key; stdout.
async fn cli(ts: &TestServer, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mqtt-tokend"));
    cmd.args(args)
        .arg("--grpc-addr")
        .arg(ts.server().grpc_addr().to_string())
        .arg("--root-key-file")
        .arg(ts.config.root_key_path());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_revokes_by_scope() {
    let ts = TestServer::start().await;
    let a = ts.create_key(&[I1]).await;
    let b = ts.create_key(&[I1]).await;
    let of_a = mint_many(&ts, &a, I1, 5).await;
    let of_b = mint_many(&ts, &b, I1, 2).await;

    // Every token, one JSON object per line, pages followed; never a token.
    let listed = cli(
        &ts,
        &["token", "list", "--instance", I1, "--page-size", "2"],
    )
    .await;
    let lines: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 7);
    assert!(lines
        .iter()
        .all(|l| l["State"] == "Live" && l["Actions"] == "R,W"));
    assert!(!of_a.iter().chain(&of_b).any(|m| listed.contains(&m.token)));
    let of_key = cli(
        &ts,
        &["token", "list", "--instance", I1, "--access-key", &a.id],
    )
    .await;
    assert_eq!(of_key.lines().count(), 5);

    let out = cli(
        &ts,
        &["token", "revoke", "--instance", I1, "--access-key", &a.id],
    )
    .await;
    let revision = serde_json::from_str::<serde_json::Value>(&out).unwrap()["Revision"]
        .as_u64()
        .unwrap();
    assert!(revision > 0);
    assert_eq!(liveness(&ts, I1, &of_a).await, [false; 5]);
    let out = cli(
        &ts,
        &[
            "token",
            "revoke",
            "--instance",
            I1,
            "--handle",
            &of_b[0].handle,
        ],
    )
    .await;
    assert!(out.contains("\"Revision\":"), "{out}");
    assert_eq!(liveness(&ts, I1, &of_b).await, [false, true]);
    let listed = cli(&ts, &["token", "list", "--instance", I1]).await;
    assert_eq!(listed.matches("\"State\":\"Revoked\"").count(), 6);
    assert_eq!(listed.matches("\"State\":\"Live\"").count(), 1);
}
