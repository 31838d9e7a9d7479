//! The client crate's failover across several endpoints, against real servers: `connect`,
//! unary calls (plain and with `call_with_failover`) and the RevocationFollower skip an
//! endpoint that refuses connections, a hung endpoint costs only its share of the budget,
//! and a follower whose server shuts down moves to the next endpoint and resumes there after
//! its revision, with no gap and no duplicate.
//!
//! Replicas sharing one log need the etcd backend; on sled, "the same log at another address"
//! is the same data directory served again on the second endpoint's port, which is what a
//! broker sees when its replica stops and another one serves the shared log.

mod common;

use std::{net::SocketAddr, path::Path, time::Duration};

use common::{free_addr, revoke_one, revoke_with, TestServer};
use mqtt_tokend_client::{
    proto::ListAccessKeysRequest, ClientConfig, ConnectError, FollowItem, FollowerOptions,
    RevisionFile, RevocationFollower, WatchError,
};
use tokio::time::Instant;
use tonic::Code;

const A: &str = "post-cn-a";

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// A loopback endpoint nobody listens on: connections are refused at once.
fn refusing() -> String {
    url(free_addr())
}

fn live(ts: &TestServer) -> String {
    url(ts.server().grpc_addr())
}

/// A client of `endpoints` (comma-separated) with the root key, connecting on first use.
fn lazy(ts: &TestServer, endpoints: &str) -> mqtt_tokend_client::Client {
    ClientConfig::from_list(endpoints)
        .access_key(ts.root.clone())
        .connect_lazy()
        .expect("valid configuration")
}

fn list_keys() -> ListAccessKeysRequest {
    ListAccessKeysRequest::default()
}

#[tokio::test]
async fn connect_and_unary_calls_skip_an_endpoint_that_refuses() {
    let ts = TestServer::start().await;
    let (dead, live) = (refusing(), live(&ts));
    let client = ClientConfig::new([dead.clone(), live.clone()])
        .access_key(ts.root.clone())
        .connect()
        .await
        .expect("the second endpoint accepts");
    assert_eq!(client.endpoint(), live);
    revoke_with(&mut client.tokens(), A).await;

    // Lazily: the first plain call meets the refusing endpoint and fails (it is not
    // repeated: only the caller knows whether it may be), and moves the client on.
    let client = lazy(&ts, &format!("{dead},{live}"));
    assert_eq!(client.endpoint(), dead);
    let status = client
        .access_keys()
        .list_access_keys(list_keys())
        .await
        .expect_err("the refusing endpoint first");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(client.endpoint(), live, "moved on");
    let clone = client.clone();
    clone
        .access_keys()
        .list_access_keys(list_keys())
        .await
        .expect("clones share the move");

    // With call_with_failover, the first call already succeeds.
    let client = lazy(&ts, &format!("{dead},{live}"));
    client
        .call_with_failover(Duration::from_secs(2), |c| async move {
            c.access_keys().list_access_keys(list_keys()).await
        })
        .await
        .expect("answered by the second endpoint");
    assert_eq!(client.endpoint(), live);
}

#[tokio::test]
async fn errors_that_are_answers_are_not_failed_over() {
    let ts = TestServer::start().await;
    let (dead, live) = (refusing(), live(&ts));
    let client = ClientConfig::from_list(&format!("{live},{dead}"))
        .access_key(mqtt_tokend_client::AccessKey::new("MTAKnobody", "wrong"))
        .connect_lazy()
        .expect("valid configuration");
    let mut attempts = 0;
    let status = client
        .call_with_failover(Duration::from_secs(2), |c| {
            attempts += 1;
            async move { c.access_keys().list_access_keys(list_keys()).await }
        })
        .await
        .expect_err("an unknown key");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(attempts, 1, "a refusal by the service is its answer");
    assert_eq!(client.endpoint(), live);
}

