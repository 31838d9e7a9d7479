//! The etcd store's client options against a real etcd: user and password (etcd
//! authentication on), and TLS with a client certificate (etcd with `--client-cert-auth`).
//! Without the right credentials the store refuses to open; with them it reads and writes.

#[path = "etcd_kit/mod.rs"]
mod etcd_kit;
mod production;

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use etcd_kit::EtcdCluster;
use mqtt_tokend::{
    core::revocation::{RevocationEvent, RevocationKind},
    store::{EtcdOptions, EtcdStore, Op, Store},
};
use production::Ca;

fn options(endpoints: Vec<String>) -> EtcdOptions {
    EtcdOptions {
        endpoints,
        prefix: etcd_kit::unique_prefix(),
        user: None,
        ca_file: None,
        client_cert: None,
        max_txn_ops: EtcdOptions::DEFAULT_MAX_TXN_OPS,
    }
}

/// One write and its read back: the store works over this connection.
async fn round_trip(store: &EtcdStore) {
    let event = RevocationEvent {
        revision: 1,
        kind: RevocationKind::AccessKeyDeleted,
        instance_id: None,
        token_fingerprint: String::new(),
        client_id: String::new(),
        key_id: "k".into(),
        reason: "test".into(),
        expire_ms: None,
        revoke_ms: 1,
        token_handle: String::new(),
    };
    let ticket = store
        .apply(vec![Op::AppendRevocation(event.clone())])
        .expect("apply");
    let report = store.flush().await.expect("flush");
    assert_eq!(report.failure, None);
    assert!(report.durable_through >= ticket);
    store.sync().await.expect("barrier");
    assert_eq!(store.revocations(1, 1).expect("read"), vec![event]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_on_only_the_right_password_opens_the_store() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let mut admin = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("admin connects");
    admin
        .user_add("root", "s3cret", None)
        .await
        .expect("root user");
    admin
        .user_grant_role("root", "root")
        .await
        .expect("root role");
    admin.auth_enable().await.expect("authentication on");

    let anonymous = EtcdStore::connect(&options(etcd.endpoints())).await;
    assert!(anonymous.is_err(), "no credentials, no store");
    let mut wrong = options(etcd.endpoints());
    wrong.user = Some(("root".into(), "wrong".into()));
    assert!(
        EtcdStore::connect(&wrong).await.is_err(),
        "a wrong password"
    );

    let mut right = options(etcd.endpoints());
    right.user = Some(("root".into(), "s3cret".into()));
    let store = EtcdStore::connect(&right)
        .await
        .expect("the right password");
    round_trip(&store).await;
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An etcd member serving clients over TLS only, requiring a client certificate.
struct TlsEtcd {
    child: Child,
    endpoint: String,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tls_etcd(dir: &std::path::Path, cert: &PathBuf, key: &PathBuf, ca: &PathBuf) -> TlsEtcd {
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("https://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(etcd_kit::etcd_binary().expect("etcd"))
        .args(["--name", "tls", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &endpoint])
        .args(["--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("tls={peer_url}")])
        .arg("--cert-file")
        .arg(cert)
        .arg("--key-file")
        .arg(key)
        .arg("--trusted-ca-file")
        .arg(ca)
        .arg("--client-cert-auth")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd starts");
    TlsEtcd { child, endpoint }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate_the_store_opens_and_without_one_it_does_not() {
    if etcd_kit::etcd_binary().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("etcd test CA");
    let (server, client) = (ca.server(), ca.client("mqtt-tokend"));
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write pem");
        path
    };
    let ca_file = write("ca.pem", &ca.pem());
    let (server_cert, server_key) = (
        write("server.pem", &server.cert),
        write("server.key", &server.key),
    );
    let (client_cert, client_key) = (
        write("client.pem", &client.cert),
        write("client.key", &client.key),
    );
    let etcd = start_tls_etcd(dir.path(), &server_cert, &server_key, &ca_file);

    let mut trusted = options(vec![etcd.endpoint.clone()]);
    trusted.ca_file = Some(ca_file.clone());
    trusted.client_cert = Some((client_cert, client_key));
    // etcd needs a moment to elect itself and listen.
    let mut store = None;
    for _ in 0..100 {
        if let Ok(s) = EtcdStore::connect(&trusted).await {
            store = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = store.expect("the store opens over mutual TLS");
    round_trip(&store).await;

    let mut no_client_cert = options(vec![etcd.endpoint.clone()]);
    no_client_cert.ca_file = Some(ca_file);
    assert!(
        EtcdStore::connect(&no_client_cert).await.is_err(),
        "etcd requires a client certificate"
    );
}
