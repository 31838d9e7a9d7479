//! Our own clients over TLS and mutual TLS, against a real TLS server: the client crate's
//! `ClientConfig::connect` with a CA (file or bytes), a client certificate, a domain name
//! override, and the failures (another CA, the system's roots, no client certificate, one from
//! another CA, a missing file, TLS options on an http:// endpoint); and the `mqtt-tokend
//! access-key` command as a process of the built binary, with `--ca-file`, `--cert-file`,
//! `--key-file` and their `MQTT_TOKEND_*` variables. Certificates are made with rcgen.

mod common;
mod production;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::{read_root_key, test_config, Key};
use mqtt_tokend::{app::Server, config::ServeConfig, proto::ListAccessKeysRequest};
use mqtt_tokend_client::{ClientConfig, ClientTls, ConnectError, TlsError};
use production::{Ca, Pair, TlsDir};

/// A TLS server whose files live in `dir`; with `mutual`, clients need a certificate from
/// the same CA.
async fn start(dir: &tempfile::TempDir, ca: &Ca, mutual: bool) -> (Server, ServeConfig, TlsDir) {
    let files = TlsDir::write(dir.path(), ca, &ca.server());
    let mut config = test_config(dir);
    config.tls.tls_cert = Some(files.cert.clone());
    config.tls.tls_key = Some(files.key.clone());
    config.tls.tls_client_ca = mutual.then(|| files.ca.clone());
    let server = Server::start(config.clone())
        .await
        .expect("TLS server starts");
    (server, config, files)
}

/// Connects with `config` and lists the access keys: Ok when the call went through, else
/// the error, with its causes, as text.
async fn list_keys(config: ClientConfig) -> Result<(), String> {
    let client = config.connect().await.map_err(|e| chain(&e))?;
    client
        .access_keys()
        .list_access_keys(ListAccessKeysRequest {})
        .await
        .map(drop)
        .map_err(|status| format!("{status:?}"))
}

