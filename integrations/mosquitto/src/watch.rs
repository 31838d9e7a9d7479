//! The revocation watch: the client crate's [`RevocationFollower`] (one stream per broker,
//! resumed from the state file, re-synchronised from a snapshot on first start and after
//! compaction, reconnecting with capped backoff, moving to the next replica when its own
//! stops) applied to the grant cache. Kicks and log
//! lines are queued here and carried out on the broker thread.

use std::{sync::Arc, time::Instant};

use mqtt_tokend_client::{
    Client, FollowItem, RevisionFile, RevocationFollower, SnapshotReason, WatchError,
};
use tokio::sync::watch;

use crate::{sessions::Sessions, Level, LogQueue};

/// Everything the watch task needs.
pub struct Watch {
    /// The follower, saving its revision in the state file if there is one.
    pub follower: RevocationFollower<Option<RevisionFile>>,
    /// The follower's client: after a failure it names the replica tried next.
    pub client: Client,
    /// The grant cache it revokes from.
    pub sessions: Arc<Sessions>,
    /// Log lines for the broker thread to print.
    pub logs: Arc<LogQueue>,
    /// Called after a revocation queued kicks, to get the broker to its next tick sooner.
    pub wake: Arc<dyn Fn() + Send + Sync>,
}

impl Watch {
    /// Follows the stream until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let Self {
            follower,
            client,
            sessions,
            logs,
            wake,
        } = self;
        let stopped = async move {
            // A dropped sender also means stop.
            let _ = shutdown.wait_for(|down| *down).await;
        };
        follower
            .run(
                |item| apply(&sessions, &logs, &client, wake.as_ref(), item),
                stopped,
            )
            .await;
    }
}

/// Applies one item: a revocation ends the sessions it hits; the rest is logged.
fn apply(
    sessions: &Sessions,
    logs: &LogQueue,
    client: &Client,
    wake: &(dyn Fn() + Send + Sync),
    item: FollowItem,
) {
    match item {
        FollowItem::Event(event) => {
            let line = format!("revocation {} ({})", event.revision, event.reason);
            let hit = sessions.revoke(event, Instant::now());
            if hit > 0 {
                wake();
                logs.push(Level::Notice, format!("{line} ends {hit} session(s)"));
            }
        }
        FollowItem::SnapshotBegin(SnapshotReason::OutOfRange { requested, oldest }) => {
            let oldest = oldest.map_or_else(|| "?".to_owned(), |o| o.to_string());
            logs.push(
                Level::Warning,
                format!(
                    "revision {requested} was compacted (oldest retained {oldest}); resyncing from a snapshot"
                ),
            );
        }
        // Revocations only add to what is denied, so a snapshot needs no reset here: the
        // sessions its events hit are kicked like live ones.
        FollowItem::SnapshotBegin(_)
        | FollowItem::SnapshotEnd { .. }
        | FollowItem::Progress { .. } => {}
        FollowItem::Disconnected {
            error: WatchError::Ended,
            ..
        } => logs.push(
            Level::Notice,
            format!(
                "revocation watch ended; reconnecting to {}",
                client.endpoint()
            ),
        ),
        FollowItem::Disconnected {
            error: WatchError::Status(status),
            retry_in,
        } => logs.push(
            Level::Warning,
            format!(
                "revocation watch failed ({:?}: {}); retrying {} in {} ms",
                status.code(),
                status.message(),
                client.endpoint(),
                retry_in.as_millis()
            ),
        ),
        FollowItem::SaveFailed { error, .. } => logs.push(
            Level::Warning,
            format!("cannot write the state file: {error}"),
        ),
    }
}
