//! TokenService: ApplyToken, QueryToken, RevokeToken, ListTokens, RevokeTokens.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{open, open_checked_at_commit};
use crate::{
    core::{
        audit::Target, Actions, Core, Error, Field, TokenInfo, TokenRequest, TokenScope,
        TokenStatus,
    },
    proto::{
        self, revoke_tokens_request::Scope, token_service_server::TokenService, TokenAction,
        TokenState,
    },
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

fn token_info(t: TokenInfo) -> proto::TokenInfo {
    let mut actions = Vec::with_capacity(2);
    if t.actions.read {
        actions.push(TokenAction::Read.into());
    }
    if t.actions.write {
        actions.push(TokenAction::Write.into());
    }
    let state = match t.status {
        TokenStatus::Live => TokenState::Live,
        TokenStatus::Revoked => TokenState::Revoked,
        TokenStatus::Expired => TokenState::Expired,
    };
    proto::TokenInfo {
        token_handle: t.handle,
        actions,
        resources: t.resources,
        expire_time: t.expire_ms,
        create_time: t.create_ms,
        access_key_id: t.creator,
        state: state.into(),
        revoke_time: t.revoke_ms.unwrap_or(0),
        minted_revision: t.minted_revision,
    }
}

#[tonic::async_trait]
impl TokenService for TokenGrpc {
    async fn apply_token(
        &self,
        request: Request<proto::ApplyTokenRequest>,
    ) -> Result<Response<proto::ApplyTokenResponse>, Status> {
        let (mut ctx, req) = open_checked_at_commit(&self.0, request, "ApplyToken").await?;
        ctx.audit(|| Target::instance(&req.instance_id));
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
        ctx.audit(|| Target::token(&instance_id, &applied.token).with_handle(&applied.handle));
        ctx.respond(proto::ApplyTokenResponse {
            token: applied.token,
            request_id: ctx.request_id.clone(),
            expire_time: applied.expire_time,
            token_handle: applied.handle,
        })
    }

    async fn query_token(
        &self,
        request: Request<proto::QueryTokenRequest>,
    ) -> Result<Response<proto::QueryTokenResponse>, Status> {
        let (ctx, req) = open(&self.0, request, "QueryToken").await?;
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
        let (mut ctx, req) = open_checked_at_commit(&self.0, request, "RevokeToken").await?;
        ctx.audit(|| Target::token(&req.instance_id, &req.token));
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

    async fn list_tokens(
        &self,
        request: Request<proto::ListTokensRequest>,
    ) -> Result<Response<proto::ListTokensResponse>, Status> {
        let (ctx, req) = open(&self.0, request, "ListTokens").await?;
        let page = self
            .0
            .list_tokens(
                &ctx.caller,
                &req.instance_id,
                &req.access_key_id,
                &req.next_token,
                usize::try_from(req.page_size).unwrap_or(usize::MAX),
            )
            .map_err(|e| ctx.err(e))?;
        ctx.respond(proto::ListTokensResponse {
            tokens: page.tokens.into_iter().map(token_info).collect(),
            next_token: page.next_token,
            request_id: ctx.request_id.clone(),
        })
    }

    async fn revoke_tokens(
        &self,
        request: Request<proto::RevokeTokensRequest>,
    ) -> Result<Response<proto::RevokeTokensResponse>, Status> {
        let (mut ctx, req) = open(&self.0, request, "RevokeTokens").await?;
        let target = Target::instance(&req.instance_id);
        let scope = match req.scope {
            Some(Scope::TokenHandle(h)) => {
                ctx.audit(|| target.with_handle(&h));
                TokenScope::Handle(h)
            }
            Some(Scope::AccessKeyId(k)) => {
                ctx.audit(|| target.with_key(&k));
                TokenScope::AccessKey(k)
            }
            Some(Scope::AllTokens(true)) => {
                ctx.audit(|| target);
                TokenScope::Instance
            }
            Some(Scope::AllTokens(false)) | None => {
                ctx.audit(|| target);
                return Err(ctx.err(Error::ParameterCheckFailed(
                    "one of token_handle, access_key_id, all_tokens (true) is required".into(),
                )));
            }
        };
        let revision = self
            .0
            .revoke_tokens(&ctx.caller, &req.instance_id, scope)
            .await
            .map_err(|e| ctx.err(e))?;
        ctx.respond(proto::RevokeTokensResponse {
            request_id: ctx.request_id.clone(),
            revision,
        })
    }
}
