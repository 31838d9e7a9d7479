//! Revocation fan-out: N watchers multiplexed [`WATCHERS_PER_CHANNEL`] per HTTP/2 connection; a
//! round is one durable revoke (etcd: DeleteRange), timed from sending it until the last of the
//! N watchers has the event, rounds 20 ms apart.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mqtt_tokend::proto::{
    watch_revocations_response, RevokeTokenRequest, StartMode, WatchRevocationsRequest,
};
use mqtt_tokend_client::AccessKey;
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
    measure::{channels, connect},
    ops::{mint, INSTANCE},
    report::Report,
    server::Tokend,
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

    /// One round per victim: `revoke(victim)`, timed until every watcher has the event (10 s
    /// at most); then the watchers are stopped.
    async fn rounds<V>(
        &self,
        watchers: Vec<JoinHandle<()>>,
        victims: Vec<V>,
        setup: Duration,
        mut revoke: impl AsyncFnMut(V),
    ) -> FanoutResult {
        let (mut times, mut failed) = (Vec::with_capacity(victims.len()), 0);
        for victim in victims {
            self.received.store(0, Ordering::Release);
            let t0 = Instant::now();
            revoke(victim).await;
            match tokio::time::timeout(Duration::from_secs(10), self.done.notified()).await {
                Ok(()) => times.push(t0.elapsed().as_secs_f64() * 1000.0),
                Err(_) => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in watchers {
            t.abort();
        }
        summarize_ms(times, failed, setup)
    }
}

async fn fanout_tokend(
    endpoint: &str,
    key: &AccessKey,
    watchers: usize,
    rounds: usize,
) -> FanoutResult {
    let setup = Instant::now();
    let victims = mint(endpoint, key, rounds).await;
    let chans = channels(endpoint, Some(key), watchers.div_ceil(WATCHERS_PER_CHANNEL)).await;
    let arrivals = Arrivals::new(watchers);
    let mut tasks = Vec::with_capacity(watchers);
    for w in 0..watchers {
        let mut c = chans[w / WATCHERS_PER_CHANNEL].revocations();
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
    let mut client = connect(endpoint, Some(key)).await.tokens();
    let revoke = async |token| {
        client
            .revoke_token(RevokeTokenRequest {
                instance_id: INSTANCE.into(),
                token,
            })
            .await
            .expect("RevokeToken");
    };
    arrivals.rounds(tasks, victims, setup, revoke).await
}

async fn fanout_etcd(endpoint: &str, watchers: usize, rounds: usize) -> FanoutResult {
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
    let delete = async |key| {
        kv.delete_range(DeleteRangeRequest {
            key,
            ..Default::default()
        })
        .await
        .expect("etcd DeleteRange");
    };
    arrivals.rounds(tasks, victims, setup, delete).await
}

/// The fan-out table, for every `--watchers` count: mqtt-tokend's WatchRevocations and, when
/// an etcd runs, etcd's Watch.
pub async fn section(opts: &Opts, server: &Tokend, report: &mut Report) {
    let (ep, key) = (&server.endpoint, server.key());
    let mut lines = vec![
        String::new(),
        "### Revocation fan-out: revoke (durable) → every watcher has the event".into(),
        String::new(),
        format!(
            "Watch streams multiplexed {WATCHERS_PER_CHANNEL} per HTTP/2 connection; {} rounds each; \
             time from sending the revoke/delete (durable) until the last watcher got the event; p99 × etcd = our p99 / etcd's p99 (lower is better).",
            opts.fanout_rounds
        ),
        String::new(),
        "| server | watchers | p50 ms | p99 ms | max ms | rounds ok | timed out | set-up s | p99 × etcd |".into(),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|".into(),
    ];
    for &n in &opts.watchers {
        eprintln!("  fan-out {n} watchers ...");
        let etcd = match &opts.etcd {
            Some(e) => Some(fanout_etcd(e, n, opts.fanout_rounds).await),
            None => None,
        };
        let ours = fanout_tokend(ep, &key, n, opts.fanout_rounds).await;
        for (name, r) in [
            ("mqtt-tokend WatchRevocations", Some(&ours)),
            ("etcd Watch", etcd.as_ref()),
        ] {
            let Some(r) = r else { continue };
            eprintln!(
                "  {name} n={n}: p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} ok, {} timed out)",
                r.p50_ms, r.p99_ms, r.max_ms, r.rounds, r.failed
            );
            let ratio = match (&etcd, name.starts_with("mqtt")) {
                (Some(e), true) => format!("{:.2}", r.p99_ms / e.p99_ms),
                _ => "–".into(),
            };
            lines.push(format!(
                "| {name} | {n} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1} | {ratio} |",
                r.p50_ms, r.p99_ms, r.max_ms, r.rounds, r.failed, r.setup_s
            ));
        }
    }
    report.extra.extend(lines);
}
