//! The gRPC transport: thin services that authenticate, convert proto messages to core types,
//! call the core and convert back. Every response carries a `request_id` field and an
//! `x-request-id` metadata entry; every error goes through [`status::to_status`].
//!
//! Calls are counted, timed and (when they change state or fail authentication) audited in
//! one place, [`Ctx`]: `open` starts a call, `respond` and `err` finish it.
//!
//! Children: `status` (error mapping), `observe` (metrics and audit of a call), `conn`
//! (connections the server can cut at the end of shutdown), `gather` (connections that write
//! the frames of many streams at once), `token`, `access_key`, `device`,
//! `broker`, `revocation`, `broker_session` (one file per service), `watch_body` (the
//! WatchRevocations response body, one shared frame per event), `go_auth`
//! (mosquitto-go-auth's `grpc.AuthService`, served only with `--go-auth-access-key`).

mod access_key;
mod broker;
mod broker_session;
pub mod conn;
mod device;
pub mod gather;
pub mod go_auth;
mod observe;
mod revocation;
pub mod status;
mod token;
pub mod watch_body;

use std::sync::Arc;

use tonic::{
    metadata::{Ascii, MetadataMap, MetadataValue},
    Request, Response, Status,
};

use crate::{
    core::{audit::Target, new_request_id, Caller, Core, Error},
    proto,
};

pub use access_key::AccessKeyGrpc;
pub use broker::BrokerAuthGrpc;
pub use broker_session::BrokerSessionGrpc;
pub use device::DeviceCredentialGrpc;
pub use mqtt_tokend_client::grant_from_proto;
pub use revocation::RevocationGrpc;
pub use token::TokenGrpc;

/// Largest ApplyToken request accepted, in bytes: 100 resources of the longest topic allowed
/// fit, anything larger is abuse.
pub const MAX_TOKEN_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// Largest request of every other service, in bytes: their fields are short identifiers.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Per-request context: the id, the authenticated caller, and what the audit log will say the
/// call acted on.
pub(crate) struct Ctx<'a> {
    pub request_id: String,
    pub caller: Caller,
    core: &'a Core,
    call: observe::Call,
    target: Target,
}

impl<'a> Ctx<'a> {
    /// Authenticates `authorization: Bearer <AccessKeyId>:<AccessKeySecret>`.
    fn new(
        core: &'a Core,
        metadata: &MetadataMap,
        source: Option<std::net::SocketAddr>,
        rpc: &'static str,
    ) -> Result<Self, Status> {
        let request_id = new_request_id();
        let call = observe::Call::start(rpc, source);
        match authenticate(core, metadata) {
            Ok(caller) => {
                tracing::debug!(
                    request_id,
                    rpc,
                    access_key_id = caller.access_key_id(),
                    "request"
                );
                Ok(Self {
                    request_id,
                    caller,
                    core,
                    call,
                    target: Target::default(),
                })
            }
            Err(e) => {
                tracing::info!(request_id, rpc, code = %e.code(), "authentication failed");
                let e = call.auth_failed(core, &request_id, metadata, e);
                Err(status::to_status(&e, &request_id))
            }
        }
    }

    /// The context of a call whose caller the service itself has settled (go-auth acts as a
    /// configured key and carries no credential): counted and audited like any other call.
    pub(crate) fn for_caller(
        core: &'a Core,
        caller: Caller,
        source: Option<std::net::SocketAddr>,
        rpc: &'static str,
    ) -> Self {
        Self {
            request_id: new_request_id(),
            caller,
            core,
            call: observe::Call::start(rpc, source),
            target: Target::default(),
        }
    }

    /// Says what a mutating call acts on, for its audit line (set again as more is known,
    /// e.g. the token once it is minted). Built only when the audit log is on: a token's
    /// target hashes the token.
    pub(crate) fn audit(&mut self, target: impl FnOnce() -> Target) {
        if self.core.audit_enabled() {
            self.target = target();
        }
    }

    fn finish(&self, outcome: Result<(), Error>) -> Result<(), Error> {
        self.call.finish(
            self.core,
            &self.request_id,
            self.caller.access_key_id(),
            &self.target,
            outcome,
        )
    }

