//! Who a client is: the [`AccessKey`] (read from the server's key file format) and the
//! [`BearerAuth`] interceptor that puts it on every call. Neither shows the secret in `Debug`.

use std::{fmt, path::Path};

use tonic::{
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
    Request, Status,
};

use crate::client::ConnectError;

/// An access key: what a client authenticates with. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The key id (`AccessKeyId`).
    pub id: String,
    /// The key secret (`AccessKeySecret`).
    pub secret: String,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The JSON form of a key file, as the server writes `root-access-key.json`.
#[derive(serde::Deserialize)]
struct KeyFile {
    #[serde(rename = "AccessKeyId")]
    id: String,
    #[serde(rename = "AccessKeySecret")]
    secret: String,
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// The file is not `{"AccessKeyId": "...", "AccessKeySecret": "..."}`.
    #[error(transparent)]
    Parse(#[from] serde_json::Error),
}

impl AccessKey {
    /// A key from its id and secret.
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: secret.into(),
        }
    }

    /// Reads a key file such as the server's `root-access-key.json`:
    /// `{"AccessKeyId": "...", "AccessKeySecret": "..."}`.
    ///
    /// # Errors
    /// The file cannot be read or does not hold a key.
    pub fn from_json_file(path: &Path) -> Result<Self, KeyFileError> {
        let key: KeyFile = serde_json::from_slice(&std::fs::read(path)?)?;
        Ok(Self::new(key.id, key.secret))
    }
}

/// Adds `authorization: Bearer <AccessKeyId>:<AccessKeySecret>` to every call (nothing when
/// made without a key). The header is built once, so a call only clones it.
#[derive(Clone, Default)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl BearerAuth {
    /// The credential of `key`, or none.
    ///
    /// # Errors
    /// `InvalidAccessKey`: the id or secret is not printable ASCII.
    pub fn new(key: Option<&AccessKey>) -> Result<Self, ConnectError> {
        key.map(|k| {
            format!("Bearer {}:{}", k.id, k.secret)
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| ConnectError::InvalidAccessKey)
        })
        .transpose()
        .map(Self)
    }
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = if self.0.is_some() { "set" } else { "none" };
        f.debug_tuple("BearerAuth").field(&set).finish()
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let key = AccessKey::new("MTAKid", "s3cret");
        assert!(!format!("{key:?}").contains("s3cret"));
        let auth = BearerAuth::new(Some(&key)).expect("ascii");
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn key_files_are_read_as_the_server_writes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.json");
        std::fs::write(&path, r#"{"AccessKeyId": "MTAKx", "AccessKeySecret": "s"}"#)
            .expect("write");
        assert_eq!(
            AccessKey::from_json_file(&path).expect("key"),
            AccessKey::new("MTAKx", "s")
        );
        std::fs::write(&path, "{}").expect("write");
        assert!(matches!(
            AccessKey::from_json_file(&path),
            Err(KeyFileError::Parse(_))
        ));
        assert!(matches!(
            AccessKey::from_json_file(&dir.path().join("missing")),
            Err(KeyFileError::Read(_))
        ));
    }
}
