//! The root access key file written at the first start (0600, like every secret file).

use super::{io, AppError};
use crate::core::{keyring::write_private_bytes, RootKey};

/// The root access key file's content.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct RootKeyFile {
    /// The key id.
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: String,
    /// The key secret.
    #[serde(rename = "AccessKeySecret")]
    pub access_key_secret: String,
}

pub(super) fn write_root_key(path: &std::path::Path, root: &RootKey) -> Result<(), AppError> {
    let json = serde_json::to_vec_pretty(&RootKeyFile {
        access_key_id: root.access_key_id.clone(),
        access_key_secret: root.access_key_secret.clone(),
    })
    .map_err(|e| AppError::Io {
        what: "encoding the root key".into(),
        source: std::io::Error::other(e),
    })?;
    write_private_bytes(path, &json).map_err(io(format!("writing {}", path.display())))
}
