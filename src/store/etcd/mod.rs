//! The etcd implementation of [`Store`], for several replicas sharing one etcd prefix.
//!
//! Each replica keeps a mirror of the whole prefix in a temporary local sled database (the
//! very code of the embedded store, so every read and index behaves the same), loaded at start
//! and kept current by a watch (`follow`). Reads are local. Writes are staged on the mirror by
//! [`Store::apply`] and committed by [`Store::flush`] in etcd transactions (`txn`):
//! - a batch that only adds new tokens is written without a compare, so ApplyTokens of
//!   different replicas never conflict;
//! - every other batch compares and bumps one write version (`v`): it commits only if no
//!   other replica's read-modify-write committed since the mirror it was built on, which makes
//!   the revision counter, device credential registration, the device cap and refresh races
//!   exact across replicas, with no lock anywhere.
//!
//! A batch that loses the race is rolled back from the undo log (the committed value of every
//! staged key, kept current by the watch) and the core builds it again. The read barrier
//! ([`Store::sync`]) reads the `w` key, which every transaction writes, linearizably and waits
//! until the mirror has applied that revision. The watch's history is not trusted alone (see
//! `follow`): revocations must arrive as `last + 1`, and on a gap, a compaction or a cancel the
//! mirror is loaded again from a range read.
//!
//! Children: `keys` (layout and translation), `txn` (flush), `follow` (load and watch),
//! `sessions` (broker sessions, compare-and-swap on one key).

mod follow;
mod keys;
mod sessions;
mod txn;

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use etcd_client::{Client, ConnectOptions};
use tokio::sync::{mpsc, watch};

use self::keys::Write;
use super::{
    Committed, FlushReport, Op, RevisionBounds, SledStore, Store, StoreCounts, StoreError,
    StoreFuture, StoreResult, Ticket, TokenId,
};
use crate::core::{
    access_key::AccessKey, device::RegisteredDevice, revocation::RevocationEvent, scope::Tombstone,
    token::IssuedToken, token_liveness::TokenLiveness,
};

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs of the cluster's members (`http://host:2379` or `https://…`).
    pub endpoints: Vec<String>,
    /// Every key lives under this prefix; replicas that share it share everything.
    pub prefix: String,
    /// User name and password, when etcd has authentication enabled.
    pub user: Option<(String, String)>,
    /// PEM file of the CA that signed etcd's certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, when etcd requires client certificates.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Operations per transaction; etcd refuses more than its `--max-txn-ops` (128 by default).
    pub max_txn_ops: usize,
}

impl EtcdOptions {
    /// The default prefix.
    pub const DEFAULT_PREFIX: &'static str = "/mqtt-tokend/";
    /// etcd's default `--max-txn-ops`.
    pub const DEFAULT_MAX_TXN_OPS: usize = 128;
}

/// A batch staged on the mirror, not yet committed.
#[derive(Debug)]
struct Staged {
    ticket: Ticket,
    writes: Vec<Write>,
    /// Only new tokens: committed without comparing the write version.
    blind: bool,
}

/// What the writers and the watch share.
#[derive(Debug, Default)]
struct State {
    staged: VecDeque<Staged>,
    /// The committed value of every staged key (None: absent), kept current by the watch.
    undo: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// The last ticket handed out.
    last_ticket: Ticket,
    /// Every ticket up to this one is committed.
    durable_through: Ticket,
    /// The write version the staged batches were built on (their next compare).
    expected_version: Option<u64>,
    /// The committed write version when the batch being built began reading.
    build_base: Option<u64>,
    /// The write version as committed (from the watch and this replica's commits).
    committed_version: u64,
    /// The last revocation revision committed, as the watch delivered it.
    committed_revision: u64,
    /// The last revocation revision this replica committed (the watch may not have delivered
    /// it yet): a rollback never goes below it, and new tokens are minted at least at it.
    own_revision: u64,
    /// The etcd revision of this replica's newest committed transaction (what
    /// [`Store::settle`] waits for the watch to bring back).
    own_commit: i64,
    /// A commit's response named no revision: the next settle takes the read barrier.
    own_commit_unknown: bool,
}

impl State {
    /// The newest revocation revision known to be committed.
    fn committed_last(&self) -> u64 {
        self.committed_revision.max(self.own_revision)
    }
}

