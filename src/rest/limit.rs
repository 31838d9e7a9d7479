//! The per-source-IP request limit of the REST shim (Alibaba: 300/s per IP): a GCRA bucket per
//! address with one second of burst. 0 disables it. Memory is bounded by dropping buckets that
//! have refilled once the map grows large.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Buckets kept before refilled ones are swept.
const SWEEP_AT: usize = 100_000;

pub(crate) struct IpLimiter {
    rate: u32,
    epoch: Instant,
    tat: Mutex<HashMap<IpAddr, Duration>>,
}

impl IpLimiter {
    pub(crate) fn new(rate: u32) -> Self {
        Self {
            rate,
            epoch: Instant::now(),
            tat: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request from `ip`, or returns the milliseconds until one would be admitted.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if self.rate == 0 {
            return Ok(());
        }
        let interval = Duration::from_secs(1) / self.rate;
        let burst = Duration::from_secs(1);
        let now = self.epoch.elapsed();
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > SWEEP_AT {
            map.retain(|_, tat| *tat > now);
        }
        let tat = map.entry(ip).or_insert(now);
        let next = (*tat).max(now) + interval;
        if next > now + burst {
            let wait = next - (now + burst);
            return Err(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        *tat = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_one_second_then_refuses_per_ip() {
        let limiter = IpLimiter::new(3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
        }
        assert!(limiter.check(a).is_err_and(|ms| ms > 0 && ms <= 334));
        assert!(limiter.check(b).is_ok());
        assert!(IpLimiter::new(0).check(a).is_ok());
    }
}
