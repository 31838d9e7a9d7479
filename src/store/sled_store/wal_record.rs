//! The write-ahead log's file format (see `wal`): files named by their first record's
//! sequence number, `<first seq, 20 digits>.wal`, each an 8-byte magic and then records
//! `len u32 | crc32 u32 | payload`, the payload `seq u64 | count u32 | count x (kind u8 | key
//! len u32 | key | [value len u32 | value])`, little-endian; kind 1 = put, 2 = remove. A record
//! whose length or checksum does not hold is where a crash cut a write short: the end of the
//! log when it is in the last file (that flush never returned, so nothing in it or after it
//! was acknowledged), damage anywhere else. A file that does not start with the magic is
//! refused, never skipped. The last file may end in zeros, the space filled ahead of the
//! writes (`prealloc`): the records end where the zeros begin; an earlier file was cut back to
//! its records when the log moved on. Known limit: with no end marker per flush, later
//! corruption of the last file's bytes reads as a torn write too (the replay logs a warning
//! naming the file).

use std::path::{Path, PathBuf};

use crate::store::{StoreError, StoreResult};

/// The first bytes of every log file (the format's version).
pub(super) const MAGIC: &[u8; 8] = b"MQTWAL01";
/// Larger records are not ours: a damaged length field.
const MAX_RECORD: usize = 256 * 1024 * 1024;
const PUT: u8 = 1;
const REMOVE: u8 = 2;

/// One key write of a batch: a value to put, or `None` to remove the key.
pub(super) type KeyWrite = (Vec<u8>, Option<Vec<u8>>);

/// A record read back from the log.
#[derive(Debug)]
pub(super) struct Record {
    /// Its sequence number.
    pub seq: u64,
    /// The batch's key writes, in order.
    pub writes: Vec<KeyWrite>,
}

/// Appends one record for batch `seq` to `out`.
pub(super) fn encode(out: &mut Vec<u8>, seq: u64, writes: &[KeyWrite]) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]); // len and crc, filled in below
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&len32(writes.len()).to_le_bytes());
    for (key, value) in writes {
        out.push(if value.is_some() { PUT } else { REMOVE });
        out.extend_from_slice(&len32(key.len()).to_le_bytes());
        out.extend_from_slice(key);
        if let Some(value) = value {
            out.extend_from_slice(&len32(value.len()).to_le_bytes());
            out.extend_from_slice(value);
        }
    }
    let payload = start + 8;
    let crc = crc32fast::hash(&out[payload..]);
    let len = len32(out.len() - payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..payload].copy_from_slice(&crc.to_le_bytes());
}

/// A length as the format's u32. Keys and values are far below 4 GiB (the transports cap
/// requests at 8 MiB), so saturating never happens in practice; a record that did would fail
/// its CRC check on replay rather than be misread.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn not_a_log(path: &Path) -> StoreError {
    StoreError::Backend(format!(
        "{} does not start like a write-ahead log file of this version; move it away only if \
         you know its writes are not needed",
        path.display()
    ))
}

/// How a log file ends after its last whole record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tail {
    /// Right after it.
    Clean,
    /// In zeros: the space filled ahead of the writes (fine only in the last file).
    Zeros,
    /// In an incomplete or damaged record (fine only in the last file).
    Torn,
}

/// Reads the records of one log file, in order, and how the file ends after them.
pub(super) fn read_file(path: &Path) -> StoreResult<(Vec<Record>, Tail)> {
    let bytes = std::fs::read(path).map_err(|e| io_error("reading", path, e))?;
    if bytes.len() < MAGIC.len() {
        // A file created but not fully written before a crash: it holds nothing. Anything
        // else this short is not ours.
        if MAGIC.starts_with(&bytes) {
            let tail = if bytes.is_empty() {
                Tail::Clean
            } else {
                Tail::Torn
            };
            return Ok((Vec::new(), tail));
        }
        return Err(not_a_log(path));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        // Another format version, or a damaged file: never skipped, since it may hold
        // acknowledged writes.
        return Err(not_a_log(path));
    }
    let mut records = Vec::new();
    let mut at = MAGIC.len();
    while at < bytes.len() {
        match decode(&bytes[at..]) {
            Some((record, used)) => {
                records.push(record);
                at += used;
            }
            // Zeros to the end: the space filled ahead of the writes (`prealloc`), never
            // written (a record's length is never 0). A record cut short is not all zeros.
            None if bytes[at..].iter().all(|b| *b == 0) => return Ok((records, Tail::Zeros)),
            None => return Ok((records, Tail::Torn)),
        }
    }
    Ok((records, Tail::Clean))
}

/// Decodes the record at the start of `bytes`; `None` when it is incomplete or damaged.
fn decode(bytes: &[u8]) -> Option<(Record, usize)> {
    let len = usize::try_from(u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?)).ok()?;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(8..8 + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let mut r = Reader(payload);
    let seq = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let count = r.u32()?;
    let mut writes = Vec::with_capacity(usize::try_from(count).ok()?.min(1024));
    for _ in 0..count {
        let kind = r.take(1)?[0];
        let key_len = usize::try_from(r.u32()?).ok()?;
        let key = r.take(key_len)?.to_vec();
        let value = match kind {
            PUT => {
                let value_len = usize::try_from(r.u32()?).ok()?;
                Some(r.take(value_len)?.to_vec())
            }
            REMOVE => None,
            _ => return None,
        };
        writes.push((key, value));
    }
    r.0.is_empty().then_some((Record { seq, writes }, 8 + len))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

pub(super) fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what} {}: {e}", path.display()))
}

/// The log files in `dir`, oldest first, with their first sequence numbers.
pub(super) fn files(dir: &Path) -> StoreResult<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("listing", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| io_error("listing", dir, e))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            found.push((first, path));
        }
    }
    found.sort();
    Ok(found)
}

pub(super) fn file_name(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}
