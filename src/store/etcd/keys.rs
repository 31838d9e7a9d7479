//! The etcd key layout, the translation of the core's operations into etcd writes, and of etcd
//! key-value changes back into the local mirror.
//!
//! Every key is under the configured prefix; below it (`be8` = big-endian u64, so key order is
//! numeric order):
//! - `t/<token id hex>` -> TokenRecord; `a/<access key id>` -> AccessKeyRecord
//! - `d/<instance>\0<client id>` -> DeviceRecord; `s/<instance>\0<key id or empty>` -> tombstone
//! - `r/<revision be8>` -> RevocationRecord; `m/last_rev`, `m/oldest_rev` -> be8
//! - `m/x/<name>` -> named metadata (keyring check values)
//! - `b/<namespace>\0<client id>` -> BrokerSessionRecord
//! - `v` -> decimal: the write version every read-modify-write compares and bumps
//! - `w` -> the replica that wrote last: its revision is what a read barrier waits for
//! - `l` -> the replica that runs background work (on a lease)
//!
//! Indexes (token expiry and listing, device key ids, counters) are not stored in etcd: each
//! replica's mirror derives them, so a token costs one etcd key and ApplyTokens of different
//! replicas never touch a shared key.

use prost::Message;

use super::super::{
    records::{AccessKeyRecord, DeviceRecord, RevocationRecord, TokenRecord, TombstoneRecord},
    BrokerSessionRecord, Committed, Op, SledStore, StoreError, StoreResult, TokenId,
};
use crate::core::{crypto::hex, revocation::RevocationEvent, scope::Tombstone};

/// The write version key.
pub(super) const VERSION: &[u8] = b"v";
/// The last-writer key (read barrier).
pub(super) const TOUCH: &[u8] = b"w";
/// The background-work leader key.
pub(super) const LEADER: &[u8] = b"l";
const LAST_REV: &[u8] = b"m/last_rev";
const OLDEST_REV: &[u8] = b"m/oldest_rev";

/// One write to etcd, with keys below the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Write {
    /// Put a value.
    Put(Vec<u8>, Vec<u8>),
    /// Delete a key.
    Delete(Vec<u8>),
    /// Delete every revocation below this revision (one range delete).
    DeleteRevisionsBelow(u64),
}

impl Write {
    /// The single key written, if it is a single key.
    pub(super) fn key(&self) -> Option<&[u8]> {
        match self {
            Write::Put(k, _) | Write::Delete(k) => Some(k),
            Write::DeleteRevisionsBelow(_) => None,
        }
    }
}

pub(super) fn token_key(id: &TokenId) -> Vec<u8> {
    [b"t/".as_slice(), hex(id).as_bytes()].concat()
}

fn pair_key(tag: &[u8], a: &str, b: &str) -> Vec<u8> {
    [tag, a.as_bytes(), b"\0", b.as_bytes()].concat()
}

pub(super) fn revision_key(revision: u64) -> Vec<u8> {
    [b"r/".as_slice(), &revision.to_be_bytes()].concat()
}

pub(super) fn session_key(namespace: &str, client_id: &str) -> Vec<u8> {
    pair_key(b"b/", namespace, client_id)
}

fn be8(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: hex(key),
        reason: reason.into(),
    }
}

fn decode<M: Message + Default>(key: &[u8], bytes: &[u8]) -> StoreResult<M> {
    M::decode(bytes).map_err(|e| corrupt(key, e.to_string()))
}

fn read_be8(key: &[u8], bytes: &[u8]) -> StoreResult<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(key, "not an 8-byte counter"))?;
    Ok(u64::from_be_bytes(arr))
}

fn utf8(key: &[u8], bytes: &[u8]) -> StoreResult<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| corrupt(key, "not UTF-8"))
}

fn split_pair(key: &[u8], rest: &[u8]) -> StoreResult<(String, String)> {
    let at = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| corrupt(key, "no separator"))?;
    Ok((utf8(key, &rest[..at])?, utf8(key, &rest[at + 1..])?))
}

fn token_id(key: &[u8], hexed: &[u8]) -> StoreResult<TokenId> {
    let s = std::str::from_utf8(hexed).map_err(|_| corrupt(key, "not hex"))?;
    let mut id = [0u8; 16];
    // ASCII first: slicing by byte index must not split a character.
    if s.len() != 32 || !s.is_ascii() {
        return Err(corrupt(key, "not a 16-byte token id"));
    }
    for (i, byte) in id.iter_mut().enumerate() {
        *byte =
            u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| corrupt(key, "not hex"))?;
    }
    Ok(id)
}

