//! Durability under `kill -9`: the server runs as a child process, takes ApplyToken and
//! RevokeToken calls from many concurrent clients, is SIGKILLed mid-load, and restarted on the
//! same data directory. Every token whose ApplyToken returned must be valid, and every token
//! whose RevokeToken returned must be revoked (and its revision still on the watch stream).
//! Likewise for scope revocations (RevokeTokens, key deletion): after the kill each token is
//! exactly as the acknowledged calls left it.

mod common;

use std::{
    collections::HashSet,
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{now_ms, read_root_key, Key};
use mqtt_tokend::proto::{
    revoke_tokens_request::Scope, watch_revocations_response::Message, ApplyTokenRequest,
    CreateAccessKeyRequest, DeleteAccessKeyRequest, QueryTokenRequest, RevokeTokenRequest,
    RevokeTokensRequest, StartMode, WatchRevocationsRequest,
};
use mqtt_tokend_client::Client;

const INSTANCE: &str = "post-cn-crash";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mqtt-tokend"))
        .args([
            "serve",
            "--grpc-addr",
            &format!("127.0.0.1:{port}"),
            "--http-addr",
            "off",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--keyring")
        .arg(dir.join("keyring.json"))
        .args([
            "--rate-apply-token",
            "0",
            "--rate-query-token",
            "0",
            "--rate-revoke-token",
            "0",
            "--log",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("server binary starts")
}

/// A connection without a credential (the root key is read once the server wrote it).
async fn connect(port: u16) -> Client {
    // The child needs a moment to bind; retry for a bounded time instead of sleeping blindly.
    for _ in 0..200 {
        if let Ok(c) = mqtt_tokend_client::connect(&format!("http://127.0.0.1:{port}"), None).await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server did not come up on port {port}");
}

/// The root key, once the child has written it.
async fn root_key(dir: &std::path::Path) -> Key {
    let path = dir.join("data/root-access-key.json");
    for _ in 0..200 {
        if path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    read_root_key(&path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let conn = connect(port).await;
    let root = root_key(dir.path()).await;
    let client = conn.with_access_key(Some(&root)).unwrap();

    let applied = Arc::new(Mutex::new(Vec::<String>::new()));
    let revoked = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let attempted = Arc::new(Mutex::new(HashSet::<String>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let mut t = client.tokens();
        let applied = applied.clone();
        let revoked = revoked.clone();
        let attempted = attempted.clone();
        tasks.spawn(async move {
            for i in 0.. {
                let Ok(r) = t
                    .apply_token(ApplyTokenRequest {
                        instance_id: INSTANCE.into(),
                        actions: vec![1],
                        resources: vec!["a/#".into()],
                        expire_time: now_ms() + 3_600_000,
                    })
                    .await
                else {
                    return;
                };
                let token = r.into_inner().token;
                applied.lock().unwrap().push(token.clone());
                if i % 2 == 0 {
                    attempted.lock().unwrap().insert(token.clone());
                    let Ok(r) = t
                        .revoke_token(RevokeTokenRequest {
                            instance_id: INSTANCE.into(),
                            token: token.clone(),
                        })
                        .await
                    else {
                        return;
                    };
                    revoked
                        .lock()
                        .unwrap()
                        .push((token, r.into_inner().revision));
                }
            }
        });
    }
    // Let the load run, then kill -9 with calls in flight.
    while applied.lock().unwrap().len() < 400 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    while tasks.join_next().await.is_some() {}

    let applied = applied.lock().unwrap().clone();
    let revoked = revoked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(applied.len() >= 400 && !revoked.is_empty());

    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let client = connect(port).await.with_access_key(Some(&root)).unwrap();
    let mut t = client.tokens();
    let revoked_set: HashSet<&str> = revoked.iter().map(|(t, _)| t.as_str()).collect();
    for token in &applied {
        let valid = t
            .query_token(QueryTokenRequest {
                instance_id: INSTANCE.into(),
                token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .token_status;
        if revoked_set.contains(token.as_str()) {
            assert!(!valid, "an acknowledged revocation was lost");
        } else if !attempted.contains(token) {
            assert!(valid, "an acknowledged ApplyToken was lost");
        }
        // A revoke in flight at the kill may or may not have landed: either answer is right.
    }
    // Every acknowledged revision is still on the watch stream, gap-free.
    let mut w = client.revocations();
    let mut s = w
        .watch_revocations(WatchRevocationsRequest {
            start_mode: StartMode::Revision as i32,
            start_revision: 1,
            instance_ids: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let max_acked = revoked.iter().map(|(_, r)| *r).max().unwrap();
    let mut seen = 0;
    while seen < max_acked {
        match tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .message
        {
            Some(Message::Event(e)) => {
                seen += 1;
                assert_eq!(e.revision, seen, "revisions are gap-free after a crash");
            }
            _ => continue,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Mints one token of `client`'s key on `instance`: (token, handle).
async fn mint(client: &Client, instance: &str) -> (String, String) {
    let r = client
        .tokens()
        .apply_token(ApplyTokenRequest {
            instance_id: instance.into(),
            actions: vec![1],
            resources: vec!["a/#".into()],
            expire_time: now_ms() + 3_600_000,
        })
        .await
        .expect("ApplyToken")
        .into_inner();
    (r.token, r.token_handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_scope_revocations_survive_sigkill() {
    const I1: &str = "post-cn-crash-one";
    const I2: &str = "post-cn-crash-two";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let conn = connect(port).await;
    let root = root_key(dir.path()).await;
    let as_root = conn.with_access_key(Some(&root)).unwrap();
    let mut keys = Vec::new();
    for _ in 0..3 {
        let k = as_root
            .access_keys()
            .create_access_key(CreateAccessKeyRequest {
                instance_ids: vec![I1.into(), I2.into()],
                description: "crash".into(),
            })
            .await
            .unwrap()
            .into_inner();
        keys.push(Key::new(k.access_key_id, k.access_key_secret));
    }
    let [a, b, c] = [0, 1, 2].map(|i| conn.with_access_key(Some(&keys[i])).unwrap());
    // (instance, token, live after everything below)
    let mut expected: Vec<(&str, String, bool)> = Vec::new();
    let minted = |instance, count, client: &Client| {
        let client = client.clone();
        async move {
            let mut out = Vec::new();
            for _ in 0..count {
                out.push((instance, mint(&client, instance).await));
            }
            out
        }
    };
    let by_handle = minted(I1, 2, &b).await;
    let of_a_on_i1 = minted(I1, 3, &a).await;
    let of_a_on_i2 = minted(I2, 2, &a).await;
    let of_b_on_i2 = minted(I2, 2, &b).await;
    let of_c = minted(I1, 2, &c).await;
    let revoke = |instance: &'static str, scope| {
        let mut t = as_root.tokens();
        async move {
            t.revoke_tokens(RevokeTokensRequest {
                instance_id: instance.into(),
                scope: Some(scope),
            })
            .await
            .expect("RevokeTokens")
            .into_inner()
            .revision
        }
    };

    // One token by handle; a's tokens on I1; then a's newer token lives.
    assert!(revoke(I1, Scope::TokenHandle(by_handle[0].1 .1.clone())).await > 0);
    expected.push((I1, by_handle[0].1 .0.clone(), false));
    expected.push((I1, by_handle[1].1 .0.clone(), true));
    revoke(I1, Scope::AccessKeyId(keys[0].id.clone())).await;
    expected.extend(of_a_on_i1.iter().map(|(i, (t, _))| (*i, t.clone(), false)));
    let (a_after, _) = mint(&a, I1).await;
    expected.push((I1, a_after, true));
    // Every token of I2, then a newer one of I2 lives.
    revoke(I2, Scope::AllTokens(true)).await;
    expected.extend(of_a_on_i2.iter().map(|(i, (t, _))| (*i, t.clone(), false)));
    expected.extend(of_b_on_i2.iter().map(|(i, (t, _))| (*i, t.clone(), false)));
    let (b_after, _) = mint(&b, I2).await;
    expected.push((I2, b_after, true));
    // Deleting c revokes what c minted.
    as_root
        .access_keys()
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: keys[2].id.clone(),
        })
        .await
        .unwrap();
    expected.extend(of_c.iter().map(|(i, (t, _))| (*i, t.clone(), false)));

    // Every call above was acknowledged: kill -9 at once, restart, and check each token.
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let mut t = connect(port)
        .await
        .with_access_key(Some(&root))
        .unwrap()
        .tokens();
    for (instance, token, live) in &expected {
        let valid = t
            .query_token(QueryTokenRequest {
                instance_id: (*instance).into(),
                token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .token_status;
        assert_eq!(valid, *live, "{instance} {token}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
