//! Committing staged batches: one etcd transaction per chunk of batches that fits etcd's
//! operation limit, sent in ticket order. A chunk of only new tokens is written as it is; any
//! other chunk compares the write version with the one its batches were built on and bumps it,
//! so it commits only if no other replica's read-modify-write came in between.

use std::collections::HashMap;

use etcd_client::{Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp};

use super::{
    keys::{self, Write},
    Inner,
};
use crate::store::{FlushFailure, FlushReport, StoreResult, Ticket};

/// One transaction's worth of staged batches.
struct Chunk {
    last_ticket: Ticket,
    batches: usize,
    writes: Vec<Write>,
    blind: bool,
    expected: u64,
}

/// Takes the longest prefix of the staged batches that fits one transaction (without removing
/// it: only a commit does), or `None` when nothing is staged.
fn next_chunk(inner: &Inner) -> Option<Chunk> {
    let state = inner.state();
    let mut chunk = Chunk {
        last_ticket: 0,
        batches: 0,
        writes: Vec::new(),
        blind: true,
        expected: state.expected_version.unwrap_or(state.committed_version),
    };
    // Two operations are the version and the last-writer key.
    let budget = inner.max_txn_ops.saturating_sub(2);
    for staged in &state.staged {
        if chunk.batches > 0 && chunk.writes.len() + staged.writes.len() > budget {
            break;
        }
        chunk.writes.extend(staged.writes.iter().cloned());
        chunk.blind &= staged.blind;
        chunk.last_ticket = staged.ticket;
        chunk.batches += 1;
    }
    (chunk.batches > 0).then_some(chunk)
}

/// etcd refuses a transaction that writes a key twice: keep each key's last write.
fn dedupe(writes: Vec<Write>) -> Vec<Write> {
    let mut last: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, w) in writes.iter().enumerate() {
        if let Some(k) = w.key() {
            last.insert(k.to_vec(), i);
        }
    }
    writes
        .into_iter()
        .enumerate()
        .filter(|(i, w)| w.key().is_none_or(|k| last.get(k) == Some(i)))
        .map(|(_, w)| w)
        .collect()
}

