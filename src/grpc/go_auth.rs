//! mosquitto-go-auth's gRPC backend, `grpc.AuthService` (`compat/go-auth/auth.proto`), so a
//! Mosquitto running go-auth with `auth_opt_backends grpc` uses mqtt-tokend unchanged.
//!
//! go-auth sends no credentials (its gRPC options are host, port, TLS files and timeouts), so
//! this service cannot authenticate its caller: it acts as the access key named by
//! `--go-auth-access-key` (its instances bound what it decides; its id is the namespace of the
//! sessions it records) and is served only when that flag is set. Anyone who can reach the gRPC
//! port can then check credentials and make it record sessions: serve it only where the broker
//! alone can reach it (loopback, a private network, or mutual TLS, which go-auth supports).
//!
//! Decisions are the core's: `GetUser` opens a broker session (AuthenticateConnect plus the
//! record), `CheckAcl` decides with that session (go-auth sends no password), `GetSuperuser` is
//! always false.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Ctx, MAX_MESSAGE_BYTES};
use crate::core::{
    broker_session::{BrokerAccess, SessionDecision, SessionTopicRequest},
    new_request_id, Core, Error,
};

/// The code generated from `compat/go-auth/auth.proto` (package `grpc`), by the client crate.
pub use mqtt_tokend_client::go_auth as pb;

use pb::auth_service_server::{AuthService, AuthServiceServer};

/// The name `GetName` answers.
pub const BACKEND_NAME: &str = "mqtt-tokend";

/// The AuthService implementation.
pub struct GoAuthGrpc {
    core: Arc<Core>,
    access_key_id: String,
}

impl GoAuthGrpc {
    /// The service acting as `access_key_id`.
    ///
    /// # Errors
    /// `InvalidAccessKeyId.NotFound` when there is no such key (a typo would otherwise deny
    /// every client).
    pub fn server(
        core: Arc<Core>,
        access_key_id: String,
    ) -> Result<AuthServiceServer<Self>, Error> {
        core.access_key(&access_key_id)?;
        Ok(AuthServiceServer::new(Self {
            core,
            access_key_id,
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The context of one call: a request id and the configured key, looked up each time so a
    /// deleted key stops this service at once.
    async fn ctx(
        &self,
        rpc: &'static str,
        source: Option<std::net::SocketAddr>,
    ) -> Result<Ctx<'_>, Status> {
        if let Err(e) = self.core.sync().await {
            return Err(super::status::to_status(&e, &new_request_id()));
        }
        match self.core.access_key(&self.access_key_id) {
            Ok(caller) => {
                let ctx = Ctx::for_caller(&self.core, caller, source, rpc);
                tracing::debug!(request_id = %ctx.request_id, rpc, "go-auth request");
                Ok(ctx)
            }
            Err(e) => {
                let request_id = new_request_id();
                tracing::error!(request_id, rpc, access_key_id = %self.access_key_id, "the --go-auth-access-key no longer exists; denying");
                Err(super::status::to_status(&e, &request_id))
            }
        }
    }
}

/// Mosquitto's `acc` values (`MOSQ_ACL_*`).
fn access(acc: i32) -> Option<BrokerAccess> {
    match acc {
        1 => Some(BrokerAccess::Read),
        2 => Some(BrokerAccess::Publish),
        3 => Some(BrokerAccess::ReadWrite),
        4 => Some(BrokerAccess::Subscribe),
        _ => None,
    }
}

#[tonic::async_trait]
impl AuthService for GoAuthGrpc {
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let ctx = self.ctx("GetUser", request.remote_addr()).await?;
        let req = request.into_inner();
        let decision = self
            .core
            .open_broker_session(&ctx.caller, &req.clientid, &req.username, &req.password)
            .await
            .map_err(|e| ctx.err(e))?;
        let ok = match decision {
            SessionDecision::Allow { .. } => true,
            SessionDecision::Deny(reason) => {
                tracing::debug!(request_id = %ctx.request_id, ?reason, "CONNECT denied");
                false
            }
        };
        ctx.respond(pb::AuthResponse { ok })
    }

    async fn get_superuser(
        &self,
        request: Request<pb::GetSuperuserRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let ctx = self.ctx("GetSuperuser", request.remote_addr()).await?;
        ctx.respond(pb::AuthResponse { ok: false })
    }

    async fn check_acl(
        &self,
        request: Request<pb::CheckAclRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let ctx = self.ctx("CheckAcl", request.remote_addr()).await?;
        let req = request.into_inner();
        let Some(access) = access(req.acc) else {
            tracing::debug!(request_id = %ctx.request_id, acc = req.acc, "unknown acc; denied");
            return ctx.respond(pb::AuthResponse { ok: false });
        };
        let decision = self
            .core
            .authorize_broker_session(
                &ctx.caller,
                SessionTopicRequest {
                    client_id: &req.clientid,
                    username: &req.username,
                    password: "",
                    access,
                    topic: &req.topic,
                },
            )
            .map_err(|e| ctx.err(e))?;
        if let Err(reason) = decision {
            tracing::debug!(request_id = %ctx.request_id, ?reason, ?access, "topic denied");
        }
        ctx.respond(pb::AuthResponse {
            ok: decision.is_ok(),
        })
    }

    async fn get_name(&self, request: Request<()>) -> Result<Response<pb::NameResponse>, Status> {
        let ctx = self.ctx("GetName", request.remote_addr()).await?;
        ctx.respond(pb::NameResponse {
            name: BACKEND_NAME.to_owned(),
        })
    }

    async fn halt(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let ctx = self.ctx("Halt", request.remote_addr()).await?;
        tracing::info!(request_id = %ctx.request_id, "mosquitto-go-auth is halting");
        ctx.respond(())
    }
}
