//! The etcd peer: its calls, generated from `etcd/rpc.proto` (a field-for-field subset of
//! etcd's v3 API; the generated `etcd/etcdserverpb.rs` is committed so the main build stays
//! untouched), and its own cells, which run first so every tokend row can show its ratio.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    args::Opts,
    measure::{
        channels, connect, cpu_ticks_of, ok_or, run_cell, ticks_to_secs, Op, Target, CONCURRENCY,
    },
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

/// A Range of `key`: serializable (the member's local state, as our local reads) or
/// linearizable (through Raft's read index, as the etcd store's read barrier).
fn op_etcd_range(key: Vec<u8>, serializable: bool) -> Op {
    Arc::new(move |ch, _| {
        let mut c = KvClient::new(ch.channel());
        let req = RangeRequest {
            key: key.clone(),
            serializable,
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

async fn etcd_lease(endpoint: &str, ttl: i64) -> i64 {
    let ch = connect(endpoint, None).await.channel();
    LeaseClient::new(ch)
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
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

/// Brings etcd back to the state of a quiet member before cells that read from it: waits
/// until it is idle (under 10% of a core over half a second, 60 s at most), then makes one
/// write that touches no key (a LeaseGrant) and lets a batch interval pass.
///
/// Why: etcd 3.4.23 (Debian's) copies its whole read buffer for every read transaction
/// (fixed in 3.4.24 by etcd-io/etcd#15195, the backport of #12933). After a burst of Puts
/// that buffer stays large until a backend commit in which no key was written, and every
/// Range costs several times more: measured here, a linearizable Range at 64 in flight went
/// from ~80 to ~400 µs of etcd CPU and from ~17,000 to ~4,300 ops/s after the write cells,
/// and back after this write. Without it a row's figure would depend on which write cell ran
/// before it.
pub async fn quiesce(endpoint: &str, pid: Option<u32>) {
    if let Some(pid) = pid {
        let t0 = Instant::now();
        let step = Duration::from_millis(500);
        while t0.elapsed() < Duration::from_secs(60) {
            let before = cpu_ticks_of(&[pid]);
            tokio::time::sleep(step).await;
            let busy = before
                .zip(cpu_ticks_of(&[pid]))
                .map(|(a, b)| ticks_to_secs(b.saturating_sub(a)));
            // Idle, or gone (nothing to wait for).
            if busy.is_none_or(|s| s < 0.1 * step.as_secs_f64()) {
                break;
            }
        }
    }
    etcd_lease(endpoint, 60).await;
    // etcd's backend commits every 100 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Deletes every key under `prefix` (a replica set's data, when its cells are done).
pub async fn delete_prefix(endpoint: &str, prefix: &str) {
    let mut range_end = prefix.as_bytes().to_vec();
    // A prefix ends with '/', so the byte after it ('0') bounds the range.
    if let Some(last) = range_end.last_mut() {
        *last += 1;
    }
    let ch = connect(endpoint, None).await.channel();
    if let Err(e) = KvClient::new(ch)
        .delete_range(DeleteRangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end,
            ..Default::default()
        })
        .await
    {
        eprintln!("  could not delete the etcd prefix {prefix}: {e}");
    }
}

/// The heading of etcd's own table.
pub const ETCD: &str = "etcd 3.4 (same client code)";

/// Which of etcd's cells [`peer_cells`] runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PeerSet {
    /// Every cell a wanted section compares to, once at the start of the run.
    All,
    /// Only the peers of the etcd store's rows (Range and Put), again right before a replica
    /// set (after [`quiesce`]): each set's ratios are to etcd as that set found it, with the
    /// earlier sets' writes in its history.
    Again,
}

/// etcd's unary cells against the etcd at `endpoint`, under `heading`: Health/Check, Range
/// (serializable, and linearizable when the servers under test store in etcd), Put without
/// and with a lease, DeleteRange, each when its section or a tokend row that compares to it
/// is wanted (with [`PeerSet::Again`], the Ranges and the plain Put only).
pub async fn peer_cells(
    opts: &Opts,
    endpoint: &str,
    report: &mut Report,
    heading: &str,
    set: PeerSet,
) {
    let etcd_t = Target::single(endpoint, opts.etcd_pid, None);
    let all = set == PeerSet::All;
    let any = |names: &[&str]| names.iter().any(|n| opts.wants(n));
    let etcd = heading;
    if all && (opts.wants("etcd-health") || opts.wants("floor")) {
        for c in CONCURRENCY {
            let cell = run_cell(opts, &etcd_t, c, op_health()).await;
            report.etcd.insert((Peer::Health, c), cell.ops_per_s);
            report.add(etcd, "etcd Health/Check", c, cell, Peer::Health);
        }
    }
    let lease = if all {
        etcd_lease(endpoint, 3600).await
    } else {
        0
    };
    let pool: Pool = Arc::new(Mutex::new(Vec::new()));
    let reads = [
        "etcd-range",
        "query",
        "connect-token",
        "connect-device",
        "authorize",
        "rest",
    ];
    if any(&reads) {
        let key = etcd_put_keys(endpoint, "tokens/query-", 1).await.remove(0);
        for c in CONCURRENCY {
            let cell = run_cell(opts, &etcd_t, c, op_etcd_range(key.clone(), true)).await;
            report.etcd.insert((Peer::Range, c), cell.ops_per_s);
            report.add(etcd, "etcd Range (serializable)", c, cell, Peer::Range);
        }
        if opts.on_etcd() {
            for c in CONCURRENCY {
                let cell = run_cell(opts, &etcd_t, c, op_etcd_range(key.clone(), false)).await;
                report
                    .etcd
                    .insert((Peer::RangeLinearizable, c), cell.ops_per_s);
                let name = "etcd Range (linearizable)";
                report.add(etcd, name, c, cell, Peer::RangeLinearizable);
            }
        }
    }
    // A token needs no lease (its expiry is checked on read): the plain Put is ApplyToken's
    // peer; the leased Put stays beside it for comparison with earlier runs.
    if any(&["etcd-put", "apply", "revoke", "rest"]) {
        for c in CONCURRENCY {
            let cell = run_cell(opts, &etcd_t, c, op_etcd_put(0, pool.clone())).await;
            report.etcd.insert((Peer::Put, c), cell.ops_per_s);
            report.add(etcd, "etcd Put (no lease)", c, cell, Peer::Put);
        }
    }
    if all && any(&["etcd-put-lease", "apply"]) {
        for c in CONCURRENCY {
            let cell = run_cell(opts, &etcd_t, c, op_etcd_put(lease, pool.clone())).await;
            report.etcd.insert((Peer::PutLease, c), cell.ops_per_s);
            report.add(etcd, "etcd Put with lease", c, cell, Peer::PutLease);
        }
    }
    if all && (opts.wants("etcd-delete") || opts.wants("revoke")) {
        for c in CONCURRENCY {
            // Deletes run faster than leased puts: estimate from the unleased set-up rate.
            let guess = if c == 1 { 2_000.0 } else { 8_000.0 };
            top_up(&pool, need_for(opts, guess), |n| etcd_mint(endpoint, n)).await;
            let cell = run_cell(opts, &etcd_t, c, op_etcd_delete(pool.clone())).await;
            report.etcd.insert((Peer::Delete, c), cell.ops_per_s);
            report.add(etcd, "etcd DeleteRange", c, cell, Peer::Delete);
        }
    }
}
