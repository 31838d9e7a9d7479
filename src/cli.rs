//! The management subcommands: thin gRPC clients of AccessKeyService (sled is single-process,
//! so keys are managed through the running server), and offline keyring rotation.

use tonic::{metadata::MetadataValue, transport::Channel, Request};

pub mod errors;

use crate::{
    app::RootKeyFile,
    config::{AccessKeyCommand, ClientOptions, KeyringCommand},
    core::{now_ms, Keyring},
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
    /// The server refused the call.
    #[error("{}", errors::status_message(.0))]
    Status(#[from] tonic::Status),
    /// Keyring rotation failed.
    #[error(transparent)]
    Keyring(#[from] crate::core::keyring::KeyringError),
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
    let path = opts.root_key_file();
    let root_key_error = |reason: String| CliError::RootKey {
        path: path.display().to_string(),
        reason,
    };
    let raw = std::fs::read(&path)
        .map_err(|e| root_key_error(format!("{e}{}", errors::root_key_hint(&e))))?;
    let key: RootKeyFile =
        serde_json::from_slice(&raw).map_err(|e| root_key_error(e.to_string()))?;
    let bearer = format!("Bearer {}:{}", key.access_key_id, key.access_key_secret)
        .parse()
        .map_err(|_| root_key_error("the key is not ASCII".into()))?;
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
                proto::DeleteAccessKeyRequest {
                    access_key_id: access_key_id.clone(),
                },
                &bearer,
            ))
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
        KeyringCommand::Rotate { keyring } => {
            let id = Keyring::rotate(&keyring, now_ms())?;
            println!("{}", serde_json::json!({"ActiveKeyId": id}));
        }
    }
    Ok(())
}
