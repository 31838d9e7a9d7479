//! Opening the data directory: one server per directory, and the keyring checked against the
//! directory before any file is created.
//!
//! - A second server on the same directory fails at once with "another mqtt-tokend is running
//!   on DIR": the first holds an advisory lock (`flock`) on the directory itself for its whole
//!   life, so no lock file is left behind and the kernel releases the lock if it dies.
//! - The keyring is loaded, and created only when the data directory is new: a mistyped
//!   `--keyring` next to an existing directory is refused before a useless key file exists.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::DirBuilderExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{io, AppError};
use crate::{
    config::ServeConfig,
    core::{now_ms, Keyring},
    store::{EtcdStore, Op, SledStore, Store},
};

/// The data directory, opened: its lock, its store and the keyring that matches it.
pub(super) struct DataDir {
    /// Held until the server has closed the store.
    pub(super) lock: DirLock,
    pub(super) store: Arc<dyn Store>,
    /// Resolves once the sled store is closed (None for etcd: nothing local to close).
    pub(super) closed: Option<crate::store::StoreClosed>,
    pub(super) keyring: Keyring,
}

/// An exclusive advisory lock on a directory, released when dropped (or the process dies).
#[derive(Debug)]
pub(super) struct DirLock {
    // The lock lives as long as this descriptor is open.
    _file: File,
}

/// How long a start waits for a lock that another holder is releasing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl DirLock {
    /// [`DirLock::acquire`], waiting briefly while the lock is held: a descriptor of a server
    /// that just stopped in this process can outlive it for a moment in a child being
    /// spawned (between its fork and its exec), which holds the lock with it. Another running
    /// server holds it for good, and is reported after the wait.
    async fn acquire_soon(dir: &Path) -> Result<Self, AppError> {
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match Self::acquire(dir) {
                Err(AppError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    fn acquire(dir: &Path) -> Result<Self, AppError> {
        let file = File::open(dir).map_err(io(format!("opening {}", dir.display())))?;
        // SAFETY: flock only takes the lock on the open descriptor `file` owns; it touches no
        // memory.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Self { _file: file });
        }
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            return Err(AppError::Locked {
                dir: dir.to_owned(),
            });
        }
        Err(io(format!("locking {}", dir.display()))(err))
    }
}

/// Creates the data directory if needed, locks it, opens the store and loads the keyring
/// (creating it only for a new directory), then checks that the two belong together.
///
/// # Errors
/// Another server holds the directory, the keyring is missing or does not match, or a file
/// cannot be read or written.
pub(super) async fn open(config: &ServeConfig) -> Result<DataDir, AppError> {
    let dir = &config.data_dir;
    // The process umask is the binary's business (`main` makes it 0077); what must be private
    // whatever it is gets explicit modes: the keyring and the root key file are written 0600,
    // and a new data directory is 0700.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("creating {}", dir.display())))?;
    let lock = DirLock::acquire_soon(dir).await?;
    let store_err = |source| AppError::Store {
        dir: dir.clone(),
        source,
    };
    let etcd = config.store.etcd().map_err(AppError::Config)?;
    let (store, closed, place): (Arc<dyn Store>, _, _) = match &etcd {
        None => {
            let sled = Arc::new(SledStore::open(dir).map_err(store_err)?);
            let closed = sled.closed();
            (sled, Some(closed), dir.clone())
        }
        Some(options) => {
            let place = PathBuf::from(format!(
                "etcd prefix {} at {}",
                options.prefix,
                options.endpoints.join(",")
            ));
            let store = EtcdStore::connect(options)
                .await
                .map_err(|source| AppError::Store {
                    dir: place.clone(),
                    source,
                })?;
            (Arc::new(store), None, place)
        }
    };
    let store_err = |source| AppError::Store {
        dir: place.clone(),
        source,
    };
    let keyring = match Keyring::load(&config.keyring)? {
        Some(keyring) => keyring,
        // Every started directory has the root access key, so any key at all means this
        // directory was created with a keyring that is not at this path.
        None if !store.access_keys().map_err(store_err)?.is_empty() => {
            return Err(AppError::KeyringMissing {
                path: config.keyring.clone(),
                dir: place.clone(),
            })
        }
        None => {
            let keyring = Keyring::create(&config.keyring, now_ms())?;
            tracing::info!(path = %config.keyring.display(), "created a new keyring; back it up apart from the data directory");
            keyring
        }
    };
    check_keyring(store.as_ref(), &keyring, config, &place).await?;
    Ok(DataDir {
        lock,
        store,
        closed,
        keyring,
    })
}

/// Compares the keyring with the check values stored at first start (storing those missing).
/// Compares the keyring's check values with the stored ones, storing them on first start. On
/// etcd the first replica stores them (a compare-and-swap: of two first replicas with
/// different keyrings, one is refused) and every later one must match.
async fn check_keyring(
    store: &dyn Store,
    keyring: &Keyring,
    config: &ServeConfig,
    place: &Path,
) -> Result<(), AppError> {
    let store_err = |source| AppError::Store {
        dir: place.to_owned(),
        source,
    };
    let mismatch = |key: String| AppError::KeyringMismatch {
        path: config.keyring.clone(),
        dir: place.to_owned(),
        key,
    };
    let mut missing = Vec::new();
    for (name, value) in keyring.check_values() {
        match store.meta(&name).map_err(store_err)? {
            Some(stored) if stored == value => {}
            Some(_) => return Err(mismatch(name)),
            None => missing.push(Op::PutMeta(name, value)),
        }
    }
    if !missing.is_empty() {
        // No check value at all, yet access keys exist: a new keyring on an old database.
        let all_missing = missing.len() == keyring.check_values().len();
        if all_missing && !store.access_keys().map_err(store_err)?.is_empty() {
            return Err(mismatch(
                "no check value stored, yet access keys exist".into(),
            ));
        }
        let ticket = store.apply(missing).map_err(store_err)?;
        let report = store.flush().await.map_err(store_err)?;
        if report.durable_through < ticket || report.failure.is_some() {
            // Another replica stored its check values first: compare with those.
            store.rollback();
            store.sync().await.map_err(store_err)?;
            for (name, value) in keyring.check_values() {
                if store.meta(&name).map_err(store_err)?.as_deref() != Some(value.as_slice()) {
                    return Err(mismatch(name));
                }
            }
        }
    }
    Ok(())
}
