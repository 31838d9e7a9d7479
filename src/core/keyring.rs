//! The server's master keys, kept in a file outside the data directory. Every secret the service
//! needs is derived from them with HMAC-SHA256 under a purpose label: token MAC keys, access key
//! secrets, device credential secrets, session handle MAC keys. Nothing secret is stored in
//! the database, so a copy of the data directory alone leaks no secret.
//!
//! Keys have ids. New secrets use the active key; records remember the id they were derived
//! with, so adding a key (rotation) leaves every live token and credential working.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use base64::{engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::crypto;

/// A failure to load or create the keyring file.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// Reading or writing the file failed.
    #[error("keyring file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid keyring.
    #[error("keyring file {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    active: u32,
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    id: u32,
    /// Standard Base64 of 32 random bytes.
    secret: String,
    created_ms: i64,
}

/// The purposes a derived key can serve; each gets its own label so keys never collide.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    TokenMac,
    SessionMac,
    AccessKeySecret,
    DeviceSecret,
    Check,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::TokenMac => b"mqtt-tokend/token-mac/v1",
            Purpose::SessionMac => b"mqtt-tokend/session-mac/v1",
            Purpose::AccessKeySecret => b"mqtt-tokend/access-key-secret/v1\0",
            Purpose::DeviceSecret => b"mqtt-tokend/device-secret/v1\0",
            Purpose::Check => b"mqtt-tokend/keyring-check/v1",
        }
    }
}

/// One master key and the keys derived from it that requests use, kept with their HMAC pads
/// already hashed (see [`crypto::HmacSha256Key`]).
struct MasterKey {
    secret: [u8; 32],
    token_mac: crypto::HmacSha256Key,
    /// HMAC under the secret with the device-secret label absorbed: a device CONNECT derives
    /// its device's secret from it.
    device_secret: crypto::HmacSha256Key,
}

/// The loaded keyring.
pub struct Keyring {
    active: u32,
    keys: BTreeMap<u32, MasterKey>,
    session_mac: crypto::HmacSha256Key,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn derive(secret: &[u8; 32], purpose: Purpose, data: &[u8]) -> [u8; 32] {
    crypto::hmac_sha256(secret, &[purpose.label(), data])
}

/// Fills a buffer from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    buf
}

