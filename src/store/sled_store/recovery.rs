//! Start-up of a durable sled store: replays the write-ahead log (see `wal`) onto what sled
//! recovered, makes the result durable in sled, and clears the log, so every write a flush
//! acknowledged before a crash is there and the new log starts empty.

use std::{os::unix::fs::DirBuilderExt, path::Path};

use super::{
    wal::sync_dir,
    wal_record::{self, Tail},
};
use crate::store::{StoreError, StoreResult};

/// Replays every record of the log in `dir` onto `db`, in order, flushes sled and removes the
/// log's files. sled never holds a write the log does not (see `wal`), so replaying all of
/// them, whatever part sled already has, ends in exactly the state the log describes.
///
/// # Errors
/// The log cannot be read or is damaged anywhere but in its last record; sled cannot be
/// written or flushed.
pub(super) fn replay(db: &sled::Db, dir: &Path) -> StoreResult<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| wal_record::io_error("creating", dir, e))?;
    // The log directory's own entry must be durable before any write relies on the log.
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    let files = wal_record::files(dir)?;
    // The batch the next record must carry: each file is named by its first batch, and every
    // file but the first starts where the one before it ended.
    let mut next: Option<u64> = None;
    let mut replayed = 0u64;
    for (i, (first, path)) in files.iter().enumerate() {
        let (records, tail) = wal_record::read_file(path)?;
        let last_file = i + 1 == files.len();
        match tail {
            Tail::Torn if !last_file => {
                return Err(damaged(path, "a damaged record before the end of the log"));
            }
            Tail::Zeros if !last_file => {
                return Err(damaged(
                    path,
                    "zeros after the records of a file that is not the last",
                ));
            }
            _ => {}
        }
        if let Some(expected) = next {
            if *first != expected {
                return Err(damaged(
                    path,
                    &format!(
                        "the file starts at batch {first}, after batch {}",
                        expected.saturating_sub(1)
                    ),
                ));
            }
        }
        let mut expected = *first;
        for record in records {
            if record.seq != expected {
                return Err(damaged(
                    path,
                    &format!(
                        "batch {} follows batch {}",
                        record.seq,
                        expected.saturating_sub(1)
                    ),
                ));
            }
            expected += 1;
            for (key, value) in record.writes {
                match value {
                    Some(value) => db.insert(key, value).map(|_| ())?,
                    None => db.remove(key).map(|_| ())?,
                }
            }
            replayed += 1;
        }
        next = Some(expected);
        if tail == Tail::Torn {
            // A crash in the middle of a write: its flush never returned, so no client was
            // told that this write (or any after it) succeeded.
            tracing::warn!(path = %path.display(), "ignored an incomplete write at the end of the write-ahead log");
        }
    }
    if !files.is_empty() {
        db.flush()?;
        for (_, path) in &files {
            std::fs::remove_file(path).map_err(|e| wal_record::io_error("removing", path, e))?;
        }
        sync_dir(dir)?;
    }
    if replayed > 0 {
        tracing::info!(replayed, "recovered writes from the write-ahead log");
    }
    Ok(())
}

