//! BrokerAuthService: AuthenticateConnect and AuthorizeTopic. The Grant and DenyReason wire
//! codec is the client crate's (`mqtt_tokend_client::convert`), which brokers decode with.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::open;
use crate::{
    core::{ConnectDecision, Core, Error, TopicAction, TopicRequest},
    proto::{self, broker_auth_service_server::BrokerAuthService},
};

/// The BrokerAuthService implementation.
pub struct BrokerAuthGrpc(pub(crate) Arc<Core>);

#[tonic::async_trait]
impl BrokerAuthService for BrokerAuthGrpc {
    async fn authenticate_connect(
        &self,
        request: Request<proto::AuthenticateConnectRequest>,
    ) -> Result<Response<proto::AuthenticateConnectResponse>, Status> {
        let (ctx, req) = open(&self.0, request, "AuthenticateConnect").await?;
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
                grant: Some(g.into()),
                session_handle,
                request_id: ctx.request_id.clone(),
            },
            ConnectDecision::Deny(r) => {
                tracing::debug!(request_id = %ctx.request_id, reason = ?r, "CONNECT denied");
                self.0
                    .metrics()
                    .connect_denied(proto::DenyReason::from(r).as_str_name());
                proto::AuthenticateConnectResponse {
                    allowed: false,
                    reason: proto::DenyReason::from(r).into(),
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
        let (ctx, req) = open(&self.0, request, "AuthorizeTopic").await?;
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
                .topic_denied(action, proto::DenyReason::from(r).as_str_name());
        }
        ctx.respond(proto::AuthorizeTopicResponse {
            allowed: decision.is_ok(),
            reason: match decision {
                Ok(()) => proto::DenyReason::Unspecified as i32,
                Err(r) => proto::DenyReason::from(r).into(),
            },
            request_id: ctx.request_id.clone(),
        })
    }
}
