//! TLS for the gRPC and REST listeners (rustls): the certificate and key from PEM files,
//! optionally client certificates required and checked against a CA (mutual TLS), and a
//! reload that swaps the configuration new connections get while open connections (and
//! their watch streams) keep the one they were accepted with.
//!
//! A reload reads and checks every file before anything changes: bad files leave the old
//! certificate serving and return the error for the caller to log.
//!
//! Children: `listener` (the accept loop, tonic's incoming stream and axum's listener).

mod listener;

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use tokio_rustls::{
    rustls::{
        self,
        crypto::CryptoProvider,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
        server::WebPkiClientVerifier,
        RootCertStore, ServerConfig,
    },
    TlsAcceptor,
};

pub use listener::{TlsIncoming, TlsListener};

/// The files TLS is configured from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by a CA in this PEM file.
    pub client_ca: Option<PathBuf>,
}

/// Why TLS could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{what} {path}: {source}")]
    File {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file held no usable item.
    #[error("{what} {path}: {reason}")]
    Empty {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is missing.
        reason: &'static str,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA could not be used to verify clients.
    #[error("client CA {path}: {reason}")]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
}

/// Which listener a configuration is for: they differ only in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2 only (`h2`), which gRPC clients require.
    Grpc,
    /// REST: HTTP/1.1.
    Rest,
}

impl Protocol {
    /// The label of this listener in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Rest => "rest",
        }
    }

    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Protocol::Grpc => vec![b"h2".to_vec()],
            Protocol::Rest => vec![b"http/1.1".to_vec()],
        }
    }
}

struct Configs {
    grpc: Arc<ServerConfig>,
    rest: Arc<ServerConfig>,
}

/// The current TLS configuration of both listeners, swappable by [`ServerTls::reload`].
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Configs>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    // Explicit, so the process-wide default (and whichever provider features other crates
    // enable) never matters.
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |source: io::Error| TlsError::File {
        what,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(io::Error::other(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(io::Error::other(e)))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            reason: "no CERTIFICATE block",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "TLS key",
            path: path.to_owned(),
            reason: "no PRIVATE KEY block",
        },
        other => TlsError::File {
            what: "TLS key",
            path: path.to_owned(),
            source: io::Error::other(other),
        },
    })
}

impl TlsFiles {
    /// Reads the files and builds one configuration per listener.
    fn load(&self) -> Result<Configs, TlsError> {
        let certs = read_certs("TLS certificate", &self.cert)?;
        let key = read_key(&self.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs("client CA", ca)? {
                    roots.add(cert).map_err(|e| TlsError::ClientCa {
                        path: ca.clone(),
                        reason: e.to_string(),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TlsError::ClientCa {
                            path: ca.clone(),
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let base = builder.with_single_cert(certs, key)?;
        let with_alpn = |protocol: Protocol| {
            let mut config = base.clone();
            config.alpn_protocols = protocol.alpn();
            Arc::new(config)
        };
        Ok(Configs {
            grpc: with_alpn(Protocol::Grpc),
            rest: with_alpn(Protocol::Rest),
        })
    }
}

impl ServerTls {
    /// Loads the files.
    ///
    /// # Errors
    /// A file is missing or malformed, or the key does not match the certificate.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let current = RwLock::new(files.load()?);
        Ok(Self { files, current })
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Reads the files again; on success new connections get the new configuration, on
    /// failure nothing changes.
    ///
    /// # Errors
    /// As [`ServerTls::load`]; the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = self.files.load()?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// An acceptor with the current configuration, for one new connection.
    pub fn acceptor(&self, protocol: Protocol) -> TlsAcceptor {
        let configs = self.current.read().unwrap_or_else(|p| p.into_inner());
        TlsAcceptor::from(match protocol {
            Protocol::Grpc => configs.grpc.clone(),
            Protocol::Rest => configs.rest.clone(),
        })
    }
}