/// The etcd writes of one core operation.
pub(super) fn writes_of(op: &Op) -> Vec<Write> {
    match op {
        Op::InsertToken(id, rec) | Op::PutToken(id, rec) | Op::RevokeToken(id, rec) => {
            vec![Write::Put(
                token_key(id),
                TokenRecord::from(rec).encode_to_vec(),
            )]
        }
        Op::DeleteToken(id, _) => vec![Write::Delete(token_key(id))],
        Op::PutTombstone(t) => vec![Write::Put(
            pair_key(b"s/", &t.instance_id, t.key_id.as_deref().unwrap_or("")),
            TombstoneRecord::from(t).encode_to_vec(),
        )],
        Op::DeleteTombstone {
            instance_id,
            key_id,
        } => vec![Write::Delete(pair_key(
            b"s/",
            instance_id,
            key_id.as_deref().unwrap_or(""),
        ))],
        Op::PutAccessKey(k) => vec![Write::Put(
            [b"a/", k.id.as_bytes()].concat(),
            AccessKeyRecord::from(k).encode_to_vec(),
        )],
        Op::DeleteAccessKey(id) => vec![Write::Delete([b"a/", id.as_bytes()].concat())],
        Op::PutDevice { record, .. } => vec![Write::Put(
            pair_key(b"d/", &record.instance_id, &record.client_id),
            DeviceRecord::from(record).encode_to_vec(),
        )],
        Op::DeleteDevice(record) => vec![Write::Delete(pair_key(
            b"d/",
            &record.instance_id,
            &record.client_id,
        ))],
        // The counter advances in the same transaction as the event (both keys, one Txn).
        Op::AppendRevocation(e) => vec![
            Write::Put(
                revision_key(e.revision),
                RevocationRecord::from(e).encode_to_vec(),
            ),
            Write::Put(LAST_REV.to_vec(), be8(e.revision)),
        ],
        Op::PutMeta(name, value) => vec![Write::Put(
            [b"m/x/", name.as_bytes()].concat(),
            value.clone(),
        )],
        Op::CompactRevocationsBelow(below) => vec![
            Write::Put(OLDEST_REV.to_vec(), be8(*below)),
            Write::DeleteRevisionsBelow(*below),
        ],
    }
}

/// A key's tag (the part before the first `/`) and the rest, if it has one.
fn split_tag(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let slash = key.iter().position(|b| *b == b'/')?;
    Some((&key[..slash], &key[slash + 1..]))
}

/// The value the mirror holds for `key` now, encoded as etcd holds it (for the undo log).
pub(super) fn current(mirror: &SledStore, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
    use super::super::Store;
    let Some((tag, rest)) = split_tag(key) else {
        return Ok(None);
    };
    Ok(match tag {
        b"t" => mirror
            .token(&token_id(key, rest)?)?
            .map(|t| TokenRecord::from(&t).encode_to_vec()),
        b"a" => {
            let id = utf8(key, rest)?;
            mirror
                .access_keys()?
                .into_iter()
                .find(|k| k.id == id)
                .map(|k| AccessKeyRecord::from(&k).encode_to_vec())
        }
        b"d" => {
            let (instance, client) = split_pair(key, rest)?;
            mirror
                .device(&instance, &client)?
                .map(|d| DeviceRecord::from(&d).encode_to_vec())
        }
        b"s" => {
            let (instance, key_id) = split_pair(key, rest)?;
            let key_id = (!key_id.is_empty()).then_some(key_id);
            mirror
                .tombstones()?
                .into_iter()
                .find(|t| t.instance_id == instance && t.key_id == key_id)
                .map(|t| TombstoneRecord::from(&t).encode_to_vec())
        }
        b"r" => {
            let revision = read_be8(key, rest)?;
            mirror
                .revocations(revision, 1)?
                .into_iter()
                .find(|e| e.revision == revision)
                .map(|e| RevocationRecord::from(&e).encode_to_vec())
        }
        b"m" if key == LAST_REV => Some(be8(mirror.revision_bounds()?.last)),
        b"m" if key == OLDEST_REV => Some(be8(mirror.revision_bounds()?.oldest)),
        b"m" => match key.strip_prefix(b"m/x/".as_slice()) {
            Some(name) => mirror.meta(&utf8(key, name)?)?,
            None => None,
        },
        _ => None,
    })
}

/// A stored revocation.
pub(super) fn decode_revocation(key: &[u8], value: &[u8]) -> StoreResult<RevocationEvent> {
    RevocationEvent::try_from(decode::<RevocationRecord>(key, value)?)
        .map_err(|reason| corrupt(key, reason))
}

/// Whether the mirror holds exactly `value` at `key` already. Checked for token records and
/// revocations, the keys every write of a token brings back; any other key is applied again.
pub(super) fn holds(mirror: &SledStore, key: &[u8], value: &[u8]) -> StoreResult<bool> {
    let Some((tag, rest)) = split_tag(key) else {
        return Ok(false);
    };
    match tag {
        b"t" => mirror.token_record_is(&token_id(key, rest)?, value),
        b"r" => mirror.revocation_record_is(read_be8(key, rest)?, value),
        _ => Ok(false),
    }
}

