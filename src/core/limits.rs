//! Per access key, per operation rate limits (GCRA, i.e. a token bucket with a burst of one
//! second's worth of calls). Defaults are Alibaba's current documented QPS limits; 0 means
//! unlimited and skips the limiter entirely.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{Error, Result};

/// The rate-limited operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// ApplyToken.
    ApplyToken,
    /// QueryToken.
    QueryToken,
    /// RevokeToken.
    RevokeToken,
    /// RegisterDeviceCredential.
    RegisterDeviceCredential,
    /// GetDeviceCredential.
    GetDeviceCredential,
    /// RefreshDeviceCredential.
    RefreshDeviceCredential,
    /// UnRegisterDeviceCredential.
    UnRegisterDeviceCredential,
    /// ListDeviceCredentialClientId.
    ListDeviceCredentialClientId,
}

/// Calls per second allowed per access key for each operation; 0 = unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// ApplyToken (Alibaba: 100/s).
    pub apply_token: u32,
    /// QueryToken (Alibaba: 100/s).
    pub query_token: u32,
    /// RevokeToken (Alibaba: 5/s).
    pub revoke_token: u32,
    /// Each device credential operation (Alibaba: 500/s).
    pub device_credential: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            apply_token: 100,
            query_token: 100,
            revoke_token: 5,
            device_credential: 500,
        }
    }
}

impl RateLimits {
    /// No limits at all (benchmarks, tests).
    pub fn unlimited() -> Self {
        Self {
            apply_token: 0,
            query_token: 0,
            revoke_token: 0,
            device_credential: 0,
        }
    }

    fn rate(&self, op: Operation) -> u32 {
        match op {
            Operation::ApplyToken => self.apply_token,
            Operation::QueryToken => self.query_token,
            Operation::RevokeToken => self.revoke_token,
            Operation::RegisterDeviceCredential
            | Operation::GetDeviceCredential
            | Operation::RefreshDeviceCredential
            | Operation::UnRegisterDeviceCredential
            | Operation::ListDeviceCredentialClientId => self.device_credential,
        }
    }
}

fn overflow(op: Operation, retry_after_ms: u64) -> Error {
    match op {
        Operation::QueryToken => Error::QueryTokenOverFlow { retry_after_ms },
        Operation::RevokeToken => Error::RevokeTokenOverFlow { retry_after_ms },
        // Alibaba documents ApplyTokenOverFlow for the device credential operations too.
        Operation::ApplyToken
        | Operation::RegisterDeviceCredential
        | Operation::GetDeviceCredential
        | Operation::RefreshDeviceCredential
        | Operation::UnRegisterDeviceCredential
        | Operation::ListDeviceCredentialClientId => Error::ApplyTokenOverFlow { retry_after_ms },
    }
}

/// The limiter state: theoretical arrival time per (key, operation).
pub(crate) struct Limiter {
    limits: RateLimits,
    epoch: Instant,
    tat: Mutex<HashMap<(String, Operation), Duration>>,
}

impl Limiter {
    pub(crate) fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            epoch: Instant::now(),
            tat: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one call of `op` by `key`, or says how long to wait.
    pub(crate) fn check(&self, key: &str, op: Operation) -> Result<()> {
        let rate = self.limits.rate(op);
        if rate == 0 {
            return Ok(());
        }
        let interval = Duration::from_secs(1) / rate;
        let burst = Duration::from_secs(1);
        let now = self.epoch.elapsed();
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        // Bound memory: entries whose bucket has refilled carry no state worth keeping.
        if map.len() > 100_000 {
            map.retain(|_, tat| *tat > now);
        }
        let tat = map.entry((key.to_owned(), op)).or_insert(now);
        let start = (*tat).max(now);
        let next = start + interval;
        if next > now + burst {
            let wait = next - (now + burst);
            return Err(overflow(op, wait.as_millis().max(1) as u64));
        }
        *tat = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_one_second_of_burst_then_refuses() {
        let limiter = Limiter::new(RateLimits {
            query_token: 10,
            ..RateLimits::unlimited()
        });
        for _ in 0..10 {
            assert!(limiter.check("k", Operation::QueryToken).is_ok());
        }
        let err = limiter.check("k", Operation::QueryToken).unwrap_err();
        assert_eq!(err.code(), "QueryTokenOverFlow");
        assert!(err.retry_after_ms().is_some_and(|ms| ms > 0 && ms <= 100));
        // Other keys and operations have their own buckets.
        assert!(limiter.check("other", Operation::QueryToken).is_ok());
        assert!(limiter.check("k", Operation::ApplyToken).is_ok());
    }
}