#[tokio::test]
async fn every_endpoint_refusing_is_named() {
    let (a, b) = (refusing(), refusing());
    let err = ClientConfig::from_list(&format!("{a},{b}"))
        .connect()
        .await
        .expect_err("nobody listens");
    match err {
        ConnectError::Unreachable { endpoint, .. } => {
            assert!(endpoint.contains(&a) && endpoint.contains(&b), "{endpoint}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let client = ClientConfig::from_list(&format!("{a},{b}"))
        .connect_lazy()
        .expect("valid configuration");
    let mut attempts = 0;
    let status = client
        .call_with_failover(Duration::from_secs(2), |c| {
            attempts += 1;
            async move { c.access_keys().list_access_keys(list_keys()).await }
        })
        .await
        .expect_err("nobody listens");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(attempts, 2, "each endpoint once");
}

#[tokio::test]
async fn a_hung_endpoint_costs_only_its_share_of_the_budget() {
    let ts = TestServer::start().await;
    // Accepts TCP connections (the kernel's backlog) and never answers a byte.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung = url(hung.local_addr().unwrap());
    let client = lazy(&ts, &format!("{hung},{}", live(&ts)));
    let budget = Duration::from_secs(2);
    let started = Instant::now();
    client
        .call_with_failover(budget, |c| async move {
            c.access_keys().list_access_keys(list_keys()).await
        })
        .await
        .expect("answered by the second endpoint within the budget");
    let took = started.elapsed();
    assert!(
        took >= budget / 2 && took < budget,
        "the hung endpoint had half the budget, took {took:?}"
    );
    assert_eq!(client.endpoint(), live(&ts));
}

type Follower = RevocationFollower<RevisionFile>;

fn follower(client: &mqtt_tokend_client::Client, path: &Path) -> Follower {
    let options =
        FollowerOptions::default().backoff(Duration::from_millis(10), Duration::from_millis(100));
    RevocationFollower::new(client, RevisionFile::new(path), options)
}

/// The next item that is not a heartbeat.
async fn next(f: &mut Follower) -> FollowItem {
    common::next_follow_item(f).await
}

/// The next event's revision, through any reconnects.
async fn next_event(f: &mut Follower) -> u64 {
    loop {
        match next(f).await {
            FollowItem::Event(e) => return e.revision,
            FollowItem::Disconnected { .. } => {}
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_follower_skips_an_endpoint_that_refuses() {
    let ts = TestServer::start().await;
    let root = ts.root.clone();
    revoke_one(&ts, &root, A).await;
    let dir = tempfile::tempdir().unwrap();
    let client = lazy(&ts, &format!("{},{}", refusing(), live(&ts)));
    let mut f = follower(&client, &dir.path().join("revision"));
    match next(&mut f).await {
        FollowItem::Disconnected {
            error: WatchError::Status(s),
            ..
        } => assert_eq!(s.code(), Code::Unavailable),
        other => panic!("expected the refusing endpoint first, got {other:?}"),
    }
    assert_eq!(f.endpoint(), live(&ts), "the next attempt goes to the next");
    assert!(matches!(next(&mut f).await, FollowItem::SnapshotBegin(_)));
    assert_eq!(next_event(&mut f).await, 1);
    assert!(matches!(
        next(&mut f).await,
        FollowItem::SnapshotEnd { revision: 1 }
    ));
    let (r2, _) = revoke_one(&ts, &root, A).await;
    assert_eq!(next_event(&mut f).await, r2);
}

#[tokio::test]
async fn a_follower_whose_server_stops_resumes_on_the_next_endpoint() {
    let (first, second) = (free_addr(), free_addr());
    let mut ts = TestServer::start_with(|c| c.grpc_addr = first.into()).await;
    let root = ts.root.clone();
    let client = lazy(&ts, &format!("{},{}", url(first), url(second)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    let mut f = follower(&client, &path);
    assert!(matches!(next(&mut f).await, FollowItem::SnapshotBegin(_)));
    assert!(matches!(
        next(&mut f).await,
        FollowItem::SnapshotEnd { revision: 0 }
    ));
    let mut seen = vec![];
    for _ in 0..2 {
        revoke_with(&mut client.tokens(), A).await;
        seen.push(next_event(&mut f).await);
    }
    assert_eq!(f.endpoint(), url(first));

    // The first endpoint's server shuts down: its stream ends with UNAVAILABLE, and the
    // follower turns to the second endpoint.
    ts.stop().await;
    match next(&mut f).await {
        FollowItem::Disconnected {
            error: WatchError::Status(s),
            ..
        } => assert_eq!(s.code(), Code::Unavailable),
        other => panic!("expected the stream to end, got {other:?}"),
    }
    assert_eq!(f.endpoint(), url(second));
    // The log grows while no endpoint serves it (the server listening elsewhere), so the
    // follower can only get these by resuming from its revision; then the same log is served
    // on the second endpoint.
    ts.config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    ts.restart().await;
    revoke_one(&ts, &root, A).await;
    revoke_one(&ts, &root, A).await;
    ts.stop().await;
    ts.config.grpc_addr = second.into();
    ts.restart().await;

    while seen.len() < 4 {
        seen.push(next_event(&mut f).await);
    }
    assert_eq!(f.endpoint(), url(second));
    // The follower's stream made the second endpoint current for every clone of the client:
    // plain calls go there, although the first endpoint is down.
    let (r5, _) = revoke_with(&mut client.tokens(), A).await;
    seen.push(next_event(&mut f).await);
    assert_eq!(seen, vec![1, 2, 3, 4, r5], "every revision exactly once");
}
