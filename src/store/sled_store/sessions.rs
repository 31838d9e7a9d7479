//! [`BrokerSessionStore`] on sled. Keys, in the same tree as everything else:
//! - `b/<namespace>\0<client id>` -> BrokerSessionRecord
//! - `i/<namespace>\0<credential>\0<client id>` -> () (credential index)
//! - `e/<expire_ms:be8><namespace>\0<client id>` -> () (expiry index)
//!
//! Namespaces (access key ids), credentials (index keys) and client ids (`GroupId@@@DeviceId`)
//! never contain NUL, so `\0` separates them unambiguously. A swap is one atomic batch, so
//! the record and its index entries change together.

use prost::Message;

use super::{decode, hex, read_u64, SledStore};
use crate::store::{BrokerSessionRecord, BrokerSessionStore, StoreError, StoreFuture, StoreResult};

fn session_key(namespace: &str, client_id: &str) -> Vec<u8> {
    [b"b/", namespace.as_bytes(), b"\0", client_id.as_bytes()].concat()
}

fn credential_prefix(namespace: &str, credential: &str) -> Vec<u8> {
    [
        b"i/",
        namespace.as_bytes(),
        b"\0",
        credential.as_bytes(),
        b"\0",
    ]
    .concat()
}

fn expiry_key(expire_ms: i64, namespace: &str, client_id: &str) -> Vec<u8> {
    let at = u64::try_from(expire_ms).unwrap_or(0);
    [
        b"e/".as_slice(),
        &at.to_be_bytes(),
        namespace.as_bytes(),
        b"\0",
        client_id.as_bytes(),
    ]
    .concat()
}

/// Every index key a record owns.
fn index_keys(rec: &BrokerSessionRecord) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = rec
        .credentials
        .iter()
        .map(|c| {
            let mut k = credential_prefix(&rec.namespace, c);
            k.extend_from_slice(rec.client_id.as_bytes());
            k
        })
        .collect();
    keys.push(expiry_key(rec.expire_ms, &rec.namespace, &rec.client_id));
    keys
}

fn utf8(key: &[u8], bytes: &[u8]) -> StoreResult<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::Corrupt {
        key: hex(key),
        reason: "not UTF-8".into(),
    })
}

impl SledStore {
    /// [`BrokerSessionStore::swap_broker_session`], synchronously: a compare and an atomic batch
    /// under the store's write lock.
    pub(in crate::store) fn swap_session_now(
        &self,
        namespace: &str,
        client_id: &str,
        expected: Option<&BrokerSessionRecord>,
        new: Option<&BrokerSessionRecord>,
    ) -> StoreResult<bool> {
        if new.is_some_and(|n| n.namespace != namespace || n.client_id != client_id) {
            return Err(StoreError::Backend(
                "a broker session may only replace the session of its own client id".into(),
            ));
        }
        let key = session_key(namespace, client_id);
        // The compare and the swap under the store's write lock: one process owns a sled
        // directory, so that is the whole of the concurrency, and the batch reaches sled and
        // the write-ahead log together.
        let mut seq = self.lock_write();
        let current: Option<BrokerSessionRecord> = match self.get(&key)? {
            // Compare decoded records, not bytes: a record written by a newer version may carry
            // fields this one drops when decoding.
            Some(bytes) => Some(decode(&key, &bytes)?),
            None => None,
        };
        if current.as_ref() != expected {
            return Ok(false);
        }
        let mut writes = Vec::new();
        if let Some(old) = &current {
            writes.extend(index_keys(old).into_iter().map(|k| (k, None)));
        }
        match new {
            Some(rec) => {
                writes.extend(index_keys(rec).into_iter().map(|k| (k, Some(Vec::new()))));
                writes.push((key, Some(rec.encode_to_vec())));
            }
            None => writes.push((key, None)),
        }
        self.commit(&mut seq, writes, &[], &[])?;
        Ok(true)
    }
}

impl BrokerSessionStore for SledStore {
    fn broker_session(
        &self,
        namespace: &str,
        client_id: &str,
    ) -> StoreResult<Option<BrokerSessionRecord>> {
        let key = session_key(namespace, client_id);
        self.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    fn swap_broker_session<'a>(
        &'a self,
        namespace: &'a str,
        client_id: &'a str,
        expected: Option<&'a BrokerSessionRecord>,
        new: Option<&'a BrokerSessionRecord>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(
            self.swap_session_now(namespace, client_id, expected, new),
        ))
    }

    fn broker_sessions_by_credential(
        &self,
        namespace: &str,
        credential: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<BrokerSessionRecord>> {
        let prefix = credential_prefix(namespace, credential);
        let start = match after {
            Some(after) => {
                let mut k = prefix.clone();
                k.extend_from_slice(after.as_bytes());
                k.push(0); // the smallest key strictly after `after`
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for item in self.scan_from(&start, &prefix) {
            let (key, _) = item?;
            if !key.starts_with(&prefix) || out.len() == limit {
                break;
            }
            let client_id = utf8(&key, &key[prefix.len()..])?;
            // The index and the record change in one batch; re-check anyway, since the
            // record may have been swapped between the two reads.
            if let Some(rec) = self.broker_session(namespace, &client_id)? {
                if rec.credentials.iter().any(|c| c == credential) {
                    out.push(rec);
                }
            }
        }
        Ok(out)
    }

    fn expired_broker_sessions(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<BrokerSessionRecord>> {
        let now = u64::try_from(now_ms).unwrap_or(0);
        let mut out = Vec::new();
        for item in self.scan_prefix(b"e/") {
            let (key, _) = item?;
            if out.len() == limit {
                break;
            }
            let rest = &key[2..];
            let (at, ids) = rest.split_at(8.min(rest.len()));
            if read_u64(&key, at)? > now {
                break;
            }
            let ids = utf8(&key, ids)?;
            let Some((namespace, client_id)) = ids.split_once('\0') else {
                return Err(StoreError::Corrupt {
                    key: hex(&key),
                    reason: "bad broker session expiry key".into(),
                });
            };
            if let Some(rec) = self.broker_session(namespace, client_id)? {
                if rec.expire_ms <= now_ms {
                    out.push(rec);
                }
            }
        }
        Ok(out)
    }
}
