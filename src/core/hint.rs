//! What a client can do about each error: one sentence per code, for REST's `Recommend` field
//! (and anywhere else a transport has room for advice). The error's message says what is
//! wrong; the hint says how to fix it, using Alibaba's parameter names as the codes do.

use super::{error::Field, Error};

impl Error {
    /// A short recommendation for the caller; empty when the message says it all.
    pub fn recommend(&self) -> String {
        match self {
            Error::InvalidParameter { field, .. } => field_hint(*field).to_owned(),
            Error::ParameterCheckFailed(_) => String::new(),
            Error::InstancePermissionCheckFailed => "Use an access key allowed on this InstanceId: `mqtt-tokend access-key list` shows each key's instances, `mqtt-tokend access-key create --instance ID` makes one.".into(),
            Error::PermissionCheckFailed(_) => "Only the root access key (root-access-key.json in the data directory) manages access keys, and it cannot be deleted.".into(),
            Error::Unauthenticated(_) => "Send the metadata `authorization: Bearer AccessKeyId:AccessKeySecret`.".into(),
            Error::AccessKeyNotFound => "Check the AccessKeyId: keys are created on this server with `mqtt-tokend access-key create`; a key of another data directory is unknown here.".into(),
            Error::AccessKeySecretMismatch => "Check the AccessKeySecret: it is the one printed when the key was created.".into(),
            Error::ApplyTokenOverFlow { retry_after_ms }
            | Error::QueryTokenOverFlow { retry_after_ms }
            | Error::RevokeTokenOverFlow { retry_after_ms } => format!(
                "Retry after {retry_after_ms} ms; the per-key limits are the server's --rate-* flags."
            ),
            Error::SystemOverFlow | Error::ServiceUnavailable => {
                "Retry shortly; the server is busy or restarting.".into()
            }
            Error::DeviceCredentialExsit => "Use GetDeviceCredential to read the existing credential, or RefreshDeviceCredential to replace it.".into(),
            Error::DeviceCredentialNotFound => "Register the ClientId with RegisterDeviceCredential first.".into(),
            Error::DeviceCredentialNumExceed => "UnRegister unused credentials, or raise the server's --max-devices-per-instance.".into(),
            Error::AccessKeyIdNotFound => "`mqtt-tokend access-key list` shows the existing keys.".into(),
            Error::RevisionCompacted { .. } => "Forget the local state and watch again with START_MODE_SNAPSHOT.".into(),
            Error::FutureRevision { current, .. } => format!(
                "Start at most at revision {}, or use START_MODE_NOW.",
                current.saturating_add(1)
            ),
            Error::WatchStreamNumExceed { .. } => "Close a watch stream of this key (a broker needs one), or raise the server's --max-watches-per-key.".into(),
            Error::Internal(_) => "Retry; if it persists, the server log has the cause under this RequestId.".into(),
        }
    }
}

fn field_hint(field: Field) -> &'static str {
    match field {
        Field::InstanceId | Field::InstanceIds => "An instance id is any string of letters, digits, '-' and '_' (at most 64); there is nothing to create first, but the access key must be allowed on it.",
        Field::Actions => "Use R (subscribe), W (publish) or R,W.",
        Field::Resources => "Send 1 to 100 MQTT topic filters, comma-separated; '+' must be a whole level and '#' the whole last level.",
        Field::ExpireTime => "Send milliseconds since the Unix epoch, 60 seconds to 30 days ahead: e.g. $(( $(date +%s) * 1000 + 3600000 )) in a shell, int(time.time() * 1000) + 3600000 in Python.",
        Field::Token => "Send the token ApplyToken returned for this InstanceId.",
        Field::ClientId => "Use GroupId@@@DeviceId, e.g. GID_car@@@vin0001 (at most 64 characters).",
        Field::GroupId => "Use GID_ or GID- followed by letters, digits, '-' or '_' (7 to 64 characters).",
        Field::PageNo => "PageNo counts from 1; for deep pages pass the previous page's NextToken instead.",
        Field::PageSize => "Send a PageSize from 1 to 100.",
        Field::NextToken => "Send the NextToken of the previous page unchanged, or none for the first page.",
        Field::Description => "Keep the description short (at most 256 bytes).",
        Field::AccessKeyId => "`mqtt-tokend access-key list` shows the existing keys.",
        Field::StartRevision => "Revisions start at 1; send start_revision with START_MODE_REVISION (or no mode), never with START_MODE_NOW or START_MODE_SNAPSHOT.",
        Field::TokenHandle => "Send the token_handle ApplyToken returned (th_…), or one ListTokens lists.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_error_has_a_hint() {
        for field in [
            Field::InstanceId,
            Field::Actions,
            Field::Resources,
            Field::ExpireTime,
            Field::Token,
            Field::ClientId,
            Field::GroupId,
            Field::PageNo,
            Field::PageSize,
            Field::NextToken,
            Field::InstanceIds,
            Field::Description,
            Field::AccessKeyId,
            Field::StartRevision,
            Field::TokenHandle,
        ] {
            assert!(
                !Error::invalid(field, "x").recommend().is_empty(),
                "{field}"
            );
        }
        let wait = Error::RevokeTokenOverFlow {
            retry_after_ms: 180,
        }
        .recommend();
        assert!(wait.contains("180 ms"), "{wait}");
    }
}