/// An error with all its causes, as a person reading the log would see them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn https(addr: SocketAddr, root: &Key, tls: ClientTls) -> ClientConfig {
    ClientConfig::new([format!("https://{addr}")])
        .access_key(root.clone())
        .tls(tls)
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write PEM");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_crate_connects_over_tls_and_refuses_what_it_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("test CA"), Ca::new("other CA"));
    let (server, config, files) = start(&dir, &ca, false).await;
    let root = read_root_key(&config.root_key_path());
    let addr = server.grpc_addr();

    list_keys(https(addr, &root, ClientTls::new().ca_file(&files.ca)))
        .await
        .expect("the CA from a file");
    list_keys(https(addr, &root, ClientTls::new().ca_pem(ca.pem())))
        .await
        .expect("the CA from memory");
    // The certificate names 127.0.0.1 and localhost: the override decides what is checked.
    list_keys(https(
        addr,
        &root,
        ClientTls::new().ca_pem(ca.pem()).domain_name("localhost"),
    ))
    .await
    .expect("a name the certificate holds");
    let err = list_keys(https(
        addr,
        &root,
        ClientTls::new()
            .ca_pem(ca.pem())
            .domain_name("tokend.elsewhere.example"),
    ))
    .await
    .expect_err("a name the certificate does not hold");
    assert!(err.contains("certificate"), "{err}");

    let err = list_keys(https(addr, &root, ClientTls::new().ca_pem(other.pem())))
        .await
        .expect_err("a client trusting another CA");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // No CA: the system's trust store, which does not hold the test CA.
    let system = ClientConfig::new([format!("https://{addr}")]).access_key(root.clone());
    let err = list_keys(system)
        .await
        .expect_err("the system's roots do not hold the test CA");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // Plaintext to the TLS listener never gets a call through.
    let plain = ClientConfig::new([format!("http://{addr}")]).access_key(root.clone());
    assert!(
        list_keys(plain).await.is_err(),
        "plaintext call went through"
    );
    // TLS options on an http:// endpoint are a configuration error, not a silent downgrade.
    let downgrade = ClientConfig::new([format!("http://{addr}")])
        .access_key(root.clone())
        .tls(ClientTls::new().ca_pem(ca.pem()));
    assert!(matches!(
        downgrade.connect().await,
        Err(ConnectError::TlsWithoutHttps { .. })
    ));

    // A missing or broken CA file is named, lazily built clients included.
    let missing = dir.path().join("no-such-ca.pem");
    let err = https(addr, &root, ClientTls::new().ca_file(&missing))
        .connect_lazy()
        .expect_err("missing CA file");
    assert!(
        matches!(err, ConnectError::Tls(TlsError::Read { .. }))
            && err.to_string().contains("no-such-ca.pem"),
        "{err}"
    );
    let broken = write(
        dir.path(),
        "broken-ca.pem",
        "-----BEGIN CERTIFICATE-----\n!!\n",
    );
    let err = https(addr, &root, ClientTls::new().ca_file(&broken))
        .connect()
        .await
        .expect_err("broken CA file");
    assert!(err.to_string().contains("broken-ca.pem"), "{err}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_crate_presents_its_certificate_for_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("test CA"), Ca::new("other CA"));
    let (server, config, files) = start(&dir, &ca, true).await;
    let root = read_root_key(&config.root_key_path());
    let addr = server.grpc_addr();
    let good = ca.client("broker-1");
    let cert = write(dir.path(), "client.pem", &good.cert);
    let key = write(dir.path(), "client.key", &good.key);

    list_keys(https(
        addr,
        &root,
        ClientTls::new()
            .ca_file(&files.ca)
            .identity_files(&cert, &key),
    ))
    .await
    .expect("a certificate from the client CA, from files");
    let from_files = ClientTls::from_files(Some(files.ca.clone()), Some(cert), Some(key))
        .expect("complete")
        .expect("set");
    list_keys(https(addr, &root, from_files))
        .await
        .expect("the same through ClientTls::from_files");
    let identity = |pair: &Pair| {
        ClientTls::new()
            .ca_pem(ca.pem())
            .identity_pem(pair.cert.clone(), pair.key.clone())
    };
    list_keys(https(addr, &root, identity(&good)))
        .await
        .expect("a certificate from the client CA, from memory");

    let err = list_keys(https(addr, &root, ClientTls::new().ca_pem(ca.pem())))
        .await
        .expect_err("no client certificate");
    // The server's alert (CertificateRequired) races the connection's close, so the text
    // varies; the key is good, so any failure is the TLS layer's.
    eprintln!("without a certificate: {err}");
    let err = list_keys(https(addr, &root, identity(&other.client("stranger"))))
        .await
        .expect_err("a certificate from another CA");
    eprintln!("with a stranger's certificate: {err}");
    let mismatched = ClientTls::new()
        .ca_pem(ca.pem())
        .identity_pem(good.cert.clone(), ca.client("another").key);
    let err = https(addr, &root, mismatched)
        .connect()
        .await
        .expect_err("a certificate with another certificate's key");
    assert!(
        matches!(err, ConnectError::TlsConfig { .. }) && chain(&err).contains("KeyMismatch"),
        "{err}"
    );
    let err = https(
        addr,
        &root,
        ClientTls::new()
            .ca_pem(ca.pem())
            .identity_pem(good.cert.clone(), "no key here"),
    )
    .connect()
    .await
    .expect_err("a key file without a key");
    assert!(err.to_string().contains("client key"), "{err}");
    server.shutdown().await.unwrap();
}

/// `mqtt-tokend <args>` with no `MQTT_TOKEND_*` variable of this process but `env`.
async fn cli(args: Vec<String>, env: Vec<(&'static str, PathBuf)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mqtt-tokend"));
        for (name, _) in std::env::vars() {
            if name.starts_with("MQTT_TOKEND_") {
                cmd.env_remove(name);
            }
        }
        cmd.args(args).envs(env).output().expect("run mqtt-tokend")
    })
    .await
    .expect("join")
}

