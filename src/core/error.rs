//! The one error enum of the service. Its variants are the API's error codes (Alibaba Cloud
//! MQTT's where one exists), so both transports map it exhaustively and a client sees the same
//! code over gRPC and REST.

use std::fmt;

/// Every failure a request can end in. `code()` is the wire error code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request-level check failed (e.g. a missing field that has no `InvalidParameter.X` code).
    #[error("An error occurred while validating the parameters. The parameters may be missing or invalid: {0}")]
    ParameterCheckFailed(String),
    /// One named parameter is missing or invalid (`InvalidParameter.<field>`).
    #[error("An error occurred while validating the parameter {field}: {reason}")]
    InvalidParameter {
        /// The Alibaba parameter name, e.g. `ExpireTime`.
        field: Field,
        /// What is wrong with it, for people.
        reason: String,
    },
    /// The caller's access key is not allowed on the instance.
    #[error("An error occurred while validating the permissions of the instance. Please verify the account that created the instance and its permissions settings.")]
    InstancePermissionCheckFailed,
    /// The caller's access key may not call this operation (e.g. a non-root key managing keys).
    #[error("An error occurred while validating the resource permissions: {0}")]
    PermissionCheckFailed(&'static str),
    /// No credentials, or malformed ones.
    #[error("missing or malformed credentials: {0}")]
    Unauthenticated(&'static str),
    /// The access key id does not exist.
    #[error("Specified access key is not found.")]
    AccessKeyNotFound,
    /// The access key secret does not match.
    #[error("Specified access key secret is not valid.")]
    AccessKeySecretMismatch,
    /// ApplyToken (and the device-credential operations, as Alibaba documents) over its rate.
    #[error("You have applied for tokens too many times. Please try again later.")]
    ApplyTokenOverFlow {
        /// How long until a call would be admitted.
        retry_after_ms: u64,
    },
    /// QueryToken over its rate.
    #[error("You have queried tokens too many times. Please try again later.")]
    QueryTokenOverFlow {
        /// How long until a call would be admitted.
        retry_after_ms: u64,
    },
    /// RevokeToken over its rate.
    #[error("You have revoked tokens too many times. Please try again later.")]
    RevokeTokenOverFlow {
        /// How long until a call would be admitted.
        retry_after_ms: u64,
    },
    /// The server is shedding load (e.g. shutting down).
    #[error("An error occurred while processing your request. Please try again.")]
    SystemOverFlow,
    /// RegisterDeviceCredential for a client id that already has one. The spelling is Alibaba's.
    #[error("Device Credential Exsit")]
    DeviceCredentialExsit,
    /// No credential for that client id.
    #[error("Device Credential Not Found. Check if the device certificate is registered.")]
    DeviceCredentialNotFound,
    /// The per-instance credential cap is reached. The wording (typo included) is Alibaba's.
    #[error("The number of device credentia exceeds the limit. Please revoke unused device certificates")]
    DeviceCredentialNumExceed,
    /// Access key management: no such key.
    #[error("the access key does not exist")]
    AccessKeyIdNotFound,
    /// A watch asked to start below the oldest retained revision.
    #[error("revision {requested} has been compacted; the oldest retained revision is {oldest}")]
    RevisionCompacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still retained.
        oldest: u64,
    },
    /// A watch asked to start above the next revision to be written.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: u64,
        /// The newest written revision.
        current: u64,
    },
    /// The caller's access key already holds the most revocation watch streams it may.
    #[error("this access key already has {max} revocation watch streams open; close one or raise --max-watches-per-key")]
    WatchStreamNumExceed {
        /// The limit (`--max-watches-per-key`).
        max: usize,
    },
    /// The server is shutting down; retry against it (or a peer) after it restarts.
    #[error("The server is temporarily unavailable.")]
    ServiceUnavailable,
    /// Anything the client cannot fix: storage failures, broken invariants. The source is
    /// logged once by the transport and never sent to the client.
    #[error("An error occurred while processing your request. Try again later.")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The parameter names that have their own `InvalidParameter.<Name>` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `InstanceId`.
    InstanceId,
    /// `Actions`.
    Actions,
    /// `Resources`.
    Resources,
    /// `ExpireTime`.
    ExpireTime,
    /// `Token`.
    Token,
    /// `ClientId`.
    ClientId,
    /// `GroupId`.
    GroupId,
    /// `PageNo`.
    PageNo,
    /// `PageSize`.
    PageSize,
    /// `NextToken`.
    NextToken,
    /// `InstanceIds` (access key management).
    InstanceIds,
    /// `Description` (access key management).
    Description,
    /// `AccessKeyId` (access key management).
    AccessKeyId,
    /// `StartRevision` (revocation watch).
    StartRevision,
    /// `TokenHandle` (RevokeTokens).
    TokenHandle,
}

