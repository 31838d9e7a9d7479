//! [`RevocationFollower`]: follows the revocation watch stream for a consumer (a broker), so
//! that the consumer sees every revocation and resumes where it left off.
//!
//! Guarantees:
//! - Resume: the follower starts after the revision its [`RevisionStore`] holds and, after a
//!   dropped stream or a server restart, after the last revision it delivered; events are
//!   delivered in order, none twice within one run, none skipped.
//! - Snapshot: with no saved revision (first start), or when the server can no longer resume
//!   from it (OUT_OF_RANGE: compacted away, or a server whose log is shorter), it reads a
//!   snapshot, framed by [`FollowItem::SnapshotBegin`] and [`FollowItem::SnapshotEnd`] so the
//!   consumer can rebuild its state.
//! - A revision is saved only once the consumer has handled the item that carried it (when it
//!   asks for the next item), and never in the middle of a snapshot: only the snapshot's end
//!   and what follows. A crash mid-snapshot therefore restarts the snapshot rather than
//!   resuming after half of it.
//! - Progress heartbeats advance the saved revision, so a consumer filtering on instances
//!   whose events are rare still resumes near the head of the log.
//! - Errors: reconnects with exponential backoff and jitter, capped; back to the minimum once
//!   a stream delivers a message.
//! - Failover: with several endpoints (replicas sharing one revocation log), a connection
//!   error or UNAVAILABLE, whether on opening or ending the stream (a replica shutting down),
//!   moves the client to the next endpoint, and the follower resumes there after the same
//!   revision, after the usual backoff. Replicas number the log alike, so nothing is skipped
//!   or repeated; one that cannot resume answers OUT_OF_RANGE and a snapshot follows, as
//!   above.
//!   A replica that accepts connections and never answers holds the stream's opening until
//!   the client's [`ClientConfig::timeout`](crate::ClientConfig::timeout) ends it (then it
//!   counts as a connection error): set one when there are several endpoints.
//!
//! Children: `revision` (the stores), `backoff` (the reconnect delays).

mod backoff;
mod revision;

use std::{future::Future, time::Duration};

use tokio::time::Instant;
use tonic::{Code, Streaming};

pub use revision::{RevisionFile, RevisionStore};

use crate::{
    client::Client,
    failover::is_unavailable,
    proto::{
        watch_revocations_response::Message, StartMode, WatchRevocationsRequest,
        WatchRevocationsResponse,
    },
    revocation::RevocationEvent,
};
use backoff::Backoff;

/// Default first reconnect delay.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Default longest reconnect delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What to follow and how to retry. Built with [`FollowerOptions::default`] and the chained
/// setters, so new options do not break callers.
#[derive(Debug, Clone)]
pub struct FollowerOptions {
    instance_ids: Vec<String>,
    backoff_min: Duration,
    backoff_max: Duration,
    idle_timeout: Duration,
}

/// Default longest silence on a stream before its server counts as gone: three and a half
/// times the server's default progress interval (10 s).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(35);

impl Default for FollowerOptions {
    fn default() -> Self {
        Self {
            instance_ids: Vec::new(),
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl FollowerOptions {
    /// Only revocations of these instances; none (the default) = every instance the key
    /// may see.
    pub fn instance_ids<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.instance_ids = ids.into_iter().map(Into::into).collect();
        self
    }

    /// How long a stream may stay silent before its server counts as gone (a frozen process,
    /// a lost host or a partition closes nothing): the follower then moves to the next
    /// endpoint. Keep it a few times the server's `--watch-progress-interval`.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Reconnect delays: the first after a failure is about `min`, doubling up to `max`.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }
}

/// Why a snapshot is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotReason {
    /// The store holds no revision: a first start, or no store at all.
    NoSavedRevision,
    /// The server cannot resume from `requested` (OUT_OF_RANGE): it was compacted away
    /// (`oldest` is then the oldest revision still retained), or it lies beyond the server's
    /// log (a server whose data was replaced).
    OutOfRange {
        /// The revision the follower asked to resume from.
        requested: u64,
        /// The oldest retained revision, when the server said.
        oldest: Option<u64>,
    },
    /// The previous snapshot stream broke before its end; the snapshot starts over.
    Interrupted,
}

/// Why a stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The server ended the stream without an error.
    #[error("the stream ended")]
    Ended,
    /// The call failed or the stream broke (UNAVAILABLE while a server shuts down).
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
}

