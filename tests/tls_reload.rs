//! Certificate reload on SIGHUP, through the real binary: the server runs as a child process
//! with TLS, a watch stream is opened, the certificate files are replaced by ones from another
//! CA and the child gets a real SIGHUP. New connections then see the new certificate while the
//! open watch stream keeps delivering; a reload with a broken file keeps the certificate in
//! use. The test waits on the child's own log lines, never on a timer.

mod common;
mod production;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use common::{read_root_key, Key};
use mqtt_tokend::proto::{
    revocation_service_client::RevocationServiceClient, token_service_client::TokenServiceClient,
    watch_revocations_response::Message, ApplyTokenRequest, RevokeTokenRequest,
};
use production::{tls_channel, Ca, TlsDir};
use tokio::sync::mpsc;
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, ServerName},
        ClientConfig, RootCertStore,
    },
    TlsConnector,
};

const INSTANCE: &str = "post-cn-reload";
/// Upper bound on waiting for a log line or an event; reached only when something is broken.
const PATIENCE: Duration = Duration::from_secs(30);

struct ServerProcess {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl ServerProcess {
    fn spawn(dir: &std::path::Path, files: &TlsDir) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mqtt-tokend"))
            .args(["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "off"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--keyring")
            .arg(dir.join("keyring.json"))
            .arg("--tls-cert")
            .arg(&files.cert)
            .arg("--tls-key")
            .arg(&files.key)
            .args(["--log", "info"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("child: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next log line containing `needle`.
    async fn wait_for(&mut self, needle: &str) -> String {
        tokio::time::timeout(PATIENCE, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("the server exited before logging {needle:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no log line {needle:?} within {PATIENCE:?}"))
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill only sends a signal to our own child process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The leaf certificate a new connection to `addr` is shown (trusting both CAs, so the
/// handshake completes whichever one is served).
async fn presented_certificate(addr: SocketAddr, cas: &[&Ca]) -> Vec<u8> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (_, session) = tls.get_ref();
    session.peer_certificates().expect("a certificate")[0].to_vec()
}

fn grpc_addr(serving_line: &str) -> SocketAddr {
    serving_line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("grpc_addr="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no grpc_addr in {serving_line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_for_new_connections_and_keeps_watch_streams() {
    let dir = tempfile::tempdir().unwrap();
    let (first_ca, second_ca) = (Ca::new("first CA"), Ca::new("second CA"));
    let (first, second) = (first_ca.server(), second_ca.server());
    let files = TlsDir::write(dir.path(), &first_ca, &first);
    let mut child = ServerProcess::spawn(dir.path(), &files);
    let addr = grpc_addr(&child.wait_for("serving").await);
    let root: Key = read_root_key(&dir.path().join("data/root-access-key.json"));

    let old = tls_channel(addr, &first_ca.pem(), None)
        .await
        .expect("TLS with the first CA");
    let token = TokenServiceClient::with_interceptor(
        old.clone(),
        mqtt_tokend_client::BearerAuth::new(Some(&root)).expect("ascii key"),
    )
    .apply_token(ApplyTokenRequest {
        instance_id: INSTANCE.into(),
        actions: vec![1],
        resources: vec!["a/#".into()],
        expire_time: common::now_ms() + 3_600_000,
    })
    .await
    .expect("apply")
    .into_inner()
    .token;
    let mut watch = RevocationServiceClient::with_interceptor(
        old.clone(),
        mqtt_tokend_client::BearerAuth::new(Some(&root)).expect("ascii key"),
    )
    .watch_revocations(common::from_now())
    .await
    .expect("watch")
    .into_inner();
    assert_eq!(
        presented_certificate(addr, &[&first_ca, &second_ca]).await,
        first.der
    );

    files.replace(&second_ca, &second);
    child.signal(libc::SIGHUP);
    child.wait_for("reloaded the TLS certificates").await;

    assert_eq!(
        presented_certificate(addr, &[&first_ca, &second_ca]).await,
        second.der,
        "a new connection sees the new certificate"
    );
    assert!(
        tls_channel(addr, &first_ca.pem(), None).await.is_err(),
        "a new connection trusting only the old CA is refused"
    );
    let new = tls_channel(addr, &second_ca.pem(), None)
        .await
        .expect("TLS with the second CA");
    let revision = TokenServiceClient::with_interceptor(
        new,
        mqtt_tokend_client::BearerAuth::new(Some(&root)).expect("ascii key"),
    )
    .revoke_token(RevokeTokenRequest {
        instance_id: INSTANCE.into(),
        token,
    })
    .await
    .expect("revoke over the new connection")
    .into_inner()
    .revision;
    // The stream opened before the reload is still live and gets the revocation.
    let event = tokio::time::timeout(PATIENCE, async {
        loop {
            match watch
                .message()
                .await
                .expect("stream open")
                .expect("not ended")
                .message
            {
                Some(Message::Event(e)) => return e,
                _ => continue,
            }
        }
    })
    .await
    .expect("the event arrives");
    assert_eq!(event.revision, revision);

    // A broken file: the reload fails, the certificate in use stays.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    child.signal(libc::SIGHUP);
    child
        .wait_for("reloading the TLS certificates failed")
        .await;
    assert_eq!(
        presented_certificate(addr, &[&first_ca, &second_ca]).await,
        second.der,
        "a failed reload keeps the certificate"
    );

    child.signal(libc::SIGTERM);
    child.wait_for("stopped").await;
}
