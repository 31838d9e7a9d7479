//! TLS and mutual TLS on both listeners, with real clients: tonic over TLS, grpcurl with
//! `-cacert` (and `-cert`/`-key`), the official V3 Python SDK over https; plaintext clients,
//! clients trusting another CA, and (with `--tls-client-ca`) clients without a certificate or
//! with one from another CA are refused. Certificates are made at test time with rcgen.

mod common;
mod production;

use std::process::Command;

use common::{read_root_key, test_config, Key};
use mqtt_tokend::{
    app::Server,
    config::ServeConfig,
    proto::{token_service_client::TokenServiceClient, ApplyTokenRequest, QueryTokenRequest},
};
use production::{grpcurl, script, tls_channel, venv_python, Ca, Pair, TlsDir};
use tonic::transport::Channel;

const INSTANCE: &str = "post-cn-tls";

async fn start(dir: &tempfile::TempDir, files: &TlsDir, mutual: bool) -> (Server, ServeConfig) {
    let mut config = test_config(dir);
    config.tls.tls_cert = Some(files.cert.clone());
    config.tls.tls_key = Some(files.key.clone());
    config.tls.tls_client_ca = mutual.then(|| files.ca.clone());
    config.observe.audit_log = Some(
        dir.path()
            .join("audit.log")
            .to_str()
            .expect("utf-8 path")
            .parse()
            .expect("destination"),
    );
    let server = Server::start(config.clone())
        .await
        .expect("TLS server starts");
    (server, config)
}

/// ApplyToken then QueryToken over `channel`: the token is valid.
async fn round_trip(channel: Channel, key: &Key) -> Result<(), tonic::Status> {
    let mut tokens = TokenServiceClient::with_interceptor(
        channel,
        mqtt_tokend_client::BearerAuth::new(Some(key)).expect("ascii key"),
    );
    let token = tokens
        .apply_token(ApplyTokenRequest {
            instance_id: INSTANCE.into(),
            actions: vec![1, 2],
            resources: vec!["devices/#".into()],
            expire_time: common::now_ms() + 3_600_000,
        })
        .await?
        .into_inner()
        .token;
    let valid = tokens
        .query_token(QueryTokenRequest {
            instance_id: INSTANCE.into(),
            token,
        })
        .await?
        .into_inner()
        .token_status;
    assert!(valid);
    Ok(())
}

/// Whether a client with this set-up gets a call through.
async fn gets_through(
    addr: std::net::SocketAddr,
    ca: &str,
    client: Option<&Pair>,
    key: &Key,
) -> bool {
    match tls_channel(addr, ca, client).await {
        Ok(channel) => round_trip(channel, key).await.is_ok(),
        Err(_) => false,
    }
}

fn grpcurl_query(
    grpcurl: &std::path::Path,
    addr: std::net::SocketAddr,
    key: &Key,
    tls_args: &[&std::path::Path],
    flags: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(grpcurl);
    for (flag, path) in flags.iter().zip(tls_args) {
        cmd.arg(flag).arg(path);
    }
    cmd.args([
        "-H",
        &format!("authorization: Bearer {}:{}", key.id, key.secret),
        "-d",
        &format!("{{\"instance_id\":\"{INSTANCE}\",\"token\":\"1.x.y\"}}"),
        &addr.to_string(),
        "mqtt.token.v1.TokenService/QueryToken",
    ])
    .output()
    .expect("run grpcurl")
}

