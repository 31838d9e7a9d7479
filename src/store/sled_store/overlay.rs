//! Writes the store has accepted but sled does not hold yet: reads look here first.
//!
//! A durable sled store applies a batch to sled only once the write-ahead log has made it
//! durable (see `wal`), so sled never holds a write that a crash could lose from the log. Until
//! then the batch's key writes live here, where every read of the store sees them at once:
//! point reads check the overlay before sled, and scans merge the two in key order. An entry
//! leaves once sled has it, so a key is always visible in at least one of the two, and where it
//! is in both the overlay's value is the newer (or the same).

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::{Mutex, MutexGuard},
};

use sled::IVec;

use super::wal_record::KeyWrite;
use crate::store::StoreResult;

/// One pending key write: the batch that wrote it last, and the value (`None`: removed).
type Entry = (u64, Option<IVec>);

/// The pending key writes, by key.
#[derive(Default)]
pub(super) struct Overlay {
    entries: Mutex<BTreeMap<Vec<u8>, Entry>>,
}

impl Overlay {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Entry>> {
        // Every critical section is a single map operation: the map is never half-changed.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the writes of batch `seq`, which the caller makes in sequence order.
    pub(super) fn put(&self, seq: u64, writes: &[KeyWrite]) {
        let mut entries = self.lock();
        for (key, value) in writes {
            let value = value.as_deref().map(IVec::from);
            entries.insert(key.clone(), (seq, value));
        }
    }

    /// Forgets the writes of batches up to `through` (sled holds them now), except keys that a
    /// later batch wrote again.
    pub(super) fn settle(&self, through: u64, keys: impl Iterator<Item = Vec<u8>>) {
        let mut entries = self.lock();
        for key in keys {
            if entries.get(&key).is_some_and(|(seq, _)| *seq <= through) {
                entries.remove(&key);
            }
        }
    }

    /// The pending value of `key`: `None` when it has none, `Some(None)` when it was removed.
    pub(super) fn get(&self, key: &[u8]) -> Option<Option<IVec>> {
        let entries = self.lock();
        if entries.is_empty() {
            return None;
        }
        entries.get(key).map(|(_, value)| value.clone())
    }

    /// The pending writes with keys in `[from, to)` (`to` = `None`: no upper end), in order.
    fn range(&self, from: Bound<&[u8]>, to: Option<&[u8]>) -> Vec<(Vec<u8>, Option<IVec>)> {
        let entries = self.lock();
        if entries.is_empty() {
            return Vec::new();
        }
        let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
        entries
            .range::<[u8], _>((from, upper))
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    }

    /// sled's entries in `[from, to)` merged with the pending writes there, in key order: a
    /// pending value replaces sled's, a pending removal hides it.
    pub(super) fn scan(&self, db: &sled::Db, from: Bound<&[u8]>, to: Option<&[u8]>) -> Merged {
        let pending = self.range(from, to);
        let sled_from = match from {
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let sled_to = to.map_or(Bound::Unbounded, |k| Bound::Excluded(k.to_vec()));
        Merged {
            sled: db.range::<Vec<u8>, _>((sled_from, sled_to)),
            next_sled: None,
            pending: pending.into_iter().peekable(),
        }
    }

    /// How many keys are pending.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The merged scan of [`Overlay::scan`].
pub(super) struct Merged {
    sled: sled::Iter,
    next_sled: Option<(IVec, IVec)>,
    pending: std::iter::Peekable<std::vec::IntoIter<(Vec<u8>, Option<IVec>)>>,
}

impl Iterator for Merged {
    type Item = StoreResult<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.next_sled.is_none() {
                self.next_sled = match self.sled.next() {
                    Some(Ok(kv)) => Some(kv),
                    Some(Err(e)) => return Some(Err(e.into())),
                    None => None,
                };
            }
            let take_pending = match (&self.next_sled, self.pending.peek()) {
                (None, None) => return None,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some((sled_key, _)), Some((pending_key, _))) => {
                    if pending_key.as_slice() == sled_key.as_ref() {
                        // The pending write wins; sled's older value is dropped.
                        self.next_sled = None;
                        true
                    } else {
                        pending_key.as_slice() < sled_key.as_ref()
                    }
                }
            };
            if take_pending {
                let (key, value) = self.pending.next()?;
                match value {
                    Some(value) => return Some(Ok((IVec::from(key), value))),
                    None => continue, // removed
                }
            }
            return self.next_sled.take().map(Ok);
        }
    }
}

/// The smallest key greater than every key starting with `prefix`, if there is one (`None`:
/// the prefix is all 0xff bytes, and the scan has no upper end).
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> KeyWrite {
        (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
    }

    fn remove(key: &str) -> KeyWrite {
        (key.as_bytes().to_vec(), None)
    }

    fn keys(merged: Merged) -> Vec<(String, String)> {
        merged
            .map(|item| {
                let (k, v) = item.expect("scan");
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn scans_merge_pending_writes_over_sled_in_key_order() {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("sled opens");
        for (k, v) in [("a/1", "s1"), ("a/2", "s2"), ("a/4", "s4"), ("b/1", "s")] {
            db.insert(k, v).expect("insert");
        }
        let overlay = Overlay::default();
        overlay.put(
            1,
            &[
                put("a/0", "p0"),
                put("a/2", "p2"),
                remove("a/4"),
                put("a/5", "p5"),
            ],
        );
        let end = prefix_end(b"a/").expect("an end");
        let got = keys(overlay.scan(&db, Bound::Included(b"a/"), Some(&end)));
        let want = [("a/0", "p0"), ("a/1", "s1"), ("a/2", "p2"), ("a/5", "p5")];
        assert_eq!(
            got,
            want.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec()
        );
        assert_eq!(
            overlay.get(b"a/4"),
            Some(None),
            "a pending removal hides sled's value"
        );
        assert_eq!(overlay.get(b"a/1"), None, "no pending write: read sled");
        overlay.put(2, &[remove("a/5")]);
        // sled took batches up to 1: a/5 stays, since batch 2 wrote it again.
        overlay.settle(
            1,
            [b"a/0".to_vec(), b"a/2".to_vec(), b"a/5".to_vec()].into_iter(),
        );
        assert_eq!(overlay.len(), 2, "a/4 (batch 1) and a/5 (batch 2) are left");
    }

    #[test]
    fn the_end_of_a_prefix_is_the_next_key_after_all_of_it() {
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(&[b'x', 0xff]), Some(b"y".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
