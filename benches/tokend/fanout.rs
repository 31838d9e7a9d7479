//! Revocation fan-out: N watchers multiplexed [`WATCHERS_PER_CHANNEL`] per HTTP/2 connection,
//! the connections spread round-robin over the replicas; a round is one durable revoke (etcd:
//! DeleteRange) on the replicas in turn, timed from sending it until the last of the N watchers
//! has the event, rounds 20 ms apart. With several replicas most watchers follow another
//! replica than the one that took the revoke: the event reaches them through etcd.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mqtt_tokend::proto::{
    watch_revocations_response, RevokeTokenRequest, StartMode, WatchRevocationsRequest,
};
use tokio::{sync::Notify, task::JoinHandle};

use crate::{
    args::Opts,
    etcd::{
        etcd_put_keys,
        pb::{
            kv_client::KvClient, watch_client::WatchClient, watch_request::RequestUnion,
            DeleteRangeRequest, WatchCreateRequest, WatchRequest,
        },
    },
    fleet::Fleet,
    measure::{channels, connect, cpu_ticks_of, spread, ticks_to_secs},
    ops::{mint, INSTANCE},
    report::Report,
};

/// Watch streams per HTTP/2 connection in the fan-out cells (hyper's server allows 200).
const WATCHERS_PER_CHANNEL: usize = 100;

struct FanoutResult {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    rounds: usize,
    failed: usize,
    setup_s: f64,
    /// CPU ms per round of the servers (the replicas summed; etcd for etcd's own row).
    server_cpu_ms: Option<f64>,
    /// CPU ms per round of the etcd the replicas store in.
    backend_cpu_ms: Option<f64>,
}

/// Whose CPU time a fan-out cell reads: the servers', and the etcd they store in.
struct Cpu {
    servers: Vec<u32>,
    backend: Option<u32>,
}

fn summarize_ms(mut v: Vec<f64>, failed: usize, setup: Duration) -> FanoutResult {
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |q: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[((v.len() as f64 - 1.0) * q).round() as usize]
        }
    };
    FanoutResult {
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: q(1.0),
        rounds: v.len(),
        failed,
        setup_s: setup.as_secs_f64(),
        server_cpu_ms: None,
        backend_cpu_ms: None,
    }
}

/// Shared between the watcher tasks and the driver of one fan-out cell.
struct Arrivals {
    /// Watchers whose stream is subscribed.
    ready: AtomicUsize,
    /// Events received in this round.
    received: AtomicUsize,
    /// The number of watchers.
    target: usize,
    /// Fires when every watcher has this round's event.
    done: Notify,
}

impl Arrivals {
    fn new(target: usize) -> Arc<Self> {
        Arc::new(Self {
            ready: AtomicUsize::new(0),
            received: AtomicUsize::new(0),
            target,
            done: Notify::new(),
        })
    }

    fn subscribed(&self) {
        self.ready.fetch_add(1, Ordering::Release);
    }

    fn arrive(&self, n: usize) {
        if self.received.fetch_add(n, Ordering::AcqRel) + n == self.target {
            self.done.notify_one();
        }
    }