/// Runs tests/sdk/https.py against the REST listener.
fn python_https(
    rest: std::net::SocketAddr,
    key: &Key,
    ca: &std::path::Path,
    other_ca: &std::path::Path,
    client_cert: Option<&std::path::Path>,
) {
    let Some(python) = venv_python() else {
        return;
    };
    let mut cmd = Command::new(python);
    cmd.arg(script("https.py"))
        .env("MQTT_TOKEND_ENDPOINT", rest.to_string())
        .env("MQTT_TOKEND_AK_ID", &key.id)
        .env("MQTT_TOKEND_AK_SECRET", &key.secret)
        .env("MQTT_TOKEND_INSTANCE", INSTANCE)
        .env("MQTT_TOKEND_CA", ca)
        .env("MQTT_TOKEND_OTHER_CA", other_ca);
    if let Some(cert) = client_cert {
        cmd.env("MQTT_TOKEND_CLIENT_CERT", cert);
    }
    let out = cmd.output().expect("run https.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all passed"),
        "https.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_trusting_clients_and_refuses_plaintext_and_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("test CA"), Ca::new("other CA"));
    let files = TlsDir::write(dir.path(), &ca, &ca.server());
    let other_ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca_file, other.pem()).unwrap();
    let (server, config) = start(&dir, &files, false).await;
    let root = read_root_key(&config.root_key_path());
    let addr = server.grpc_addr();

    assert!(
        gets_through(addr, &ca.pem(), None, &root).await,
        "tonic over TLS"
    );
    assert!(
        !gets_through(addr, &other.pem(), None, &root).await,
        "a client trusting another CA must be refused"
    );
    // Plaintext HTTP/2 to a TLS listener: the handshake fails, so does the call.
    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(
            round_trip(channel, &root).await.is_err(),
            "plaintext call went through"
        );
    }

    // The source address still reaches the audit line over TLS.
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let line: serde_json::Value =
        serde_json::from_str(audit.lines().next().expect("an ApplyToken line")).unwrap();
    assert_eq!(line["operation"], "ApplyToken");
    assert!(
        line["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{line}"
    );

    if let Some(grpcurl) = grpcurl() {
        let ok = grpcurl_query(&grpcurl, addr, &root, &[&files.ca], &["-cacert"]);
        assert!(
            ok.status.success(),
            "grpcurl -cacert: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert!(String::from_utf8_lossy(&ok.stdout).contains("requestId"));
        let stranger = grpcurl_query(&grpcurl, addr, &root, &[&other_ca_file], &["-cacert"]);
        assert!(!stranger.status.success(), "grpcurl trusting another CA");
    }

    let rest = server.http_addr().expect("REST on");
    let key = Key {
        id: root.id.clone(),
        secret: root.secret.clone(),
    };
    let ca_file = files.ca.clone();
    tokio::task::spawn_blocking(move || python_https(rest, &key, &ca_file, &other_ca_file, None))
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("test CA"), Ca::new("other CA"));
    let files = TlsDir::write(dir.path(), &ca, &ca.server());
    let (server, config) = start(&dir, &files, true).await;
    let root = read_root_key(&config.root_key_path());
    let addr = server.grpc_addr();
    let good = ca.client("broker-1");
    let stranger = other.client("broker-2");

    assert!(
        !gets_through(addr, &ca.pem(), None, &root).await,
        "a client without a certificate must be refused"
    );
    assert!(
        !gets_through(addr, &ca.pem(), Some(&stranger), &root).await,
        "a certificate from another CA must be refused"
    );
    assert!(
        gets_through(addr, &ca.pem(), Some(&good), &root).await,
        "a certificate from the client CA gets through"
    );

    let client_cert = dir.path().join("client.pem");
    let client_key = dir.path().join("client.key");
    std::fs::write(&client_cert, &good.cert).unwrap();
    std::fs::write(&client_key, &good.key).unwrap();
    if let Some(grpcurl) = grpcurl() {
        let ok = grpcurl_query(
            &grpcurl,
            addr,
            &root,
            &[&files.ca, &client_cert, &client_key],
            &["-cacert", "-cert", "-key"],
        );
        assert!(
            ok.status.success(),
            "grpcurl with a client certificate: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let without = grpcurl_query(&grpcurl, addr, &root, &[&files.ca], &["-cacert"]);
        assert!(
            !without.status.success(),
            "grpcurl without a client certificate"
        );
    }

    // The Python SDK takes the client certificate and key as one PEM file.
    let combined = dir.path().join("client-combined.pem");
    std::fs::write(&combined, format!("{}{}", good.cert, good.key)).unwrap();
    let other_ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca_file, other.pem()).unwrap();
    let rest = server.http_addr().expect("REST on");
    let ca_file = files.ca.clone();
    tokio::task::spawn_blocking(move || {
        python_https(rest, &root, &ca_file, &other_ca_file, Some(&combined))
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_tls_files_stop_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let files = TlsDir::write(dir.path(), &ca, &ca.server());
    std::fs::write(&files.key, "not a key").unwrap();
    let mut config = test_config(&dir);
    config.tls.tls_cert = Some(files.cert.clone());
    config.tls.tls_key = Some(files.key.clone());
    let err = Server::start(config)
        .await
        .expect_err("a bad key must stop the start");
    assert!(err.to_string().contains("server.key"), "{err}");
}
