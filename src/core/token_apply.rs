//! ApplyToken: checks the request, mints the token and writes it. On a shared store the
//! write is its own read barrier: the transport reads nothing from the store first, and once
//! the token is durable and this replica has seen everything acknowledged before it
//! ([`Core::settle`]), the caller is checked again and a token born covered by a scope
//! revocation it had not seen is minted again.

use super::durability::Flushed;
use super::revocation::MAX_ATTEMPTS as MAX_WRITE_ATTEMPTS;
use super::token::{
    handle, Actions, AppliedToken, IssuedToken, TokenRequest, MAX_LIFETIME_MS, MAX_RESOURCES,
    MIN_LIFETIME_MS,
};
use super::{
    access_key::check_instance_id, now_ms, topic, Caller, Core, Error, Field, Operation, Result,
};
use crate::store::{Op, TokenId};

impl Core {
    /// ApplyToken: mints a token. Returns after the token is durable.
    ///
    /// # Errors
    /// `InvalidParameter.InstanceId|Actions|Resources|ExpireTime`, `InstancePermissionCheckFailed`,
    /// `ApplyTokenOverFlow`, `InternalError`.
    pub async fn apply_token(&self, caller: &Caller, req: TokenRequest) -> Result<AppliedToken> {
        check_instance_id(&req.instance_id)?;
        caller.check_instance(&req.instance_id)?;
        self.limiter
            .check(caller.access_key_id(), Operation::ApplyToken)?;
        if !req.actions.read && !req.actions.write {
            return Err(Error::invalid(
                Field::Actions,
                "at least one of R and W is required",
            ));
        }
        if req.resources.is_empty() {
            return Err(Error::invalid(
                Field::Resources,
                "at least one resource is required",
            ));
        }
        if req.resources.len() > MAX_RESOURCES {
            return Err(Error::invalid(
                Field::Resources,
                format!("at most {MAX_RESOURCES} resources"),
            ));
        }
        let resources = topic::normalize_filters(req.resources).map_err(|(i, e)| {
            Error::invalid(
                Field::Resources,
                format!("resource {} is not a valid topic filter: {e}", i + 1),
            )
        })?;
        let now = now_ms();
        if req.expire_time < now.saturating_add(MIN_LIFETIME_MS) {
            return Err(Error::invalid(
                Field::ExpireTime,
                too_early(req.expire_time, now),
            ));
        }
        let expire_time = req.expire_time.min(now.saturating_add(MAX_LIFETIME_MS));
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (applied, minted_revision) = self
                .mint(
                    caller,
                    &req.instance_id,
                    req.actions,
                    &resources,
                    expire_time,
                    now,
                )
                .await?;
            if !self.shared {
                return Ok(applied);
            }
            // On a shared store the transport read nothing from it first (no read barrier):
            // the commit is the barrier. Once this replica reads everything acknowledged
            // before the token was sent, the caller is checked again, and a token born covered
            // by a scope revocation it had not seen yet is minted again (the dead one is
            // harmless and swept at expiry).
            self.settle().await?;
            self.recheck_caller(caller, &req.instance_id)?;
            let covered = self
                .revoked_with_owner(&req.instance_id, caller.access_key_id(), minted_revision)
                .is_some();
            if !covered {
                return Ok(applied);
            }
            if attempts >= MAX_WRITE_ATTEMPTS {
                return Err(Error::ServiceUnavailable);
            }
        }
    }

    /// Writes one new token and waits until it is durable; returns it with the revision it
    /// was minted at.
    async fn mint(
        &self,
        caller: &Caller,
        instance_id: &str,
        actions: Actions,
        resources: &[String],
        expire_time: i64,
        now: i64,
    ) -> Result<(AppliedToken, u64)> {
        // Not a secret (a token is valid only with its MAC, and ListTokens shows handles), but
        // unique and unpredictable: rand's thread-local CSPRNG (ChaCha, seeded and reseeded
        // from the OS) gives that without a getrandom syscall per call (1.5% of a durable
        // ApplyToken's server CPU). Secrets keep `random_bytes`, straight from the OS.
        let id: TokenId = rand::random();
        let kid = self.keyring.active_id();
        let token = self
            .token_string(kid, instance_id, &id)
            .ok_or_else(|| Error::internal("active keyring key is missing"))?;
        // Read after `now`, and without the writer lock: a scope revocation that has applied
        // its tombstone by now has also bumped this, so the token is not covered; one that has
        // not is concurrent with this call, and covering the token is right too.
        // On a shared store, the newest committed revision of any replica (read again on every
        // attempt below: staged revocations that were rolled back must not count).
        let minted_revision = if self.shared {
            self.store.minting_revision()?
        } else {
            self.revocations.last_applied()
        };
        let mut record = IssuedToken {
            instance_id: instance_id.to_owned(),
            actions,
            resources: resources.to_vec(),
            expire_ms: expire_time,
            creator: caller.access_key_id().to_owned(),
            create_ms: now,
            revoked_ms: None,
            minted_revision,
            keyring_id: kid,
        };
        // A fresh random id cannot collide with a concurrent writer: no writer lock needed. A
        // shared store may still roll the batch back when a batch staged with it lost a race;
        // then it is simply written again.
        let mut attempts = 0;
        while self
            .durability
            .wait(
                self.store
                    .apply(vec![Op::InsertToken(id, record.clone())])?,
            )
            .await?
            == Flushed::Conflict
        {
            attempts += 1;
            if attempts >= MAX_WRITE_ATTEMPTS {
                return Err(Error::ServiceUnavailable);
            }
            record.minted_revision = self.store.minting_revision()?;
        }
        let applied = AppliedToken {
            token,
            handle: handle(&id),
            expire_time,
        };
        Ok((applied, record.minted_revision))
    }
}

/// Below this an ExpireTime in milliseconds would be in early 1973, while in seconds it
/// reaches the year 5138: such a value is seconds sent for milliseconds, the commonest mistake.
const SECONDS_NOT_MILLISECONDS_BELOW: i64 = 100_000_000_000;

/// Why an ExpireTime earlier than `now` + [`MIN_LIFETIME_MS`] is refused, naming the likely
/// mistake.
fn too_early(expire_time: i64, now: i64) -> String {
    const RULE: &str =
        "it must be at least 60 seconds in the future, in milliseconds since the Unix epoch";
    if expire_time > 0 && expire_time < SECONDS_NOT_MILLISECONDS_BELOW {
        format!("{expire_time} looks like seconds, not milliseconds, since the Unix epoch; {RULE}")
    } else if expire_time <= now {
        format!("{expire_time} is in the past (now is {now}); {RULE}")
    } else {
        let seconds = (expire_time - now) / 1000;
        format!("{expire_time} is only {seconds} seconds from now; {RULE}")
    }
}
