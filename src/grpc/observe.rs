//! The gRPC side of metrics and the audit log, called from [`super::Ctx`] only: every call is
//! counted and timed once, when it answers; every mutating call and every failed
//! authentication leaves one audit line before the answer goes out.

use std::{borrow::Cow, net::SocketAddr, time::Instant};

use tonic::metadata::MetadataMap;

use crate::core::{
    audit::{is_mutating, AuditEvent, Target},
    Core, Error,
};

/// The transport label of gRPC calls.
const TRANSPORT: &str = "grpc";

/// One call, from authentication to its answer.
pub(super) struct Call {
    pub rpc: &'static str,
    started: Instant,
    source: Option<SocketAddr>,
}

impl Call {
    pub(super) fn start(rpc: &'static str, source: Option<SocketAddr>) -> Self {
        Self {
            rpc,
            started: Instant::now(),
            source,
        }
    }

    /// Audits a failed authentication and records it; returns the error to send (an
    /// `InternalError` instead when the audit line could not be written).
    pub(super) fn auth_failed(
        &self,
        core: &Core,
        request_id: &str,
        metadata: &MetadataMap,
        err: Error,
    ) -> Error {
        if !core.audit_enabled() {
            self.record(core, &err);
            return err;
        }
        let code = err.code();
        let event = AuditEvent::now(
            request_id,
            TRANSPORT,
            self.source,
            presented_key_id(metadata),
            self.rpc,
            Target::default(),
            &code,
        );
        let err = match core.audit(&event) {
            Ok(()) => err,
            Err(audit) => audit,
        };
        self.record(core, &err);
        err
    }

    /// Audits the outcome of a mutating call, then records the call. `Err` carries the error
    /// to send instead: the call's own, or `InternalError` when its audit line failed.
    pub(super) fn finish(
        &self,
        core: &Core,
        request_id: &str,
        caller: &str,
        target: &Target,
        outcome: Result<(), Error>,
    ) -> Result<(), Error> {
        let outcome = if is_mutating(self.rpc) && core.audit_enabled() {
            let code = match &outcome {
                Ok(()) => Cow::Borrowed("OK"),
                Err(e) => Cow::Owned(e.code()),
            };
            let event = AuditEvent::now(
                request_id,
                TRANSPORT,
                self.source,
                caller,
                self.rpc,
                target.clone(),
                &code,
            );
            core.audit(&event).and(outcome)
        } else {
            outcome
        };
        match &outcome {
            Ok(()) => core.metrics().request(
                TRANSPORT,
                self.rpc,
                Cow::Borrowed("OK"),
                self.started.elapsed(),
            ),
            Err(e) => self.record(core, e),
        }
        outcome
    }

    fn record(&self, core: &Core, err: &Error) {
        let metrics = core.metrics();
        if err.retry_after_ms().is_some() {
            metrics.rate_limited(TRANSPORT, self.rpc);
        }
        metrics.request(
            TRANSPORT,
            self.rpc,
            Cow::Owned(err.code()),
            self.started.elapsed(),
        );
    }
}

/// The access key id a caller presented, for the audit line of a failed authentication:
/// the part of `Bearer <id>:<secret>` before the colon, never anything after it.
fn presented_key_id(metadata: &MetadataMap) -> &str {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.get(7..))
        .and_then(|credentials| credentials.trim().split_once(':'))
        .map_or("", |(id, _)| id)
}
