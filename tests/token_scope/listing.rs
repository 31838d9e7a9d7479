//! ListTokens pages every token by cursor and shows handles, never tokens; a handle passes
//! neither as a token nor as a password; the `token list` and `token revoke` commands.

use std::collections::{HashMap, HashSet};

use mqtt_tokend::proto::{
    AuthenticateConnectRequest, ListTokensRequest, RevokeTokenRequest, TokenInfo, TokenState,
};
use mqtt_tokend_client::grant_from_proto;
use tonic::Code;

use crate::{
    common::{code_of, Key, TestServer},
    list_pages, live, liveness, mint, mint_many, I1, I2,
};

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
