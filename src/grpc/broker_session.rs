//! BrokerSessionService: ListCredentialSessions, the kicker's lookup.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::open;
use crate::{
    core::{broker_session::Credential, Core, Error, Field},
    proto::{
        self, broker_session_service_server::BrokerSessionService,
        list_credential_sessions_request::Credential as ProtoCredential,
    },
};

/// The BrokerSessionService implementation.
pub struct BrokerSessionGrpc(pub(crate) Arc<Core>);

#[tonic::async_trait]
impl BrokerSessionService for BrokerSessionGrpc {
    async fn list_credential_sessions(
        &self,
        request: Request<proto::ListCredentialSessionsRequest>,
    ) -> Result<Response<proto::ListCredentialSessionsResponse>, Status> {
        let (ctx, req) = open(&self.0, request, "ListCredentialSessions").await?;
        let credential = match req.credential {
            Some(ProtoCredential::TokenFingerprint(f)) if !f.is_empty() => Credential::Token(f),
            Some(ProtoCredential::AccessKeyId(id)) if !id.is_empty() => Credential::AccessKey(id),
            Some(ProtoCredential::DeviceAccessKeyId(id)) if !id.is_empty() => {
                Credential::DeviceCredential(id)
            }
            Some(ProtoCredential::MintingAccessKeyId(id)) if !id.is_empty() => {
                Credential::MintingKey(id)
            }
            Some(ProtoCredential::TokenInstanceId(id)) if !id.is_empty() => {
                if id != req.instance_id {
                    return Err(ctx.err(Error::invalid(
                        Field::InstanceId,
                        "must be set and equal token_instance_id",
                    )));
                }
                Credential::InstanceTokens
            }
            _ => {
                return Err(ctx.err(Error::ParameterCheckFailed(
                    "one of token_fingerprint, access_key_id, device_access_key_id, \
                     minting_access_key_id, token_instance_id is required"
                        .into(),
                )))
            }
        };
        let page = self
            .0
            .credential_sessions(
                &ctx.caller,
                &req.instance_id,
                &credential,
                &req.next_token,
                usize::try_from(req.page_size).unwrap_or(usize::MAX),
            )
            .map_err(|e| ctx.err(e))?;
        ctx.respond(proto::ListCredentialSessionsResponse {
            sessions: page
                .sessions
                .into_iter()
                .map(|s| proto::BrokerSession {
                    client_id: s.client_id,
                    username: s.username,
                    instance_id: s.instance_id,
                    expire_time: s.expire_time,
                })
                .collect(),
            next_token: page.next_token,
            request_id: ctx.request_id.clone(),
        })
    }
}