/// Whether a staged key holds a revocation, and which.
pub(super) fn revision_of(key: &[u8]) -> Option<u64> {
    key.strip_prefix(b"r/".as_slice())
        .and_then(|rest| <[u8; 8]>::try_from(rest).ok())
        .map(u64::from_be_bytes)
}

/// Whether a staged write only adds a token that did not exist: such batches need no compare.
pub(super) fn is_new_token(mirror: &SledStore, op: &Op) -> StoreResult<bool> {
    use super::super::Store;
    Ok(match op {
        Op::InsertToken(..) => true,
        Op::PutToken(id, _) => mirror.token(id)?.is_none(),
        _ => false,
    })
}

/// Applies one etcd change (`None` = deleted) to the mirror. Returns what the core should hear
/// of it when it comes from etcd (committed); `restoring` marks the undo of a staged write,
/// which the core reloads from wholesale instead.
pub(super) fn apply_change(
    mirror: &SledStore,
    key: &[u8],
    value: Option<&[u8]>,
) -> StoreResult<Option<Committed>> {
    use super::super::{BrokerSessionStore, Store};
    let Some((tag, rest)) = split_tag(key) else {
        return Ok(None);
    };
    let op = match (tag, value) {
        (b"t", Some(v)) => {
            Op::PutToken(token_id(key, rest)?, decode::<TokenRecord>(key, v)?.into())
        }
        (b"t", None) => {
            let id = token_id(key, rest)?;
            match mirror.token(&id)? {
                Some(old) => Op::DeleteToken(id, old.expire_ms),
                None => return Ok(None),
            }
        }
        (b"a", v) => {
            let op = match v {
                Some(v) => Op::PutAccessKey(decode::<AccessKeyRecord>(key, v)?.into()),
                None => Op::DeleteAccessKey(utf8(key, rest)?),
            };
            mirror.apply_now(vec![op])?;
            return Ok(Some(Committed::AccessKeys));
        }
        (b"d", Some(v)) => {
            let record: crate::core::device::RegisteredDevice =
                decode::<DeviceRecord>(key, v)?.into();
            let replaces = mirror
                .device(&record.instance_id, &record.client_id)?
                .map(|d| d.device_key_id);
            Op::PutDevice { record, replaces }
        }
        (b"d", None) => {
            let (instance, client) = split_pair(key, rest)?;
            match mirror.device(&instance, &client)? {
                Some(old) => Op::DeleteDevice(old),
                None => return Ok(None),
            }
        }
        (b"s", v) => {
            let op = match v {
                Some(v) => Op::PutTombstone(Tombstone::from(decode::<TombstoneRecord>(key, v)?)),
                None => {
                    let (instance_id, key_id) = split_pair(key, rest)?;
                    Op::DeleteTombstone {
                        instance_id,
                        key_id: (!key_id.is_empty()).then_some(key_id),
                    }
                }
            };
            mirror.apply_now(vec![op])?;
            return Ok(Some(Committed::Tombstones));
        }
        (b"r", Some(v)) => {
            let event = decode_revocation(key, v)?;
            // Appending sets the last revision; an event committed before the ones this
            // replica has staged after it must not lower it.
            let last = mirror.revision_bounds()?.last;
            mirror.apply_now(vec![Op::AppendRevocation(event.clone())])?;
            if last > event.revision {
                mirror.set_last_revision(last)?;
            }
            return Ok(Some(Committed::Revocation(event)));
        }
        (b"r", None) => {
            mirror.remove_revision(read_be8(key, rest)?)?;
            return Ok(None);
        }
        (b"m", Some(v)) if key == LAST_REV => {
            // Events set the last revision themselves; this matters when all were compacted.
            let last = read_be8(key, v)?;
            if last > mirror.revision_bounds()?.last {
                mirror.set_last_revision(last)?;
            }
            return Ok(None);
        }
        (b"m", Some(v)) if key == OLDEST_REV => {
            let oldest = read_be8(key, v)?;
            mirror.set_oldest(oldest)?;
            return Ok(Some(Committed::Oldest(oldest)));
        }
        (b"m", Some(v)) => match key.strip_prefix(b"m/x/".as_slice()) {
            Some(name) => Op::PutMeta(utf8(key, name)?, v.to_vec()),
            None => return Ok(None),
        },
        (b"m", None) => {
            if let Some(name) = key.strip_prefix(b"m/x/".as_slice()) {
                mirror.remove_meta(&utf8(key, name)?)?;
            }
            return Ok(None);
        }
        (b"b", v) => {
            let (namespace, client_id) = split_pair(key, rest)?;
            let new = v
                .map(|v| decode::<BrokerSessionRecord>(key, v))
                .transpose()?;
            let current = mirror.broker_session(&namespace, &client_id)?;
            mirror.swap_session_now(&namespace, &client_id, current.as_ref(), new.as_ref())?;
            return Ok(None);
        }
        _ => return Ok(None),
    };
    mirror.apply_now(vec![op])?;
    Ok(None)
}
