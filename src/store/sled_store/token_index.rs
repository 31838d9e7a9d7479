//! The sled store's token indexes, in memory: tokens by expiry (the sweep), by instance,
//! minting key and id (ListTokens, RevokeTokens by key), by id alone with their liveness facts
//! (QueryToken, see `liveness`), and the token counts (metrics).
//!
//! Why in memory: on disk each index was a sled entry per token beside the record, so a
//! minted token cost three sled writes and a counter update, and ~750 bytes of store per token
//! (docs/benchmarks.md). Here a token is one sled record; the indexes are rebuilt by one scan
//! of the records when the store opens and changed with every batch that changes a token,
//! after the batch is committed. A live token costs two B-tree entries (24 and 16 bytes, plus
//! node overhead) and a 48-byte entry in the liveness map; instance and key ids are stored
//! once, not per token.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::Bound,
    sync::{Arc, Mutex, MutexGuard},
};

use super::liveness::Liveness;
use crate::{
    core::{token::IssuedToken, token_liveness::TokenLiveness},
    store::TokenId,
};

/// What the indexes keep of one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Indexed {
    pub instance_id: String,
    pub creator: String,
    pub expire_ms: i64,
    pub minted_revision: u64,
    pub revoked: bool,
}

impl From<&IssuedToken> for Indexed {
    fn from(t: &IssuedToken) -> Self {
        Self {
            instance_id: t.instance_id.clone(),
            creator: t.creator.clone(),
            expire_ms: t.expire_ms,
            minted_revision: t.minted_revision,
            revoked: t.revoked_ms.is_some(),
        }
    }
}

/// One token's change in a batch: what it was and what it becomes (`None`: absent).
pub(super) type Change = (TokenId, Option<Indexed>, Option<Indexed>);

/// Token ids by instance, then minting key (in key order), then id: ListTokens pages through
/// one instance's tokens by (key, id). Nested rather than one ordered set of (instance, key, id)
/// tuples, where every comparison on the way down compared both strings: that search was ~4%
/// of a durable ApplyToken's server CPU. The strings are stored once per instance and key.
type Owners = HashMap<Arc<str>, BTreeMap<Arc<str>, BTreeSet<TokenId>>>;

#[derive(Default)]
struct Inner {
    by_expiry: BTreeSet<(i64, TokenId)>,
    by_owner: Owners,
    tokens: u64,
    revoked: u64,
}

impl Inner {
    fn add(&mut self, id: TokenId, t: &Indexed) {
        self.by_expiry.insert((t.expire_ms, id));
        // Looked up by `&str` first: only a new instance or key allocates its `Arc`.
        let keys = match self.by_owner.get_mut(t.instance_id.as_str()) {
            Some(keys) => keys,
            None => self
                .by_owner
                .entry(Arc::from(t.instance_id.as_str()))
                .or_default(),
        };
        let ids = match keys.get_mut(t.creator.as_str()) {
            Some(ids) => ids,
            None => keys.entry(Arc::from(t.creator.as_str())).or_default(),
        };
        ids.insert(id);
        self.tokens += 1;
        self.revoked += u64::from(t.revoked);
    }

    fn remove(&mut self, id: TokenId, t: &Indexed) {
        self.by_expiry.remove(&(t.expire_ms, id));
        if let Some(keys) = self.by_owner.get_mut(t.instance_id.as_str()) {
            if let Some(ids) = keys.get_mut(t.creator.as_str()) {
                ids.remove(&id);
                if ids.is_empty() {
                    keys.remove(t.creator.as_str());
                }
            }
            if keys.is_empty() {
                self.by_owner.remove(t.instance_id.as_str());
            }
        }
        self.tokens = self.tokens.saturating_sub(1);
        self.revoked = self.revoked.saturating_sub(u64::from(t.revoked));
    }
}

/// The indexes of one store.
#[derive(Default)]
pub(super) struct TokenIndex {
    inner: Mutex<Inner>,
    /// By id, read without `inner`'s lock (see `liveness`).
    live: Liveness,
}

