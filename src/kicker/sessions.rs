//! From a revocation event to the client ids to disconnect: the credential the event names,
//! and the pages of `BrokerSessionService.ListCredentialSessions` that rest on it.

use std::time::Duration;

use mqtt_tokend_client::{
    proto::{
        broker_session_service_client::BrokerSessionServiceClient,
        list_credential_sessions_request::Credential, ListCredentialSessionsRequest,
    },
    AuthChannel, Client, RevocationEvent, RevocationKind,
};
use tonic::Code;

/// Attempts of one ListCredentialSessions page before the kicker treats the service as gone
/// and resumes from its saved revision (on the next endpoint, if several).
const LIST_ATTEMPTS: u32 = 4;
/// First delay between attempts; doubles.
const LIST_BACKOFF: Duration = Duration::from_millis(200);

/// The credential whose sessions a revocation ends, as ListCredentialSessions names it:
/// the token fingerprint, the device access key id, the access key id, or a token scope (the
/// minting key, or the instance). `None` for events
/// that end no session (an unknown kind from a newer server, or a token event without a
/// fingerprint).
pub fn credential_of(event: &RevocationEvent) -> Option<Credential> {
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    match event.kind {
        RevocationKind::TokenRevoked => {
            nonempty(&event.token_fingerprint).map(Credential::TokenFingerprint)
        }
        RevocationKind::DeviceCredentialRefreshed
        | RevocationKind::DeviceCredentialUnregistered => {
            nonempty(&event.key_id).map(Credential::DeviceAccessKeyId)
        }
        // Token and Signature usernames both name an access key; the service lists both.
        RevocationKind::AccessKeyDeleted => nonempty(&event.key_id).map(Credential::AccessKeyId),
        // Scope events: one event for every token of the scope, listed by the scope itself.
        RevocationKind::TokensOfKeyRevoked => {
            nonempty(&event.key_id).map(Credential::MintingAccessKeyId)
        }
        RevocationKind::InstanceTokensRevoked => {
            nonempty(&event.instance_id).map(Credential::TokenInstanceId)
        }
        RevocationKind::Unknown(_) => None,
    }
}

/// The instances to list an event's sessions in. An event names one instance, or none for a
/// key allowed on every instance; with `--instance-id` set, such an event is listed in each
/// of those instances only, so the kicker never reaches beyond its filter.
pub fn instances_of<'a>(event: &'a RevocationEvent, filter: &'a [String]) -> Vec<&'a str> {
    if event.instance_id.is_empty() && !filter.is_empty() {
        filter.iter().map(String::as_str).collect()
    } else {
        vec![event.instance_id.as_str()]
    }
}

/// Why a listing failed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The service refused the call for a reason retrying cannot fix (the key, the request).
    #[error("ListCredentialSessions refused: {}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    /// The service stayed unreachable or overloaded over every attempt.
    #[error("ListCredentialSessions unavailable: {}: {}", .0.code(), .0.message())]
    Unavailable(tonic::Status),
}

/// Whether a failed call is worth repeating as is.
pub fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Cancelled
    )
}

/// Pages through the sessions of one credential, one page in memory at a time.
#[derive(Debug)]
pub struct SessionPages {
    client: BrokerSessionServiceClient<AuthChannel>,
    request: ListCredentialSessionsRequest,
    done: bool,
}

impl SessionPages {
    /// The sessions of `credential` in `instance_id` (empty: every instance the key may see).
    pub fn new(client: &Client, instance_id: &str, credential: Credential, page_size: u32) -> Self {
        Self {
            client: client.broker_sessions(),
            request: ListCredentialSessionsRequest {
                instance_id: instance_id.to_owned(),
                credential: Some(credential),
                page_size,
                next_token: String::new(),
            },
            done: false,
        }
    }

    /// The client ids of the next page (possibly none while more follow); `None` after the
    /// last page. A transient failure is retried a few times with backoff first.
    ///
    /// # Errors
    /// `Refused` for a failure retrying cannot fix, `Unavailable` when the attempts ran out.
    pub async fn next_page(&mut self) -> Result<Option<Vec<String>>, ListError> {
        if self.done {
            return Ok(None);
        }
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            match self
                .client
                .list_credential_sessions(self.request.clone())
                .await
            {
                Ok(r) => break r.into_inner(),
                Err(status) if !transient(status.code()) => return Err(ListError::Refused(status)),
                Err(status) if attempt >= LIST_ATTEMPTS => {
                    return Err(ListError::Unavailable(status))
                }
                Err(status) => {
                    let delay = LIST_BACKOFF.saturating_mul(1 << (attempt - 1));
                    tracing::warn!(code = ?status.code(), message = status.message(), retry_in = ?delay, "ListCredentialSessions failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        self.done = response.next_token.is_empty();
        self.request.next_token = response.next_token;
        Ok(Some(
            response.sessions.into_iter().map(|s| s.client_id).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: RevocationKind, instance: &str, fp: &str, key_id: &str) -> RevocationEvent {
        RevocationEvent {
            revision: 1,
            kind,
            instance_id: instance.into(),
            token_fingerprint: fp.into(),
            token_handle: String::new(),
            client_id: "GID_a@@@b".into(),
            key_id: key_id.into(),
            reason: String::new(),
            expire_time: 0,
            revoke_time: 0,
        }
    }

    #[test]
    fn each_kind_names_its_credential() {
        use RevocationKind::*;
        assert_eq!(
            credential_of(&event(TokenRevoked, "i", "ab12", "")),
            Some(Credential::TokenFingerprint("ab12".into()))
        );
        for kind in [DeviceCredentialRefreshed, DeviceCredentialUnregistered] {
            assert_eq!(
                credential_of(&event(kind, "i", "", "DC.k")),
                Some(Credential::DeviceAccessKeyId("DC.k".into()))
            );
        }
        assert_eq!(
            credential_of(&event(AccessKeyDeleted, "", "", "MTAK1")),
            Some(Credential::AccessKeyId("MTAK1".into()))
        );
        assert_eq!(
            credential_of(&event(TokensOfKeyRevoked, "i", "", "MTAK1")),
            Some(Credential::MintingAccessKeyId("MTAK1".into()))
        );
        assert_eq!(
            credential_of(&event(InstanceTokensRevoked, "i", "", "")),
            Some(Credential::TokenInstanceId("i".into()))
        );
        assert_eq!(credential_of(&event(TokenRevoked, "i", "", "MTAK1")), None);
        assert_eq!(credential_of(&event(Unknown(9), "i", "ab", "k")), None);
    }

    #[test]
    fn an_event_of_every_instance_is_listed_in_the_filter_only() {
        let filter = vec!["a".to_owned(), "b".to_owned()];
        let everywhere = event(RevocationKind::AccessKeyDeleted, "", "", "k");
        assert_eq!(instances_of(&everywhere, &filter), ["a", "b"]);
        assert_eq!(instances_of(&everywhere, &[]), [""]);
        let one = event(RevocationKind::AccessKeyDeleted, "a", "", "k");
        assert_eq!(instances_of(&one, &filter), ["a"]);
    }
}
