//! The one mapping from the core's [`Error`] to `tonic::Status`: a gRPC code, the Alibaba
//! code in the message and as a `google.rpc.ErrorInfo` reason, and the request id. Internal
//! errors are logged here, once, and reach the client as a generic message.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::core::Error;

/// The ErrorInfo domain of every error this service returns.
pub const ERROR_DOMAIN: &str = "mqtt-tokend";

fn grpc_code(err: &Error) -> Code {
    match err {
        Error::ParameterCheckFailed(_) | Error::InvalidParameter { .. } => Code::InvalidArgument,
        Error::InstancePermissionCheckFailed | Error::PermissionCheckFailed(_) => {
            Code::PermissionDenied
        }
        Error::Unauthenticated(_) | Error::AccessKeyNotFound | Error::AccessKeySecretMismatch => {
            Code::Unauthenticated
        }
        Error::ApplyTokenOverFlow { .. }
        | Error::QueryTokenOverFlow { .. }
        | Error::RevokeTokenOverFlow { .. }
        | Error::SystemOverFlow
        | Error::DeviceCredentialNumExceed
        | Error::WatchStreamNumExceed { .. } => Code::ResourceExhausted,
        Error::DeviceCredentialExsit => Code::AlreadyExists,
        Error::DeviceCredentialNotFound | Error::AccessKeyIdNotFound => Code::NotFound,
        Error::RevisionCompacted { .. } | Error::FutureRevision { .. } => Code::OutOfRange,
        Error::ServiceUnavailable => Code::Unavailable,
        Error::Internal(_) => Code::Internal,
    }
}

/// Converts a core error into the status a client sees.
pub fn to_status(err: &Error, request_id: &str) -> Status {
    let code = grpc_code(err);
    let alibaba = err.code();
    if let Error::Internal(source) = err {
        tracing::error!(request_id, error = %source, "internal error");
    }
    let mut metadata = HashMap::from([("request_id".to_owned(), request_id.to_owned())]);
    match err {
        Error::RevisionCompacted { oldest, .. } => {
            metadata.insert("oldest_revision".into(), oldest.to_string());
        }
        Error::FutureRevision { current, .. } => {
            metadata.insert("current_revision".into(), current.to_string());
        }
        Error::WatchStreamNumExceed { max } => {
            metadata.insert("max_watches_per_key".into(), max.to_string());
        }
        _ => {}
    }
    if let Some(ms) = err.retry_after_ms() {
        metadata.insert("retry_after_ms".into(), ms.to_string());
    }
    let details = ErrorDetails::with_error_info(alibaba.clone(), ERROR_DOMAIN, metadata);
    let mut status = Status::with_error_details(code, format!("{alibaba}: {err}"), details);
    if let Some(v) = super::request_id_metadata(request_id) {
        status.metadata_mut().insert("x-request-id", v);
    }
    if let Error::RevisionCompacted { oldest, .. } = err {
        if let Ok(v) = oldest.to_string().parse() {
            status.metadata_mut().insert("oldest-revision", v);
        }
    }
    status
}
