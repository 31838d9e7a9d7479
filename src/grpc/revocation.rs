//! RevocationService: WatchRevocations, the core's watch stream converted to the wire.

use std::{pin::Pin, sync::Arc};

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{open, status::to_status};
use crate::{
    core::{revocation::RevocationEvent, Core, RevocationKind, WatchItem, WatchStart},
    proto::{
        self, revocation_service_server::RevocationService, watch_revocations_response::Message,
        StartMode,
    },
};

/// The RevocationService implementation.
pub struct RevocationGrpc(pub(crate) Arc<Core>);

fn kind(k: RevocationKind) -> proto::RevocationKind {
    match k {
        RevocationKind::TokenRevoked => proto::RevocationKind::TokenRevoked,
        RevocationKind::DeviceCredentialRefreshed => {
            proto::RevocationKind::DeviceCredentialRefreshed
        }
        RevocationKind::DeviceCredentialUnregistered => {
            proto::RevocationKind::DeviceCredentialUnregistered
        }
        RevocationKind::AccessKeyDeleted => proto::RevocationKind::AccessKeyDeleted,
    }
}

/// The wire form of an event: the API writes "every instance" as an empty instance id and
/// "never expires" as 0.
fn event(e: &RevocationEvent) -> proto::RevocationEvent {
    proto::RevocationEvent {
        revision: e.revision,
        kind: kind(e.kind).into(),
        instance_id: e.instance_id.clone().unwrap_or_default(),
        token_fingerprint: e.token_fingerprint.clone(),
        client_id: e.client_id.clone(),
        key_id: e.key_id.clone(),
        reason: e.reason.clone(),
        expire_time: e.expire_ms.unwrap_or(0),
        revoke_time: e.revoke_ms,
    }
}

type WatchStream =
    Pin<Box<dyn Stream<Item = Result<proto::WatchRevocationsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RevocationService for RevocationGrpc {
    type WatchRevocationsStream = WatchStream;

    async fn watch_revocations(
        &self,
        request: Request<proto::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let (ctx, req) = open(&self.0, request, "WatchRevocations")?;
        let start = match StartMode::try_from(req.start_mode) {
            Ok(StartMode::Unspecified | StartMode::Now) => WatchStart::Now,
            Ok(StartMode::Revision) => WatchStart::Revision(req.start_revision),
            Ok(StartMode::Snapshot) => WatchStart::Snapshot,
            Err(_) => {
                return Err(ctx.err(crate::core::Error::ParameterCheckFailed(
                    "unknown start_mode".into(),
                )))
            }
        };
        let items = self
            .0
            .watch(&ctx.caller, start, req.instance_ids)
            .map_err(|e| ctx.err(e))?;
        let request_id = ctx.request_id.clone();
        let stream = items.map(move |item| {
            let message = match item {
                Ok(WatchItem::Event(e)) => Message::Event(event(&e)),
                Ok(WatchItem::Progress(rev)) => {
                    Message::Progress(proto::Progress { revision: rev })
                }
                Ok(WatchItem::SnapshotEnd(rev)) => {
                    Message::SnapshotEnd(proto::Progress { revision: rev })
                }
                Err(e) => return Err(to_status(&e, &request_id)),
            };
            Ok(proto::WatchRevocationsResponse {
                message: Some(message),
            })
        });
        ctx.respond(Box::pin(stream) as WatchStream)
    }
}
