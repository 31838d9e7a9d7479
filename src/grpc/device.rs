//! DeviceCredentialService: Register/Get/Refresh/UnRegister and ListDeviceCredentialClientId.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::open;
use crate::{
    core::{audit::Target, Core, DeviceCredential},
    proto::{self, device_credential_service_server::DeviceCredentialService},
};

/// The DeviceCredentialService implementation.
pub struct DeviceCredentialGrpc(pub(crate) Arc<Core>);

fn to_proto(c: DeviceCredential) -> proto::DeviceCredential {
    proto::DeviceCredential {
        client_id: c.client_id,
        instance_id: c.instance_id,
        device_access_key_id: c.device_access_key_id,
        device_access_key_secret: c.device_access_key_secret,
        create_time: c.create_time,
        update_time: c.update_time,
    }
}

#[tonic::async_trait]
impl DeviceCredentialService for DeviceCredentialGrpc {
    async fn register_device_credential(
        &self,
        request: Request<proto::RegisterDeviceCredentialRequest>,
    ) -> Result<Response<proto::RegisterDeviceCredentialResponse>, Status> {
        let (mut ctx, req) = open(&self.0, request, "RegisterDeviceCredential").await?;
        ctx.audit(|| Target::device(&req.instance_id, &req.client_id));
        let cred = self
            .0
            .register_device(&ctx.caller, &req.instance_id, &req.client_id)
            .await
            .map_err(|e| ctx.err(e))?;
        ctx.audit(|| {
            Target::device(&req.instance_id, &req.client_id).with_key(&cred.device_access_key_id)
        });
        ctx.respond(proto::RegisterDeviceCredentialResponse {
            device_credential: Some(to_proto(cred)),
            request_id: ctx.request_id.clone(),
        })
    }

    async fn get_device_credential(
        &self,
        request: Request<proto::GetDeviceCredentialRequest>,
    ) -> Result<Response<proto::GetDeviceCredentialResponse>, Status> {
        let (ctx, req) = open(&self.0, request, "GetDeviceCredential").await?;
        let cred = self
            .0
            .get_device(&ctx.caller, &req.instance_id, &req.client_id)
            .map_err(|e| ctx.err(e))?;
        ctx.respond(proto::GetDeviceCredentialResponse {
            device_credential: Some(to_proto(cred)),
            request_id: ctx.request_id.clone(),
        })
    }

    async fn refresh_device_credential(
        &self,
        request: Request<proto::RefreshDeviceCredentialRequest>,
    ) -> Result<Response<proto::RefreshDeviceCredentialResponse>, Status> {
        let (mut ctx, req) = open(&self.0, request, "RefreshDeviceCredential").await?;
        ctx.audit(|| Target::device(&req.instance_id, &req.client_id));
        let cred = self
            .0
            .refresh_device(&ctx.caller, &req.instance_id, &req.client_id)
            .await
            .map_err(|e| ctx.err(e))?;
        ctx.audit(|| {
            Target::device(&req.instance_id, &req.client_id).with_key(&cred.device_access_key_id)
        });
        ctx.respond(proto::RefreshDeviceCredentialResponse {
            device_credential: Some(to_proto(cred)),
            request_id: ctx.request_id.clone(),
        })
    }

    async fn un_register_device_credential(
        &self,
        request: Request<proto::UnRegisterDeviceCredentialRequest>,
    ) -> Result<Response<proto::UnRegisterDeviceCredentialResponse>, Status> {
        let (mut ctx, req) = open(&self.0, request, "UnRegisterDeviceCredential").await?;
        ctx.audit(|| Target::device(&req.instance_id, &req.client_id));
        self.0
            .unregister_device(&ctx.caller, &req.instance_id, &req.client_id)
            .await
            .map_err(|e| ctx.err(e))?;
        ctx.respond(proto::UnRegisterDeviceCredentialResponse {
            request_id: ctx.request_id.clone(),
        })
    }

    async fn list_device_credential_client_id(
        &self,
        request: Request<proto::ListDeviceCredentialClientIdRequest>,
    ) -> Result<Response<proto::ListDeviceCredentialClientIdResponse>, Status> {
        let (ctx, req) = open(&self.0, request, "ListDeviceCredentialClientId").await?;
        let page = self
            .0
            .list_devices(
                &ctx.caller,
                &req.instance_id,
                &req.group_id,
                req.page_no,
                req.page_size,
                &req.next_token,
            )
            .map_err(|e| ctx.err(e))?;
        ctx.respond(proto::ListDeviceCredentialClientIdResponse {
            client_id_list: page.client_ids,
            next_token: page.next_token,
            page_no: page.page_no,
            page_size: page.page_size,
            total: page.total,
            request_id: ctx.request_id.clone(),
        })
    }
}
