//! Revocation watchers. A watch is a stream that replays the log from storage until it is
//! caught up with the durable revision, then follows the live broadcast, going back to storage
//! whenever it fell behind or saw a gap. So a watcher that starts from revision N receives
//! every retained event from N on, exactly once, in order, whether it is fast, slow, or
//! resuming after a restart, and a slow watcher never blocks writers or other watchers: a
//! client that stops reading stops polling its stream, which falls off the broadcast's buffer
//! and catches up from storage once the client reads again.
//!
//! The stream does its work when the response polls it, with no task of its own: a task per
//! watcher feeding a channel cost every watcher two task wake-ups and a channel hand-off per
//! event, most of the server's own work in a fan-out to 10,000 watchers. For the same reason
//! the per-event checks are lock-free (the key's removal counter, the shutdown flag's version)
//! and the heartbeat timer is re-armed once per interval, not once per event.
//!
//! Shutdown ends every watch with `ServiceUnavailable` (brokers resume from their last
//! revision once the server is back): idle streams are woken for it (`super::watch_slots`),
//! and a stream answers it ahead of anything else. A stream holds the core only weakly, so one
//! that is no longer polled (its client stopped reading) does not keep the store open after
//! shutdown.
//!
//! A deleted access key ends its streams: from the moment of deletion they send nothing more.
//!
//! An access key holds at most `max_watches_per_key` watches at once (`super::watch_slots`): each
//! stream holds a slot, given back when the stream is dropped (the client went away or the
//! stream ended), so a runaway broker cannot pile up streams.
//!
//! Children: `stream` (the stream itself: storage, broadcast, heartbeats, and how it ends).

use std::sync::Arc;

use super::{revocation::RevocationEvent, Caller, Core, Error, Field, Result};

mod stream;

pub use stream::WatchStream;

/// Most instance ids one watch may filter on.
const MAX_WATCH_INSTANCES: usize = 100;

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// Events written after the watch opened.
    Now,
    /// Every event from this revision on.
    Revision(u64),
    /// Every retained event whose credential has not expired, a marker, then live events.
    Snapshot,
}

/// One message for a watcher.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// A revocation.
    Event(Arc<RevocationEvent>),
    /// Heartbeat: everything up to this revision has been sent (or filtered out).
    Progress(u64),
    /// End of the snapshot; everything up to this revision has been sent.
    SnapshotEnd(u64),
}

impl Core {
    /// Opens a watch: validates the start and filter and returns the stream of its items.
    ///
    /// # Errors
    /// `InstancePermissionCheckFailed` for an instance the caller may not see;
    /// `RevisionCompacted` (start below the oldest retained revision) or `FutureRevision`;
    /// `WatchStreamNumExceed` when the caller's key holds `max_watches_per_key` streams.
    pub fn watch(
        self: &Arc<Self>,
        caller: &Caller,
        start: WatchStart,
        instance_ids: Vec<String>,
    ) -> Result<WatchStream> {
        if instance_ids.len() > MAX_WATCH_INSTANCES {
            return Err(Error::invalid(
                Field::InstanceIds,
                format!("at most {MAX_WATCH_INSTANCES} instance ids"),
            ));
        }
        for id in &instance_ids {
            caller.check_instance(id)?;
        }
        let filter = Filter {
            caller: caller.clone(),
            instances: instance_ids,
        };
        // Subscribe before reading the bounds so nothing published in between is missed.
        let live = self.revocations.live.subscribe();
        let bounds = self.revocations.bounds();
        let next = match start {
            WatchStart::Now => bounds.last + 1,
            WatchStart::Snapshot => bounds.oldest,
            WatchStart::Revision(0) => {
                return Err(Error::invalid(Field::StartRevision, "revisions start at 1"))
            }
            WatchStart::Revision(r) if r < bounds.oldest => {
                return Err(Error::RevisionCompacted {
                    requested: r,
                    oldest: bounds.oldest,
                })
            }
            WatchStart::Revision(r) if r > bounds.last + 1 => {
                return Err(Error::FutureRevision {
                    requested: r,
                    current: bounds.last,
                })
            }
            WatchStart::Revision(r) => r,
        };
        // Last, so a refused request holds no slot.
        let slot = self.watch_slots.take(caller.access_key_id())?;
        Ok(WatchStream::new(
            self,
            filter,
            live,
            Start {
                next,
                until: bounds.last,
                snapshot: start == WatchStart::Snapshot,
            },
            slot,
        ))
    }
}

/// Which events a watch sends: those its caller may see, of the instances it asked for.
struct Filter {
    caller: Caller,
    instances: Vec<String>,
}

/// Where a new stream starts: its first revision, and the stored events to send before the
/// broadcast (up to `until`, the durable revision when the watch opened).
struct Start {
    next: u64,
    until: u64,
    snapshot: bool,
}

impl Filter {
    fn admits(&self, event: &RevocationEvent) -> bool {
        let visible = match &event.instance_id {
            // Events of keys allowed on every instance: only for callers that see every
            // instance, so a scoped key learns nothing about keys beyond its scope.
            None => self.caller.allowed_on_all(),
            Some(id) => self.caller.allowed_on(id),
        };
        visible && event.concerns(&self.instances)
    }
}