/// One step of the stream, in order.
#[derive(Debug)]
pub enum FollowItem {
    /// A snapshot starts: every retained revocation whose credential has not expired follows,
    /// then [`FollowItem::SnapshotEnd`]. State built from earlier events may be incomplete;
    /// rebuild it from the snapshot.
    SnapshotBegin(SnapshotReason),
    /// A revocation: end the sessions it hits ([`RevocationEvent::hits`]).
    Event(RevocationEvent),
    /// The snapshot is complete up to `revision`; live events follow.
    SnapshotEnd {
        /// The log's revision when the snapshot was taken.
        revision: u64,
    },
    /// A heartbeat on an idle stream: every event up to `revision` has been delivered.
    Progress {
        /// The log's current revision.
        revision: u64,
    },
    /// The stream stopped; the follower reconnects after `retry_in` (to the next endpoint
    /// if it was a connection error or UNAVAILABLE) and resumes after the last revision it
    /// delivered.
    Disconnected {
        /// Why.
        error: WatchError,
        /// The delay before the next attempt.
        retry_in: Duration,
    },
    /// Saving `revision` failed. Following goes on and the next save retries; until one
    /// succeeds, a restart resumes from an older revision and sees some events again.
    SaveFailed {
        /// The revision that was not saved.
        revision: u64,
        /// Why.
        error: std::io::Error,
    },
}

enum Phase {
    /// Open a stream now.
    Connect,
    /// Open a stream at this instant (backing off).
    Wait(Instant),
    /// Reading a stream from the endpoint at index `endpoint`.
    Stream {
        stream: Box<Streaming<WatchRevocationsResponse>>,
        in_snapshot: bool,
        endpoint: usize,
    },
}

/// Follows the revocation stream on behalf of one consumer; see the module docs for the
/// guarantees. Pull items with [`next`](Self::next) or hand a callback to
/// [`run`](Self::run).
pub struct RevocationFollower<S> {
    /// Its endpoints; each stream is pinned to the one that was current when it opened.
    client: Client,
    store: S,
    instance_ids: Vec<String>,
    backoff: Backoff,
    /// Longest silence on a stream before its server counts as gone.
    idle_timeout: Duration,
    phase: Phase,
    /// Where to resume: the last revision delivered outside a snapshot, or the snapshot's end.
    /// `None` while a snapshot is due or under way.
    last: Option<u64>,
    /// Delivered but not saved yet: saved once the consumer asks for the next item.
    unsaved: Option<u64>,
    /// Why the next snapshot is read, for [`FollowItem::SnapshotBegin`].
    snapshot_reason: SnapshotReason,
}

impl<S> std::fmt::Debug for RevocationFollower<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationFollower")
            .field("last", &self.last)
            .field("instance_ids", &self.instance_ids)
            .finish_non_exhaustive()
    }
}

impl<S: RevisionStore> RevocationFollower<S> {
    /// A follower on `client`'s endpoints and credential, resuming after the revision `store`
    /// holds (a snapshot if none). Nothing is sent until the first [`next`](Self::next).
    pub fn new(client: &Client, mut store: S, options: FollowerOptions) -> Self {
        let last = store.load();
        Self {
            client: client.clone(),
            store,
            instance_ids: options.instance_ids,
            backoff: Backoff::new(options.backoff_min, options.backoff_max),
            idle_timeout: options.idle_timeout,
            phase: Phase::Connect,
            last,
            unsaved: None,
            snapshot_reason: SnapshotReason::NoSavedRevision,
        }
    }