/// Reads of the barrier key, shared by concurrent requests.
#[derive(Debug, Default)]
struct Reads {
    /// Reads started so far (the generation of the newest).
    started: u64,
    /// A read is in flight.
    running: bool,
    /// The newest generation a waiting caller needs.
    wanted: u64,
}

/// A [`Store`] on an etcd cluster.
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    prefix: Vec<u8>,
    max_txn_ops: usize,
    /// Names this replica in `w` and `l`.
    replica: String,
    mirror: RwLock<Arc<SledStore>>,
    state: Mutex<State>,
    /// The etcd revision the mirror has applied.
    applied: watch::Sender<i64>,
    /// Set when the store is dropped: ends the watch and lease tasks.
    closed: watch::Sender<bool>,
    /// The shared read barrier's bookkeeping (see `follow::shared_read`).
    reads: Mutex<Reads>,
    /// The last shared read finished: its generation and the revision it read.
    read_done: watch::Sender<(u64, Result<i64, String>)>,
    /// Asks the watch task to reload the mirror (a read barrier that timed out: the watch
    /// may be stuck on a member cut off from the cluster).
    resync: tokio::sync::Notify,
    feed: mpsc::UnboundedSender<Committed>,
    feed_rx: Mutex<Option<mpsc::UnboundedReceiver<Committed>>>,
    feed_sent: AtomicU64,
    lease: tokio::sync::Mutex<Option<(i64, tokio::task::JoinHandle<()>)>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Ends the watch and lease tasks (they hold the inner state only weakly).
        self.inner.closed.send_replace(true);
    }
}

fn etcd_err(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// How long an etcd call is retried while members are unreachable (a member down, a leader
/// election: etcd elects a new leader within about a second by default).
const RETRY_FOR: Duration = Duration::from_secs(5);

/// Whether a failed call certainly never reached etcd (no connection), so that even a write
/// is safe to send again.
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    text.contains("tcp connect error") || text.contains("Connection refused")
}

/// Whether a failed read may succeed on another member or after an election.
fn transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => never_sent(e),
    }
}

