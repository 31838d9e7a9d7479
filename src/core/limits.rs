//! Rate limits: one GCRA limiter (a token bucket with a burst of one second's worth of calls),
//! used per access key and operation by the core and per source IP by the REST shim.
//! Defaults are Alibaba's current documented QPS limits; 0 means unlimited and skips the
//! limiter entirely.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{Error, Result};

/// Buckets kept before the ones that have refilled are swept: a refilled bucket carries no
/// state worth keeping, so this bounds memory whatever the number of keys.
const SWEEP_AT: usize = 100_000;

/// A GCRA limiter over keys of type `K`: each key may make `rate` calls per second, with one
/// second of burst. The state is one theoretical arrival time per key.
pub struct RateLimiter<K> {
    epoch: Instant,
    tat: Mutex<HashMap<K, Duration>>,
}

impl<K: Hash + Eq> Default for RateLimiter<K> {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            tat: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// Admits one call by `key` at `rate` calls per second (0 = unlimited), or returns the
    /// milliseconds (at least 1) until one would be admitted. A key is meant to be checked
    /// at one rate; the operation is part of the key where rates differ.
    ///
    /// # Errors
    /// The wait, in milliseconds, when the call is over the rate.
    pub fn check(&self, key: K, rate: u32) -> std::result::Result<(), u64> {
        if rate == 0 {
            return Ok(());
        }
        let interval = Duration::from_secs(1) / rate;
        let burst = Duration::from_secs(1);
        let now = self.epoch.elapsed();
        // Nothing panics while the lock is held; a poisoned map is still a valid map.
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > SWEEP_AT {
            map.retain(|_, tat| *tat > now);
        }
        let tat = map.entry(key).or_insert(now);
        let next = (*tat).max(now) + interval;
        if next > now + burst {
            let wait = next - (now + burst);
            return Err(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        *tat = next;
        Ok(())
    }
}

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
        Self::DEFAULT
    }
}

impl RateLimits {
    /// The defaults: Alibaba's documented limits. The command line's defaults are these.
    pub const DEFAULT: Self = Self {
        apply_token: 100,
        query_token: 100,
        revoke_token: 5,
        device_credential: 500,
    };

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

/// The per access key, per operation limits of the core.
pub(crate) struct Limiter {
    limits: RateLimits,
    buckets: RateLimiter<(String, Operation)>,
}

impl Limiter {
    pub(crate) fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: RateLimiter::default(),
        }
    }

    /// Admits one call of `op` by `key`, or says how long to wait.
    pub(crate) fn check(&self, key: &str, op: Operation) -> Result<()> {
        let rate = self.limits.rate(op);
        if rate == 0 {
            // Skip the key allocation and the lock altogether.
            return Ok(());
        }
        self.buckets
            .check((key.to_owned(), op), rate)
            .map_err(|retry_after_ms| overflow(op, retry_after_ms))
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

    #[test]
    fn bursts_one_second_then_refuses_per_key() {
        let limiter = RateLimiter::default();
        let a: std::net::IpAddr = [10, 0, 0, 1].into();
        let b: std::net::IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(limiter.check(a, 3).is_ok());
        }
        assert!(limiter.check(a, 3).is_err_and(|ms| ms > 0 && ms <= 334));
        assert!(limiter.check(b, 3).is_ok());
        assert!(limiter.check(a, 0).is_ok(), "0 is unlimited");
    }
}