impl Field {
    /// The Alibaba-style parameter name.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::InstanceId => "InstanceId",
            Field::Actions => "Actions",
            Field::Resources => "Resources",
            Field::ExpireTime => "ExpireTime",
            Field::Token => "Token",
            Field::ClientId => "ClientId",
            Field::GroupId => "GroupId",
            Field::PageNo => "PageNo",
            Field::PageSize => "PageSize",
            Field::NextToken => "NextToken",
            Field::InstanceIds => "InstanceIds",
            Field::Description => "Description",
            Field::AccessKeyId => "AccessKeyId",
            Field::StartRevision => "StartRevision",
            Field::TokenHandle => "TokenHandle",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// Shorthand for `InvalidParameter`.
    pub fn invalid(field: Field, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            field,
            reason: reason.into(),
        }
    }

    /// Wraps a failure the client cannot fix.
    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Internal(source.into())
    }

    /// The wire error code, e.g. `InvalidParameter.ExpireTime`.
    pub fn code(&self) -> String {
        match self {
            Error::InvalidParameter { field, .. } => format!("InvalidParameter.{field}"),
            other => other.static_code().to_owned(),
        }
    }

    /// The code of every variant but `InvalidParameter` (whose code carries the field).
    fn static_code(&self) -> &'static str {
        match self {
            Error::ParameterCheckFailed(_) => "ParameterCheckFailed",
            Error::InvalidParameter { .. } => "InvalidParameter",
            Error::InstancePermissionCheckFailed => "InstancePermissionCheckFailed",
            Error::PermissionCheckFailed(_) => "PermissionCheckFailed",
            Error::Unauthenticated(_) => "MissingAuthorization",
            Error::AccessKeyNotFound => "InvalidAccessKeyId.NotFound",
            Error::AccessKeySecretMismatch => "InvalidAccessKeySecret",
            Error::ApplyTokenOverFlow { .. } => "ApplyTokenOverFlow",
            Error::QueryTokenOverFlow { .. } => "QueryTokenOverFlow",
            Error::RevokeTokenOverFlow { .. } => "RevokeTokenOverFlow",
            Error::SystemOverFlow => "SystemOverFlow",
            Error::DeviceCredentialExsit => "DeviceCredentialExsit",
            Error::DeviceCredentialNotFound => "DeviceCredentialNotFound",
            Error::DeviceCredentialNumExceed => "DeviceCredentialNumExceed",
            Error::AccessKeyIdNotFound => "AccessKeyNotFound",
            Error::RevisionCompacted { .. } => "RevisionCompacted",
            Error::FutureRevision { .. } => "FutureRevision",
            Error::WatchStreamNumExceed { .. } => "WatchStreamNumExceed",
            Error::ServiceUnavailable => "ServiceUnavailable",
            Error::Internal(_) => "InternalError",
        }
    }

    /// Milliseconds the client should wait before retrying, for rate-limit errors.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Error::ApplyTokenOverFlow { retry_after_ms }
            | Error::QueryTokenOverFlow { retry_after_ms }
            | Error::RevokeTokenOverFlow { retry_after_ms } => Some(*retry_after_ms),
            _ => None,
        }
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            // The shared store is out of reach (a network or etcd outage): nothing was
            // written, and the client should retry, here or on another replica.
            crate::store::StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "storage backend unavailable");
                Error::ServiceUnavailable
            }
            e => Error::internal(e),
        }
    }
}

/// The result of a core operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
