//! Token id -> its liveness facts (owner, expiry, minting revision, revoked on its own), in
//! memory, so QueryToken needs no record read.
//!
//! Why: with a million stored tokens a QueryToken's record read walked sled's tree through
//! nodes no CPU cache held; `Tree::get` went from 2% of the server's CPU per call on an empty
//! store to 19% (docs/benchmarks.md, "The fifth pass"). Here it is one hash probe. Cost: an
//! entry of 48 bytes per token plus the table's slack; the owner strings are shared by every
//! token of one (instance, key).
//!
//! Kept by `TokenIndex` beside its other indexes: rebuilt when the store opens and changed by
//! every committed batch, while the store's write lock is held. The map is split in shards so
//! that readers (every QueryToken) and the one writer rarely wait for the same lock.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, RwLock},
};

use super::token_index::Indexed;
use crate::{
    core::token_liveness::{TokenLiveness, TokenOwner},
    store::TokenId,
};

/// Shards of the map; token ids are random, so their first byte spreads them evenly.
const SHARDS: usize = 64;

#[derive(Debug)]
struct Entry {
    owner: Arc<TokenOwner>,
    expire_ms: i64,
    minted_revision: u64,
    revoked: bool,
}

/// instance -> key -> (owner, tokens holding it): an owner goes with its last token.
type Owners = HashMap<Arc<str>, HashMap<Arc<str>, (Arc<TokenOwner>, u64)>>;

/// The map, and the owners its entries share.
pub(super) struct Liveness {
    shards: Vec<RwLock<HashMap<TokenId, Entry>>>,
    /// Only the writer (under the store's write lock) takes it.
    owners: Mutex<Owners>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            owners: Mutex::default(),
        }
    }
}

fn shard_of(id: &TokenId) -> usize {
    usize::from(id[0]) % SHARDS
}

impl Liveness {
    /// Takes `fresh`'s contents (when the store opens).
    pub(super) fn replace(&self, fresh: Self) {
        let mut owners = self.owners();
        for (shard, new) in self.shards.iter().zip(fresh.shards) {
            *shard.write().unwrap_or_else(|p| p.into_inner()) =
                new.into_inner().unwrap_or_else(|p| p.into_inner());
        }
        *owners = fresh.owners.into_inner().unwrap_or_else(|p| p.into_inner());
    }

    fn owners(&self) -> MutexGuard<'_, Owners> {
        // Each change is made whole under the lock; a panic cannot leave half of one.
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The facts of token `id`, if it is stored.
    pub(super) fn get(&self, id: &TokenId) -> Option<TokenLiveness> {
        let shard = self.shards[shard_of(id)]
            .read()
            // Each change is made whole under the lock; a panic cannot leave half of one.
            .unwrap_or_else(|p| p.into_inner());
        shard.get(id).map(|e| TokenLiveness {
            owner: e.owner.clone(),
            expire_ms: e.expire_ms,
            minted_revision: e.minted_revision,
            revoked: e.revoked,
        })
    }

    /// Records token `id` as `t` (`None`: no longer stored).
    pub(super) fn set(&self, id: TokenId, t: Option<&Indexed>) {
        let mut owners = self.owners();
        let entry = t.map(|t| entry(&mut owners, t));
        let replaced = {
            let mut shard = self.shards[shard_of(&id)]
                .write()
                .unwrap_or_else(|p| p.into_inner());
            match entry {
                Some(entry) => shard.insert(id, entry),
                None => shard.remove(&id),
            }
        };
        if let Some(old) = replaced {
            release(&mut owners, &old.owner);
        }
    }

    /// Owners held, for the tests.
    #[cfg(test)]
    pub(super) fn owner_count(&self) -> usize {
        self.owners().values().map(HashMap::len).sum()
    }
}

/// An entry for `t`, its owner shared with the other tokens of that owner.
fn entry(owners: &mut Owners, t: &Indexed) -> Entry {
    // Looked up by `&str` first: only a new instance or key allocates.
    let keys = match owners.get_mut(t.instance_id.as_str()) {
        Some(keys) => keys,
        None => owners.entry(Arc::from(t.instance_id.as_str())).or_default(),
    };
    let (owner, holders) = match keys.get_mut(t.creator.as_str()) {
        Some(held) => held,
        None => {
            let owner = Arc::new(TokenOwner {
                instance_id: Arc::from(t.instance_id.as_str()),
                creator: Arc::from(t.creator.as_str()),
            });
            keys.entry(owner.creator.clone()).or_insert((owner, 0))
        }
    };
    *holders += 1;
    Entry {
        owner: owner.clone(),
        expire_ms: t.expire_ms,
        minted_revision: t.minted_revision,
        revoked: t.revoked,
    }
}

/// One token fewer holds `owner`; the last one takes it out of the table.
fn release(owners: &mut Owners, owner: &TokenOwner) {
    let Some(keys) = owners.get_mut(&*owner.instance_id) else {
        return;
    };
    if let Some((_, holders)) = keys.get_mut(&*owner.creator) {
        *holders = holders.saturating_sub(1);
        if *holders == 0 {
            keys.remove(&*owner.creator);
        }
    }
    if keys.is_empty() {
        owners.remove(&*owner.instance_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexed(instance: &str, creator: &str, revoked: bool) -> Indexed {
        Indexed {
            instance_id: instance.into(),
            creator: creator.into(),
            expire_ms: 1_000,
            minted_revision: 7,
            revoked,
        }
    }

    #[test]
    fn entries_follow_their_tokens_and_owners_go_with_their_last_token() {
        let live = Liveness::default();
        let (a, b, c) = ([1; 16], [2; 16], [3; 16]);
        live.set(a, Some(&indexed("i1", "k1", false)));
        live.set(b, Some(&indexed("i1", "k1", false)));
        live.set(c, Some(&indexed("i1", "k2", false)));
        assert_eq!(live.owner_count(), 2);
        let got = live.get(&a).expect("stored");
        assert_eq!((&*got.owner.instance_id, &*got.owner.creator), ("i1", "k1"));
        assert_eq!(
            (got.expire_ms, got.minted_revision, got.revoked),
            (1_000, 7, false)
        );
        assert!(Arc::ptr_eq(
            &got.owner,
            &live.get(&b).expect("stored").owner
        ));

        // A revocation rewrites the entry; the owner stays shared.
        live.set(a, Some(&indexed("i1", "k1", true)));
        assert!(live.get(&a).expect("stored").revoked);
        assert_eq!(live.owner_count(), 2);

        // Rewritten under another owner, then deleted: each owner leaves with its last token.
        live.set(c, Some(&indexed("i2", "k1", false)));
        assert_eq!(live.owner_count(), 2, "(i1, k2) had no other token");
        live.set(a, None);
        live.set(b, None);
        assert_eq!(live.get(&a), None);
        assert_eq!(live.owner_count(), 1);
        live.set(c, None);
        live.set(c, None);
        assert_eq!(live.owner_count(), 0);

        // The whole map replaced, as when the store opens.
        let fresh = Liveness::default();
        fresh.set(b, Some(&indexed("i3", "k3", false)));
        live.replace(fresh);
        assert_eq!(live.get(&a), None);
        assert_eq!(&*live.get(&b).expect("stored").owner.instance_id, "i3");
        assert_eq!(live.owner_count(), 1);
    }
}
