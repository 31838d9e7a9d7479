//! The etcd peer: its calls, generated from `etcd/rpc.proto` (a field-for-field subset of
//! etcd's v3 API; the generated `etcd/etcdserverpb.rs` is committed so the main build stays
//! untouched), and its own cells, which run first so every tokend row can show its ratio.

use std::sync::{Arc, Mutex};

use crate::{
    args::Opts,
    measure::{channels, connect, ok_or, run_cell, Op, Target, CONCURRENCY},
    ops::{fill, need_for, op_draining, op_health, push, top_up, Pool},
    report::{Peer, Report},
};

/// The generated etcd client.
#[allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]
pub mod pb {
    include!("etcd/etcdserverpb.rs");
}
use pb::{
    kv_client::KvClient, lease_client::LeaseClient, DeleteRangeRequest, LeaseGrantRequest,
    PutRequest, RangeRequest,
};

/// The etcd value stands in for a token record: about the size of ours encoded.
const ETCD_VALUE_LEN: usize = 120;

/// A Put of `key` with a token-sized value and no lease.
fn put_request(key: Vec<u8>) -> PutRequest {
    PutRequest {
        key,
        value: vec![b'v'; ETCD_VALUE_LEN],
        lease: 0,
        prev_kv: false,
    }
}

fn etcd_key(seq: u64) -> Vec<u8> {
    format!("tokens/{seq:016x}{:08x}", rand::random::<u32>()).into_bytes()
}

fn op_etcd_range(key: Vec<u8>) -> Op {
    Arc::new(move |ch, _| {
        let mut c = KvClient::new(ch.channel());
        let req = RangeRequest {
            key: key.clone(),
            serializable: true,
            ..Default::default()
        };
        Box::pin(async move {
            ok_or(c.range(req).await, |r| {
                if r.into_inner().kvs.len() == 1 {
                    Ok(())
                } else {
                    Err("key not found".into())
                }
            })
        })
    })
}

fn op_etcd_put(lease: i64, pool: Pool) -> Op {
    Arc::new(move |ch, seq| {
        let mut c = KvClient::new(ch.channel());
        let key = etcd_key(seq);
        let pool = pool.clone();
        let req = PutRequest {
            lease,
            ..put_request(key.clone())
        };
        Box::pin(async move {
            ok_or(c.put(req).await, |_| {
                push(&pool, String::from_utf8(key).unwrap_or_default());
                Ok(())
            })
        })
    })
}

fn op_etcd_delete(pool: Pool) -> Op {
    op_draining(pool, |ch, key| {
        let mut c = KvClient::new(ch.channel());
        async move {
            ok_or(
                c.delete_range(DeleteRangeRequest {
                    key: key.into_bytes(),
                    ..Default::default()
                })
                .await,
                |r| {
                    if r.into_inner().deleted == 1 {
                        Ok(())
                    } else {
                        Err("nothing deleted".into())
                    }
                },
            )
        }
    })
}

/// Puts `n` keys (no lease) with 64 calls in flight (untimed set-up for the delete cells).
async fn etcd_mint(endpoint: &str, n: usize) -> Vec<String> {
    let chans = channels(endpoint, None, 4).await;
    fill(chans, n, |ch, i| async move {
        let key = etcd_key(i as u64);
        KvClient::new(ch.channel())
            .put(put_request(key.clone()))
            .await
            .expect("set-up etcd Put");
        String::from_utf8(key).unwrap_or_default()
    })
    .await
}

async fn etcd_lease(endpoint: &str) -> i64 {
    let ch = connect(endpoint, None).await.channel();
    LeaseClient::new(ch)
        .lease_grant(LeaseGrantRequest { ttl: 3600, id: 0 })
        .await
        .expect("etcd LeaseGrant")
        .into_inner()
        .id
}

/// Puts `n` keys `<prefix><i>` one after another; returns them.
pub async fn etcd_put_keys(endpoint: &str, prefix: &str, n: usize) -> Vec<Vec<u8>> {
    let ch = connect(endpoint, None).await.channel();
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("{prefix}{i:08}").into_bytes();
        KvClient::new(ch.clone())
            .put(put_request(key.clone()))
            .await
            .expect("etcd Put");
        keys.push(key);
    }
    keys
}

/// etcd's unary cells against the etcd at `endpoint`: Health/Check, Range, Put with lease,
/// DeleteRange, each when its section or its tokend counterpart is wanted.
pub async fn peer_cells(opts: &Opts, endpoint: &str, report: &mut Report) {
    let etcd_t = Target {
        endpoint: endpoint.to_owned(),
        pid: opts.etcd_pid,
        key: None,
    };
    const ETCD: &str = "etcd 3.4 (same client code)";
    if opts.wants("etcd-health") || opts.wants("floor") {
        for c in CONCURRENCY {
            let cell = run_cell(opts, &etcd_t, c, op_health()).await;
            report.etcd.insert((Peer::Health, c), cell.ops_per_s);
            report.add(ETCD, "etcd Health/Check", c, cell, Peer::Health);
        }
    }
    let lease = etcd_lease(endpoint).await;
    let pool: Pool = Arc::new(Mutex::new(Vec::new()));
    if opts.wants("etcd-range") || opts.wants("query") {
        let key = etcd_put_keys(endpoint, "tokens/query-", 1).await.remove(0);
        for c in CONCURRENCY {
            let cell = run_cell(opts, &etcd_t, c, op_etcd_range(key.clone())).await;
            report.etcd.insert((Peer::Range, c), cell.ops_per_s);
            report.add(ETCD, "etcd Range (serializable)", c, cell, Peer::Range);
        }
    }
    if opts.wants("etcd-put") || opts.wants("apply") || opts.wants("revoke") {
        for c in CONCURRENCY {
            let cell = run_cell(opts, &etcd_t, c, op_etcd_put(lease, pool.clone())).await;
            report.etcd.insert((Peer::Put, c), cell.ops_per_s);
            report.add(ETCD, "etcd Put with lease", c, cell, Peer::Put);
        }
    }
    if opts.wants("etcd-delete") || opts.wants("revoke") {
        for c in CONCURRENCY {
            // Deletes run faster than leased puts: estimate from the unleased set-up rate.
            let guess = if c == 1 { 2_000.0 } else { 8_000.0 };
            top_up(&pool, need_for(opts, guess), |n| etcd_mint(endpoint, n)).await;
            let cell = run_cell(opts, &etcd_t, c, op_etcd_delete(pool.clone())).await;
            report.etcd.insert((Peer::Delete, c), cell.ops_per_s);
            report.add(ETCD, "etcd DeleteRange", c, cell, Peer::Delete);
        }
    }
}
