//! Support for the production-transport tests (TLS, metrics, audit): certificates made at test
//! time with rcgen, TLS gRPC channels, the Python venv, and a V1-signed REST call.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate with its key, PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
    /// The certificate, DER, to compare with what a server presents.
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, sans: Vec<String>, name: &str, usage: ExtendedKeyUsagePurpose) -> Pair {
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for `127.0.0.1` (subjectAltName IP) and `localhost`.
    pub fn server(&self) -> Pair {
        self.issue(
            vec!["127.0.0.1".into(), "localhost".into()],
            "mqtt-tokend test server",
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Pair {
        self.issue(Vec::new(), name, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Files of a server's TLS set-up, in `dir`.
pub struct TlsDir {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsDir {
    /// Writes the server pair and the CA (also used as the client CA) into `dir`.
    pub fn write(dir: &Path, ca: &Ca, server: &Pair) -> Self {
        let files = Self {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            ca: dir.join("ca.pem"),
        };
        files.replace(ca, server);
        files
    }

    /// Overwrites the files (a certificate renewal).
    pub fn replace(&self, ca: &Ca, server: &Pair) {
        std::fs::write(&self.cert, &server.cert).expect("write cert");
        std::fs::write(&self.key, &server.key).expect("write key");
        std::fs::write(&self.ca, ca.pem()).expect("write ca");
    }
}

/// A channel over TLS to `addr`, trusting `ca_pem`, optionally presenting a client pair.
pub async fn tls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<&Pair>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(pair) = client {
        tls = tls.identity(Identity::from_pem(&pair.cert, &pair.key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The SDK venv's python (tests/sdk/setup.sh, idempotent), or None when
/// `MQTT_TOKEND_SKIP_SDK` is set.
pub fn venv_python() -> Option<PathBuf> {
    if std::env::var_os("MQTT_TOKEND_SKIP_SDK").is_some() {
        eprintln!("MQTT_TOKEND_SKIP_SDK is set: skipping the Python part");
        return None;
    }
    let venv = repo().join("target").join("sdk-venv");
    let status = Command::new("bash")
        .arg(repo().join("tests/sdk/setup.sh"))
        .arg(&venv)
        .status()
        .expect("run tests/sdk/setup.sh (bash must be installed)");
    assert!(status.success(), "tests/sdk/setup.sh failed ({status})");
    Some(venv.join("bin").join("python"))
}

/// grpcurl from scripts/install-tools.sh, or None (a skip) when it is missing outside CI.
pub fn grpcurl() -> Option<PathBuf> {
    let path = repo().join("target/tools/grpcurl");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "target/tools/grpcurl is missing: run scripts/install-tools.sh"
    );
    eprintln!("SKIPPED the grpcurl part: run scripts/install-tools.sh");
    None
}

pub fn script(name: &str) -> PathBuf {
    repo().join("tests/sdk").join(name)
}

/// A V1-signed REST query string (the legacy SDK's scheme), with a fresh nonce.
pub fn v1_query(key_id: &str, secret: &str, action: &str, business: &[(&str, &str)]) -> String {
    use mqtt_tokend::rest::signature;
    let mut params: Vec<(String, String)> = business
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in [
        ("Action", action),
        ("Version", "2020-04-20"),
        ("Format", "JSON"),
        ("AccessKeyId", key_id),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
    ] {
        params.push((k.into(), v.into()));
    }
    params.push(("SignatureNonce".into(), uuid::Uuid::new_v4().to_string()));
    params.push((
        "Timestamp".into(),
        signature::format_timestamp_ms(mqtt_tokend::core::now_ms()),
    ));
    let sts = signature::v1_string_to_sign("POST", &params);
    params.push(("Signature".into(), signature::v1_signature(secret, &sts)));
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &params {
        s.append_pair(k, v);
    }
    s.finish()
}
