//! The management subcommands: thin gRPC clients of AccessKeyService (sled is single-process,
//! so keys are managed through the running server), and offline keyring rotation.

use mqtt_tokend_client::{
    proto::access_key_service_client::AccessKeyServiceClient, AccessKey, AuthChannel, ConnectError,
    KeyFileError,
};

pub mod errors;

use crate::{
    config::{AccessKeyCommand, ClientOptions, KeyringCommand},
    core::{
        audit::{AuditEvent, Target, ROTATE_KEYRING},
        now_ms, Keyring,
    },
    observe::AuditLog,
    proto,
};

/// A failure of a management subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The root key file could not be read.
    #[error("reading the root key file {path}: {reason}")]
    RootKey {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Connecting to the server failed.
    #[error("{}", errors::connect_message(addr, source))]
    Connect {
        /// The address.
        addr: String,
        /// The cause.
        source: tonic::transport::Error,
    },
    /// The client could not be set up.
    #[error(transparent)]
    Client(ConnectError),
    /// The server refused the call.
    #[error("{}", errors::status_message(.0))]
    Status(#[from] tonic::Status),
    /// Keyring rotation failed.
    #[error(transparent)]
    Keyring(#[from] crate::core::keyring::KeyringError),
    /// The audit log could not be opened or written.
    #[error("audit log: {0}")]
    Audit(std::io::Error),
}

/// An AccessKeyService client authenticated with the root key file.
async fn client(opts: &ClientOptions) -> Result<AccessKeyServiceClient<AuthChannel>, CliError> {
    let path = opts.root_key_file();
    let root_key_error = |reason: String| CliError::RootKey {
        path: path.display().to_string(),
        reason,
    };
    let key = AccessKey::from_json_file(&path).map_err(|e| match e {
        KeyFileError::Read(e) => root_key_error(format!("{e}{}", errors::root_key_hint(&e))),
        KeyFileError::Parse(e) => root_key_error(e.to_string()),
    })?;
    let config = opts
        .client_config(key)
        .map_err(|e| CliError::Client(e.into()))?;
    let client = config.connect().await.map_err(|e| match e {
        ConnectError::Unreachable { endpoint, source } => CliError::Connect {
            addr: endpoint,
            source,
        },
        ConnectError::InvalidAccessKey => root_key_error("the key is not ASCII".into()),
        e @ (ConnectError::NoEndpoint
        | ConnectError::SeveralEndpoints { .. }
        | ConnectError::InvalidEndpoint { .. }
        | ConnectError::Tls(_)
        | ConnectError::TlsWithoutHttps { .. }
        | ConnectError::TlsConfig { .. }) => CliError::Client(e),
    })?;
    Ok(client.access_keys())
}

/// Runs an `access-key` subcommand; prints JSON on stdout.
///
/// # Errors
/// The root key file, the connection or the call failed.
pub async fn access_key(command: AccessKeyCommand) -> Result<(), CliError> {
    match command {
        AccessKeyCommand::Create {
            instances,
            description,
            client: opts,
        } => {
            let r = client(&opts)
                .await?
                .create_access_key(proto::CreateAccessKeyRequest {
                    instance_ids: instances,
                    description,
                })
                .await?
                .into_inner();
            println!(
                "{}",
                serde_json::json!({"AccessKeyId": r.access_key_id, "AccessKeySecret": r.access_key_secret})
            );
        }
        AccessKeyCommand::List { client: opts } => {
            let r = client(&opts)
                .await?
                .list_access_keys(proto::ListAccessKeysRequest {})
                .await?
                .into_inner();
            let keys: Vec<_> = r
                .access_keys
                .into_iter()
                .map(|k| {
                    serde_json::json!({
                        "AccessKeyId": k.access_key_id,
                        "InstanceIds": k.instance_ids,
                        "Description": k.description,
                        "CreateTime": k.create_time,
                        "Root": k.root,
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(keys));
        }
        AccessKeyCommand::Delete {
            access_key_id,
            client: opts,
        } => {
            client(&opts)
                .await?
                .delete_access_key(proto::DeleteAccessKeyRequest {
                    access_key_id: access_key_id.clone(),
                })
                .await?;
            println!(
                "{}",
                serde_json::json!({"AccessKeyId": access_key_id, "Deleted": true})
            );
        }
    }
    Ok(())
}

/// Runs a `keyring` subcommand.
///
/// # Errors
/// The keyring file cannot be read or written.
pub fn keyring(command: KeyringCommand) -> Result<(), CliError> {
    match command {
        KeyringCommand::Rotate { keyring, audit_log } => {
            // Opened first: a rotation that cannot be recorded is not made.
            let audit = match &audit_log {
                Some(dest) => AuditLog::open(dest).map_err(CliError::Audit)?,
                None => AuditLog::default(),
            };
            let rotated = Keyring::rotate(&keyring, now_ms());
            let (key_id, result) = match &rotated {
                Ok(id) => (format!("keyring:{id}"), "OK"),
                Err(_) => (String::new(), "KeyringError"),
            };
            let event = AuditEvent::now(
                "",
                "cli",
                None,
                "",
                ROTATE_KEYRING,
                Target::key(&key_id),
                result,
            );
            audit.write(&event).map_err(CliError::Audit)?;
            println!("{}", serde_json::json!({"ActiveKeyId": rotated?}));
        }
    }
    Ok(())
}
