//! Revocation watchers: each watch is a task that replays the log from storage until it is
//! caught up with the durable revision, then follows the live broadcast, going back to storage
//! whenever it fell behind or saw a gap. So a watcher that starts from revision N receives every
//! retained event from N on, exactly once, in order, whether it is fast, slow, or resuming
//! after a restart, and a slow watcher never blocks writers or other watchers.
//!
//! Shutdown ends every watch with `ServiceUnavailable` (brokers resume from their last
//! revision once the server is back), also one whose client stopped reading: its task does not
//! wait for room in the stream, and the stream answers the error ahead of what it buffered.
//!
//! An access key holds at most `max_watches_per_key` watches at once (`super::watch_slots`): each
//! stream holds a slot, given back when the stream is dropped (the client went away or the
//! stream ended), so a runaway broker cannot pile up streams and tasks.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::Stream;

use super::{
    now_ms, revocation::RevocationEvent, watch_slots::WatchSlot, Caller, Core, Error, Field, Result,
};
use crate::store::RevisionBounds;

/// Most instance ids one watch may filter on.
const MAX_WATCH_INSTANCES: usize = 100;
/// Items a watch buffers for its client before its task waits.
const STREAM_BUFFER: usize = 256;

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

/// The items of one watch, as a stream: what the watcher sent, in order, and at the end an
/// error saying why it ended (the stream ends after its first error). Once the server is
/// shutting down it answers `ServiceUnavailable` at once, ahead of anything still buffered: a
/// broker resumes from the last revision it received, so nothing is lost.
pub struct WatchStream {
    rx: mpsc::Receiver<Result<WatchItem>>,
    shutdown: watch::Receiver<bool>,
    done: bool,
    /// This stream's place in its key's limit, given back on drop.
    _slot: WatchSlot,
}

impl Stream for WatchStream {
    type Item = Result<WatchItem>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if *this.shutdown.borrow() {
            this.done = true;
            return Poll::Ready(Some(Err(Error::ServiceUnavailable)));
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                this.done = item.is_err();
                Poll::Ready(Some(item))
            }
            // The watcher stops without an error only when the server shuts down.
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(Some(Err(Error::ServiceUnavailable)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Core {
    /// Opens a watch: validates the start and filter, then spawns a task that feeds the
    /// returned stream. Dropping the stream ends the task.
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
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let watcher = Watcher {
            core: self.clone(),
            tx,
            shutdown: self.shutdown.subscribe(),
            filter,
            next,
            snapshot: start == WatchStart::Snapshot,
            progress_every: self.config.watch_progress_interval,
        };
        tokio::spawn(watcher.run(live, self.revocations.durable.subscribe()));
        Ok(WatchStream {
            rx,
            shutdown: self.shutdown.subscribe(),
            done: false,
            _slot: slot,
        })
    }
}

/// Resolves once the server is shutting down.
async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    // An error means the core is gone: that is a shutdown too.
    let _ = shutdown.wait_for(|down| *down).await;
}

struct Filter {
    caller: Caller,
    instances: Vec<String>,
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

struct Watcher {
    core: Arc<Core>,
    tx: mpsc::Sender<Result<WatchItem>>,
    /// Flips to true when the server begins shutting down.
    shutdown: watch::Receiver<bool>,
    filter: Filter,
    /// The next revision to deliver.
    next: u64,
    snapshot: bool,
    progress_every: Duration,
}

/// Why a watcher stopped.
enum Stop {
    /// The stream is gone, or has its last item.
    Closed,
    /// The server is shutting down; the stream tells the client itself.
    Shutdown,
}

impl Watcher {
    async fn send(&mut self, item: Result<WatchItem>) -> std::result::Result<(), Stop> {
        // A deleted key's stream ends: from the moment of deletion it may see nothing more.
        let item = match item {
            Ok(_)
                if self
                    .core
                    .access_keys
                    .get(self.filter.caller.access_key_id())
                    .is_none() =>
            {
                Err(Error::AccessKeyNotFound)
            }
            other => other,
        };
        let end = item.is_err();
        if matches!(item, Ok(WatchItem::Event(_))) {
            // Counted before the hand-off, so a client that has the event sees it counted.
            self.core.metrics.watch_event_sent();
        }
        tokio::select! {
            biased;
            sent = self.tx.send(item) => sent.map_err(|_| Stop::Closed)?,
            // A client that stopped reading leaves no room in the stream: waiting for it
            // would keep this task, and the core it holds, alive past shutdown.
            () = shutting_down(&mut self.shutdown) => return Err(Stop::Shutdown),
        }
        if end {
            return Err(Stop::Closed);
        }
        Ok(())
    }

