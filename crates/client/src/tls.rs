//! TLS and mutual TLS for `https://` endpoints: which CAs to trust, which certificate to
//! present, which name to check.
//!
//! Guarantees:
//! - Every PEM input is parsed when the client is built, so a missing file, a file with no
//!   certificate or key, or a certificate that is not X.509 is an error naming the file, never
//!   an empty trust store that fails later with "unknown issuer".
//! - Without a CA, an `https://` endpoint is checked against the operating system's trust
//!   store (`rustls-native-certs`: `/etc/ssl/certs` and friends, `SSL_CERT_FILE`), the way curl
//!   and grpcurl behave without `--cacert`. A server certificate from a private CA therefore
//!   needs [`ClientTls::ca_file`] (or the CA installed system-wide).
//! - `Debug` of a [`ClientTls`] shows file paths and byte counts, never key material.

use std::{fmt, path::PathBuf};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    RootCertStore,
};
use tonic::transport::{ClientTlsConfig, Identity};

/// Where a PEM document comes from. Files are read each time the client is built, so a
/// renewed certificate is picked up by the next connection a process makes.
#[derive(Clone)]
pub enum Pem {
    /// A file; errors name it.
    File(PathBuf),
    /// The document itself (e.g. from a secret store); errors call it "in memory".
    Bytes(Vec<u8>),
}

impl fmt::Debug for Pem {
    /// The path, or only the size: the bytes may be a private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Bytes(bytes) => write!(f, "Bytes(<{} bytes>)", bytes.len()),
        }
    }
}

impl fmt::Display for Pem {
    /// How errors name the source: the path, or `(in memory)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => path.display().fmt(f),
            Self::Bytes(_) => f.write_str("(in memory)"),
        }
    }
}

impl Pem {
    fn read(&self, what: &'static str) -> Result<Vec<u8>, TlsError> {
        match self {
            Self::File(path) => std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.clone(),
                source,
            }),
            Self::Bytes(bytes) => Ok(bytes.clone()),
        }
    }
}

/// A TLS input that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("reading the {what} {}: {source}", path.display())]
    Read {
        /// Which input: `CA file`, `client certificate file`, `client key file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM document holds nothing usable.
    #[error("the {what} {origin} {reason}")]
    Invalid {
        /// Which input.
        what: &'static str,
        /// The file path, or `(in memory)`.
        origin: String,
        /// What is wrong, e.g. `holds no PEM certificate`.
        reason: String,
    },
    /// A client certificate was given without its key, or a key without its certificate.
    #[error("mutual TLS needs both a client certificate and its key; the {missing} is missing")]
    IncompleteIdentity {
        /// `client certificate` or `client key`.
        missing: &'static str,
    },
}

const CA: &str = "CA file";
const CERT: &str = "client certificate file";
const KEY: &str = "client key file";

/// How to speak TLS to an `https://` endpoint. Built with [`ClientTls::new`] (or
/// [`ClientTls::from_files`]) and the chained setters, and handed to
/// [`crate::ClientConfig::tls`].
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    ca: Option<Pem>,
    identity: Option<(Pem, Pem)>,
    domain_name: Option<String>,
}

impl ClientTls {
    /// Server certificates checked against the system's trust store; no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// The TLS options of a program's `--ca-file`, `--cert-file` and `--key-file` (or the
    /// Mosquitto plugin's `plugin_opt_*_file`): `None` when none is set, so the endpoint's
    /// scheme alone decides.
    ///
    /// # Errors
    /// `IncompleteIdentity`: a certificate without a key or a key without a certificate.
    pub fn from_files(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<Self>, TlsError> {
        if ca.is_none() && cert.is_none() && key.is_none() {
            return Ok(None);
        }
        let mut tls = Self::new();
        if let Some(ca) = ca {
            tls = tls.ca_file(ca);
        }
        match (cert, key) {
            (Some(cert), Some(key)) => tls = tls.identity_files(cert, key),
            (Some(_), None) => {
                return Err(TlsError::IncompleteIdentity {
                    missing: "client key",
                })
            }
            (None, Some(_)) => {
                return Err(TlsError::IncompleteIdentity {
                    missing: "client certificate",
                })
            }
            (None, None) => {}
        }
        Ok(Some(tls))
    }

    /// Trust only the CA certificates in this PEM file (one or more), instead of the system's.
    pub fn ca_file(self, path: impl Into<PathBuf>) -> Self {
        self.ca(Pem::File(path.into()))
    }

    /// Trust only the CA certificates in this PEM document, instead of the system's.
    pub fn ca_pem(self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca(Pem::Bytes(pem.into()))
    }

    /// Trust only the CA certificates of `pem`, instead of the system's.
    pub fn ca(mut self, pem: Pem) -> Self {
        self.ca = Some(pem);
        self
    }

    /// Present this certificate chain (PEM, leaf first) and key (PEM, PKCS#8, PKCS#1 or SEC1)
    /// to a server that requires client certificates (mutual TLS).
    pub fn identity_files(self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity(Pem::File(cert.into()), Pem::File(key.into()))
    }

    /// Present this certificate chain and key, given as PEM documents (mutual TLS).
    pub fn identity_pem(self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity(Pem::Bytes(cert.into()), Pem::Bytes(key.into()))
    }

    /// Present the certificate chain of `cert` with the key of `key` (mutual TLS).
    pub fn identity(mut self, cert: Pem, key: Pem) -> Self {
        self.identity = Some((cert, key));
        self
    }

    /// Check the server's certificate for this name instead of the endpoint's host: for
    /// connecting by address to a server whose certificate names only its DNS name.
    pub fn domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }

