//! Zero-filled space ahead of the write-ahead log's writes, so a flush's `fdatasync` writes
//! only data.
//!
//! Why: appending changes the file's size, and on ext4 `fdatasync` then also writes the inode,
//! a second device write the sync waits for. Overwriting blocks that already hold zeros needs
//! no metadata. Measured on this project's VM with `dd oflag=dsync` of 6 KB writes (one flush's
//! worth): ~200 µs per synced append, ~130 µs per synced overwrite of zeros (docs/benchmarks.md).
//! A sparse or `fallocate`d region is not the same: its first write allocates or converts the
//! extent, which is metadata again.
//!
//! A [`Prealloc`] belongs to one log file. After a flush, [`Prealloc::ahead`] starts a
//! background fill of the next [`PREALLOC_BYTES`] with zeros (and syncs them) once less than
//! half of that is left. Before each write, [`Prealloc::reserve`] makes sure the write does not
//! overlap a fill still in progress (it waits for it, which only a log outrunning a 1 MiB fill
//! would do), and past the filled space a write simply appends. While a fill's zeros are not
//! yet synced, a log sync may write some of them (`fdatasync` covers the whole file): the
//! measured flush time still fell by a third to a half (docs/benchmarks.md).
//!
//! The fill writes through a file description of its own, not a `dup` of the log's: Linux
//! reports a writeback error once per open file description, and the fill's sync must not be
//! the call that hears of the log's error. When the log moves to a new file, [`Prealloc::finish`]
//! waits for the fill and the old file is cut back to its records, so only the last file of
//! the log ever ends in zeros, which the replay reads as its end (`wal_record::read_file`).

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::FileExt as _,
    path::Path,
    sync::{Arc, Condvar, Mutex, MutexGuard},
};

/// Bytes zero-filled ahead of the log's writes at a time.
pub(super) const PREALLOC_BYTES: u64 = 1024 * 1024;

#[derive(Default)]
struct State {
    /// The file's bytes below this are taken: written by the log, zero-filled, or being
    /// zero-filled.
    claimed: u64,
    /// The start of the fill in progress, which covers `[start, claimed)`.
    filling: Option<u64>,
    /// No more fills: the log moved to a new file.
    finished: bool,
}

/// The zero-filled space of one log file.
#[derive(Default)]
pub(super) struct Prealloc {
    state: Mutex<State>,
    filled: Condvar,
}

impl Prealloc {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Each critical section sets plain numbers; a panic cannot leave them half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called before the log writes up to byte `end`: waits while a fill in progress overlaps
    /// the write, and claims the bytes up to `end` so no later fill covers them.
    pub(super) fn reserve(&self, end: u64) {
        let mut state = self.lock();
        while state.filling.is_some_and(|start| end > start) {
            state = self.filled.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.claimed = state.claimed.max(end);
    }

    /// Called after the log wrote up to byte `end` of the file at `path`: starts a background
    /// fill of the next [`PREALLOC_BYTES`] once less than half of that is left and no fill is
    /// running.
    pub(super) fn ahead(self: &Arc<Self>, path: &Path, end: u64) {
        let start = {
            let mut state = self.lock();
            if state.finished
                || state.filling.is_some()
                || state.claimed >= end + PREALLOC_BYTES / 2
            {
                return;
            }
            let start = state.claimed;
            state.claimed = start + PREALLOC_BYTES;
            state.filling = Some(start);
            start
        };
        let this = Arc::clone(self);
        let fill = OpenOptions::new().write(true).open(path).map(|file| {
            let path = path.to_owned();
            std::thread::Builder::new()
                .name("wal-prealloc".into())
                .spawn(move || {
                    this.fill(&file, &path, start);
                })
        });
        if let Err(e) | Ok(Err(e)) = fill {
            // Only speed is lost: the log appends past the filled space.
            tracing::debug!(error = %e, "could not start filling the write-ahead log ahead");
            let mut state = self.lock();
            state.filling = None;
            self.filled.notify_all();
        }
    }

    /// Waits for the fill in progress, if any, and starts no other: the log is moving on.
    pub(super) fn finish(&self) {
        let mut state = self.lock();
        state.finished = true;
        while state.filling.is_some() {
            state = self.filled.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Writes and syncs zeros at `[start, start + PREALLOC_BYTES)`, then lets writes in.
    fn fill(&self, file: &File, path: &Path, start: u64) {
        let zeros = vec![0u8; PREALLOC_BYTES as usize];
        // Positioned writes: the log's own writes go through the file's cursor, untouched.
        let done = file
            .write_all_at(&zeros, start)
            .and_then(|()| file.sync_data());
        if let Err(e) = done {
            // Whatever part was written is ours to overwrite: the log's later writes land
            // there (at append speed where the fill did not reach). An error of the log's own
            // pages still reaches the log's sync, through its own file description.
            tracing::warn!(error = %e, path = %path.display(), "filling the write-ahead log ahead failed");
        }
        let mut state = self.lock();
        state.filling = None;
        self.filled.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Seek as _, Write as _},
        time::{Duration, Instant},
    };

    use super::*;

    fn idle(p: &Prealloc) -> bool {
        p.lock().filling.is_none()
    }

    #[test]
    fn the_space_ahead_is_zero_filled_and_never_over_a_write() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("log");
        let mut file = File::create(&path).expect("create");
        let pre = Arc::new(Prealloc::default());
        let mut written = 0u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        // Three fills' worth of writes, each reserved first as the log does.
        while written < 3 * PREALLOC_BYTES {
            let chunk = vec![0xAB; 6000];
            pre.reserve(written + chunk.len() as u64);
            file.write_all(&chunk).expect("write");
            written += chunk.len() as u64;
            pre.ahead(&path, written);
            assert!(Instant::now() < deadline, "the writes never finished");
        }
        while !idle(&pre) {
            assert!(Instant::now() < deadline, "the fill never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
        let bytes = std::fs::read(&path).expect("read");
        let written = usize::try_from(written).expect("small");
        assert!(
            bytes[..written].iter().all(|b| *b == 0xAB),
            "no fill overwrote a write"
        );
        assert!(
            bytes.len() >= written + (PREALLOC_BYTES / 2) as usize,
            "space is filled ahead"
        );
        assert!(bytes[written..].iter().all(|b| *b == 0), "with zeros");
        // The log's cursor was not moved by the positioned fills.
        assert_eq!(file.stream_position().expect("position"), written as u64);
    }

    #[test]
    fn a_write_waits_for_a_fill_it_overlaps() {
        let pre = Prealloc::default();
        {
            let mut state = pre.lock();
            state.claimed = 2 * PREALLOC_BYTES;
            state.filling = Some(PREALLOC_BYTES);
        }
        // Below the fill: no wait.
        pre.reserve(PREALLOC_BYTES);
        let pre = Arc::new(pre);
        let waiter = {
            let pre = pre.clone();
            std::thread::spawn(move || {
                pre.reserve(PREALLOC_BYTES + 10);
                Instant::now()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let released = Instant::now();
        {
            let mut state = pre.lock();
            state.filling = None;
            pre.filled.notify_all();
        }
        let reserved = waiter.join().expect("waiter");
        assert!(
            reserved >= released,
            "the write went in before the fill ended"
        );
        assert_eq!(pre.lock().claimed, 2 * PREALLOC_BYTES);
    }
}
