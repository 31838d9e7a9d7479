//! The revocation watch: one stream per broker, on the plugin's own runtime, resumed from the
//! last processed revision (kept in memory and in the state file), re-synchronised from a
//! snapshot when that revision was compacted away, reconnecting with capped backoff.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use mqtt_tokend::proto::{
    revocation_service_client::RevocationServiceClient, watch_revocations_response::Message,
    StartMode, WatchRevocationsRequest,
};
use tokio::sync::watch;
use tonic::Code;

use crate::{
    sessions::{Revocation, Sessions},
    Authed, Level, LogQueue,
};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The last processed revision, persisted as decimal text. Written with write-then-rename so
/// a crash leaves the old or the new value, never a torn one.
#[derive(Debug, Clone)]
pub struct StateFile(pub Option<PathBuf>);

impl StateFile {
    /// The stored revision, if the file exists and holds one.
    pub fn load(&self) -> Option<u64> {
        let path = self.0.as_ref()?;
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Stores `revision`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn store(&self, revision: u64) -> std::io::Result<()> {
        let Some(path) = &self.0 else { return Ok(()) };
        let tmp = tmp_path(path);
        std::fs::write(&tmp, format!("{revision}\n"))?;
        std::fs::rename(&tmp, path)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Everything the watch task needs.
pub struct Watch {
    /// The gRPC client.
    pub client: RevocationServiceClient<Authed>,
    /// The grant cache it revokes from.
    pub sessions: Arc<Sessions>,
    /// Where the revision is persisted.
    pub state: StateFile,
    /// Instance filter.
    pub instance_id: Option<String>,
    /// Log lines for the broker thread to print.
    pub logs: Arc<LogQueue>,
    /// Called after a revocation queued kicks, to get the broker to its next tick sooner.
    pub wake: Arc<dyn Fn() + Send + Sync>,
}

impl Watch {
    /// Follows the stream until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut last = self.state.load();
        let mut backoff = BACKOFF_MIN;
        loop {
            let (mode, start) = match last {
                Some(r) => (StartMode::Revision, r.saturating_add(1)),
                None => (StartMode::Snapshot, 0),
            };
            let request = WatchRevocationsRequest {
                start_mode: mode as i32,
                start_revision: start,
                instance_ids: self.instance_id.iter().cloned().collect(),
            };
            let outcome = tokio::select! {
                r = self.follow(request, mode == StartMode::Snapshot, &mut last, &mut backoff) => r,
                _ = shutdown.wait_for(|down| *down) => return,
            };
            match outcome {
                Ok(()) => self
                    .logs
                    .push(Level::Notice, "revocation watch ended; reconnecting".into()),
                Err(status) if status.code() == Code::OutOfRange && last.is_some() => {
                    let oldest = status
                        .metadata()
                        .get("oldest-revision")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_owned();
                    self.logs.push(
                        Level::Warning,
                        format!(
                            "revision {} was compacted (oldest retained {oldest}); resyncing from a snapshot",
                            last.map_or(0, |l| l.saturating_add(1))
                        ),
                    );
                    last = None;
                    continue;
                }
                Err(status) => self.logs.push(
                    Level::Warning,
                    format!(
                        "revocation watch failed ({:?}: {}); retrying in {} ms",
                        status.code(),
                        status.message(),
                        backoff.as_millis()
                    ),
                ),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait_for(|down| *down) => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One stream: open it, apply every event, persist the revision. Returns when the stream
    /// ends or fails.
    async fn follow(
        &mut self,
        request: WatchRevocationsRequest,
        snapshot: bool,
        last: &mut Option<u64>,
        backoff: &mut Duration,
    ) -> Result<(), tonic::Status> {
        let mut stream = self.client.watch_revocations(request).await?.into_inner();
        // In a snapshot the revision only counts once SNAPSHOT_END says everything before it
        // was sent; a stream that breaks mid-snapshot starts over.
        let mut in_snapshot = snapshot;
        let mut applied = *last;
        while let Some(message) = stream.message().await? {
            *backoff = BACKOFF_MIN;
            let revision = match message.message {
                Some(Message::Event(event)) => {
                    let hit = self
                        .sessions
                        .revoke(Revocation::from(&event), Instant::now());
                    if hit > 0 {
                        (self.wake)();
                        self.logs.push(
                            Level::Notice,
                            format!(
                                "revocation {} ({}) ends {hit} session(s)",
                                event.revision, event.reason
                            ),
                        );
                    }
                    if in_snapshot {
                        continue;
                    }
                    event.revision
                }
                Some(Message::Progress(p)) => {
                    if in_snapshot {
                        continue;
                    }
                    p.revision
                }
                Some(Message::SnapshotEnd(p)) => {
                    in_snapshot = false;
                    p.revision
                }
                None => continue,
            };
            if applied.is_none_or(|a| revision > a) {
                applied = Some(revision);
                *last = applied;
                if let Err(e) = self.state.store(revision) {
                    self.logs
                        .push(Level::Warning, format!("cannot write the state file: {e}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trips_and_tolerates_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rev");
        let s = StateFile(Some(path.clone()));
        assert_eq!(s.load(), None);
        s.store(42).unwrap();
        assert_eq!(s.load(), Some(42));
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(s.load(), None);
        assert_eq!(StateFile(None).load(), None);
    }
}
