//! Replicas on a three-member etcd cluster under write load: `kill -9` of one replica, and
//! separately of one etcd member, loses no acknowledged token or revocation, and a watcher
//! whose replica died resumes on another from the same revision with no gap and no duplicate.
//! Real processes: the server binary and `etcd`.

mod common;
#[path = "etcd_kit/mod.rs"]
mod etcd_kit;

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{now_ms, read_root_key, Key};
use etcd_kit::EtcdCluster;
use mqtt_tokend_client::{
    proto::{ApplyTokenRequest, QueryTokenRequest, RevokeTokenRequest, TokenAction},
    Client,
};

const INSTANCE: &str = "post-cn-replicas";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A replica process, killed (and reaped) when dropped, also when a test fails.
struct Replica(Child);

impl Replica {
    /// `kill -9`, and waits until it is gone.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One replica process on the shared prefix, its own data directory, the shared keyring.
fn spawn(dir: &std::path::Path, name: &str, port: u16, endpoints: &str, prefix: &str) -> Replica {
    let child = Command::new(env!("CARGO_BIN_EXE_mqtt-tokend"))
        .args(["serve", "--grpc-addr", &format!("127.0.0.1:{port}")])
        .args(["--http-addr", "off", "--store", "etcd"])
        .args(["--etcd-endpoints", endpoints, "--etcd-prefix", prefix])
        .arg("--data-dir")
        .arg(dir.join(name))
        .arg("--keyring")
        .arg(dir.join("keyring.json"))
        .args(["--rate-apply-token", "0", "--rate-query-token", "0"])
        .args(["--rate-revoke-token", "0", "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("server binary starts");
    Replica(child)
}

async fn connect(port: u16, key: &Key) -> Client {
    for _ in 0..400 {
        if let Ok(c) = mqtt_tokend_client::connect(&format!("http://127.0.0.1:{port}"), None).await
        {
            return c.with_access_key(Some(key)).expect("ascii key");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("replica did not come up on port {port}");
}

async fn root_key(dir: &std::path::Path, name: &str) -> Key {
    let path = dir.join(name).join("root-access-key.json");
    for _ in 0..400 {
        if path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    read_root_key(&path)
}

/// What the writers had acknowledged: tokens applied, and (token, revision) revoked; and the
/// tokens whose revoke failed, whose outcome is unknown (a transaction in flight when an etcd
/// member dies may still have been committed).
#[derive(Default)]
struct Acknowledged {
    applied: Vec<String>,
    revoked: Vec<(String, u64)>,
    unknown: std::collections::HashSet<String>,
}

/// Writers that apply and revoke through `clients` (round robin) until told to stop; a call
/// that fails (its replica or etcd member died) is simply not acknowledged.
fn start_writers(
    clients: Vec<Client>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acked: Arc<Mutex<Acknowledged>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..8)
        .map(|w| {
            let clients = clients.clone();
            let (stop, acked) = (stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let mut tokens = clients[i % clients.len()].tokens();
                    i += 1;
                    let Ok(applied) = tokens
                        .apply_token(ApplyTokenRequest {
                            instance_id: INSTANCE.into(),
                            actions: vec![TokenAction::Read as i32],
                            resources: vec!["a".into()],
                            expire_time: now_ms() + 3_600_000,
                        })
                        .await
                    else {
                        continue;
                    };
                    let token = applied.into_inner().token;
                    acked.lock().unwrap().applied.push(token.clone());
                    if i % 2 == 0 {
                        let revoked = tokens
                            .revoke_token(RevokeTokenRequest {
                                instance_id: INSTANCE.into(),
                                token: token.clone(),
                            })
                            .await;
                        let mut acked = acked.lock().unwrap();
                        match revoked {
                            Ok(r) => acked.revoked.push((token, r.into_inner().revision)),
                            Err(_) => {
                                acked.unknown.insert(token);
                            }
                        }
                    }
                }
            })
        })
        .collect()
}

/// The newest revision of the log: where a snapshot watch says its snapshot ends.
async fn newest_revision(client: &Client) -> u64 {
    use mqtt_tokend_client::proto::{
        watch_revocations_response::Message, StartMode, WatchRevocationsRequest,
    };
    let mut stream = client
        .revocations()
        .watch_revocations(WatchRevocationsRequest {
            start_mode: StartMode::Snapshot as i32,
            ..Default::default()
        })
        .await
        .expect("snapshot watch")
        .into_inner();
    loop {
        if let Some(Message::SnapshotEnd(end)) = common::next_message(&mut stream).await {
            return end.revision;
        }
    }
}

/// Every acknowledged token is known to `client` as it should be, and a watcher from
/// revision 1 sees every acknowledged revision, in order, gap-free. A token whose revoke had
/// an unknown outcome may be either, but if it is invalid its revocation is in the log.
async fn assert_nothing_lost(client: &Client, acked: &Acknowledged) {
    let revoked: std::collections::HashMap<_, _> = acked.revoked.iter().cloned().collect();
    let mut tokens = client.tokens();
    let mut revoked_without_ack = Vec::new();
    for token in &acked.applied {
        let valid = tokens
            .query_token(QueryTokenRequest {
                instance_id: INSTANCE.into(),
                token: token.clone(),
            })
            .await
            .expect("query")
            .into_inner()
            .token_status;
        if acked.unknown.contains(token) {
            if !valid {
                revoked_without_ack.push(mqtt_tokend_client::fingerprint(token));
            }
            continue;
        }
        assert_eq!(valid, !revoked.contains_key(token), "token state survives");
    }
    let last = acked.revoked.iter().map(|(_, r)| *r).max().unwrap_or(0);
    assert!(last > 0, "some revocations were acknowledged");
    let events = common::events_until(client, 1, last).await;
    let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
    assert_eq!(
        revisions,
        (1..=last).collect::<Vec<_>>(),
        "gap-free, in order"
    );
    let fingerprints: std::collections::HashSet<_> =
        events.into_iter().map(|e| e.token_fingerprint).collect();
    for (token, _) in &acked.revoked {
        assert!(
            fingerprints.contains(&mqtt_tokend_client::fingerprint(token)),
            "an acknowledged revocation is in the log"
        );
    }
    // A revoke that failed but took effect is a revocation like any other: in the log (up to
    // the newest revision, which may be past the last acknowledged one).
    if !revoked_without_ack.is_empty() {
        let all = common::events_until(client, 1, newest_revision(client).await).await;
        let logged: std::collections::HashSet<_> =
            all.into_iter().map(|e| e.token_fingerprint).collect();
        for fingerprint in &revoked_without_ack {
            assert!(
                logged.contains(fingerprint),
                "a token is invalid only because its revocation is in the log"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_replica_under_load_loses_nothing_and_its_watcher_resumes_elsewhere() {
    let Some(etcd) = EtcdCluster::start(3) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = etcd_kit::unique_prefix();
    let (pa, pb) = (free_port(), free_port());
    let mut a = spawn(dir.path(), "a", pa, &etcd.endpoints_csv(), &prefix);
    let root = root_key(dir.path(), "a").await;
    let ca = connect(pa, &root).await;
    let _b = spawn(dir.path(), "b", pb, &etcd.endpoints_csv(), &prefix);
    let cb = connect(pb, &root).await;

    // A watcher on A, which will die.
    let mut watch_a = common::watch_from(&ca, 1).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let writers = start_writers(vec![ca.clone(), cb.clone()], stop.clone(), acked.clone());
    // Let the load build, then kill A mid-write.
    let mut seen = Vec::new();
    while seen.len() < 20 {
        seen.push(common::next_event(&mut watch_a).await.revision);
    }
    a.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }

    // The watcher resumes on B from the revision after its last: no gap, no duplicate.
    let resume_from = seen.last().copied().unwrap_or(0) + 1;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let last = acked.revoked.iter().map(|(_, r)| *r).max().unwrap_or(0);
    if last >= resume_from {
        let resumed = common::events_until(&cb, resume_from, last).await;
        seen.extend(resumed.into_iter().map(|e| e.revision));
    }
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(
        seen, expected,
        "resumed on another replica, gap-free, no duplicate"
    );
    assert_nothing_lost(&cb, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_an_etcd_member_under_load_loses_nothing() {
    let Some(mut etcd) = EtcdCluster::start(3) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = etcd_kit::unique_prefix();
    let (pa, pb) = (free_port(), free_port());
    let _a = spawn(dir.path(), "a", pa, &etcd.endpoints_csv(), &prefix);
    let root = root_key(dir.path(), "a").await;
    let ca = connect(pa, &root).await;
    let _b = spawn(dir.path(), "b", pb, &etcd.endpoints_csv(), &prefix);
    let cb = connect(pb, &root).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let writers = start_writers(vec![ca.clone(), cb.clone()], stop.clone(), acked.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The kit blocks while it waits for a leader: off the async threads.
    tokio::task::block_in_place(|| {
        let leader = etcd.leader();
        etcd.kill(leader);
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert_nothing_lost(&ca, &acked).await;
    assert_nothing_lost(&cb, &acked).await;
}
