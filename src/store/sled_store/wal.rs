//! The durable sled store's write-ahead log: what makes an acknowledged write durable.
//!
//! Why not sled's own flush: sled 0.34 rolls and writes its IO buffer on every multi-key
//! batch (`apply_batch` pins the log), and its flush hands the buffer to its IO threads and
//! wakes the caller through condition variables. Profiled under durable ApplyToken load, those
//! writes, `sync_file_range` calls and thread wake-ups were most of the server's CPU per write
//! (docs/benchmarks.md). Here a batch is encoded once into a buffer and its key writes go into
//! the [`Overlay`], where reads see them at once; a flush writes every buffered record with
//! one `write` and one `fdatasync` and queues the batches, and [`Wal::apply_durable`] then
//! applies them to sled with plain single-key writes (coalesced: the last value of each key)
//! and lets the overlay forget them. The store answers the writers between the two, so
//! sled's inserts (several µs a key, docs/benchmarks.md) are not on their path.
//!
//! So sled only ever receives writes that are durable in the log: after a crash sled holds a
//! state no newer than the log's end, though possibly part of a batch (its writes are not
//! atomic there), and replaying every record the log still holds, in order, restores exactly
//! the acknowledged state (each record sets keys to fixed values, so a replay over any state
//! between the oldest record and the newest is idempotent). sled is flushed at checkpoints: in
//! the background each time the log has grown by [`SEGMENT_BYTES`], at start after a replay,
//! and when the database closes; a checkpoint deletes the log files sled then covers.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use super::{
    overlay::Overlay,
    prealloc::Prealloc,
    wal_record::{encode, file_name, io_error, KeyWrite, MAGIC},
};
use crate::store::{StoreError, StoreResult};

/// Log bytes after which the log moves to a new file and sled is checkpointed, so the log a
/// restart replays stays short.
pub(super) const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Durable batches that may wait for sled before a flush applies them before answering (see
/// [`Wal::behind`]).
pub(super) const MAX_QUEUED_BATCHES: usize = 4096;

/// Makes the directory's entries (a file created or removed) durable.
pub(super) fn sync_dir(dir: &Path) -> StoreResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing", dir, e))
}

/// Batches accepted since the last flush.
#[derive(Default)]
struct Pending {
    /// Their encoded records, in sequence order.
    log: Vec<u8>,
    /// The same batches' key writes, to apply to sled once durable.
    batches: Vec<(u64, Vec<KeyWrite>)>,
    /// The last sequence number accepted.
    last: u64,
}

/// The log file records are written to.
struct Segment {
    file: File,
    path: PathBuf,
    len: u64,
    /// The zero-filled space ahead of `len`.
    prealloc: Arc<Prealloc>,
}

/// A file that a later one has replaced: deleted once a checkpoint covers `last_seq`.
struct Closed {
    path: PathBuf,
    last_seq: u64,
}

/// The open log of a durable sled store.
pub(super) struct Wal {
    dir: PathBuf,
    db: sled::Db,
    /// Writes accepted but not yet in sled, which reads consult first.
    overlay: Arc<Overlay>,
    pending: Mutex<Pending>,
    /// The file being written; held across a write and its fdatasync, so batches reach the
    /// file (and the queue for sled) in sequence order, one flush at a time.
    segment: Mutex<Segment>,
    /// Batches durable in the log and not yet given to sled, in sequence order.
    durable_batches: Mutex<Vec<(u64, Vec<KeyWrite>)>>,
    /// Held while batches are applied to sled: one apply at a time, so sled gets them in order.
    applying: Mutex<()>,
    /// The last sequence number durable in the log.
    durable: AtomicU64,
    /// Bytes after which the log moves to a new file ([`SEGMENT_BYTES`]; tests use less).
    segment_bytes: u64,
    /// The last sequence number durable and applied to sled.
    applied: AtomicU64,
    /// Files waiting for a checkpoint.
    closed: Mutex<Vec<Closed>>,
    /// Why the log stopped: after a failed write or sync what the file holds is unknown, and
    /// after a failed apply sled lacks a batch, so no later write is acknowledged (nor given
    /// to sled) until a restart replays the log.
    failed: Mutex<Option<String>>,
    /// Set with `failed`: read by every accept without a lock, so a stopped log refuses new
    /// batches instead of buffering them (and their overlay entries) until a restart.
    stopped: AtomicBool,
    /// One checkpoint at a time.
    checkpointing: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data whole (a buffer, a file handle, a list), so a
    // panic elsewhere does not make it unusable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Wal {
    /// Starts a new, empty log in `dir`, moving to a new file every `segment_bytes`; sled must
    /// hold every earlier write durably (see `recovery`).
    pub(super) fn create(
        dir: &Path,
        db: sled::Db,
        overlay: Arc<Overlay>,
        segment_bytes: u64,
    ) -> StoreResult<Self> {
        let last = 0;
        let segment = Self::new_segment(dir, last + 1)?;
        Ok(Self {
            dir: dir.to_owned(),
            db,
            overlay,
            pending: Mutex::new(Pending {
                last,
                ..Pending::default()
            }),
            segment: Mutex::new(segment),
            durable_batches: Mutex::new(Vec::new()),
            applying: Mutex::new(()),
            durable: AtomicU64::new(last),
            segment_bytes,
            applied: AtomicU64::new(last),
            closed: Mutex::new(Vec::new()),
            failed: Mutex::new(None),
            stopped: AtomicBool::new(false),
            checkpointing: Mutex::new(()),
        })
    }

