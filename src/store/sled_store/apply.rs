//! The sled store's writes: each [`Op`] of a batch becomes the key writes it stands for,
//! device counters included, and the batch is committed as one (see `SledStore::commit`);
//! then the in-memory token indexes take the batch's token changes, and the revocations stored
//! as events only (`logged`) theirs.

use std::collections::HashMap;

use prost::Message;

use super::{
    device_index_key, device_key, group_count_key, group_of, instance_count_key,
    logged::{self, revoked_token, revoked_token_in},
    meta_key, revision_key,
    token_index::{Change, Indexed},
    token_key, tokens,
    wal_record::KeyWrite,
    SledStore, LAST_REV, N_DEVICES, OLDEST_REV,
};
use crate::store::{
    records::{AccessKeyRecord, DeviceRecord, RevocationRecord, TokenRecord},
    Op, Store, StoreResult, TokenId,
};

impl SledStore {
    /// Adds `delta` to a counter inside `batch`, reading the current value; `apply` holds
    /// the write lock, and `pending` carries counters already changed earlier in the batch.
    fn bump(
        &self,
        batch: &mut Writes,
        pending: &mut Vec<(Vec<u8>, u64)>,
        key: Vec<u8>,
        delta: i64,
    ) -> StoreResult<()> {
        let current = match pending.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => *v,
            None => self.get_u64(&key)?,
        };
        let next = current.saturating_add_signed(delta);
        batch.insert(key.clone(), next.to_be_bytes());
        match pending.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = next,
            None => pending.push((key, next)),
        }
        Ok(())
    }

    /// [`Store::apply`]: one atomic batch, counters included; returns its sequence number
    /// (the last batch's, for no operations).
    pub(in crate::store) fn apply_now(&self, ops: Vec<Op>) -> StoreResult<u64> {
        let mut seq = self.lock_write();
        if ops.is_empty() {
            return Ok(self.last_committed(&seq));
        }
        let mut batch = Writes::default();
        let mut counters = Vec::new();
        let mut changes: Vec<Change> = Vec::new();
        // The tokens whose revocation events this batch writes, and when: their records need
        // not be written again (see `logged`).
        let in_log: HashMap<TokenId, i64> = ops
            .iter()
            .filter_map(|op| match op {
                Op::AppendRevocation(event) => revoked_token(event),
                _ => None,
            })
            .collect();
        let mut logged: Vec<logged::Update> = Vec::new();
        for op in ops {
            match op {
                Op::InsertToken(id, rec) => {
                    changes.push((id, None, Some(Indexed::from(&rec))));
                    batch.insert(token_key(&id), TokenRecord::from(&rec).encode_to_vec());
                }
                Op::PutToken(id, rec) => {
                    let old = self.token_in(&id, &changes)?;
                    changes.push((id, old, Some(Indexed::from(&rec))));
                    batch.insert(token_key(&id), TokenRecord::from(&rec).encode_to_vec());
                    // The record written is the whole token, as it says. (A fresh id, as
                    // InsertToken's, has no revocation to drop.)
                    logged.push((id, None));
                }
                Op::RevokeToken(id, rec) => {
                    let new = Indexed::from(&rec);
                    let old = changed_in(&id, &changes).unwrap_or_else(|| {
                        Some(Indexed {
                            revoked: false,
                            ..new.clone()
                        })
                    });
                    changes.push((id, old, Some(new)));
                    // The time is the event's, as it is when the store reopens.
                    match in_log.get(&id) {
                        Some(&at) if rec.revoked_ms.is_some() => logged.push((id, Some(at))),
                        _ => batch.insert(token_key(&id), TokenRecord::from(&rec).encode_to_vec()),
                    }
                }
                Op::DeleteToken(id, _) => {
                    if let Some(old) = self.token_in(&id, &changes)? {
                        changes.push((id, Some(old), None));
                    }
                    batch.remove(token_key(&id));
                    logged.push((id, None));
                }
                Op::PutTombstone(t) => batch.insert(
                    tokens::tombstone_key(&t.instance_id, t.key_id.as_deref()),
                    tokens::encode_tombstone(&t),
                ),
                Op::DeleteTombstone {
                    instance_id,
                    key_id,
                } => batch.remove(tokens::tombstone_key(&instance_id, key_id.as_deref())),
                Op::PutAccessKey(rec) => {
                    let value = AccessKeyRecord::from(&rec).encode_to_vec();
                    batch.insert([b"a/", rec.id.as_bytes()].concat(), value);
                }
                Op::DeleteAccessKey(id) => batch.remove([b"a/", id.as_bytes()].concat()),
                Op::PutDevice { record, replaces } => {
                    let dkey = device_key(&record.instance_id, &record.client_id);
                    match replaces {
                        Some(old) => batch.remove(device_index_key(&old)),
                        None => {
                            self.bump(&mut batch, &mut counters, N_DEVICES.to_vec(), 1)?;
                            self.bump(
                                &mut batch,
                                &mut counters,
                                instance_count_key(&record.instance_id),
                                1,
                            )?;
                            self.bump(
                                &mut batch,
                                &mut counters,
                                group_count_key(&record.instance_id, group_of(&record.client_id)),
                                1,
                            )?;
                        }
                    }
                    batch.insert(device_index_key(&record.device_key_id), &dkey[2..]);
                    batch.insert(dkey, DeviceRecord::from(&record).encode_to_vec());
                }
                Op::DeleteDevice(record) => {
                    batch.remove(device_key(&record.instance_id, &record.client_id));
                    batch.remove(device_index_key(&record.device_key_id));
                    self.bump(&mut batch, &mut counters, N_DEVICES.to_vec(), -1)?;
                    self.bump(
                        &mut batch,
                        &mut counters,
                        instance_count_key(&record.instance_id),
                        -1,
                    )?;
                    self.bump(
                        &mut batch,
                        &mut counters,
                        group_count_key(&record.instance_id, group_of(&record.client_id)),
                        -1,
                    )?;
                }
                Op::AppendRevocation(rec) => {
                    batch.insert(LAST_REV, rec.revision.to_be_bytes());
                    let value = RevocationRecord::from(&rec).encode_to_vec();
                    batch.insert(revision_key(rec.revision), value);
                }
                Op::PutMeta(name, value) => batch.insert(meta_key(&name), value),
                Op::CompactRevocationsBelow(below) => {
                    let oldest = self.revision_bounds()?.oldest;
                    let fold = !self.logged.is_empty();
                    for rev in oldest..below {
                        let key = revision_key(rev);
                        if fold {
                            self.fold_revocation(&key, &changes, &mut batch, &mut logged)?;
                        }
                        batch.remove(key);
                    }
                    batch.insert(OLDEST_REV, below.to_be_bytes());
                }
            }
        }
        // The indexes change once the batch is in, as the records they point at.
        self.commit(&mut seq, batch.0, &changes, &logged::net(logged))
    }

    /// Before the event at `key` is compacted away: if it is the only record of a token's
    /// revocation and the token is still stored (expired, not yet swept), writes the record
    /// with its `revoke_ms`, so the revocation outlives its event.
    /// A token this batch wrote or deleted before is left as the batch left it.
    fn fold_revocation(
        &self,
        key: &[u8],
        changes: &[Change],
        batch: &mut Writes,
        logged: &mut Vec<logged::Update>,
    ) -> StoreResult<()> {
        let Some(value) = self.get(key)? else {
            return Ok(());
        };
        let Some((id, _)) = revoked_token_in(key, &value)? else {
            return Ok(());
        };
        if self.logged.at(&id).is_none() || changed_in(&id, changes).is_some() {
            return Ok(());
        }
        // `token` lays the revocation over the record.
        if let Some(token) = self.token(&id)? {
            batch.insert(token_key(&id), TokenRecord::from(&token).encode_to_vec());
        }
        logged.push((id, None));
        Ok(())
    }

    /// What the indexes hold of token `id` before this batch: as an earlier operation of the
    /// same batch left it, or as stored.
    fn token_in(&self, id: &TokenId, changes: &[Change]) -> StoreResult<Option<Indexed>> {
        match changed_in(id, changes) {
            Some(earlier) => Ok(earlier),
            None => Ok(self.token(id)?.as_ref().map(Indexed::from)),
        }
    }
}

/// What an earlier operation of the same batch left of token `id` (`Some(None)`: deleted), or
/// `None` when the batch has not touched it.
fn changed_in(id: &TokenId, changes: &[Change]) -> Option<Option<Indexed>> {
    changes
        .iter()
        .rev()
        .find(|(c, _, _)| c == id)
        .map(|(_, _, new)| new.clone())
}

/// The key writes of one batch, built as a sled batch would be.
#[derive(Default)]
struct Writes(Vec<KeyWrite>);

impl Writes {
    fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.0.push((key.into(), Some(value.into())));
    }

    fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.0.push((key.into(), None));
    }
}