impl TokenIndex {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each change is applied whole under the lock; a panic cannot leave half of one.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the indexes with the stored tokens (while the store opens). Built from sorted
    /// vectors, not token by token: a million single inserts spent most of a restart in
    /// B-tree node splits and key comparisons (docs/benchmarks.md).
    pub(super) fn rebuild<E>(
        &self,
        tokens: impl Iterator<Item = Result<(TokenId, Indexed), E>>,
    ) -> Result<(), E> {
        let live = Liveness::default();
        let mut fresh = Inner::default();
        let mut by_expiry = Vec::new();
        let mut by_owner: HashMap<Arc<str>, HashMap<Arc<str>, Vec<TokenId>>> = HashMap::new();
        for item in tokens {
            let (id, t) = item?;
            live.set(id, Some(&t));
            by_expiry.push((t.expire_ms, id));
            let keys = match by_owner.get_mut(t.instance_id.as_str()) {
                Some(keys) => keys,
                None => by_owner.entry(Arc::from(t.instance_id)).or_default(),
            };
            match keys.get_mut(t.creator.as_str()) {
                Some(ids) => ids.push(id),
                None => {
                    keys.insert(Arc::from(t.creator), vec![id]);
                }
            }
            fresh.tokens += 1;
            fresh.revoked += u64::from(t.revoked);
        }
        // `FromIterator` sorts, then builds each tree bottom-up in one pass.
        fresh.by_expiry = by_expiry.into_iter().collect();
        fresh.by_owner = by_owner
            .into_iter()
            .map(|(instance, keys)| {
                let keys = keys
                    .into_iter()
                    .map(|(key, ids)| (key, ids.into_iter().collect()))
                    .collect();
                (instance, keys)
            })
            .collect();
        let mut inner = self.lock();
        *inner = fresh;
        self.live.replace(live);
        Ok(())
    }

    /// The liveness facts of token `id`, if it is stored.
    pub(super) fn liveness(&self, id: &TokenId) -> Option<TokenLiveness> {
        self.live.get(id)
    }

    /// Applies the token changes of a committed batch, in order.
    pub(super) fn apply(&self, changes: &[Change]) {
        let mut inner = self.lock();
        for (id, old, new) in changes {
            self.live.set(*id, new.as_ref());
            match (old, new) {
                // A revocation changes only the flag: the entries stay where they are (a
                // remove and an add were ~4% of a RevokeToken's server CPU).
                (Some(old), Some(new))
                    if old.expire_ms == new.expire_ms
                        && old.instance_id == new.instance_id
                        && old.creator == new.creator =>
                {
                    inner.revoked = inner.revoked.saturating_sub(u64::from(old.revoked))
                        + u64::from(new.revoked);
                }
                _ => {
                    if let Some(old) = old {
                        inner.remove(*id, old);
                    }
                    if let Some(new) = new {
                        inner.add(*id, new);
                    }
                }
            }
        }
    }

    /// Ids and expiry times of up to `limit` tokens that expired at or before `now_ms`, oldest
    /// first.
    pub(super) fn expired(&self, now_ms: i64, limit: usize) -> Vec<(TokenId, i64)> {
        self.lock()
            .by_expiry
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(limit)
            .map(|(at, id)| (*id, *at))
            .collect()
    }

    /// The latest expiry of any token.
    pub(super) fn newest_expiry(&self) -> Option<i64> {
        self.lock().by_expiry.last().map(|(at, _)| *at)
    }

    /// Up to `limit` ids of an instance's tokens (only `creator`'s, when given), ordered by
    /// (creator, id), strictly after `after` = (creator, id) when given.
    pub(super) fn owned(
        &self,
        instance_id: &str,
        creator: Option<&str>,
        after: Option<(&str, &TokenId)>,
        limit: usize,
    ) -> Vec<(String, TokenId)> {
        let inner = self.lock();
        let Some(keys) = inner.by_owner.get(instance_id) else {
            return Vec::new();
        };
        // Strictly after the cursor, within the filter: a cursor of another key than the
        // filter's (from an unfiltered page) starts at the filter's key, or past it.
        let (first_key, after_id) = match (after, creator) {
            (Some((key, _)), Some(want)) if key != want => {
                if key > want {
                    return Vec::new();
                }
                (want, None)
            }
            (Some((key, id)), _) => (key, Some(id)),
            (None, _) => (creator.unwrap_or(""), None),
        };
        let mut page = Vec::new();
        for (key, ids) in keys.range::<str, _>((Bound::Included(first_key), Bound::Unbounded)) {
            if creator.is_some_and(|want| **key != *want) {
                break;
            }
            let from = match after_id {
                Some(id) if **key == *first_key => Bound::Excluded(*id),
                _ => Bound::Unbounded,
            };
            for id in ids.range((from, Bound::Unbounded)) {
                if page.len() == limit {
                    return page;
                }
                page.push((key.to_string(), *id));
            }
        }
        page
    }