    /// Returns once every watcher is subscribed, with the time since `setup`.
    async fn all_subscribed(&self, setup: Instant) -> Duration {
        while self.ready.load(Ordering::Acquire) < self.target {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        setup.elapsed()
    }

    /// One round per victim: `revoke(round, victim)`, timed until every watcher has the event
    /// (10 s at most); then the watchers are stopped. `cpu`'s CPU time over the rounds is
    /// reported per round.
    async fn rounds<V>(
        &self,
        watchers: Vec<JoinHandle<()>>,
        victims: Vec<V>,
        setup: Duration,
        cpu: Cpu,
        mut revoke: impl AsyncFnMut(usize, V),
    ) -> FanoutResult {
        let (mut times, mut failed) = (Vec::with_capacity(victims.len()), 0);
        let backend: Vec<u32> = cpu.backend.into_iter().collect();
        let before = (cpu_ticks_of(&cpu.servers), cpu_ticks_of(&backend));
        let rounds = victims.len();
        for (round, victim) in victims.into_iter().enumerate() {
            self.received.store(0, Ordering::Release);
            let t0 = Instant::now();
            revoke(round, victim).await;
            match tokio::time::timeout(Duration::from_secs(10), self.done.notified()).await {
                Ok(()) => times.push(t0.elapsed().as_secs_f64() * 1000.0),
                Err(_) => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let per_round = |pids: &[u32], before: Option<u64>| {
            let after = cpu_ticks_of(pids).filter(|_| !pids.is_empty() && rounds > 0);
            before
                .zip(after)
                .map(|(a, b)| ticks_to_secs(b.saturating_sub(a)) * 1000.0 / rounds as f64)
        };
        let server_cpu_ms = per_round(&cpu.servers, before.0);
        let backend_cpu_ms = per_round(&backend, before.1);
        for t in watchers {
            t.abort();
        }
        FanoutResult {
            server_cpu_ms,
            backend_cpu_ms,
            ..summarize_ms(times, failed, setup)
        }
    }
}

async fn fanout_tokend(fleet: &Fleet, watchers: usize, rounds: usize) -> FanoutResult {
    let (endpoints, key) = (fleet.endpoints(), fleet.key());
    let setup = Instant::now();
    let victims = mint(&endpoints, &key, rounds).await;
    // At least one connection per replica, so every replica feeds its share of the watchers.
    let conns = watchers
        .div_ceil(WATCHERS_PER_CHANNEL)
        .next_multiple_of(endpoints.len());
    let chans = spread(&endpoints, Some(&key), conns).await;
    let arrivals = Arrivals::new(watchers);
    let mut tasks = Vec::with_capacity(watchers);
    for w in 0..watchers {
        let mut c = chans[w % chans.len()].revocations();
        let arrivals = arrivals.clone();
        tasks.push(tokio::spawn(async move {
            // The call returns once the server has subscribed this watcher (response headers).
            let mut stream = c
                .watch_revocations(WatchRevocationsRequest {
                    start_mode: StartMode::Now as i32,
                    start_revision: 0,
                    instance_ids: vec![INSTANCE.into()],
                })
                .await
                .expect("WatchRevocations")
                .into_inner();
            arrivals.subscribed();
            while let Ok(Some(msg)) = stream.message().await {
                if let Some(watch_revocations_response::Message::Event(_)) = msg.message {
                    arrivals.arrive(1);
                }
            }
        }));
    }
    let setup = arrivals.all_subscribed(setup).await;
    let mut clients = Vec::with_capacity(endpoints.len());
    for ep in &endpoints {
        clients.push(connect(ep, Some(&key)).await.tokens());
    }
    let revoke = async |round: usize, token| {
        let n = clients.len();
        clients[round % n]
            .revoke_token(RevokeTokenRequest {
                instance_id: INSTANCE.into(),
                token,
            })
            .await
            .expect("RevokeToken");
    };
    let cpu = Cpu {
        servers: fleet.pids(),
        backend: fleet.etcd_pid(),
    };
    arrivals.rounds(tasks, victims, setup, cpu, revoke).await
}

async fn fanout_etcd(
    endpoint: &str,
    pid: Option<u32>,
    watchers: usize,
    rounds: usize,
) -> FanoutResult {
    let setup = Instant::now();
    let prefix = format!("revoked-{watchers}/");
    let victims = etcd_put_keys(endpoint, &prefix, rounds).await;
    let mut range_end = prefix.clone().into_bytes();
    *range_end.last_mut().expect("non-empty prefix") += 1;
    let chans = channels(endpoint, None, watchers.div_ceil(WATCHERS_PER_CHANNEL)).await;
    let arrivals = Arrivals::new(watchers);
    let mut tasks = Vec::with_capacity(watchers);
    for w in 0..watchers {
        let mut c = WatchClient::new(chans[w / WATCHERS_PER_CHANNEL].channel());
        let arrivals = arrivals.clone();
        let (key, range_end) = (prefix.clone().into_bytes(), range_end.clone());
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key,
                    range_end,
                    ..Default::default()
                })),
            })
            .await
            .expect("queue watch create");
            let mut stream = c
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .expect("etcd Watch")
                .into_inner();
            while let Ok(Some(msg)) = stream.message().await {
                if msg.created {
                    arrivals.subscribed();
                }
                if !msg.events.is_empty() {
                    arrivals.arrive(msg.events.len());
                }
            }
            // Keep the request half open for the life of the watch.
            drop(tx);
        }));
    }
    let setup = arrivals.all_subscribed(setup).await;
    let mut kv = KvClient::new(connect(endpoint, None).await.channel());
    let delete = async |_, key| {
        kv.delete_range(DeleteRangeRequest {
            key,
            ..Default::default()
        })
        .await
        .expect("etcd DeleteRange");
    };
    let cpu = Cpu {
        servers: pid.into_iter().collect(),
        backend: None,
    };
    arrivals.rounds(tasks, victims, setup, cpu, delete).await
}

