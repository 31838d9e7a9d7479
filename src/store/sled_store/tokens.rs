//! The token side of the sled store: the listing index ListTokens pages through and the scope
//! tombstones. Keys, in the same tree as everything else:
//! - `l/<instance>\0<creator>\0<id:16>` -> () listing index, in the same batch as the token
//!   (instance ids and access key ids never contain NUL). Empty values: the record is one
//!   point read away, and an index entry costs only its key.
//! - `s/<instance>\0<key id>` -> TombstoneRecord (empty key id: the instance-wide scope)
//! - `m/token_index` -> () once every token has its listing entry (a database written before
//!   the index existed is indexed once, on open)

use prost::Message;

use super::{decode, decode_into, hex, token_key, SledStore};
use crate::core::{scope::Tombstone, token::IssuedToken};
use crate::store::{
    records::{TokenRecord, TombstoneRecord},
    StoreError, StoreResult, TokenId,
};

const TOKEN_INDEX_DONE: &[u8] = b"m/token_index";
/// Index entries written per batch when indexing an older database.
const INDEX_BATCH: usize = 10_000;

/// The listing prefix of an instance's tokens, or of one creator's on it.
fn listing_prefix(instance_id: &str, creator: Option<&str>) -> Vec<u8> {
    let mut key = [b"l/", instance_id.as_bytes(), b"\0"].concat();
    if let Some(creator) = creator {
        key.extend_from_slice(creator.as_bytes());
        key.push(0);
    }
    key
}

/// The listing index key of a token.
pub(super) fn listing_key(instance_id: &str, creator: &str, id: &TokenId) -> Vec<u8> {
    let mut key = listing_prefix(instance_id, Some(creator));
    key.extend_from_slice(id);
    key
}

/// The key of a scope's tombstone.
pub(super) fn tombstone_key(instance_id: &str, key_id: Option<&str>) -> Vec<u8> {
    [
        b"s/",
        instance_id.as_bytes(),
        b"\0",
        key_id.unwrap_or("").as_bytes(),
    ]
    .concat()
}

/// The tombstone record of `t`, encoded.
pub(super) fn encode_tombstone(t: &Tombstone) -> Vec<u8> {
    TombstoneRecord::from(t).encode_to_vec()
}

impl SledStore {
    /// Writes the listing entry of every token of a database from before the index, once.
    pub(super) fn index_if_unindexed(&self) -> StoreResult<()> {
        if self.get(TOKEN_INDEX_DONE)?.is_some() {
            return Ok(());
        }
        let mut batch = Vec::new();
        for item in self.scan_prefix(b"t/") {
            let (key, value) = item?;
            let id: TokenId = key[2..].try_into().map_err(|_| StoreError::Corrupt {
                key: hex(&key),
                reason: "bad token key".into(),
            })?;
            let record = decode::<TokenRecord>(&key, &value)?;
            batch.push((
                listing_key(&record.instance_id, &record.creator, &id),
                Some(Vec::new()),
            ));
            if batch.len() == INDEX_BATCH {
                self.write_keys(std::mem::take(&mut batch))?;
            }
        }
        batch.push((TOKEN_INDEX_DONE.to_vec(), Some(Vec::new())));
        self.write_keys(batch)
    }

    pub(super) fn latest_expiry(&self) -> StoreResult<Option<i64>> {
        let Some((key, _)) = self.last_with_prefix(b"x/")? else {
            return Ok(None);
        };
        let at: [u8; 8] = key
            .get(2..10)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| StoreError::Corrupt {
                key: hex(&key),
                reason: "bad expiry index key".into(),
            })?;
        Ok(Some(
            i64::try_from(u64::from_be_bytes(at)).unwrap_or(i64::MAX),
        ))
    }

    pub(super) fn list_instance_tokens(
        &self,
        instance_id: &str,
        creator: Option<&str>,
        after: Option<(&str, &TokenId)>,
        limit: usize,
    ) -> StoreResult<Vec<(TokenId, IssuedToken)>> {
        let prefix = listing_prefix(instance_id, creator);
        let start = match after {
            Some((c, id)) => {
                let mut after = listing_key(instance_id, c, id);
                after.push(0); // the smallest key strictly after it
                after
            }
            None => prefix.clone(),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in self.scan_from(&start, &prefix) {
            let (key, _) = item?;
            if !key.starts_with(&prefix) || out.len() == limit {
                break;
            }
            let id: TokenId = key
                .len()
                .checked_sub(16)
                .and_then(|at| key[at..].try_into().ok())
                .ok_or_else(|| StoreError::Corrupt {
                    key: hex(&key),
                    reason: "bad token listing key".into(),
                })?;
            let record_key = token_key(&id);
            // Written and deleted with its token in one batch, so the record is there.
            if let Some(value) = self.get(&record_key)? {
                out.push((id, decode_into::<TokenRecord, _>(&record_key, &value)?));
            }
        }
        Ok(out)
    }

    pub(super) fn stored_tombstones(&self) -> StoreResult<Vec<Tombstone>> {
        self.scan_prefix(b"s/")
            .map(|item| {
                let (k, v) = item?;
                decode_into::<TombstoneRecord, _>(&k, &v)
            })
            .collect()
    }
}
