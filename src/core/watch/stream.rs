//! One watch's stream: a state machine the response polls (see the parent module for what it
//! guarantees). It reads stored events while it is behind and the broadcast once it is caught
//! up, and checks before every item that the server is not shutting down and that the
//! caller's key still exists.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll, Waker},
    time::Duration,
};

use tokio::{
    sync::{broadcast, watch},
    time::{Instant, Sleep},
};
use tokio_stream::{
    wrappers::{errors::BroadcastStreamRecvError, BroadcastStream},
    Stream,
};

use super::{Filter, Start, WatchItem};
use crate::core::{
    access_key::Removals,
    metrics::GaugeGuard,
    now_ms,
    revocation::{RevocationEvent, RevocationLog},
    watch_slots::WatchSlot,
    Core, Error, Metrics, Result,
};

/// Events read from storage at a time while catching up.
const CATCH_UP_BATCH: usize = 512;

/// The items of one watch, in order, and at the end an error saying why it ended (the stream
/// ends after its first error). Once the server is shutting down it answers
/// `ServiceUnavailable` at once: a broker resumes from the last revision it received, so
/// nothing is lost.
pub struct WatchStream {
    /// Weak: a stream nobody polls any more must not keep the store open (see the module doc).
    core: Weak<Core>,
    log: Arc<RevocationLog>,
    live: BroadcastStream<Arc<RevocationEvent>>,
    /// Changes (to true) when the server begins shutting down.
    shutdown: watch::Receiver<bool>,
    /// Whether the server is shutting down, as last seen.
    down: bool,
    removals: Removals,
    /// The removal count at which the caller's key was last found in the table.
    key_seen_at: Option<u64>,
    metrics: Arc<Metrics>,
    filter: Filter,
    /// The next revision to deliver.
    next: u64,
    phase: Phase,
    /// Fires `progress_every` after the last item, give or take a re-arm (see `poll_progress`).
    progress: Pin<Box<Sleep>>,
    progress_every: Duration,
    last_sent: Instant,
    done: bool,
    /// Counts this stream among the open ones while it lives.
    _open: GaugeGuard,
    /// This stream's place in its key's limit, given back on drop; wakes it at shutdown.
    slot: WatchSlot,
    /// The waker last registered in `slot`: the same task polls the stream all its life, so
    /// registering once spares every wait a touch of the slot's memory.
    registered: Option<Waker>,
}

impl WatchStream {
    /// The stream of a watch of `core` that passed its checks: `live` was subscribed before
    /// the bounds in `start` were read.
    pub(super) fn new(
        core: &Arc<Core>,
        filter: Filter,
        live: broadcast::Receiver<Arc<RevocationEvent>>,
        start: Start,
        slot: WatchSlot,
    ) -> Self {
        let shutdown = core.shutdown.subscribe();
        let down = *shutdown.borrow();
        let every = core.config.watch_progress_interval;
        let now = Instant::now();
        Self {
            core: Arc::downgrade(core),
            log: core.revocations.clone(),
            live: BroadcastStream::new(live),
            shutdown,
            down,
            removals: core.access_keys.removals(),
            key_seen_at: None,
            metrics: core.metrics.clone(),
            filter,
            next: start.next,
            phase: Phase::Storage(Storage::new(start.until, start.snapshot)),
            progress: Box::pin(tokio::time::sleep_until(now + every)),
            progress_every: every,
            last_sent: now,
            done: false,
            _open: core.metrics.watch_stream(),
            slot,
            registered: None,
        }
    }
}

enum Phase {
    /// Reading stored events.
    Storage(Storage),
    /// Following the broadcast.
    Live,
}

/// Sends every stored event from `next` up to `until` (inclusive). In a snapshot, events of
/// credentials that have already expired are skipped, a compaction racing the snapshot moves
/// it forward instead of failing it (a snapshot is how brokers resync), and `SnapshotEnd`
/// follows the last one.
struct Storage {
    until: u64,
    snapshot: bool,
    /// Read but not yet sent.
    batch: VecDeque<RevocationEvent>,
    /// The clock for "expired" (snapshots).
    now_ms: i64,
    /// Counts this stream among the catching-up ones, from its first read.
    catching_up: Option<GaugeGuard>,
}

impl Storage {
    fn new(until: u64, snapshot: bool) -> Self {
        Self {
            until,
            snapshot,
            batch: VecDeque::new(),
            now_ms: now_ms(),
            catching_up: None,
        }
    }
}

type Next = Result<WatchItem>;

impl Stream for WatchStream {
    type Item = Next;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Next>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let item = std::task::ready!(this.poll_item(cx));
        match &item {
            Err(_) => this.done = true,
            Ok(sent) => {
                if matches!(sent, WatchItem::Event(_)) {
                    // Counted before the hand-off, so a client that has the event sees it
                    // counted.
                    this.metrics.watch_event_sent();
                }
                this.last_sent = Instant::now();
            }
        }
        Poll::Ready(Some(item))
    }
}