    fn new_segment(dir: &Path, first_seq: u64) -> StoreResult<Segment> {
        let path = file_name(dir, first_seq);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error("creating", &path, e))?;
        let written = file.write_all(MAGIC).and_then(|()| file.sync_all());
        if let Err(e) = written
            .map_err(|e| io_error("writing", &path, e))
            .and_then(|()| sync_dir(dir))
        {
            // A partial file must not be left in the log, where a replay would take it for
            // damage before the end.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Segment {
            file,
            path,
            len: MAGIC.len() as u64,
            prealloc: Arc::default(),
        })
    }

    /// Accepts a batch: reads see it from now on, and the next flush makes it durable.
    /// Returns its sequence number. The caller serializes batches that read before they write
    /// (the store's write lock), so they are numbered in the order they were built.
    ///
    /// # Errors
    /// The log stopped after a failed write or sync: nothing is accepted (or shown to
    /// readers) until a restart replays the log.
    pub(super) fn accept(&self, writes: Vec<KeyWrite>) -> StoreResult<u64> {
        if self.stopped.load(Ordering::Acquire) {
            let why = lock(&self.failed).clone().unwrap_or_default();
            return Err(StoreError::Backend(why));
        }
        let mut pending = lock(&self.pending);
        let seq = pending.last + 1;
        encode(&mut pending.log, seq, &writes);
        // Under the pending lock, so the overlay's values are in sequence order too.
        self.overlay.put(seq, &writes);
        pending.batches.push((seq, writes));
        pending.last = seq;
        Ok(seq)
    }

    /// The sequence number of the last batch accepted.
    pub(super) fn last_accepted(&self) -> u64 {
        lock(&self.pending).last
    }

    /// Makes every batch accepted so far durable and queues them for sled; returns the last
    /// sequence number now durable. Blocking: call it off the async threads, and call
    /// [`Wal::apply_durable`] after it (after answering the writers, which need not wait).
    ///
    /// # Errors
    /// The write or the sync failed (now, or before: the log then refuses every later flush).
    pub(super) fn flush(self: &Arc<Self>) -> StoreResult<u64> {
        let mut segment = lock(&self.segment);
        if let Some(why) = lock(&self.failed).as_ref() {
            return Err(StoreError::Backend(why.clone()));
        }
        let (log, batches, through) = {
            let mut pending = lock(&self.pending);
            let log = std::mem::take(&mut pending.log);
            (log, std::mem::take(&mut pending.batches), pending.last)
        };
        if batches.is_empty() {
            return Ok(self.durable.load(Ordering::Acquire));
        }
        segment.prealloc.reserve(segment.len + log.len() as u64);
        let written = segment
            .file
            .write_all(&log)
            .and_then(|()| segment.file.sync_data());
        if let Err(e) = written {
            // The batches stay in the overlay: reads stay as the clients were told (they were
            // not told these writes succeeded), and nothing after them is acknowledged.
            return Err(self.fail(format!(
                "the write-ahead log in {} failed: {e}",
                self.dir.display()
            )));
        }
        segment.len += log.len() as u64;
        segment.prealloc.ahead(&segment.path, segment.len);
        // Durable from here on. Queued under the segment lock, so in sequence order.
        lock(&self.durable_batches).extend(batches);
        self.durable.store(through, Ordering::Release);
        if segment.len >= self.segment_bytes {
            // These batches are durable whatever happens to the next file: a failed rotation
            // only means this file keeps growing until one succeeds.
            if let Err(e) = self.rotate(&mut segment, through) {
                tracing::warn!(error = %e, "the write-ahead log could not move to a new file; it retries after the next flush");
            }
        }
        Ok(through)
    }

    /// Whether sled has fallen [`MAX_QUEUED_BATCHES`] or more batches behind the log: the
    /// flush then applies before it answers, so the queue and the overlay stay bounded.
    pub(super) fn behind(&self) -> bool {
        lock(&self.durable_batches).len() >= MAX_QUEUED_BATCHES
    }

    /// Applies every batch that is durable and not yet in sled, in order, and lets the overlay
    /// forget them; returns the last sequence number sled now holds. Blocking.
    ///
    /// # Errors
    /// The log stopped (a failed write, sync or apply): sled gets nothing more, the batches
    /// stay in the overlay for readers and in the log for the replay at the next start.
    pub(super) fn apply_durable(&self) -> StoreResult<u64> {
        let _one = lock(&self.applying);
        // After a failed apply, sled must not get later batches: `applied` would pass a batch
        // sled lacks, and a checkpoint would delete the log file that holds it.
        if self.stopped.load(Ordering::Acquire) {
            let why = lock(&self.failed).clone().unwrap_or_default();
            return Err(StoreError::Backend(why));
        }
        let batches = std::mem::take(&mut *lock(&self.durable_batches));
        let Some(through) = batches.last().map(|(seq, _)| *seq) else {
            return Ok(self.applied.load(Ordering::Acquire));
        };
        // The last value of each key only.
        let mut latest: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (_, writes) in batches {
            latest.extend(writes);
        }
        let keys: Vec<Vec<u8>> = latest.keys().cloned().collect();
        for (key, value) in latest {
            let done = match value {
                Some(value) => self.db.insert(key, value).map(|_| ()),
                None => self.db.remove(key).map(|_| ()),
            };
            if let Err(e) = done {
                // Durable in the log and still in the overlay: the log's replay brings sled
                // up to date at the next start.
                return Err(self.fail(format!("applying the write-ahead log to sled failed: {e}")));
            }
        }
        self.applied.store(through, Ordering::Release);
        self.overlay.settle(through, keys.into_iter());
        Ok(through)
    }

    /// Stops the log: every later accept, flush and apply is refused until a restart.
    pub(super) fn fail(&self, why: String) -> StoreError {
        tracing::error!(error = %why, "the store stops acknowledging writes until it is restarted");
        *lock(&self.failed) = Some(why.clone());
        self.stopped.store(true, Ordering::Release);
        StoreError::Backend(why)
    }

    /// Moves to a new file after `through` and checkpoints in the background. The old file is
    /// first cut back to its records (no zeros filled ahead), so only the log's last file may
    /// end in zeros.
    fn rotate(self: &Arc<Self>, segment: &mut Segment, through: u64) -> StoreResult<()> {
        segment.prealloc.finish();
        segment
            .file
            .set_len(segment.len)
            .and_then(|()| segment.file.sync_all())
            .map_err(|e| io_error("cutting", &segment.path, e))?;
        let next = Self::new_segment(&self.dir, through + 1)?;
        let old = std::mem::replace(segment, next);
        lock(&self.closed).push(Closed {
            path: old.path,
            last_seq: through,
        });
        let wal = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || wal.checkpoint());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start a checkpoint; the log keeps its files until the next one");
        }
        Ok(())
    }

    /// Flushes sled, then deletes the closed log files it now covers. One checkpoint at a
    /// time; a failed one leaves the files for the next.
    fn checkpoint(&self) {
        let _one = lock(&self.checkpointing);
        let closed = std::mem::take(&mut *lock(&self.closed));
        if closed.is_empty() {
            return;
        }
        // The closed files' batches are durable; whatever of them a flush has not yet applied
        // goes to sled now, so the checkpoint covers them. Every batch up to `covered` is in
        // sled before sled's flush begins.
        let covered = match self.apply_durable() {
            Ok(covered) => covered,
            Err(e) => {
                tracing::warn!(error = %e, "checkpoint: the log keeps its files");
                lock(&self.closed).splice(0..0, closed);
                return;
            }
        };
        if let Err(e) = self.db.flush() {
            tracing::warn!(error = %e, "checkpoint: flushing the database failed; the log keeps its files");
            lock(&self.closed).splice(0..0, closed);
            return;
        }
        // Oldest first, each removal made durable before the next, and none after a failure:
        // the files left must always be the log's newest, in sequence, or a replay would find
        // a gap. (Checkpoints are one per SEGMENT_BYTES of log, so the syncs cost nothing.)
        let mut kept = Vec::new();
        let mut removing = true;
        for file in closed {
            if removing && file.last_seq <= covered {
                let removed = std::fs::remove_file(&file.path)
                    .map_err(|e| io_error("removing", &file.path, e))
                    .and_then(|()| sync_dir(&self.dir));
                match removed {
                    Ok(()) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "checkpoint: a log file stays until the next checkpoint");
                        removing = false;
                    }
                }
            }
            kept.push(file);
        }
        lock(&self.closed).splice(0..0, kept);
    }

    /// Closes the log on a clean stop: makes the last batches durable, flushes sled and
    /// deletes every log file, so the next start has nothing to replay (a replay, and the
    /// line it logs, then means the process did not stop cleanly).
    ///
    /// # Errors
    /// A write, sync or delete failed; the files that remain are replayed at the next start.
    pub(super) fn close(self: &Arc<Self>) -> StoreResult<()> {
        self.flush()?;
        self.apply_durable()?;
        let _one = lock(&self.checkpointing);
        let segment = lock(&self.segment);
        // No batch can arrive now: the store is being dropped by its last holder.
        self.db.flush()?;
        let closed = std::mem::take(&mut *lock(&self.closed));
        // Oldest first, each removal durable before the next, so a crash in between leaves
        // the newest files, in sequence (see `checkpoint`).
        for path in closed.iter().map(|c| &c.path).chain([&segment.path]) {
            std::fs::remove_file(path).map_err(|e| io_error("removing", path, e))?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Bytes of the log's files.
    pub(super) fn size_on_disk(&self) -> u64 {
        let Ok(files) = super::wal_record::files(&self.dir) else {
            return 0;
        };
        files
            .iter()
            .filter_map(|(_, path)| std::fs::metadata(path).ok())
            .map(|m| m.len())
            .sum()
    }
}
