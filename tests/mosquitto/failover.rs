//! Several service addresses (`plugin_opt_service_addr a,b`): CONNECT checks and the
//! revocation watch get past an address that refuses connections, one that accepts them and
//! never answers, and a server that stops; every CONNECT check within `timeout_ms`.
//!
//! Two sled servers do not share a log, so "the other replica" of the stopping server is the
//! same data directory served again on the second address: what a broker sees when its
//! replica stops and another one serves the shared log.

use std::time::{Duration, Instant};

use crate::{broker::mosquitto_binary, client::Mqtt, common::free_addr, setup_services, Setup};

/// The plugin's `timeout_ms` (tests/mosquitto/broker.rs).
const TIMEOUT: Duration = Duration::from_millis(2000);

/// A CONNECT with a valid token and one with a forged token: the first is let in and the
/// second refused by the service (not for want of an answer), each within the timeout.
/// Returns the connected client and its token.
async fn valid_and_forged(s: &Setup, id: &str) -> (Mqtt, String) {
    let token = s.token(&[&format!("fo/{id}/#")]).await;
    let started = Instant::now();
    let client = s
        .token_client(&format!("GID_failover@@@{id}"), &token)
        .await
        .expect("a valid token connects");
    let took = started.elapsed();
    assert!(took < TIMEOUT, "the CONNECT check took {took:?}");
    let forged = format!("{token}x");
    let bad = format!("GID_failover@@@{id}bad");
    let started = Instant::now();
    assert!(s.token_client(&bad, &forged).await.is_err(), "forged token");
    let took = started.elapsed();
    assert!(took < TIMEOUT, "the refusal took {took:?}");
    s.broker
        .wait_log(&format!("CONNECT of {bad} denied: TokenInvalid"))
        .await;
    (client, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_skips_a_service_address_that_refuses() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let s = setup_services(&binary, false, |grpc| vec![free_addr(), grpc]).await;
    let (mut a, token) = valid_and_forged(&s, "a").await;
    // The watch moved on too: a revocation kicks.
    s.revoke(&token).await;
    a.assert_kicked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_skips_a_service_address_that_never_answers() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    // Accepts TCP connections (the kernel's backlog) and never answers a byte.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_addr = hung.local_addr().expect("addr");
    let s = setup_services(&binary, false, |grpc| vec![hung_addr, grpc]).await;
    let (mut a, token) = valid_and_forged(&s, "h").await;
    s.revoke(&token).await;
    a.assert_kicked().await;
    drop(hung);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_follows_the_service_to_its_next_address() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let next = free_addr();
    let mut s = setup_services(&binary, false, |grpc| vec![grpc, next]).await;
    let (mut a, token_a) = valid_and_forged(&s, "a").await;
    let (mut b, token_b) = valid_and_forged(&s, "b").await;
    let token_c = s.token(&["fo/c/#"]).await;

    // The service stops; a revocation is made while it listens nowhere the plugin knows, and
    // then the same log is served on the plugin's second address.
    s.ts.stop().await;
    s.ts.config.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    s.ts.restart().await;
    s.revoke(&token_a).await;
    s.ts.stop().await;
    s.ts.config.grpc_addr = next.into();
    s.ts.restart().await;

    // The watch found the second address and resumed from its revision: A is kicked.
    a.assert_kicked().await;
    b.assert_alive().await;
    // CONNECT checks go there too, valid and forged alike.
    let started = Instant::now();
    let mut c = s
        .token_client("GID_failover@@@c", &token_c)
        .await
        .expect("connects through the second address");
    assert!(started.elapsed() < TIMEOUT);
    valid_and_forged(&s, "d").await;
    // And a revocation made there now kicks live.
    s.revoke(&token_b).await;
    b.assert_kicked().await;
    c.assert_alive().await;
}
