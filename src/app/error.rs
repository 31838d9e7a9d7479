//! What can stop the service from starting or stopping, with hints for the common causes.

use std::path::PathBuf;

use crate::config::HostPort;

/// A failure to start or stop the service.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The keyring could not be loaded or created.
    #[error(transparent)]
    Keyring(#[from] crate::core::keyring::KeyringError),
    /// The store could not be opened.
    #[error("opening the store in {dir}: {source}")]
    Store {
        /// The data directory, or for etcd its endpoints and prefix.
        dir: PathBuf,
        /// The cause.
        source: crate::store::StoreError,
    },
    /// Another server (process or in-process instance) has the data directory open.
    #[error("another mqtt-tokend is running on {dir} (the lock is held): stop it first, or give this one another --data-dir")]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// The keyring file is missing although the data directory was created with one.
    #[error("the keyring {path} does not exist, but the data directory {dir} was created with a keyring: point --keyring (MQTT_TOKEND_KEYRING) at that file; a new keyring would make every token and secret invalid")]
    KeyringMissing {
        /// The keyring path given.
        path: PathBuf,
        /// The data directory.
        dir: PathBuf,
    },
    /// The keyring is not the one the data directory was created with.
    #[error("the keyring {path} does not match the data directory {dir} (key {key}): every token and secret would be invalid; point --keyring at the right file")]
    KeyringMismatch {
        /// The keyring file.
        path: PathBuf,
        /// The data directory.
        dir: PathBuf,
        /// Which check failed.
        key: String,
    },
    /// A flag is missing or contradicts another.
    #[error("{0}")]
    Config(String),
    /// The core failed to start.
    #[error("starting the core: {0}")]
    Core(#[from] crate::core::Error),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A listen address could not be bound.
    #[error("binding {what} on {addr}: {source}{}", bind_hint(source, flag))]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address as given.
        addr: String,
        /// The flag that sets it, for the hint.
        flag: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A server task panicked or was cancelled.
    #[error("server task: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The TLS files could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

pub(super) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AppError {
    let what = what.into();
    move |source| AppError::Io { what, source }
}

pub(super) fn bind_error(
    what: &'static str,
    addr: &HostPort,
    flag: &'static str,
) -> impl FnOnce(std::io::Error) -> AppError {
    let addr = addr.to_string();
    move |source| AppError::Bind {
        what,
        addr,
        flag,
        source,
    }
}

/// What to do about a listen address that cannot be bound, for its common causes.
fn bind_hint(err: &std::io::Error, flag: &str) -> String {
    match err.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!("; another process (another mqtt-tokend?) listens there: stop it, or pass another {flag}")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("; ports below 1024 need privileges: pass another {flag}")
        }
        _ => String::new(),
    }
}