impl WatchStream {
    /// The next item: storage until caught up with the durable revision, then the live
    /// broadcast; back to storage whenever the broadcast lagged or skipped a revision. Every
    /// durable bump follows a broadcast of the same events, so an idle stream only needs the
    /// broadcast (and the heartbeat timer, and the shutdown wake-up).
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        let mut read = false;
        loop {
            // Ahead of anything else, and checked before every item.
            if self.shutting_down() {
                return Poll::Ready(Err(Error::ServiceUnavailable));
            }
            if let Err(e) = self.check_key() {
                return Poll::Ready(Err(e));
            }
            if let Phase::Live = self.phase {
                match self.poll_live(cx) {
                    Poll::Ready(Some(item)) => return Poll::Ready(item),
                    Poll::Ready(None) => continue,
                    Poll::Pending => return Poll::Pending,
                }
            }
            let Phase::Storage(storage) = &mut self.phase else {
                continue;
            };
            if let Some(rec) = storage.batch.pop_front() {
                if rec.revision <= storage.until {
                    self.next = rec.revision + 1;
                    let relevant =
                        !storage.snapshot || rec.expire_ms.is_none_or(|at| at > storage.now_ms);
                    if relevant && self.filter.admits(&rec) {
                        return Poll::Ready(Ok(WatchItem::Event(Arc::new(rec))));
                    }
                    continue;
                }
                storage.batch.clear();
            }
            if self.next > storage.until {
                let (until, snapshot) = (storage.until, storage.snapshot);
                if !snapshot {
                    self.phase = Phase::Live;
                    continue;
                }
                self.next = self.next.max(until + 1);
                self.phase = Phase::Storage(Storage::new(self.log.bounds().last, false));
                return Poll::Ready(Ok(WatchItem::SnapshotEnd(until)));
            }
            if read {
                // One storage read per poll, also when it was all filtered out: the task gets
                // back to others in between.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            read = true;
            if let Err(e) = self.read_batch() {
                return Poll::Ready(Err(e));
            }
        }
    }

    /// The next event of the broadcast, if any; `Ready(None)` when the stream must go back
    /// to storage (it fell behind, or saw a gap). Once there is nothing, the heartbeat.
    fn poll_live(&mut self, cx: &mut Context<'_>) -> Poll<Option<Next>> {
        loop {
            match Pin::new(&mut self.live).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    if event.revision < self.next {
                        continue; // sent during catch-up
                    }
                    if event.revision > self.next {
                        return Poll::Ready(self.fall_back()); // a gap
                    }
                    self.next += 1;
                    if self.filter.admits(&event) {
                        return Poll::Ready(Some(Ok(WatchItem::Event(event))));
                    }
                }
                // Fell behind the in-memory buffer: catch up from storage.
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(_)))) => {
                    return Poll::Ready(self.fall_back());
                }
                // The log is gone with the core: the server is shutting down.
                Poll::Ready(None) => return Poll::Ready(Some(Err(Error::ServiceUnavailable))),
                Poll::Pending => {
                    // Registered before the check, so a shutdown between the two still wakes
                    // this task.
                    if !self
                        .registered
                        .as_ref()
                        .is_some_and(|w| w.will_wake(cx.waker()))
                    {
                        self.slot.register(cx.waker());
                        self.registered = Some(cx.waker().clone());
                    }
                    if self.shutting_down() {
                        return Poll::Ready(Some(Err(Error::ServiceUnavailable)));
                    }
                    return match self.poll_progress(cx) {
                        Some(progress) => Poll::Ready(Some(Ok(progress))),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }

    fn fall_back(&mut self) -> Option<Next> {
        self.phase = Phase::Storage(Storage::new(self.log.bounds().last, false));
        None
    }

    /// A heartbeat if nothing was sent for `progress_every`. The timer is left alone while
    /// items flow and re-armed from the last one when it fires, so a busy stream touches the
    /// timer wheel once per interval rather than once per event.
    fn poll_progress(&mut self, cx: &mut Context<'_>) -> Option<WatchItem> {
        loop {
            if self.progress.as_mut().poll(cx).is_pending() {
                return None;
            }
            let due = self.last_sent + self.progress_every;
            if due <= Instant::now() {
                return Some(WatchItem::Progress(self.next - 1));
            }
            self.progress.as_mut().reset(due);
        }
    }

    /// Reads the next batch of stored events into the current storage phase.
    fn read_batch(&mut self) -> Result<()> {
        let Phase::Storage(storage) = &mut self.phase else {
            return Ok(());
        };
        let Some(core) = self.core.upgrade() else {
            return Err(Error::ServiceUnavailable);
        };
        if storage.catching_up.is_none() {
            storage.catching_up = Some(self.metrics.watch_catching_up());
        }
        let batch = match core.store.revocations(self.next, CATCH_UP_BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "watch catch-up read failed");
                return Err(Error::internal(e));
            }
        };
        match batch.first() {
            Some(first) if first.revision == self.next => {}
            Some(first) if storage.snapshot && first.revision > self.next => {
                self.next = first.revision;
            }
            // Compacted under our feet: the broker must resync.
            _ => {
                return Err(Error::RevisionCompacted {
                    requested: self.next,
                    oldest: self.log.bounds().oldest,
                })
            }
        }
        storage.batch = batch.into();
        Ok(())
    }

    fn shutting_down(&mut self) -> bool {
        // A version check, lock-free; the flag only ever turns true. An error: the core is
        // gone, which is a shutdown too.
        if !self.down && self.shutdown.has_changed().unwrap_or(true) {
            self.down = true;
        }
        self.down
    }

    /// Whether the caller's key still exists, looked up again only after a key was removed.
    fn check_key(&mut self) -> Result<()> {
        let removals = self.removals.count();
        if self.key_seen_at == Some(removals) {
            return Ok(());
        }
        let Some(core) = self.core.upgrade() else {
            return Err(Error::ServiceUnavailable);
        };
        if !core
            .access_keys
            .contains(self.filter.caller.access_key_id())
        {
            return Err(Error::AccessKeyNotFound);
        }
        self.key_seen_at = Some(removals);
        Ok(())
    }
}