    /// The revision the follower would resume after now; `None` while a snapshot is due or
    /// under way.
    pub fn revision(&self) -> Option<u64> {
        self.last
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The endpoint the stream is read from, or (between streams) the one the next
    /// connection goes to: for logs.
    pub fn endpoint(&self) -> &str {
        match &self.phase {
            Phase::Stream { endpoint, .. } => &self.client.pool().target(*endpoint).uri,
            Phase::Connect | Phase::Wait(_) => self.client.endpoint(),
        }
    }

    /// The next item. Calling it means the previous item was handled: its revision is saved
    /// first. Cancel-safe: dropping the future (in a `select!` with a shutdown signal) loses
    /// nothing, and the next call carries on.
    pub async fn next(&mut self) -> FollowItem {
        if let Some(failed) = self.save_handled() {
            return failed;
        }
        loop {
            match &mut self.phase {
                Phase::Wait(until) => {
                    tokio::time::sleep_until(*until).await;
                    self.phase = Phase::Connect;
                }
                Phase::Connect => {
                    if let Some(item) = self.open().await {
                        return item;
                    }
                }
                Phase::Stream {
                    stream,
                    in_snapshot,
                    endpoint,
                } => {
                    let (in_snapshot, endpoint) = (*in_snapshot, *endpoint);
                    let message =
                        match tokio::time::timeout(self.idle_timeout, stream.message()).await {
                            Ok(Ok(Some(m))) => m.message,
                            Ok(Ok(None)) => return self.disconnected(WatchError::Ended),
                            Ok(Err(status)) => return self.failed(endpoint, status),
                            Err(_) => {
                                let silent = tonic::Status::unavailable(format!(
                                    "no message for {:?}: the server is gone",
                                    self.idle_timeout
                                ));
                                return self.failed(endpoint, silent);
                            }
                        };
                    self.backoff.reset();
                    if let Some(item) = self.deliver(message, in_snapshot) {
                        return item;
                    }
                }
            }
        }
    }

    /// Follows until `shutdown` completes, handing every item to `handle` and saving each
    /// revision as soon as `handle` returns.
    pub async fn run<F, C>(mut self, mut handle: F, shutdown: C)
    where
        F: FnMut(FollowItem),
        C: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                item = self.next() => {
                    handle(item);
                    if let Some(failed) = self.save_handled() {
                        handle(failed);
                    }
                }
            }
        }
    }

    /// Saves the revision of the item the consumer just handled.
    fn save_handled(&mut self) -> Option<FollowItem> {
        let revision = self.unsaved.take()?;
        self.store
            .save(revision)
            .err()
            .map(|error| FollowItem::SaveFailed { revision, error })
    }

    /// Opens a stream from where the follower is. `None` when it should go straight on (an
    /// open resume stream, or a resume the server refused, answered with a snapshot).
    async fn open(&mut self) -> Option<FollowItem> {
        let (mode, start) = match self.last {
            Some(last) => (StartMode::Revision, last.saturating_add(1)),
            None => (StartMode::Snapshot, 0),
        };
        let request = WatchRevocationsRequest {
            start_mode: mode.into(),
            start_revision: start,
            instance_ids: self.instance_ids.clone(),
        };
        let endpoint = self.client.current();
        let mut rpc = self.client.pin(endpoint).revocations();
        match rpc.watch_revocations(request).await {
            Ok(response) => {
                let in_snapshot = mode == StartMode::Snapshot;
                self.phase = Phase::Stream {
                    stream: Box::new(response.into_inner()),
                    in_snapshot,
                    endpoint,
                };
                // Until SNAPSHOT_END, a broken snapshot can only start over.
                in_snapshot.then(|| {
                    FollowItem::SnapshotBegin(std::mem::replace(
                        &mut self.snapshot_reason,
                        SnapshotReason::Interrupted,
                    ))
                })
            }
            Err(status) if status.code() == Code::OutOfRange && mode == StartMode::Revision => {
                self.snapshot_reason = SnapshotReason::OutOfRange {
                    requested: start,
                    oldest: oldest_revision(&status),
                };
                self.last = None;
                None
            }
            Err(status) => Some(self.failed(endpoint, status)),
        }
    }

    /// The stream on `endpoint` failed or could not open: on UNAVAILABLE (the transport's
    /// connection errors included) the next connection goes to the next endpoint.
    fn failed(&mut self, endpoint: usize, status: tonic::Status) -> FollowItem {
        // A broken connection mid-stream (a killed server) surfaces as UNKNOWN or CANCELLED,
        // not UNAVAILABLE: another endpoint is worth trying at once for those too.
        let broken = matches!(status.code(), tonic::Code::Unknown | tonic::Code::Cancelled);
        if is_unavailable(&status) || broken {
            self.client.pool().failed(endpoint);
        }
        self.disconnected(WatchError::Status(status))
    }

    /// Turns one stream message into an item, advancing the resume point; `None` for what the
    /// consumer need not see (a duplicate, a heartbeat inside a snapshot, an empty message).
    fn deliver(&mut self, message: Option<Message>, in_snapshot: bool) -> Option<FollowItem> {
        match message? {
            Message::Event(e) if in_snapshot => Some(FollowItem::Event(e.into())),
            Message::Event(e) => {
                if self.last.is_some_and(|last| e.revision <= last) {
                    return None;
                }
                self.advance(e.revision);
                Some(FollowItem::Event(e.into()))
            }
            Message::Progress(_) if in_snapshot => None,
            Message::Progress(p) => {
                if self.last.is_none_or(|last| p.revision > last) {
                    self.advance(p.revision);
                }
                Some(FollowItem::Progress {
                    revision: p.revision,
                })
            }
            Message::SnapshotEnd(p) => {
                if let Phase::Stream { in_snapshot, .. } = &mut self.phase {
                    *in_snapshot = false;
                }
                self.advance(p.revision);
                Some(FollowItem::SnapshotEnd {
                    revision: p.revision,
                })
            }
        }
    }

    fn advance(&mut self, revision: u64) {
        self.last = Some(revision);
        self.unsaved = Some(revision);
    }

    fn disconnected(&mut self, error: WatchError) -> FollowItem {
        let retry_in = self.backoff.next_delay();
        self.phase = Phase::Wait(Instant::now() + retry_in);
        FollowItem::Disconnected { error, retry_in }
    }
}

/// The oldest retained revision an OUT_OF_RANGE status names in its metadata.
fn oldest_revision(status: &tonic::Status) -> Option<u64> {
    status
        .metadata()
        .get("oldest-revision")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
