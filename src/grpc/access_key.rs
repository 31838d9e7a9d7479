//! AccessKeyService: CreateAccessKey, ListAccessKeys, DeleteAccessKey (root key only).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::open;
use crate::{
    core::{audit::Target, Core},
    proto::{self, access_key_service_server::AccessKeyService},
};

/// The AccessKeyService implementation.
pub struct AccessKeyGrpc(pub(crate) Arc<Core>);

#[tonic::async_trait]
impl AccessKeyService for AccessKeyGrpc {
    async fn create_access_key(
        &self,
        request: Request<proto::CreateAccessKeyRequest>,
    ) -> Result<Response<proto::CreateAccessKeyResponse>, Status> {
        let (mut ctx, req) = open(&self.0, request, "CreateAccessKey").await?;
        let instances = req.instance_ids.join(",");
        ctx.audit(|| Target::instance(&instances));
        let created = self
            .0
            .create_access_key(&ctx.caller, req.instance_ids, req.description)
            .await
            .map_err(|e| ctx.err(e))?;
        ctx.audit(|| Target::instance(&instances).with_key(&created.access_key_id));
        ctx.respond(proto::CreateAccessKeyResponse {
            access_key_id: created.access_key_id,
            access_key_secret: created.access_key_secret,
            request_id: ctx.request_id.clone(),
        })
    }

    async fn list_access_keys(
        &self,
        request: Request<proto::ListAccessKeysRequest>,
    ) -> Result<Response<proto::ListAccessKeysResponse>, Status> {
        let (ctx, _) = open(&self.0, request, "ListAccessKeys").await?;
        let keys = self
            .0
            .list_access_keys(&ctx.caller)
            .map_err(|e| ctx.err(e))?;
        ctx.respond(proto::ListAccessKeysResponse {
            access_keys: keys
                .into_iter()
                .map(|k| proto::AccessKey {
                    access_key_id: k.access_key_id,
                    instance_ids: k.instance_ids,
                    description: k.description,
                    create_time: k.create_time,
                    root: k.root,
                })
                .collect(),
            request_id: ctx.request_id.clone(),
        })
    }

    async fn delete_access_key(
        &self,
        request: Request<proto::DeleteAccessKeyRequest>,
    ) -> Result<Response<proto::DeleteAccessKeyResponse>, Status> {
        let (mut ctx, req) = open(&self.0, request, "DeleteAccessKey").await?;
        ctx.audit(|| Target::key(&req.access_key_id));
        self.0
            .delete_access_key(&ctx.caller, &req.access_key_id)
            .await
            .map_err(|e| ctx.err(e))?;
        ctx.respond(proto::DeleteAccessKeyResponse {
            request_id: ctx.request_id.clone(),
        })
    }
}
