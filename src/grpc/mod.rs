//! The gRPC transport: thin services that authenticate, convert proto messages to core types,
//! call the core and convert back. Every response carries a `request_id` field and an
//! `x-request-id` metadata entry; every error goes through [`status::to_status`].
//!
//! Children: `status` (error mapping), `conn` (connections the server can cut at the end of
//! shutdown), `token`, `access_key`, `device`, `broker`, `revocation` (one file per service).

mod access_key;
mod broker;
pub mod conn;
mod device;
mod revocation;
pub mod status;
mod token;

use std::sync::Arc;

use tonic::{metadata::MetadataMap, Request, Response, Status};

use crate::{
    core::{new_request_id, Caller, Core, Error},
    proto,
};

pub use access_key::AccessKeyGrpc;
pub use broker::{grant_from_proto, BrokerAuthGrpc};
pub use device::DeviceCredentialGrpc;
pub use revocation::RevocationGrpc;
pub use token::TokenGrpc;

/// Largest ApplyToken request accepted, in bytes: 100 resources of the longest topic allowed
/// fit, anything larger is abuse.
pub const MAX_TOKEN_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// Largest request of every other service, in bytes: their fields are short identifiers.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Per-request context: the id and the authenticated caller.
pub(crate) struct Ctx {
    pub request_id: String,
    pub caller: Caller,
}

impl Ctx {
    /// Authenticates `authorization: Bearer <AccessKeyId>:<AccessKeySecret>`.
    pub(crate) fn new(
        core: &Core,
        metadata: &MetadataMap,
        rpc: &'static str,
    ) -> Result<Self, Status> {
        let request_id = new_request_id();
        match authenticate(core, metadata) {
            Ok(caller) => {
                tracing::debug!(
                    request_id,
                    rpc,
                    access_key_id = caller.access_key_id(),
                    "request"
                );
                Ok(Self { request_id, caller })
            }
            Err(e) => {
                tracing::info!(request_id, rpc, code = %e.code(), "authentication failed");
                Err(status::to_status(&e, &request_id))
            }
        }
    }

    /// Maps a core error for this request.
    pub(crate) fn err(&self, e: Error) -> Status {
        if !matches!(e, Error::Internal(_)) {
            tracing::debug!(request_id = %self.request_id, code = %e.code(), "request failed");
        }
        status::to_status(&e, &self.request_id)
    }

    /// Wraps a response message with the `x-request-id` metadata.
    pub(crate) fn respond<T>(&self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        if let Ok(v) = self.request_id.parse() {
            response.metadata_mut().insert("x-request-id", v);
        }
        response
    }
}

fn authenticate(core: &Core, metadata: &MetadataMap) -> Result<Caller, Error> {
    let value = metadata
        .get("authorization")
        .ok_or(Error::Unauthenticated(
            "authorization metadata is required: Bearer <AccessKeyId>:<AccessKeySecret>",
        ))?
        .to_str()
        .map_err(|_| Error::Unauthenticated("authorization metadata is not ASCII"))?;
    let credentials = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(Error::Unauthenticated(
            "authorization must be Bearer <AccessKeyId>:<AccessKeySecret>",
        ))?;
    let (id, secret) = credentials
        .trim()
        .split_once(':')
        .ok_or(Error::Unauthenticated(
            "authorization must be Bearer <AccessKeyId>:<AccessKeySecret>",
        ))?;
    core.authenticate(id, secret)
}

/// The fully built gRPC services, ready to add to a tonic router.
pub struct Services {
    /// TokenService.
    pub token: proto::token_service_server::TokenServiceServer<TokenGrpc>,
    /// AccessKeyService.
    pub access_key: proto::access_key_service_server::AccessKeyServiceServer<AccessKeyGrpc>,
    /// DeviceCredentialService.
    pub device: proto::device_credential_service_server::DeviceCredentialServiceServer<
        DeviceCredentialGrpc,
    >,
    /// BrokerAuthService.
    pub broker: proto::broker_auth_service_server::BrokerAuthServiceServer<BrokerAuthGrpc>,
    /// RevocationService.
    pub revocation: proto::revocation_service_server::RevocationServiceServer<RevocationGrpc>,
}

impl Services {
    /// Builds every service over one core.
    pub fn new(core: Arc<Core>) -> Self {
        use proto::*;
        Self {
            token: token_service_server::TokenServiceServer::new(TokenGrpc(core.clone()))
                .max_decoding_message_size(MAX_TOKEN_MESSAGE_BYTES),
            access_key: access_key_service_server::AccessKeyServiceServer::new(AccessKeyGrpc(
                core.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
            device: device_credential_service_server::DeviceCredentialServiceServer::new(
                DeviceCredentialGrpc(core.clone()),
            )
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
            broker: broker_auth_service_server::BrokerAuthServiceServer::new(BrokerAuthGrpc(
                core.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
            revocation: revocation_service_server::RevocationServiceServer::new(RevocationGrpc(
                core,
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        }
    }
}

/// Takes the message out of a request after authenticating it.
pub(crate) fn open<T>(
    core: &Core,
    request: Request<T>,
    rpc: &'static str,
) -> Result<(Ctx, T), Status> {
    let ctx = Ctx::new(core, request.metadata(), rpc)?;
    Ok((ctx, request.into_inner()))
}