    /// Finishes the call with a core error: audited and counted, then mapped.
    pub(crate) fn err(&self, e: Error) -> Status {
        if !matches!(e, Error::Internal(_)) {
            tracing::debug!(request_id = %self.request_id, code = %e.code(), "request failed");
        }
        let e = self.finish(Err(e)).err().unwrap_or_else(|| {
            // `finish` returns the error it was given, or the audit failure in its place.
            Error::internal("call finished without its error")
        });
        status::to_status(&e, &self.request_id)
    }

    /// Finishes the call with a response (audited and counted first), adding the
    /// `x-request-id` metadata.
    pub(crate) fn respond<T>(&self, message: T) -> Result<Response<T>, Status> {
        if let Err(e) = self.finish(Ok(())) {
            return Err(status::to_status(&e, &self.request_id));
        }
        let mut response = Response::new(message);
        if let Some(v) = request_id_metadata(&self.request_id) {
            response.metadata_mut().insert("x-request-id", v);
        }
        Ok(response)
    }
}

/// The `x-request-id` value of a response (None only if the id were not ASCII, which ours
/// always are). Marked sensitive so that HPACK sends it as a literal *never indexed*: the
/// value is unique per response, and indexing it cost both ends a header-table insertion per
/// call that evicted the entries worth keeping (content-type, grpc-status), and made every
/// later lookup walk a chain of dead ids. The bytes the client reads are the same.
pub(crate) fn request_id_metadata(request_id: &str) -> Option<MetadataValue<Ascii>> {
    let mut value = MetadataValue::try_from(request_id).ok()?;
    value.set_sensitive(true);
    Some(value)
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
    /// RevocationService, with the watch's own response body.
    pub revocation: watch_body::WithWatchBody<
        proto::revocation_service_server::RevocationServiceServer<RevocationGrpc>,
    >,
    /// BrokerSessionService.
    pub broker_session:
        proto::broker_session_service_server::BrokerSessionServiceServer<BrokerSessionGrpc>,
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
            broker_session: broker_session_service_server::BrokerSessionServiceServer::new(
                BrokerSessionGrpc(core.clone()),
            )
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
            revocation: watch_body::WithWatchBody(
                revocation_service_server::RevocationServiceServer::new(RevocationGrpc(core))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            ),
        }
    }
}

/// Takes the message out of a request after authenticating it; starts the call's clock. On a
/// shared store it first catches up with every write acknowledged by any replica
/// ([`Core::sync`]), so the caller's key and everything the call reads are that fresh.
pub(crate) async fn open<'a, T>(
    core: &'a Core,
    request: Request<T>,
    rpc: &'static str,
) -> Result<(Ctx<'a>, T), Status> {
    core.sync()
        .await
        .map_err(|e| status::to_status(&e, &new_request_id()))?;
    let ctx = Ctx::new(core, request.metadata(), request.remote_addr(), rpc)?;
    Ok((ctx, request.into_inner()))
}

/// [`open`] without the read barrier, for a call whose core method checks its caller and
/// what it read again once its write is durable ([`Core::settle`]): ApplyToken and
/// RevokeToken. On etcd the barrier is a linearizable read per burst of calls, and with it
/// etcd spent about twice the CPU per ApplyToken (docs/benchmarks.md, "The sixth pass").
/// Only a caller this replica does not know (a key created on another replica a moment ago,
/// or bad credentials) waits for the barrier, then is authenticated again.
pub(crate) async fn open_checked_at_commit<'a, T>(
    core: &'a Core,
    request: Request<T>,
    rpc: &'static str,
) -> Result<(Ctx<'a>, T), Status> {
    if core.is_shared() && authenticate(core, request.metadata()).is_err() {
        core.sync()
            .await
            .map_err(|e| status::to_status(&e, &new_request_id()))?;
    }
    let ctx = Ctx::new(core, request.metadata(), request.remote_addr(), rpc)?;
    Ok((ctx, request.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_metadata_is_the_id_and_never_indexed() {
        let id = new_request_id();
        let value = request_id_metadata(&id).expect("request ids are ASCII");
        assert_eq!(value.to_str().expect("ascii"), id);
        assert!(
            value.is_sensitive(),
            "HPACK must not index a value unique per response"
        );
    }
}
