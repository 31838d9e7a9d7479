//! The REST side of metrics and the audit log, called from `handle` only: every request is
//! counted and timed once, under the action it named (`Unknown` for anything else, so a client
//! cannot mint label values); every mutating action and every failed authentication leaves
//! one audit line before the response goes out.

use std::{
    borrow::Cow,
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use super::{
    envelope::{RestError, Value},
    params::Params,
    signature,
};
use crate::core::{
    audit::{is_mutating, AuditEvent, Target},
    Caller, Core,
};

/// The transport label of REST requests.
const TRANSPORT: &str = "rest";

/// The actions the shim serves: the only values the `operation` label takes besides `Unknown`.
const ACTIONS: [&str; 8] = [
    "ApplyToken",
    "QueryToken",
    "RevokeToken",
    "RegisterDeviceCredential",
    "GetDeviceCredential",
    "RefreshDeviceCredential",
    "UnRegisterDeviceCredential",
    "ListDeviceCredentialClientId",
];

/// The response fields of a successful action.
pub(super) type Fields = Vec<(&'static str, Value)>;

/// One request, from arrival to its response.
pub(super) struct RestCall<'a> {
    core: &'a Core,
    request_id: &'a str,
    source: Option<SocketAddr>,
    started: Instant,
    /// Index into `ACTIONS`, or `ACTIONS.len()` for `Unknown`. Atomic only so the request's
    /// future stays `Send` while `handle`'s closures share the call.
    operation: AtomicUsize,
}

impl<'a> RestCall<'a> {
    pub(super) fn start(core: &'a Core, request_id: &'a str, source: Option<SocketAddr>) -> Self {
        Self {
            core,
            request_id,
            source,
            started: Instant::now(),
            operation: AtomicUsize::new(ACTIONS.len()),
        }
    }

    /// Names the request's operation once its action is known.
    pub(super) fn set_action(&self, action: Option<&str>) {
        let index = action
            .and_then(|a| ACTIONS.iter().position(|known| *known == a))
            .unwrap_or(ACTIONS.len());
        self.operation.store(index, Ordering::Relaxed);
    }

    fn operation(&self) -> &'static str {
        ACTIONS
            .get(self.operation.load(Ordering::Relaxed))
            .copied()
            .unwrap_or("Unknown")
    }

    /// Audits a failed authentication; returns the error to send (an `InternalError` instead
    /// when the line could not be written).
    pub(super) fn auth_failed(
        &self,
        err: RestError,
        authorization: Option<&str>,
        params: &Params,
    ) -> RestError {
        if !self.core.audit_enabled() {
            return err;
        }
        let (_, code, _) = err.describe();
        let presented = match authorization {
            Some(value) => signature::parse_v3_authorization(value)
                .map(|a| a.access_key_id)
                .unwrap_or_default(),
            None => params.get("AccessKeyId").unwrap_or_default().to_owned(),
        };
        let event = AuditEvent::now(
            self.request_id,
            TRANSPORT,
            self.source,
            &presented,
            self.operation(),
            Target::default(),
            &code,
        );
        match self.core.audit(&event) {
            Ok(()) => err,
            Err(e) => RestError::Core(e),
        }
    }

    /// Audits a mutating action's outcome (other actions pass through); an audit line that
    /// cannot be written turns the outcome into `InternalError`.
    pub(super) fn audit_action(
        &self,
        caller: &Caller,
        action: &str,
        params: &Params,
        outcome: Result<Fields, RestError>,
    ) -> Result<Fields, RestError> {
        if !is_mutating(action) || !self.core.audit_enabled() {
            return outcome;
        }
        let instance = params.get_or_empty("InstanceId");
        let client_id = params.get_or_empty("ClientId");
        let target = match action {
            "ApplyToken" => match outcome.as_ref().ok().and_then(|f| field(f, "Token")) {
                Some(token) => Target::token(instance, token).with_handle(
                    outcome
                        .as_ref()
                        .ok()
                        .and_then(|f| field(f, "TokenHandle"))
                        .unwrap_or_default(),
                ),
                None => Target::instance(instance),
            },
            "RevokeToken" => Target::token(instance, params.get_or_empty("Token")),
            _ => {
                let target = Target::device(instance, client_id);
                let key = outcome.as_ref().ok().and_then(|f| {
                    match f.iter().find(|(k, _)| *k == "DeviceCredential") {
                        Some((_, Value::Obj(c))) => field(c, "DeviceAccessKeyId"),
                        _ => None,
                    }
                });
                match key {
                    Some(key) => target.with_key(key),
                    None => target,
                }
            }
        };
        let code = match &outcome {
            Ok(_) => Cow::Borrowed("OK"),
            Err(e) => Cow::Owned(e.describe().1),
        };
        let event = AuditEvent::now(
            self.request_id,
            TRANSPORT,
            self.source,
            caller.access_key_id(),
            action,
            target,
            &code,
        );
        match self.core.audit(&event) {
            Ok(()) => outcome,
            Err(e) => Err(RestError::Core(e)),
        }
    }

    /// Records the finished request: `None` for a success, else the error sent.
    pub(super) fn record(&self, err: Option<&RestError>) {
        let metrics = self.core.metrics();
        let operation = self.operation();
        let code = match err {
            None => Cow::Borrowed("OK"),
            Some(e) => {
                let rate_limited = match e {
                    RestError::Throttling { .. } => true,
                    RestError::Core(core) => core.retry_after_ms().is_some(),
                    _ => false,
                };
                if rate_limited {
                    metrics.rate_limited(TRANSPORT, operation);
                }
                Cow::Owned(e.describe().1)
            }
        };
        metrics.request(TRANSPORT, operation, code, self.started.elapsed());
    }
}

fn field<'v>(fields: &'v [(&'static str, Value)], name: &str) -> Option<&'v str> {
    fields.iter().find_map(|(k, v)| match v {
        Value::Str(s) if *k == name => Some(s.as_str()),
        _ => None,
    })
}
