//! The kicker's side of broker sessions: which sessions rest on a revoked credential, and the
//! sweep that deletes sessions once they are past the kick grace.

use super::Credential;
use crate::core::{now_ms, Caller, Core, Error, Field, Result};

/// Most sessions one page of [`Core::credential_sessions`] returns.
pub const MAX_SESSION_PAGE: usize = 10_000;
/// The page size when the caller names none.
pub const DEFAULT_SESSION_PAGE: usize = 1_000;
/// Sessions deleted per sweep batch.
const SWEEP_BATCH: usize = 1024;
/// How long an expired session stays listed for the kicker (and unswept), at most: rmqtt
/// disconnects an expired client at its next keepalive, not at `expire_at`, so a revocation in
/// between must still find it. Capped at the TTL.
pub const KICK_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// A session listed for the kicker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClient {
    /// The MQTT client id to disconnect.
    pub client_id: String,
    /// The username it connected with.
    pub username: String,
    /// Its instance.
    pub instance_id: String,
    /// When the session ends anyway, ms since the Unix epoch.
    pub expire_time: i64,
}

/// One page of sessions.
#[derive(Debug, Clone, Default)]
pub struct SessionPage {
    /// The sessions.
    pub sessions: Vec<SessionClient>,
    /// Where the next page starts; empty on the last page.
    pub next_token: String,
}

impl Core {
    /// [`KICK_GRACE`], capped at the TTL, in ms.
    fn kick_grace_ms(&self) -> i64 {
        let grace = KICK_GRACE.min(self.config.broker_session_ttl);
        i64::try_from(grace.as_millis()).unwrap_or(i64::MAX)
    }

    /// The sessions recorded under the caller's access key that rest on `credential`, in
    /// client id order: the clients a kicker disconnects when it is revoked. Includes sessions
    /// that expired less than the kick grace ago.
    /// `instance_id` narrows to one instance (empty = every instance the caller may see; the
    /// instance's tokens, [`Credential::InstanceTokens`], need one).
    ///
    /// # Errors
    /// `InvalidParameter.PageSize` / `NextToken` / `InstanceId`, `InstancePermissionCheckFailed`,
    /// or a storage failure.
    pub fn credential_sessions(
        &self,
        caller: &Caller,
        instance_id: &str,
        credential: &Credential,
        next_token: &str,
        page_size: usize,
    ) -> Result<SessionPage> {
        let limit = match page_size {
            0 => DEFAULT_SESSION_PAGE,
            n if n > MAX_SESSION_PAGE => {
                return Err(Error::invalid(
                    Field::PageSize,
                    format!("at most {MAX_SESSION_PAGE}"),
                ))
            }
            n => n,
        };
        if next_token.len() > 256 {
            return Err(Error::invalid(Field::NextToken, "too long"));
        }
        if !instance_id.is_empty() || *credential == Credential::InstanceTokens {
            crate::core::access_key::check_instance_id(instance_id)?;
            caller.check_instance(instance_id)?;
        }
        let after = (!next_token.is_empty()).then_some(next_token);
        let records = self.store.broker_sessions_by_credential(
            caller.access_key_id(),
            &credential.index_key(),
            after,
            limit,
        )?;
        let next_token = if records.len() == limit {
            records
                .last()
                .map(|r| r.client_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let listed_after = now_ms().saturating_sub(self.kick_grace_ms());
        let sessions = records
            .into_iter()
            .filter(|r| r.expire_ms > listed_after)
            .filter(|r| instance_id.is_empty() || r.instance_id == instance_id)
            .filter(|r| caller.allowed_on(&r.instance_id))
            .map(|r| SessionClient {
                client_id: r.client_id,
                username: r.username,
                instance_id: r.instance_id,
                expire_time: r.expire_ms,
            })
            .collect();
        Ok(SessionPage {
            sessions,
            next_token,
        })
    }

    /// Deletes every broker session that expired more than the kick grace ago. Returns how
    /// many were deleted.
    ///
    /// # Errors
    /// The store failed.
    pub async fn sweep_broker_sessions(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let before = now_ms().saturating_sub(self.kick_grace_ms());
            let expired = self.store.expired_broker_sessions(before, SWEEP_BATCH)?;
            let n = expired.len();
            for rec in expired {
                // Only if unchanged: a CONNECT may have just replaced it.
                if self
                    .store
                    .swap_broker_session(&rec.namespace, &rec.client_id, Some(&rec), None)
                    .await?
                {
                    total += 1;
                }
            }
            if n < SWEEP_BATCH {
                break;
            }
            tokio::task::yield_now().await;
        }
        if total > 0 {
            self.flush().await?;
            tracing::debug!(deleted = total, "swept expired broker sessions");
        }
        Ok(total)
    }
}