    /// Ends the stream with `err`.
    async fn fail(&mut self, err: Error) -> std::result::Result<(), Stop> {
        self.send(Err(err)).await
    }

    /// Sends every stored event from `self.next` up to `until` (inclusive). In a snapshot,
    /// events of credentials that have already expired are skipped, and a compaction racing
    /// the snapshot moves it forward instead of failing it (a snapshot is how brokers resync).
    async fn catch_up(&mut self, until: u64, snapshot: bool) -> std::result::Result<(), Stop> {
        let now = now_ms();
        let _catching_up = (self.next <= until).then(|| self.core.metrics.watch_catching_up());
        while self.next <= until {
            let batch = match self.core.store.revocations(self.next, 512) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "watch catch-up read failed");
                    return self.fail(Error::internal(e)).await;
                }
            };
            match batch.first() {
                Some(first) if first.revision == self.next => {}
                Some(first) if snapshot && first.revision > self.next => self.next = first.revision,
                _ => {
                    // Compacted under our feet: the broker must resync.
                    let oldest = self.core.revocations.bounds().oldest;
                    return self
                        .fail(Error::RevisionCompacted {
                            requested: self.next,
                            oldest,
                        })
                        .await;
                }
            }
            for rec in batch {
                if rec.revision > until {
                    return Ok(());
                }
                self.next = rec.revision + 1;
                let relevant = !snapshot || rec.expire_ms.is_none_or(|at| at > now);
                if relevant && self.filter.admits(&rec) {
                    self.send(Ok(WatchItem::Event(Arc::new(rec)))).await?;
                }
            }
        }
        Ok(())
    }

    async fn run(
        mut self,
        mut live: broadcast::Receiver<Arc<RevocationEvent>>,
        durable: watch::Receiver<RevisionBounds>,
    ) {
        let _open = self.core.metrics.watch_stream();
        let _ = self.run_inner(&mut live, &durable).await;
    }

    /// Storage until caught up with the durable revision, then the live broadcast; back to
    /// storage whenever the broadcast lagged or skipped a revision. Every durable bump follows
    /// a broadcast of the same events, so an idle watcher only needs the broadcast.
    async fn run_inner(
        &mut self,
        live: &mut broadcast::Receiver<Arc<RevocationEvent>>,
        durable: &watch::Receiver<RevisionBounds>,
    ) -> std::result::Result<(), Stop> {
        if self.snapshot {
            let until = durable.borrow().last;
            self.catch_up(until, true).await?;
            self.next = self.next.max(until + 1);
            self.send(Ok(WatchItem::SnapshotEnd(until))).await?;
        }
        let mut behind = true;
        let mut next_progress = tokio::time::Instant::now() + self.progress_every;
        loop {
            // A deleted key's stream ends: it may no longer see anything.
            if self
                .core
                .access_keys
                .get(self.filter.caller.access_key_id())
                .is_none()
            {
                return self.fail(Error::AccessKeyNotFound).await;
            }
            if behind {
                let until = durable.borrow().last;
                self.catch_up(until, false).await?;
                behind = false;
                continue;
            }
            tokio::select! {
                // Live events first: they are already in memory.
                biased;
                received = live.recv() => match received {
                    Ok(event) if event.revision < self.next => {} // sent during catch-up
                    Ok(event) if event.revision > self.next => behind = true, // a gap
                    Ok(event) => {
                        self.next += 1;
                        if self.filter.admits(&event) {
                            self.send(Ok(WatchItem::Event(event))).await?;
                            next_progress = tokio::time::Instant::now() + self.progress_every;
                        }
                    }
                    // Fell behind the in-memory buffer: catch up from storage.
                    Err(broadcast::error::RecvError::Lagged(_)) => behind = true,
                    Err(broadcast::error::RecvError::Closed) => return Err(Stop::Closed),
                },
                _ = tokio::time::sleep_until(next_progress) => {
                    self.send(Ok(WatchItem::Progress(self.next - 1))).await?;
                    next_progress = tokio::time::Instant::now() + self.progress_every;
                }
                _ = self.tx.closed() => return Err(Stop::Closed),
                () = shutting_down(&mut self.shutdown) => {
                    // Brokers resume from their last revision once the server is back.
                    return self.fail(Error::ServiceUnavailable).await;
                }
            }
        }
    }
}