/// The fan-out table: every replica set's WatchRevocations and, when an etcd runs, etcd's own
/// Watch (measured once per watcher count), for every `--watchers` count.
#[derive(Default)]
pub struct Fanout {
    /// etcd Watch per watcher count.
    etcd: BTreeMap<usize, FanoutResult>,
    /// (watchers, row name, result) of the replica sets, in measuring order.
    rows: Vec<(usize, String, FanoutResult)>,
}

impl Fanout {
    /// Measures `fleet` (and etcd, the first time) at every `--watchers` count.
    pub async fn measure(&mut self, opts: &Opts, fleet: &Fleet) {
        for &n in &opts.watchers {
            if let (Some(e), false) = (&opts.etcd, self.etcd.contains_key(&n)) {
                eprintln!("  fan-out {n} watchers, etcd Watch ...");
                let r = fanout_etcd(e, opts.etcd_pid, n, opts.fanout_rounds).await;
                log("etcd Watch", n, &r);
                self.etcd.insert(n, r);
            }
            eprintln!("  fan-out {n} watchers, {} ...", fleet.describe());
            let name = if opts.on_etcd() {
                format!("mqtt-tokend WatchRevocations ({})", fleet.describe())
            } else {
                "mqtt-tokend WatchRevocations".into()
            };
            let r = fanout_tokend(fleet, n, opts.fanout_rounds).await;
            log(&name, n, &r);
            self.rows.push((n, name, r));
        }
    }

    /// Adds the table to `report` (nothing if no cell ran).
    pub fn finish(self, opts: &Opts, report: &mut Report) {
        if self.rows.is_empty() {
            return;
        }
        let backend = opts.on_etcd();
        let mut lines = vec![
            String::new(),
            "### Revocation fan-out: revoke (durable) → every watcher has the event".into(),
            String::new(),
            format!(
                "Watch streams multiplexed {WATCHERS_PER_CHANNEL} per HTTP/2 connection (spread over the replicas); {} rounds each, \
                 the revokes on the replicas in turn; time from sending the revoke/delete (durable) until the last watcher got the event; \
                 p99 × etcd = our p99 / etcd's p99 (lower is better); server CPU per round = the replicas' (or etcd's own, in its row).",
                opts.fanout_rounds
            ),
            String::new(),
            format!(
                "| server | watchers | p50 ms | p99 ms | max ms | rounds ok | timed out | set-up s | p99 × etcd | server CPU ms/round |{}",
                if backend { " etcd CPU ms/round |" } else { "" }
            ),
            format!(
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|{}",
                if backend { "---:|" } else { "" }
            ),
        ];
        let ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
        for &n in &opts.watchers {
            let etcd = self.etcd.get(&n);
            let ours = self.rows.iter().filter(|r| r.0 == n);
            for (name, r, ratio) in ours
                .map(|(_, name, r)| {
                    let ratio =
                        etcd.map_or("–".into(), |e| format!("{:.2}", r.p99_ms / e.p99_ms));
                    (name.as_str(), r, ratio)
                })
                .chain(etcd.map(|e| ("etcd Watch", e, "–".into())))
            {
                lines.push(format!(
                    "| {name} | {n} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1} | {ratio} | {} |{}",
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    r.rounds,
                    r.failed,
                    r.setup_s,
                    ms(r.server_cpu_ms),
                    if backend {
                        format!(" {} |", ms(r.backend_cpu_ms))
                    } else {
                        String::new()
                    }
                ));
            }
        }
        report.extra.extend(lines);
    }
}

fn log(name: &str, n: usize, r: &FanoutResult) {
    eprintln!(
        "  {name} n={n}: p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} ok, {} timed out), server CPU {:.1} ms/round",
        r.p50_ms,
        r.p99_ms,
        r.max_ms,
        r.rounds,
        r.failed,
        r.server_cpu_ms.unwrap_or(f64::NAN)
    );
}