fn damaged(path: &Path, what: &str) -> StoreError {
    StoreError::Backend(format!(
        "the write-ahead log {} is damaged: {what}; restore the data directory from a backup",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write as _,
        sync::Arc,
        time::{Duration, Instant},
    };

    use super::*;
    use crate::store::sled_store::{overlay::Overlay, wal::Wal, wal_record::KeyWrite};

    fn put(key: &str, value: &str) -> KeyWrite {
        (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
    }

    fn sled_at(path: &Path) -> sled::Db {
        sled::Config::new().path(path).open().expect("sled opens")
    }

    fn value(db: &sled::Db, key: &str) -> Option<String> {
        db.get(key)
            .expect("read")
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// A log written next to one sled database, replayed onto another that never saw the
    /// writes: what a crash that lost sled's unflushed writes leaves.
    fn write_log(dir: &Path, batches: &[Vec<KeyWrite>], segment_bytes: u64) -> Arc<Wal> {
        let scratch = sled::Config::new()
            .temporary(true)
            .open()
            .expect("sled opens");
        replay(&scratch, dir).expect("an empty log");
        let wal = Arc::new(
            Wal::create(dir, scratch, Arc::new(Overlay::default()), segment_bytes).expect("log"),
        );
        for writes in batches {
            wal.accept(writes.clone()).expect("accept");
            wal.flush().expect("flush");
        }
        wal
    }

    #[test]
    fn a_replay_restores_every_flushed_batch_in_order_and_clears_the_log() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join("wal");
        let batches = vec![
            vec![put("a", "1"), put("b", "1")],
            vec![put("a", "2"), (b"b".to_vec(), None)],
            vec![put("c", "3")],
        ];
        drop(write_log(&log, &batches, u64::MAX));
        let db = sled_at(&tmp.path().join("db"));
        // sled held part of the last batch and an older value: the replay ends in the same
        // state whatever sled had.
        db.insert("c", "stale").expect("insert");
        db.insert("b", "1").expect("insert");
        replay(&db, &log).expect("replay");
        assert_eq!(value(&db, "a").as_deref(), Some("2"));
        assert_eq!(value(&db, "b"), None, "removed by batch 2");
        assert_eq!(value(&db, "c").as_deref(), Some("3"));
        assert!(wal_record::files(&log).expect("list").is_empty());
        // A second replay (a crash right after the first) changes nothing.
        replay(&db, &log).expect("replay again");
        assert_eq!(value(&db, "a").as_deref(), Some("2"));
    }

    #[test]
    fn a_torn_last_record_is_ignored_and_damage_before_the_end_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join("wal");
        drop(write_log(
            &log,
            &[vec![put("a", "1")], vec![put("a", "2")]],
            u64::MAX,
        ));
        let (_, path) = wal_record::files(&log).expect("list").remove(0);
        // A crash cut the next write short: half a record at the end.
        let mut partial = Vec::new();
        wal_record::encode(&mut partial, 3, &[put("a", "3")]);
        partial.truncate(partial.len() / 2);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(&partial).expect("append");
        let copy = tmp.path().join("copy.wal");
        std::fs::copy(&path, &copy).expect("copy");
        let db = sled_at(&tmp.path().join("db"));
        replay(&db, &log).expect("a torn tail is fine");
        assert_eq!(
            value(&db, "a").as_deref(),
            Some("2"),
            "the torn batch 3 was never acknowledged"
        );

        // The same torn file followed by another: the damage is inside the log.
        let log2 = tmp.path().join("wal2");
        std::fs::create_dir(&log2).expect("mkdir");
        std::fs::copy(&copy, wal_record::file_name(&log2, 1)).expect("copy");
        std::fs::write(wal_record::file_name(&log2, 3), wal_record::MAGIC).expect("write");
        let err = replay(&db, &log2).expect_err("damage before the end");
        assert!(
            err.to_string().contains("damaged record before the end"),
            "{err}"
        );
        assert_eq!(
            wal_record::files(&log2).expect("list").len(),
            2,
            "nothing removed"
        );
    }

    #[test]
    fn zeros_end_the_last_file_and_any_other_gap_is_damage() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join("wal");
        std::fs::create_dir(&log).expect("mkdir");
        // A file named by its first batch holding that batch, then `tail`.
        let file = |first: u64, tail: &[u8]| {
            let mut bytes = wal_record::MAGIC.to_vec();
            wal_record::encode(&mut bytes, first, &[put("a", &first.to_string())]);
            bytes.extend_from_slice(tail);
            std::fs::write(wal_record::file_name(&log, first), bytes).expect("write");
        };
        let db = sled_at(&tmp.path().join("db"));
        let refused = |why: &str| {
            let err = replay(&db, &log).expect_err(why);
            assert!(err.to_string().contains("is damaged"), "{why}: {err}");
        };
        // The last file ends in the space `prealloc` filled ahead of the writes.
        file(1, &[]);
        file(2, &[0; 4096]);
        replay(&db, &log).expect("zeros end the last file");
        assert_eq!(value(&db, "a").as_deref(), Some("2"));

        // An earlier file was cut back to its records when the log moved on: zeros there
        // mean records are missing.
        file(1, &[0; 4096]);
        file(2, &[]);
        refused("zeros in a file that is not the last");

        // A record cut short before the zeros is a torn write, not the zeros' end.
        let mut cut = Vec::new();
        wal_record::encode(&mut cut, 2, &[put("a", "lost")]);
        cut.truncate(cut.len() - 3);
        cut.extend_from_slice(&[0; 4096]);
        file(1, &cut);
        file(2, &[]);
        refused("a cut record before the end");

        // A file that does not start where the one before it ended, even with no records.
        for path in wal_record::files(&log).expect("list") {
            std::fs::remove_file(path.1).expect("remove");
        }
        file(1, &[]);
        std::fs::write(wal_record::file_name(&log, 5), wal_record::MAGIC).expect("write");
        refused("batches 2 to 4 are missing");
    }

    #[test]
    fn a_flush_is_durable_before_sled_has_it_and_a_stopped_log_gives_sled_nothing_more() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = sled_at(&tmp.path().join("db"));
        let log = tmp.path().join("wal");
        replay(&db, &log).expect("an empty log");
        let overlay = Arc::new(Overlay::default());
        let wal = Arc::new(Wal::create(&log, db.clone(), overlay.clone(), u64::MAX).expect("log"));
        wal.accept(vec![put("a", "1")]).expect("accept");
        assert_eq!(wal.flush().expect("flush"), 1);
        assert_eq!(value(&db, "a"), None, "sled gets it after the writers hear");
        assert!(overlay.get(b"a").is_some(), "readers see it meanwhile");
        assert_eq!(wal.apply_durable().expect("apply"), 1);
        assert_eq!(value(&db, "a").as_deref(), Some("1"));
        assert_eq!(overlay.len(), 0);

        // Durable, then the log stops (a failed apply, say): the queued batch never reaches
        // sled out of order, and stays visible to readers.
        wal.accept(vec![put("a", "2")]).expect("accept");
        assert_eq!(wal.flush().expect("flush"), 2);
        let _ = wal.fail("sled failed".into());
        assert!(wal.apply_durable().is_err());
        assert_eq!(value(&db, "a").as_deref(), Some("1"));
        assert!(overlay.get(b"a").is_some());
    }

    #[test]
    fn a_file_that_does_not_start_like_a_log_is_refused_not_skipped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = sled_at(&tmp.path().join("db"));
        for (name, bytes, ok) in [
            ("created, not written", b"".as_slice(), true),
            ("half a magic", b"MQTW".as_slice(), true),
            ("short and foreign", b"XYZ".as_slice(), false),
            (
                "another version",
                b"MQTWAL99 and then records".as_slice(),
                false,
            ),
        ] {
            let log = tmp.path().join(name);
            std::fs::create_dir(&log).expect("mkdir");
            std::fs::write(wal_record::file_name(&log, 1), bytes).expect("write");
            let replayed = replay(&db, &log);
            assert_eq!(replayed.is_ok(), ok, "{name}: {replayed:?}");
            if let Err(e) = replayed {
                assert!(e.to_string().contains("does not start like"), "{e}");
                assert_eq!(wal_record::files(&log).expect("list").len(), 1, "kept");
            }
        }
    }

    #[test]
    fn a_stopped_log_accepts_no_batch_and_shows_none_to_readers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join("wal");
        let wal = write_log(&log, &[vec![put("a", "1")]], u64::MAX);
        let _ = wal.fail("the disk failed".into());
        let refused = wal.accept(vec![put("a", "2")]).expect_err("stopped");
        assert!(refused.to_string().contains("the disk failed"), "{refused}");
        assert!(wal.flush().is_err(), "nothing more is acknowledged");
        assert_eq!(wal.last_accepted(), 1, "the refused batch got no number");
    }

    #[test]
    fn a_missing_batch_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join("wal");
        std::fs::create_dir(&log).expect("mkdir");
        let mut bytes = wal_record::MAGIC.to_vec();
        wal_record::encode(&mut bytes, 1, &[put("a", "1")]);
        wal_record::encode(&mut bytes, 3, &[put("a", "3")]);
        std::fs::write(wal_record::file_name(&log, 1), bytes).expect("write");
        let db = sled_at(&tmp.path().join("db"));
        let err = replay(&db, &log).expect_err("batch 2 is missing");
        assert!(err.to_string().contains("batch 3 follows batch 1"), "{err}");
    }

    #[test]
    fn the_log_moves_to_new_files_and_a_checkpoint_removes_what_sled_holds() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join("wal");
        let batches: Vec<Vec<KeyWrite>> = (0..200)
            .map(|i| vec![put(&format!("k{i:03}"), &"v".repeat(100))])
            .collect();
        let wal = write_log(&log, &batches, 2048);
        // Each rotation starts a checkpoint; once they ran, only the newest files are left.
        let deadline = Instant::now() + Duration::from_secs(20);
        while wal_record::files(&log).expect("list").len() > 2 {
            assert!(
                Instant::now() < deadline,
                "checkpoints never removed the old files"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(wal);
        // Replaying what is left onto an empty database holds only the newest batches, which
        // is all a database that the checkpoint flushed needs.
        let files = wal_record::files(&log).expect("list");
        let first = files.first().map_or(0, |(first, _)| *first);
        assert!(first > 1, "the first files were removed");
        let db = sled_at(&tmp.path().join("db"));
        replay(&db, &log).expect("replay");
        assert_eq!(value(&db, "k199").map(|v| v.len()), Some(100));
    }
}