    /// Tokens stored, and of those the revoked ones.
    pub(super) fn counts(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.tokens, inner.revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(instance: &str, creator: &str, expire_ms: i64) -> Indexed {
        Indexed {
            instance_id: instance.into(),
            creator: creator.into(),
            expire_ms,
            minted_revision: 0,
            revoked: false,
        }
    }

    #[test]
    fn listing_pages_by_instance_and_key_and_the_sweep_sees_expiry_order() {
        let index = TokenIndex::default();
        let changes: Vec<Change> = vec![
            ([3; 16], None, Some(token("i1", "k2", 30))),
            ([1; 16], None, Some(token("i1", "k1", 20))),
            ([2; 16], None, Some(token("i1", "k1", 10))),
            ([4; 16], None, Some(token("i2", "k1", 5))),
        ];
        index.apply(&changes);
        let ids =
            |v: Vec<(String, TokenId)>| v.into_iter().map(|(_, id)| id[0]).collect::<Vec<_>>();
        assert_eq!(ids(index.owned("i1", None, None, 10)), [1, 2, 3]);
        assert_eq!(ids(index.owned("i1", Some("k1"), None, 10)), [1, 2]);
        assert_eq!(
            ids(index.owned("i1", None, Some(("k1", &[2; 16])), 10)),
            [3]
        );
        assert_eq!(ids(index.owned("i1", None, None, 1)), [1]);
        assert!(
            index.owned("i", None, None, 10).is_empty(),
            "no prefix match"
        );
        assert_eq!(
            index.expired(20, 10),
            [([4; 16], 5), ([2; 16], 10), ([1; 16], 20)]
        );
        assert_eq!(index.newest_expiry(), Some(30));

        // Revoked, then deleted: the counts follow.
        let mut revoked = token("i1", "k1", 20);
        revoked.revoked = true;
        index.apply(&[([1; 16], Some(token("i1", "k1", 20)), Some(revoked.clone()))]);
        assert_eq!(index.counts(), (4, 1));
        assert_eq!(ids(index.owned("i1", Some("k1"), None, 10)), [1, 2]);
        assert_eq!(index.expired(20, 10).len(), 3, "still listed and swept");
        index.apply(&[([1; 16], Some(revoked), None)]);
        assert_eq!(index.counts(), (3, 0));
        assert_eq!(ids(index.owned("i1", Some("k1"), None, 10)), [2]);
        assert_eq!(index.expired(20, 10).len(), 2);

        // Pages of one split inside a key and across keys; an emptied index keeps no names.
        assert_eq!(ids(index.owned("i1", None, None, 1)), [2]);
        assert_eq!(ids(index.owned("i1", None, Some(("k1", &[2; 16])), 1)), [3]);
        assert!(index
            .owned("i1", None, Some(("k2", &[3; 16])), 1)
            .is_empty());
        // A cursor from an unfiltered page, used with a key filter.
        assert_eq!(
            ids(index.owned("i1", Some("k2"), Some(("k1", &[9; 16])), 10)),
            [3]
        );
        assert_eq!(
            ids(index.owned("i1", Some("k1"), Some(("k0", &[2; 16])), 10)),
            [2]
        );
        assert!(index
            .owned("i1", Some("k1"), Some(("k2", &[0; 16])), 10)
            .is_empty());
        index.apply(&[
            ([2; 16], Some(token("i1", "k1", 10)), None),
            ([3; 16], Some(token("i1", "k2", 30)), None),
            ([4; 16], Some(token("i2", "k1", 5)), None),
        ]);
        assert_eq!(index.counts(), (0, 0));
        assert!(
            index.lock().by_owner.is_empty(),
            "instances and keys are dropped"
        );
        assert!(index.expired(i64::MAX, 10).is_empty());
    }

    #[test]
    fn a_rebuild_from_stored_tokens_indexes_like_changes_do() {
        let tokens = [
            ([3; 16], token("i1", "k2", 30)),
            ([1; 16], token("i1", "k1", 20)),
            ([2; 16], token("i2", "k1", 10)),
        ];
        let rebuilt = TokenIndex::default();
        rebuilt.apply(&[([9; 16], None, Some(token("old", "old", 1)))]);
        rebuilt
            .rebuild(tokens.iter().cloned().map(Ok::<_, ()>))
            .expect("no error");
        let applied = TokenIndex::default();
        let changes: Vec<Change> = tokens
            .into_iter()
            .map(|(id, t)| (id, None, Some(t)))
            .collect();
        applied.apply(&changes);
        assert_eq!(rebuilt.counts(), (3, 0), "what was there before is gone");
        assert_eq!(rebuilt.expired(i64::MAX, 10), applied.expired(i64::MAX, 10));
        for instance in ["i1", "i2", "old"] {
            assert_eq!(
                rebuilt.owned(instance, None, None, 10),
                applied.owned(instance, None, None, 10)
            );
        }
        let failed = rebuilt.rebuild([Err("disk")].into_iter());
        assert_eq!(failed, Err("disk"));
    }
}