/// Runs `call` until it succeeds, fails for good, or [`RETRY_FOR`] has passed; `retry` says
/// which failures are worth another attempt. The client balances over every endpoint, so a
/// new attempt usually reaches another member.
async fn with_retry<T, F, Fut>(
    retry: fn(&etcd_client::Error) -> bool,
    mut call: F,
) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let mut pause = Duration::from_millis(20);
    loop {
        match call().await {
            Err(e) if retry(&e) && tokio::time::Instant::now() + pause < deadline => {
                tracing::debug!(error = %e, "etcd call failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

impl Inner {
    fn mirror(&self) -> Arc<SledStore> {
        self.mirror
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, sub: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), sub].concat()
    }

    fn send(&self, item: Committed) {
        if self.feed.send(item).is_ok() {
            self.feed_sent.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl EtcdStore {
    /// Connects to etcd, loads the mirror from the prefix and starts following it.
    ///
    /// # Errors
    /// etcd cannot be reached, refuses the credentials, or holds records this version cannot
    /// read; a certificate file cannot be read.
    pub async fn connect(options: &EtcdOptions) -> StoreResult<Self> {
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // A member cut off from the quorum refuses instead of serving a stale view (its
            // watch would otherwise stay open and silent).
            .with_require_leader(true);
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user.clone(), password.clone());
        }
        if options.ca_file.is_some() || options.client_cert.is_some() {
            connect = connect.with_tls(tls(options)?);
        }
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(etcd_err)?;
        let (feed, feed_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            client,
            prefix: options.prefix.as_bytes().to_vec(),
            max_txn_ops: options.max_txn_ops.max(8),
            replica: crate::core::new_request_id(),
            mirror: RwLock::new(Arc::new(SledStore::temporary()?)),
            state: Mutex::new(State::default()),
            applied: watch::channel(0).0,
            closed: watch::channel(false).0,
            resync: tokio::sync::Notify::new(),
            reads: Mutex::new(Reads::default()),
            read_done: watch::channel((0, Ok(0))).0,
            feed,
            feed_rx: Mutex::new(Some(feed_rx)),
            feed_sent: AtomicU64::new(0),
            lease: tokio::sync::Mutex::new(None),
        });
        let revision = follow::load(&inner, false).await?;
        tokio::spawn(follow::run(Arc::downgrade(&inner), revision));
        Ok(Self { inner })
    }
}

fn tls(options: &EtcdOptions) -> StoreResult<etcd_client::TlsOptions> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))
    };
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &options.ca_file {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    }
    if let Some((cert, key)) = &options.client_cert {
        tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

impl Store for EtcdStore {
    fn token(&self, id: &TokenId) -> StoreResult<Option<IssuedToken>> {
        self.inner.mirror().token(id)
    }
    fn token_liveness(&self, id: &TokenId) -> StoreResult<Option<TokenLiveness>> {
        self.inner.mirror().token_liveness(id)
    }
    fn expired_tokens(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<(TokenId, i64)>> {
        self.inner.mirror().expired_tokens(now_ms, limit)
    }
    fn newest_token_expiry(&self) -> StoreResult<Option<i64>> {
        self.inner.mirror().newest_token_expiry()
    }
    fn instance_tokens(
        &self,
        instance_id: &str,
        creator: Option<&str>,
        after: Option<(&str, &TokenId)>,
        limit: usize,
    ) -> StoreResult<Vec<(TokenId, IssuedToken)>> {
        self.inner
            .mirror()
            .instance_tokens(instance_id, creator, after, limit)
    }
    fn tombstones(&self) -> StoreResult<Vec<Tombstone>> {
        self.inner.mirror().tombstones()
    }
    fn access_keys(&self) -> StoreResult<Vec<AccessKey>> {
        self.inner.mirror().access_keys()
    }
    fn access_key(&self, id: &str) -> StoreResult<Option<AccessKey>> {
        self.inner.mirror().access_key(id)
    }
    fn device(&self, instance_id: &str, client_id: &str) -> StoreResult<Option<RegisteredDevice>> {
        self.inner.mirror().device(instance_id, client_id)
    }
    fn device_by_key(&self, device_key_id: &str) -> StoreResult<Option<RegisteredDevice>> {
        self.inner.mirror().device_by_key(device_key_id)
    }
    fn device_count(&self, instance_id: &str) -> StoreResult<u64> {
        self.inner.mirror().device_count(instance_id)
    }
    fn group_count(&self, instance_id: &str, group_id: &str) -> StoreResult<u64> {
        self.inner.mirror().group_count(instance_id, group_id)
    }
    fn device_client_ids(
        &self,
        instance_id: &str,
        group_id: &str,
        after: Option<&str>,
        skip: usize,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.inner
            .mirror()
            .device_client_ids(instance_id, group_id, after, skip, limit)
    }
    fn revocations(&self, from: u64, limit: usize) -> StoreResult<Vec<RevocationEvent>> {
        self.inner.mirror().revocations(from, limit)
    }
    fn revision_bounds(&self) -> StoreResult<RevisionBounds> {
        // Under the state lock: the watch, a stage and a rollback change the mirror's bounds
        // in more than one step under it (an event appended below a staged one sets the last
        // revision back, then up again), and the core numbers its next revocation from this.
        let _state = self.inner.state();
        self.inner.mirror().revision_bounds()
    }
    fn meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.mirror().meta(name)
    }
    fn size_on_disk(&self) -> StoreResult<u64> {
        self.inner.mirror().size_on_disk()
    }
    fn counts(&self) -> StoreResult<StoreCounts> {
        self.inner.mirror().counts()
    }

    fn apply(&self, ops: Vec<Op>) -> StoreResult<Ticket> {
        let inner = &self.inner;
        let mut state = inner.state();
        if ops.is_empty() {
            // Nothing to write: the answer rests on what the build read, staged batches
            // included (wait for the last of them), or only on what is committed. Not the last
            // ticket when nothing is staged: after a rollback that one was dropped, and a
            // writer waiting on it would hear of a conflict again at every attempt.
            return Ok(if state.staged.is_empty() {
                state.durable_through
            } else {
                state.last_ticket
            });
        }
        let mirror = inner.mirror();
        let mut writes = Vec::new();
        let mut blind = true;
        for op in &ops {
            blind &= keys::is_new_token(&mirror, op)?;
            writes.extend(keys::writes_of(op));
        }
        let distinct: std::collections::HashSet<Option<&[u8]>> =
            writes.iter().map(Write::key).collect();
        if distinct.len() + 2 > inner.max_txn_ops {
            return Err(StoreError::Backend(format!(
                "one write of {} etcd operations exceeds --etcd-max-txn-ops {}",
                distinct.len() + 2,
                inner.max_txn_ops
            )));
        }
        // Everything that can fail first, then one atomic batch on the mirror: a failure
        // leaves neither the mirror nor the undo log half-changed.
        // A new token's key is absent in etcd (a fresh random id): no mirror read to learn it.
        let inserted: Vec<Vec<u8>> = ops
            .iter()
            .filter_map(|op| match op {
                Op::InsertToken(id, _) => Some(keys::token_key(id)),
                _ => None,
            })
            .collect();
        let mut undo = Vec::new();
        for write in &writes {
            if let Some(key) = write.key() {
                if !state.undo.contains_key(key) && !undo.iter().any(|(k, _)| k == key) {
                    let committed = if inserted.iter().any(|k| k == key) {
                        None
                    } else {
                        keys::current(&mirror, key)?
                    };
                    undo.push((key.to_vec(), committed));
                }
            }
        }
        let mut compact_below = None;
        let ops: Vec<Op> = ops
            .into_iter()
            .filter_map(|op| match op {
                // The events below it are deleted when etcd reports them deleted.
                Op::CompactRevocationsBelow(below) => {
                    compact_below = Some(below);
                    None
                }
                // The builder read the token without the state lock, so the watch may have
                // changed the mirror since (another replica revoked or swept it): the mirror
                // reads the record it replaces. The batch then loses its compare and is rolled
                // back, and the mirror's counts stay right.
                Op::RevokeToken(id, record) => Some(Op::PutToken(id, record)),
                op => Some(op),
            })
            .collect();
        if !ops.is_empty() {
            mirror.apply_now(ops)?;
        }
        if let Some(below) = compact_below {
            mirror.set_oldest(below)?;
        }
        state.undo.extend(undo);
        // A read-modify-write compares with the version its build began on (older than now,
        // if another replica committed meanwhile). New tokens read nothing and leave that
        // point to the build it belongs to (they are written without the writer lock).
        let base = if blind {
            state.committed_version
        } else {
            state.build_base.take().unwrap_or(state.committed_version)
        };
        state.expected_version = Some(match state.expected_version {
            Some(e) if !state.staged.is_empty() => e.min(base),
            _ => base,
        });
        state.last_ticket += 1;
        let ticket = state.last_ticket;
        state.staged.push_back(Staged {
            ticket,
            writes,
            blind,
        });
        Ok(ticket)
    }

    fn flush(&self) -> StoreFuture<'_, FlushReport> {
        Box::pin(txn::flush(&self.inner))
    }

    fn begin_write(&self) {
        let mut state = self.inner.state();
        state.build_base = Some(state.committed_version);
    }

    fn rollback(&self) -> Ticket {
        let inner = &self.inner;
        let mut state = inner.state();
        let mirror = inner.mirror();
        let mut undo: Vec<_> = state.undo.drain().collect();
        // Deletions first, then puts in key order: revocations come back in revision order.
        undo.sort_by(|a, b| (a.1.is_some(), &a.0).cmp(&(b.1.is_some(), &b.0)));
        for (key, value) in undo {
            if let Err(e) = keys::apply_change(&mirror, &key, value.as_deref()) {
                tracing::error!(error = %e, "restoring the mirror after a lost race failed");
            }
        }
        if let Err(e) = mirror.set_last_revision(state.committed_last()) {
            tracing::error!(error = %e, "restoring the mirror's revision failed");
        }
        state.staged.clear();
        state.expected_version = None;
        state.last_ticket
    }

    fn sync(&self) -> StoreFuture<'_, u64> {
        Box::pin(follow::barrier(&self.inner))
    }

    fn settle(&self) -> StoreFuture<'_, u64> {
        Box::pin(follow::settle(&self.inner))
    }

    fn minting_revision(&self) -> StoreResult<u64> {
        Ok(self.inner.state().committed_last())
    }

    fn max_batch_ops(&self) -> usize {
        // The version, last-writer and counter keys ride along.
        self.inner.max_txn_ops.saturating_sub(4).max(1)
    }

    fn lead(&self) -> StoreFuture<'_, bool> {
        Box::pin(txn::lead(&self.inner))
    }

    fn committed(&self) -> Option<mpsc::UnboundedReceiver<Committed>> {
        self.inner
            .feed_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}
