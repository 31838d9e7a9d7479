//! The management subcommands: thin gRPC clients of AccessKeyService (sled is single-process,
//! so keys are managed through the running server), and offline keyring rotation.

use tonic::{metadata::MetadataValue, transport::Channel, Request};

use crate::{
    app::RootKeyFile,
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
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The cause.
        source: tonic::transport::Error,
    },
    /// The server refused the call.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// Keyring rotation failed.
    #[error(transparent)]
    Keyring(#[from] crate::core::keyring::KeyringError),
    /// The audit log could not be opened or written.
    #[error("audit log: {0}")]
    Audit(std::io::Error),
}

async fn client(
    opts: &ClientOptions,
) -> Result<
    (
        proto::access_key_service_client::AccessKeyServiceClient<Channel>,
        MetadataValue<tonic::metadata::Ascii>,
    ),
    CliError,
> {
    let raw = std::fs::read(&opts.root_key_file).map_err(|e| CliError::RootKey {
        path: opts.root_key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    let key: RootKeyFile = serde_json::from_slice(&raw).map_err(|e| CliError::RootKey {
        path: opts.root_key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    let bearer = format!("Bearer {}:{}", key.access_key_id, key.access_key_secret)
        .parse()
        .map_err(|_| CliError::RootKey {
            path: opts.root_key_file.display().to_string(),
            reason: "the key is not ASCII".into(),
        })?;
    let addr = format!("http://{}", opts.grpc_addr);
    let channel = Channel::from_shared(addr.clone())
        .map_err(|_| CliError::RootKey {
            path: addr.clone(),
            reason: "bad address".into(),
        })?
        .connect()
        .await
        .map_err(|source| CliError::Connect { addr, source })?;
    Ok((
        proto::access_key_service_client::AccessKeyServiceClient::new(channel),
        bearer,
    ))
}

fn authed<T>(message: T, bearer: &MetadataValue<tonic::metadata::Ascii>) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request
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
            let (mut c, bearer) = client(&opts).await?;
            let r = c
                .create_access_key(authed(
                    proto::CreateAccessKeyRequest {
                        instance_ids: instances,
                        description,
                    },
                    &bearer,
                ))
                .await?
                .into_inner();
            println!(
                "{}",
                serde_json::json!({"AccessKeyId": r.access_key_id, "AccessKeySecret": r.access_key_secret})
            );
        }
        AccessKeyCommand::List { client: opts } => {
            let (mut c, bearer) = client(&opts).await?;
            let r = c
                .list_access_keys(authed(proto::ListAccessKeysRequest {}, &bearer))
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
            let (mut c, bearer) = client(&opts).await?;
            c.delete_access_key(authed(
                proto::DeleteAccessKeyRequest { access_key_id },
                &bearer,
            ))
            .await?;
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