    /// Reads and checks every input and builds tonic's configuration.
    ///
    /// # Errors
    /// A file cannot be read or holds nothing usable; the error names it.
    pub(crate) fn load(&self) -> Result<ClientTlsConfig, TlsError> {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.trust_anchors(trust_anchors(ca)?.roots),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            let cert_pem = cert.read(CERT)?;
            if certificates(&cert_pem, cert, CERT)?.is_empty() {
                return Err(invalid(CERT, cert, "holds no PEM certificate"));
            }
            let key_pem = key.read(KEY)?;
            PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| invalid(KEY, key, format!("holds no usable PEM private key ({e})")))?;
            config = config.identity(Identity::from_pem(cert_pem, key_pem));
        }
        if let Some(name) = &self.domain_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

fn invalid(what: &'static str, origin: &Pem, reason: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        what,
        origin: origin.to_string(),
        reason: reason.into(),
    }
}

/// Every certificate of a PEM document (other blocks, such as a key, are skipped).
fn certificates(
    pem: &[u8],
    origin: &Pem,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, origin, format!("is not valid PEM ({e})")))
}

/// The CA file's certificates as trust anchors; each must be X.509.
fn trust_anchors(ca: &Pem) -> Result<RootCertStore, TlsError> {
    let certs = certificates(&ca.read(CA)?, ca, CA)?;
    if certs.is_empty() {
        return Err(invalid(CA, ca, "holds no PEM certificate"));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            invalid(
                CA,
                ca,
                format!("holds a certificate rustls cannot use ({e})"),
            )
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PEM block of valid base64 whose content is not a certificate.
    const NOT_X509: &str = "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n";

    #[test]
    fn bad_inputs_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing-ca.pem");
        let err = ClientTls::new().ca_file(&missing).load().unwrap_err();
        assert!(matches!(err, TlsError::Read { what: CA, .. }), "{err:?}");
        assert!(err.to_string().contains("missing-ca.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here").expect("write");
        let err = ClientTls::new().ca_file(&empty).load().unwrap_err();
        assert!(
            err.to_string().contains("empty.pem") && err.to_string().contains("no PEM"),
            "{err}"
        );

        let err = ClientTls::new().ca_pem(NOT_X509).load().unwrap_err();
        assert!(err.to_string().contains("(in memory)"), "{err}");

        let err = ClientTls::new()
            .identity_files(&empty, &missing)
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("client certificate file"), "{err}");
    }

    #[test]
    fn half_an_identity_is_refused_and_nothing_is_none() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert!(matches!(ClientTls::from_files(None, None, None), Ok(None)));
        assert!(matches!(
            ClientTls::from_files(None, p("c.pem"), None),
            Err(TlsError::IncompleteIdentity {
                missing: "client key"
            })
        ));
        assert!(matches!(
            ClientTls::from_files(p("ca.pem"), None, p("k.pem")),
            Err(TlsError::IncompleteIdentity {
                missing: "client certificate"
            })
        ));
        assert!(matches!(
            ClientTls::from_files(p("ca.pem"), None, None),
            Ok(Some(_))
        ));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let tls = ClientTls::new().identity_pem("CERT", "PRIVATE-KEY-BYTES");
        let shown = format!("{tls:?}");
        assert!(!shown.contains("PRIVATE-KEY-BYTES"), "{shown}");
        assert!(shown.contains("17 bytes"), "{shown}");
    }
}