fn version_bytes(v: u64) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Sends the staged batches, chunk by chunk, until all are committed or one fails.
pub(super) async fn flush(inner: &Inner) -> StoreResult<FlushReport> {
    loop {
        let Some(mut chunk) = next_chunk(inner) else {
            // Not `last_ticket`: the tickets after `durable_through` were rolled back.
            let state = inner.state();
            return Ok(FlushReport {
                durable_through: state.durable_through,
                failure: None,
            });
        };
        let newest = chunk
            .writes
            .iter()
            .filter_map(|w| w.key().and_then(keys::revision_of))
            .max();
        let mut ops = Vec::with_capacity(chunk.writes.len() + 2);
        let range_end = inner.key(&keys::revision_key(0));
        for write in dedupe(std::mem::take(&mut chunk.writes)) {
            ops.push(match write {
                Write::Put(k, v) => TxnOp::put(inner.key(&k), v, None),
                Write::Delete(k) => TxnOp::delete(inner.key(&k), None),
                Write::DeleteRevisionsBelow(below) => TxnOp::delete(
                    range_end.clone(),
                    Some(DeleteOptions::new().with_range(inner.key(&keys::revision_key(below)))),
                ),
            });
        }
        let version_key = inner.key(keys::VERSION);
        let mut compares = Vec::new();
        if !chunk.blind {
            compares.push(if chunk.expected == 0 {
                Compare::create_revision(version_key.clone(), CompareOp::Equal, 0)
            } else {
                Compare::value(
                    version_key.clone(),
                    CompareOp::Equal,
                    version_bytes(chunk.expected),
                )
            });
            ops.push(TxnOp::put(
                version_key,
                version_bytes(chunk.expected + 1),
                None,
            ));
        }
        ops.push(TxnOp::put(
            inner.key(keys::TOUCH),
            inner.replica.as_bytes().to_vec(),
            None::<PutOptions>,
        ));
        let txn = Txn::new().when(compares).and_then(ops);
        // Sent again only when it certainly never left: a write whose fate is unknown is
        // reported as failed, never repeated blindly.
        let result = super::with_retry(super::never_sent, || {
            let (mut kv, txn) = (inner.client.kv_client(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await;
        let mut state = inner.state();
        match result {
            Err(e) => {
                return Ok(FlushReport {
                    durable_through: state.durable_through,
                    failure: Some(FlushFailure::Backend(e.to_string())),
                })
            }
            Ok(resp) if !resp.succeeded() => {
                return Ok(FlushReport {
                    durable_through: state.durable_through,
                    failure: Some(FlushFailure::Conflict),
                })
            }
            Ok(resp) => {
                match resp.header() {
                    Some(header) => state.own_commit = state.own_commit.max(header.revision()),
                    None => state.own_commit_unknown = true,
                }
                let done: Vec<_> = state.staged.drain(..chunk.batches).collect();
                state.durable_through = chunk.last_ticket;
                if let Some(revision) = newest {
                    state.own_revision = state.own_revision.max(revision);
                }
                if !chunk.blind {
                    state.expected_version = Some(chunk.expected + 1);
                    state.committed_version = state.committed_version.max(chunk.expected + 1);
                }
                // Keys no later batch rewrites are committed as the mirror shows them now;
                // the others' committed value is what this chunk wrote.
                let still: std::collections::HashSet<Vec<u8>> = state
                    .staged
                    .iter()
                    .flat_map(|s| s.writes.iter().filter_map(|w| w.key().map(<[u8]>::to_vec)))
                    .collect();
                for staged in done {
                    for write in staged.writes {
                        match write {
                            Write::Put(k, v) if still.contains(&k) => {
                                state.undo.insert(k, Some(v));
                            }
                            Write::Delete(k) if still.contains(&k) => {
                                state.undo.insert(k, None);
                            }
                            Write::Put(k, _) | Write::Delete(k) => {
                                state.undo.remove(&k);
                            }
                            Write::DeleteRevisionsBelow(_) => {}
                        }
                    }
                }
                if state.staged.is_empty() {
                    state.expected_version = None;
                }
            }
        }
    }
}

/// Whether this replica runs the background work: it holds the `l` key on its own lease, or
/// takes it when no one does. The lease is kept alive by a task; when this replica stops, the
/// key goes with the lease and another replica takes over at its next tick.
pub(super) async fn lead(inner: &Inner) -> StoreResult<bool> {
    let mut lease = inner.lease.lock().await;
    let id = match &*lease {
        Some((id, _)) => *id,
        None => {
            let mut leases = inner.client.lease_client();
            let granted = leases.grant(15, None).await.map_err(super::etcd_err)?;
            let id = granted.id();
            let (mut keeper, mut responses) =
                leases.keep_alive(id).await.map_err(super::etcd_err)?;
            let mut closed = inner.closed.subscribe();
            let task = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                        () = async { let _ = closed.wait_for(|c| *c).await; } => {
                            // The store is gone: give the lead up now rather than at the
                            // lease's expiry, so another replica takes over at its next tick.
                            let _ = leases.revoke(id).await;
                            return;
                        }
                    }
                    if keeper.keep_alive().await.is_err() {
                        return;
                    }
                    match responses.message().await {
                        Ok(Some(r)) if r.ttl() > 0 => {}
                        _ => return,
                    }
                }
            });
            *lease = Some((id, task));
            id
        }
    };
    let key = inner.key(keys::LEADER);
    let me = inner.replica.as_bytes().to_vec();
    let txn = Txn::new()
        .when(vec![Compare::create_revision(
            key.clone(),
            CompareOp::Equal,
            0,
        )])
        .and_then(vec![TxnOp::put(
            key.clone(),
            me.clone(),
            Some(PutOptions::new().with_lease(id)),
        )])
        .or_else(vec![TxnOp::get(key, None)]);
    let resp = match inner.client.kv_client().txn(txn).await {
        Ok(resp) => resp,
        Err(e) => {
            // The lease may have expired: stop keeping it alive, revoke it (best effort) and
            // take a new one next time.
            if let Some((id, task)) = lease.take() {
                task.abort();
                let _ = inner.client.lease_client().revoke(id).await;
            }
            return Err(super::etcd_err(e));
        }
    };
    if resp.succeeded() {
        return Ok(true);
    }
    let holder = resp.op_responses().into_iter().find_map(|r| match r {
        etcd_client::TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    });
    Ok(holder.as_deref() == Some(me.as_slice()))
}
