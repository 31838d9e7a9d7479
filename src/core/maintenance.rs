//! Background upkeep that keeps the store bounded: expired tokens and broker sessions are
//! deleted, scope tombstones go once every token they cover has expired, and the revocation
//! log's prefix that no broker needs any more is compacted (a scope event stays as long as its
//! tombstone: its `expire_ms` is the tombstone's end).

use std::sync::Arc;

use super::{now_ms, Core, Result};
use crate::store::Op;

/// Tokens deleted per batch, so one sweep never holds the store for long (fewer when the
/// store's transactions are smaller).
const SWEEP_BATCH: usize = 100;

impl Core {
    /// Deletes every token that has expired. Returns how many were deleted.
    ///
    /// # Errors
    /// The store failed.
    pub async fn sweep_expired_tokens(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let batch = SWEEP_BATCH.min(self.store.max_batch_ops());
            let expired = self.store.expired_tokens(now_ms(), batch)?;
            if expired.is_empty() {
                break;
            }
            let n = expired.len();
            let ops = expired
                .into_iter()
                .map(|(id, at)| Op::DeleteToken(id, at))
                .collect();
            // Deleting an expired token needs no revision: it is already invalid everywhere.
            self.write(ops).await?;
            total += n;
            if n < batch {
                break;
            }
            tokio::task::yield_now().await;
        }
        if total > 0 {
            tracing::debug!(deleted = total, "swept expired tokens");
        }
        Ok(total)
    }

    /// Runs the sweeps every `maintenance_interval` until shutdown: on a shared store only on
    /// the replica elected for it (a lease in etcd), although two running at once would still
    /// be correct (every delete is a compare-and-swap write).
    pub async fn run_maintenance(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        let mut tick = tokio::time::interval(self.config.maintenance_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|down| *down) => return,
            }
            match self.store.lead().await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell whether this replica runs the sweeps; skipping this round");
                    continue;
                }
            }
            if let Err(e) = self.sweep_expired_tokens().await {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "token sweep failed");
            }
            if let Err(e) = self.sweep_tombstones().await {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "tombstone sweep failed");
            }
            if let Err(e) = self.compact_revocations().await {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "revocation compaction failed");
            }
            if let Err(e) = self.sweep_broker_sessions().await {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "broker session sweep failed");
            }
        }
    }
}
