//! Kicks: at a token's expiry, exactly the clients of a revoked key scope, and the kick
//! latency benchmark.

use std::time::{Duration, Instant};

use mqtt_tokend::{
    core::broker::mqtt_password,
    proto::{revoke_tokens_request::Scope, RevokeTokensRequest},
};

use crate::{
    broker::mosquitto_binary,
    client::{mqtt, ok, Ev},
    common, setup, INSTANCE,
};

/// A token's grant ends at its expiry: the plugin kicks the client on the first broker tick
/// after it (`MOSQ_EVT_TICK`), leaves a client with a long-lived token alone, and the service
/// refuses the expired token on a new CONNECT. Tokens live at least 60 s, so this waits ~61 s;
/// it has its own service and broker and runs in parallel with the other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_kicks_at_token_expiry_and_refuses_expired_tokens() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let s = setup(&binary).await;
    let expire_ms = common::now_ms() + 61_000;
    let short = s.token_until(&["exp/x/#"], expire_ms).await;
    let long = s.token(&["exp/y/#"]).await;
    let mut x = s
        .token_client("GID_test@@@expx", &short)
        .await
        .expect("an unexpired token connects");
    let mut y = s
        .token_client("GID_test@@@expy", &long)
        .await
        .expect("a long-lived token connects");
    assert!(ok(&x.subscribe("exp/x/#").await));
    assert!(ok(&y.subscribe("exp/y/#").await));

    // Wait for X's disconnect: bounded by its expiry plus slack, failing if it comes early.
    const SLACK_MS: i64 = 2_000;
    let left = u64::try_from(expire_ms + SLACK_MS - common::now_ms()).unwrap_or(0);
    let closed_ms = tokio::time::timeout(Duration::from_millis(left), async {
        loop {
            match x.events.recv().await {
                Some(Ev::Closed(_)) | None => return common::now_ms(),
                Some(Ev::Publish(_) | Ev::SubAck(_)) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("X was not disconnected within {SLACK_MS} ms of its expiry"));
    assert!(
        closed_ms >= expire_ms,
        "X was disconnected {} ms before its expiry",
        expire_ms - closed_ms
    );
    eprintln!(
        "X disconnected {} ms after its token expired",
        closed_ms - expire_ms
    );
    s.broker.wait_log("kicked GID_test@@@expx").await;

    // Y, on a long-lived token, is untouched.
    y.assert_alive().await;
    y.publish("exp/y/1").await;
    loop {
        match y.next().await {
            Ev::Publish(topic) => {
                assert_eq!(topic, "exp/y/1");
                break;
            }
            Ev::SubAck(_) => {}
            Ev::Closed(e) => panic!("Y was disconnected: {e}"),
        }
    }

    // A fresh CONNECT with the expired token is refused by the service (CONNACK not authorised).
    let err = match s.token_client("GID_test@@@expx", &short).await {
        Ok(_) => panic!("an expired token connected"),
        Err(e) => e,
    };
    assert!(
        err.contains("NotAuthorized"),
        "expected CONNACK not authorised, got {err}"
    );
    s.broker
        .wait_log("CONNECT of GID_test@@@expx denied: TokenExpired")
        .await;
    y.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_kicks_exactly_the_clients_of_a_revoked_key_scope() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let s = setup(&binary).await;
    let key_b = s.ts.create_key(&[INSTANCE]).await;
    let hour = common::now_ms() + 3600 * 1000;
    // Three clients on tokens key A (`s.app`) minted, one on a token of key B; and one in
    // Signature mode with key A, whose key stays valid.
    let mut of_a = Vec::new();
    let mut a_tokens = Vec::new();
    for i in 0..3 {
        let token = s.token(&["scope/#"]).await;
        let c = s
            .token_client(&format!("GID_scope@@@a{i}"), &token)
            .await
            .expect("a token of key A connects");
        of_a.push(c);
        a_tokens.push(token);
    }
    let b_token = s.token_of(&key_b, &["scope/#"], hour).await;
    let mut of_b = mqtt(
        s.broker.port,
        "GID_scope@@@b0",
        &format!("Token|{}|{INSTANCE}", key_b.id),
        &format!("RW|{b_token}"),
    )
    .await
    .expect("a token of key B connects");
    let sig_id = "GID_scope@@@sig";
    let mut signature = mqtt(
        s.broker.port,
        sig_id,
        &format!("Signature|{}|{INSTANCE}", s.app.id),
        &mqtt_password(&s.app.secret, sig_id),
    )
    .await
    .expect("a Signature client of key A connects");
    for c in of_a.iter_mut().chain([&mut of_b, &mut signature]) {
        c.assert_alive().await;
    }

    // One call, one event: every session on a token of key A goes, and only those.
    let revision =
        s.ts.tokens(&s.ts.root)
            .revoke_tokens(RevokeTokensRequest {
                instance_id: INSTANCE.into(),
                scope: Some(Scope::AccessKeyId(s.app.id.clone())),
            })
            .await
            .expect("RevokeTokens")
            .into_inner()
            .revision;
    for c in &mut of_a {
        c.assert_kicked().await;
    }
    s.broker
        .wait_log(&format!(
            "revocation {revision} (RevokeTokens) ends 3 session(s)"
        ))
        .await;
    of_b.assert_alive().await;
    signature.assert_alive().await;

    // An old token of key A is refused; one key A mints now connects.
    let err = match s.token_client("GID_scope@@@a0", &a_tokens[0]).await {
        Ok(_) => panic!("a revoked token connected"),
        Err(e) => e,
    };
    assert!(err.contains("NotAuthorized"), "{err}");
    let fresh = s.token(&["scope/#"]).await;
    let mut again = s
        .token_client("GID_scope@@@a0", &fresh)
        .await
        .expect("a token minted after the revocation connects");
    again.assert_alive().await;
    of_b.assert_alive().await;
}

/// Kick latency: from RevokeToken returning to the client seeing the disconnect, 100 tries.
/// `cargo test --release --test mosquitto -- --ignored --nocapture kick_latency`
/// (set `KICK_BENCH_NO_WAKE=1` to run without `plugin_opt_wake_addr`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; prints figures"]
async fn kick_latency() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let s = setup(&binary).await;
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for i in 0..100 {
        let token = s.token(&["bench/#"]).await;
        let mut c = s
            .token_client(&format!("GID_bench@@@{i}"), &token)
            .await
            .expect("connects");
        s.revoke(&token).await;
        let rpc_done = Instant::now();
        c.assert_kicked().await;
        hist.record(rpc_done.elapsed().as_micros() as u64)
            .expect("record");
    }
    println!(
        "kick latency over {} tries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        hist.len(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
}
