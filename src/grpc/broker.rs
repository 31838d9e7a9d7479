//! BrokerAuthService: AuthenticateConnect and AuthorizeTopic.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::open;
use crate::{
    core::{
        broker::AuthMode, ConnectDecision, Core, DenyReason, Error, Grant, TopicAction,
        TopicRequest,
    },
    proto::{self, broker_auth_service_server::BrokerAuthService},
};

/// The BrokerAuthService implementation.
pub struct BrokerAuthGrpc(pub(crate) Arc<Core>);

fn mode(m: AuthMode) -> proto::AuthMode {
    match m {
        AuthMode::Token => proto::AuthMode::Token,
        AuthMode::DeviceCredential => proto::AuthMode::DeviceCredential,
        AuthMode::Signature => proto::AuthMode::Signature,
    }
}

fn reason(r: DenyReason) -> proto::DenyReason {
    match r {
        DenyReason::MalformedUsername => proto::DenyReason::MalformedUsername,
        DenyReason::UnknownMode => proto::DenyReason::UnknownMode,
        DenyReason::MalformedPassword => proto::DenyReason::MalformedPassword,
        DenyReason::InvalidClientId => proto::DenyReason::InvalidClientId,
        DenyReason::UnknownAccessKey => proto::DenyReason::UnknownAccessKey,
        DenyReason::InstanceMismatch => proto::DenyReason::InstanceMismatch,
        DenyReason::BadSignature => proto::DenyReason::BadSignature,
        DenyReason::CredentialNotFound => proto::DenyReason::CredentialNotFound,
        DenyReason::TokenInvalid => proto::DenyReason::TokenInvalid,
        DenyReason::TokenExpired => proto::DenyReason::TokenExpired,
        DenyReason::TokenRevoked => proto::DenyReason::TokenRevoked,
        DenyReason::TokenTypeMismatch => proto::DenyReason::TokenTypeMismatch,
        DenyReason::TopicNotGranted => proto::DenyReason::TopicNotGranted,
        DenyReason::InvalidTopic => proto::DenyReason::InvalidTopic,
        DenyReason::InvalidSession => proto::DenyReason::InvalidSession,
    }
}

/// The core grant a BrokerAuthService client received, or None if the mode is unknown.
/// Brokers use it to decide topic actions with the service's own rules ([`Grant::check`]).
pub fn grant_from_proto(g: proto::Grant) -> Option<Grant> {
    let mode = match proto::AuthMode::try_from(g.mode).ok()? {
        proto::AuthMode::Token => AuthMode::Token,
        proto::AuthMode::DeviceCredential => AuthMode::DeviceCredential,
        proto::AuthMode::Signature => AuthMode::Signature,
        proto::AuthMode::Unspecified => return None,
    };
    Some(Grant {
        mode,
        instance_id: g.instance_id,
        publish: g.publish,
        subscribe: g.subscribe,
        expire_time: g.expire_time,
        token_fingerprints: g.token_fingerprints,
        key_id: g.key_id,
    })
}

fn grant(g: Grant) -> proto::Grant {
    proto::Grant {
        mode: mode(g.mode) as i32,
        instance_id: g.instance_id,
        publish: g.publish,
        subscribe: g.subscribe,
        expire_time: g.expire_time,
        token_fingerprints: g.token_fingerprints,
        key_id: g.key_id,
    }
}

#[tonic::async_trait]
impl BrokerAuthService for BrokerAuthGrpc {
    async fn authenticate_connect(
        &self,
        request: Request<proto::AuthenticateConnectRequest>,
    ) -> Result<Response<proto::AuthenticateConnectResponse>, Status> {
        let (ctx, req) = open(&self.0, request, "AuthenticateConnect")?;
        let decision = self
            .0
            .authenticate_connect(&ctx.caller, &req.client_id, &req.username, &req.password)
            .map_err(|e| ctx.err(e))?;
        let response = match decision {
            ConnectDecision::Allow {
                grant: g,
                session_handle,
            } => proto::AuthenticateConnectResponse {
                allowed: true,
                reason: proto::DenyReason::Unspecified as i32,
                grant: Some(grant(g)),
                session_handle,
                request_id: ctx.request_id.clone(),
            },
            ConnectDecision::Deny(r) => {
                tracing::debug!(request_id = %ctx.request_id, reason = ?r, "CONNECT denied");
                self.0.metrics().connect_denied(reason(r).as_str_name());
                proto::AuthenticateConnectResponse {
                    allowed: false,
                    reason: reason(r) as i32,
                    grant: None,
                    session_handle: String::new(),
                    request_id: ctx.request_id.clone(),
                }
            }
        };
        ctx.respond(response)
    }

    async fn authorize_topic(
        &self,
        request: Request<proto::AuthorizeTopicRequest>,
    ) -> Result<Response<proto::AuthorizeTopicResponse>, Status> {
        let (ctx, req) = open(&self.0, request, "AuthorizeTopic")?;
        let action = match proto::TopicAction::try_from(req.action) {
            Ok(proto::TopicAction::Publish) => TopicAction::Publish,
            Ok(proto::TopicAction::Subscribe) => TopicAction::Subscribe,
            Ok(proto::TopicAction::Unspecified) | Err(_) => {
                return Err(ctx.err(Error::ParameterCheckFailed(
                    "action must be PUBLISH or SUBSCRIBE".into(),
                )))
            }
        };
        if req.topic.is_empty() {
            return Err(ctx.err(Error::ParameterCheckFailed("topic is required".into())));
        }
        let decision = self
            .0
            .authorize_topic(
                &ctx.caller,
                TopicRequest {
                    client_id: &req.client_id,
                    username: &req.username,
                    password: &req.password,
                    session_handle: &req.session_handle,
                    action,
                    topic: &req.topic,
                },
            )
            .map_err(|e| ctx.err(e))?;
        if let Err(r) = decision {
            let action = match action {
                TopicAction::Publish => "PUBLISH",
                TopicAction::Subscribe => "SUBSCRIBE",
            };
            self.0
                .metrics()
                .topic_denied(action, reason(r).as_str_name());
        }
        ctx.respond(proto::AuthorizeTopicResponse {
            allowed: decision.is_ok(),
            reason: match decision {
                Ok(()) => proto::DenyReason::Unspecified as i32,
                Err(r) => reason(r) as i32,
            },
            request_id: ctx.request_id.clone(),
        })
    }
}