fn args(list: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    list.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_keys_over_tls_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("test CA"), Ca::new("other CA"));
    let other_ca = write(dir.path(), "other-ca.pem", &other.pem());

    // TLS: --ca-file turns TLS on for a bare address.
    let tls_dir = tempfile::tempdir().unwrap();
    let (server, config, files) = start(&tls_dir, &ca, false).await;
    let addr = server.grpc_addr().to_string();
    let root_file = config.root_key_path();
    let base = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut a = args(&[
            &"access-key",
            &"list",
            &"--grpc-addr",
            &addr,
            &"--root-key-file",
            &root_file,
        ]);
        a.extend(args(extra));
        a
    };
    let out = cli(base(&[&"--ca-file", &files.ca]), vec![]).await;
    assert!(out.status.success(), "list over TLS: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"Root\":true"));
    let out = cli(base(&[&"--ca-file", &other_ca]), vec![]).await;
    assert!(!out.status.success(), "a CLI trusting another CA");
    assert!(stderr(&out).contains("UnknownIssuer"), "{}", stderr(&out));
    let out = cli(base(&[]), vec![]).await;
    assert!(!out.status.success(), "a plaintext CLI against TLS");
    let missing = dir.path().join("missing-ca.pem");
    let out = cli(base(&[&"--ca-file", &missing]), vec![]).await;
    assert!(!out.status.success(), "a missing CA file");
    assert!(stderr(&out).contains("missing-ca.pem"), "{}", stderr(&out));
    server.shutdown().await.unwrap();

    // Mutual TLS: the same commands need --cert-file and --key-file.
    let mtls_dir = tempfile::tempdir().unwrap();
    let (server, config, files) = start(&mtls_dir, &ca, true).await;
    let addr = server.grpc_addr();
    let root_file = config.root_key_path();
    let good = ca.client("operator");
    let cert = write(dir.path(), "operator.pem", &good.cert);
    let key = write(dir.path(), "operator.key", &good.key);
    let create = args(&[
        &"access-key",
        &"create",
        &"--instance",
        &"post-cn-tls",
        &"--grpc-addr",
        &format!("https://localhost:{}", addr.port()),
        &"--root-key-file",
        &root_file,
        &"--ca-file",
        &files.ca,
        &"--cert-file",
        &cert,
        &"--key-file",
        &key,
    ]);
    let out = cli(create, vec![]).await;
    assert!(out.status.success(), "create over mTLS: {}", stderr(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let id = created["AccessKeyId"].as_str().expect("an id").to_owned();

    // The variables do what the flags do.
    let list = args(&[
        &"access-key",
        &"list",
        &"--grpc-addr",
        &addr.to_string(),
        &"--root-key-file",
        &root_file,
    ]);
    let tls_env = vec![
        ("MQTT_TOKEND_CA_FILE", files.ca.clone()),
        ("MQTT_TOKEND_CERT_FILE", cert.clone()),
        ("MQTT_TOKEND_KEY_FILE", key.clone()),
    ];
    let out = cli(list.clone(), tls_env.clone()).await;
    assert!(out.status.success(), "list over mTLS: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));

    let out = cli(list.clone(), tls_env[..1].to_vec()).await;
    assert!(!out.status.success(), "a CLI without a client certificate");
    let stranger = other.client("stranger");
    let stranger_env = vec![
        ("MQTT_TOKEND_CA_FILE", files.ca.clone()),
        (
            "MQTT_TOKEND_CERT_FILE",
            write(dir.path(), "stranger.pem", &stranger.cert),
        ),
        (
            "MQTT_TOKEND_KEY_FILE",
            write(dir.path(), "stranger.key", &stranger.key),
        ),
    ];
    let out = cli(list.clone(), stranger_env).await;
    assert!(!out.status.success(), "a CLI with another CA's certificate");
    let out = cli(list, tls_env[..2].to_vec()).await;
    assert!(!out.status.success(), "a certificate without its key");
    assert!(stderr(&out).contains("--key-file"), "{}", stderr(&out));
    server.shutdown().await.unwrap();
}