impl Keyring {
    /// Loads the keyring at `path`; `None` if there is no such file.
    ///
    /// # Errors
    /// The file cannot be read, or is not a valid keyring.
    pub fn load(path: &Path) -> Result<Option<Self>, KeyringError> {
        match fs::read(path) {
            Ok(bytes) => Ok(Some(Self::parse(path, &bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KeyringError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Creates a keyring file at `path` (mode 0600) with one fresh key.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn create(path: &Path, now_ms: i64) -> Result<Self, KeyringError> {
        let io = |source| KeyringError::Io {
            path: path.to_owned(),
            source,
        };
        let file = KeyringFile {
            active: 1,
            keys: vec![KeyEntry {
                id: 1,
                secret: STANDARD.encode(random_bytes::<32>()),
                created_ms: now_ms,
            }],
        };
        write_private(path, &file).map_err(io)?;
        let bytes = fs::read(path).map_err(io)?;
        Self::parse(path, &bytes)
    }

    /// Adds a new key to the file at `path` and makes it active; returns its id. Existing
    /// tokens and credentials keep working because their records name the key they used.
    ///
    /// # Errors
    /// The file cannot be read, parsed or written.
    pub fn rotate(path: &Path, now_ms: i64) -> Result<u32, KeyringError> {
        let io = |source| KeyringError::Io {
            path: path.to_owned(),
            source,
        };
        let bytes = fs::read(path).map_err(io)?;
        let mut file: KeyringFile =
            serde_json::from_slice(&bytes).map_err(|e| KeyringError::Invalid {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let id = file.keys.iter().map(|k| k.id).max().unwrap_or(0) + 1;
        file.keys.push(KeyEntry {
            id,
            secret: STANDARD.encode(random_bytes::<32>()),
            created_ms: now_ms,
        });
        file.active = id;
        let tmp = path.with_extension("tmp");
        write_private(&tmp, &file).map_err(io)?;
        fs::rename(&tmp, path).map_err(io)?;
        Ok(id)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, KeyringError> {
        let invalid = |reason: String| KeyringError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let file: KeyringFile =
            serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let mut keys = BTreeMap::new();
        for entry in &file.keys {
            let raw = STANDARD
                .decode(&entry.secret)
                .map_err(|e| invalid(format!("key {}: {e}", entry.id)))?;
            let secret: [u8; 32] = raw
                .try_into()
                .map_err(|_| invalid(format!("key {} is not 32 bytes", entry.id)))?;
            let token_mac =
                crypto::HmacSha256Key::new(&derive(&secret, Purpose::TokenMac, b""), b"");
            let device_secret = crypto::HmacSha256Key::new(&secret, Purpose::DeviceSecret.label());
            keys.insert(
                entry.id,
                MasterKey {
                    secret,
                    token_mac,
                    device_secret,
                },
            );
        }
        let Some(active) = keys.get(&file.active) else {
            return Err(invalid(format!(
                "active key {} is not in the file",
                file.active
            )));
        };
        // Session handles live only as long as a broker connection; they always use the
        // active key, and a rotation simply makes brokers re-authenticate.
        let session_mac =
            crypto::HmacSha256Key::new(&derive(&active.secret, Purpose::SessionMac, b""), b"");
        Ok(Self {
            active: file.active,
            keys,
            session_mac,
        })
    }

    /// One check value per key, `(name, value)`: stored in the database at first start and
    /// compared at every start, so a server pointed at the wrong keyring refuses to run
    /// instead of silently invalidating every token and secret.
    pub fn check_values(&self) -> Vec<(String, Vec<u8>)> {
        self.keys
            .iter()
            .map(|(id, key)| {
                let value = derive(&key.secret, Purpose::Check, b"");
                (format!("keyring-check/{id}"), value[..16].to_vec())
            })
            .collect()
    }

    /// The id of the key new secrets are derived with.
    pub fn active_id(&self) -> u32 {
        self.active
    }

    /// How many keys the keyring holds.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The token MAC key with this id, if the keyring has it.
    pub fn token_mac_key(&self, id: u32) -> Option<&crypto::HmacSha256Key> {
        self.keys.get(&id).map(|k| &k.token_mac)
    }

    /// The MAC key for broker session handles.
    pub fn session_mac_key(&self) -> &crypto::HmacSha256Key {
        &self.session_mac
    }

    /// The secret of access key `access_key_id` derived with key `keyring_id`.
    pub fn access_key_secret(&self, keyring_id: u32, access_key_id: &str) -> Option<String> {
        let key = self.keys.get(&keyring_id)?;
        let raw = derive(
            &key.secret,
            Purpose::AccessKeySecret,
            access_key_id.as_bytes(),
        );
        let mut s = URL_SAFE_NO_PAD.encode(raw);
        s.truncate(30);
        Some(s)
    }

    /// The device secret for device access key `device_key_id` derived with key `keyring_id`:
    /// `DC.` + 32 URL-safe characters (192 bits).
    pub fn device_secret(&self, keyring_id: u32, device_key_id: &str) -> Option<String> {
        let key = self.keys.get(&keyring_id)?;
        // derive(secret, DeviceSecret, id), with the key and the label hashed once at load.
        let raw = key.device_secret.mac(&[device_key_id.as_bytes()]);
        let mut s = URL_SAFE_NO_PAD.encode(raw);
        s.truncate(32);
        Some(format!("DC.{s}"))
    }
}

fn write_private(path: &Path, file: &KeyringFile) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    write_private_bytes(path, &json)
}

/// Writes `bytes` to a new file readable by the owner only (0600), syncing it to disk.
pub fn write_private_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent)?;
        }
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its old mode on open; force 0600.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prehashed_keys_derive_what_the_plain_derivation_does() {
        // Outstanding tokens, handles and device secrets depend on these derivations: the
        // keys kept with their pads hashed must give exactly HMAC(secret, label || data).
        let secret = [42u8; 32];
        let json = format!(
            r#"{{"active":1,"keys":[{{"id":1,"secret":"{}","created_ms":0}}]}}"#,
            STANDARD.encode(secret)
        );
        let keyring = Keyring::parse(Path::new("k.json"), json.as_bytes()).expect("valid");
        let token_mac = crypto::hmac_sha256(&secret, &[b"mqtt-tokend/token-mac/v1"]);
        let message: [&[u8]; 3] = [b"inst", &[0], b"0123456789abcdef"];
        assert_eq!(
            keyring.token_mac_key(1).expect("key 1").mac(&message),
            crypto::hmac_sha256(&token_mac, &message)
        );
        let session_mac = crypto::hmac_sha256(&secret, &[b"mqtt-tokend/session-mac/v1"]);
        assert_eq!(
            keyring.session_mac_key().mac(&[b"payload"]),
            crypto::hmac_sha256(&session_mac, &[b"payload"])
        );
        let raw = crypto::hmac_sha256(&secret, &[b"mqtt-tokend/device-secret/v1\0", b"DC.x"]);
        let expected = format!("DC.{}", &URL_SAFE_NO_PAD.encode(raw)[..32]);
        assert_eq!(keyring.device_secret(1, "DC.x"), Some(expected));
        assert_eq!(keyring.device_secret(2, "DC.x"), None);
    }
}
