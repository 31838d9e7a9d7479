//! TokenService: ApplyToken, QueryToken, RevokeToken.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::open;
use crate::{
    core::{audit::Target, Actions, Core, Error, Field, TokenRequest},
    proto::{self, token_service_server::TokenService, TokenAction},
};

/// The TokenService implementation.
pub struct TokenGrpc(pub(crate) Arc<Core>);

fn actions(values: &[i32]) -> Result<Actions, Error> {
    let mut actions = Actions::default();
    for v in values {
        match TokenAction::try_from(*v) {
            Ok(TokenAction::Read) => actions.read = true,
            Ok(TokenAction::Write) => actions.write = true,
            Ok(TokenAction::Unspecified) | Err(_) => {
                return Err(Error::invalid(
                    Field::Actions,
                    "each action must be READ or WRITE",
                ))
            }
        }
    }
    Ok(actions)
}

#[tonic::async_trait]
impl TokenService for TokenGrpc {
    async fn apply_token(
        &self,
        request: Request<proto::ApplyTokenRequest>,
    ) -> Result<Response<proto::ApplyTokenResponse>, Status> {
        let (mut ctx, req) = open(&self.0, request, "ApplyToken")?;
        ctx.audit(Target::instance(&req.instance_id));
        let instance_id = req.instance_id.clone();
        let actions = actions(&req.actions).map_err(|e| ctx.err(e))?;
        let applied = self
            .0
            .apply_token(
                &ctx.caller,
                TokenRequest {
                    instance_id: req.instance_id,
                    actions,
                    resources: req.resources,
                    expire_time: req.expire_time,
                },
            )
            .await
            .map_err(|e| ctx.err(e))?;
        ctx.audit(Target::token(&instance_id, &applied.token));
        ctx.respond(proto::ApplyTokenResponse {
            token: applied.token,
            request_id: ctx.request_id.clone(),
            expire_time: applied.expire_time,
        })
    }

    async fn query_token(
        &self,
        request: Request<proto::QueryTokenRequest>,
    ) -> Result<Response<proto::QueryTokenResponse>, Status> {
        let (ctx, req) = open(&self.0, request, "QueryToken")?;
        let status = self
            .0
            .query_token(&ctx.caller, &req.instance_id, &req.token)
            .map_err(|e| ctx.err(e))?;
        ctx.respond(proto::QueryTokenResponse {
            token_status: status,
            request_id: ctx.request_id.clone(),
        })
    }

    async fn revoke_token(
        &self,
        request: Request<proto::RevokeTokenRequest>,
    ) -> Result<Response<proto::RevokeTokenResponse>, Status> {
        let (mut ctx, req) = open(&self.0, request, "RevokeToken")?;
        ctx.audit(Target::token(&req.instance_id, &req.token));
        let revision = self
            .0
            .revoke_token(&ctx.caller, &req.instance_id, &req.token)
            .await
            .map_err(|e| ctx.err(e))?;
        ctx.respond(proto::RevokeTokenResponse {
            request_id: ctx.request_id.clone(),
            revision,
        })
    }
}
