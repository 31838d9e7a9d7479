//! RevocationService: WatchRevocations, the request checked and the core's watch opened. The
//! response body is `super::watch_body`'s, which converts each event to the wire and frames it
//! once for every stream.

use std::{pin::Pin, sync::Arc};

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{
    open,
    watch_body::{BodySlot, WatchBody},
};
use crate::{
    core::{Core, Error, Field, WatchStart},
    proto::{self, revocation_service_server::RevocationService, StartMode},
};

/// The RevocationService implementation.
pub struct RevocationGrpc(pub(crate) Arc<Core>);

/// Where a watch starts, by etcd's rule: a start revision alone means "from there"; a start
/// revision with a mode that has no use for it is refused rather than half-obeyed (it used to
/// be ignored, and the broker silently missed every event from it on).
fn start(mode: i32, revision: u64) -> Result<WatchStart, Error> {
    let conflict = || {
        Error::invalid(
            Field::StartRevision,
            "must be 0 with START_MODE_NOW and START_MODE_SNAPSHOT; set START_MODE_REVISION \
             (or leave the mode unset) to start from it",
        )
    };
    match StartMode::try_from(mode) {
        Ok(StartMode::Unspecified) if revision == 0 => Ok(WatchStart::Now),
        Ok(StartMode::Unspecified | StartMode::Revision) => Ok(WatchStart::Revision(revision)),
        Ok(StartMode::Now) if revision == 0 => Ok(WatchStart::Now),
        Ok(StartMode::Snapshot) if revision == 0 => Ok(WatchStart::Snapshot),
        Ok(StartMode::Now | StartMode::Snapshot) => Err(conflict()),
        Err(_) => Err(Error::ParameterCheckFailed("unknown start_mode".into())),
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
        let (ctx, req) = open(&self.0, request, "WatchRevocations").await?;
        let start = start(req.start_mode, req.start_revision).map_err(|e| ctx.err(e))?;
        let items = self
            .0
            .watch(&ctx.caller, start, req.instance_ids)
            .map_err(|e| ctx.err(e))?;
        let body = WatchBody::new(items, ctx.request_id.clone());
        // The stream tonic would encode stands in for the body only if the server lacks
        // `WithWatchBody`: then the watch fails loudly instead of ending empty.
        let unwired: WatchStream = Box::pin(tokio_stream::once(Err(Status::internal(
            "the watch body is not wired into the server",
        ))));
        let mut response = ctx.respond(unwired)?;
        response.extensions_mut().insert(BodySlot::new(body));
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_revision_alone_resumes_and_conflicting_modes_are_refused() {
        let code = |mode: StartMode, rev| start(mode as i32, rev).map_err(|e| e.code());
        assert_eq!(code(StartMode::Unspecified, 0), Ok(WatchStart::Now));
        assert_eq!(
            code(StartMode::Unspecified, 42),
            Ok(WatchStart::Revision(42))
        );
        assert_eq!(code(StartMode::Revision, 42), Ok(WatchStart::Revision(42)));
        // Revision 0 in REVISION mode stays the core's "revisions start at 1".
        assert_eq!(code(StartMode::Revision, 0), Ok(WatchStart::Revision(0)));
        assert_eq!(code(StartMode::Now, 0), Ok(WatchStart::Now));
        assert_eq!(code(StartMode::Snapshot, 0), Ok(WatchStart::Snapshot));
        for mode in [StartMode::Now, StartMode::Snapshot] {
            assert_eq!(
                code(mode, 42),
                Err("InvalidParameter.StartRevision".to_owned())
            );
        }
        assert_eq!(
            start(99, 0).map_err(|e| e.code()),
            Err("ParameterCheckFailed".to_owned())
        );
    }
}
