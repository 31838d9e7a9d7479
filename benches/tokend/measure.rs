//! One cell: `concurrency` tasks issuing an [`Op`] one call after another, one HTTP/2
//! connection per [`PER_CHANNEL`] of them (at least one per replica, the connections spread
//! round-robin over the replicas and the tasks over the connections); a warm-up, then a fixed
//! window in which latency goes into an hdrhistogram (ns) and throughput counts calls started
//! and finished inside it. The servers' CPU time over the window (up to the moment the op ran
//! out of work, when it did) comes from `/proc`: the replicas' summed, and etcd's separately
//! when the replicas store in it.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use mqtt_tokend_client::{AccessKey, Client, ConnectError};
use tokio::sync::Notify;
use tonic::Status;

use crate::args::Opts;

/// Calls in flight per cell.
pub const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Requests in flight per HTTP/2 connection in the load cells.
pub const PER_CHANNEL: usize = 16;

/// One call in flight.
pub type BoxFut = Pin<Box<dyn Future<Output = OpResult> + Send>>;
/// What a cell measures: one call on a connection, given a sequence number unique to the cell.
pub type Op = Arc<dyn Fn(&Client, u64) -> BoxFut + Send + Sync>;

/// One call's outcome.
pub enum OpResult {
    /// The call succeeded and its response checked out.
    Ok,
    /// The call failed, or its response was not the expected one.
    Err(String),
    /// The op has nothing left to do (its pool of tokens or keys is empty): end the cell.
    Exhausted,
}

/// Maps a call's result to an [`OpResult`], with `check` judging a successful response.
pub fn ok_or<T>(r: Result<T, Status>, check: impl FnOnce(T) -> Result<(), String>) -> OpResult {
    match r
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        .and_then(check)
    {
        Ok(()) => OpResult::Ok,
        Err(e) => OpResult::Err(e),
    }
}

/// One cell's summary.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Calls per second over the window.
    pub ops_per_s: f64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
    /// 99.9th percentile latency.
    pub p999_us: f64,
    /// Calls that failed or returned the wrong thing.
    pub errors: u64,
    /// The first of those errors.
    pub first_error: Option<String>,
    /// Set when the op ran out of work before the window ended.
    pub cut_short: Option<Duration>,
    /// Server CPU time per call (user + system, every replica's), when the pids are known.
    pub server_cpu_us_per_op: Option<f64>,
    /// Server CPU use over the window, in cores.
    pub server_cores: Option<f64>,
    /// CPU time per call of the etcd the servers store in (none for sled and for etcd itself).
    pub backend_cpu_us_per_op: Option<f64>,
    /// This bench process's CPU time per call: the load generator's share of the 2 cores,
    /// which sets the throughput of a cell whose server is not busy.
    pub client_cpu_us_per_op: Option<f64>,
}

/// Where a cell sends its calls, and the server processes whose CPU time it reads.
#[derive(Clone)]
pub struct Target {
    /// host:port of each replica's gRPC server (one for sled and for etcd itself).
    pub endpoints: Vec<String>,
    /// The replicas' process ids (empty if unknown).
    pub pids: Vec<u32>,
    /// The key the cell's connections authenticate as (none for etcd).
    pub key: Option<AccessKey>,
    /// The process of the etcd the replicas store in, for its share of the cost per call.
    pub backend_pid: Option<u32>,
}

impl Target {
    /// One server at `endpoint`, reading the CPU time of `pid`.
    pub fn single(endpoint: &str, pid: Option<u32>, key: Option<AccessKey>) -> Self {
        Self {
            endpoints: vec![endpoint.to_owned()],
            pids: pid.into_iter().collect(),
            key,
            backend_pid: None,
        }
    }

    /// The connections a cell with `concurrency` calls in flight opens: one per
    /// [`PER_CHANNEL`] calls, rounded up to a multiple of the replica count so that every
    /// replica carries the same number of calls (but never more connections than calls).
    pub fn connections(&self, concurrency: usize) -> usize {
        let replicas = self.endpoints.len().max(1);
        concurrency
            .div_ceil(PER_CHANNEL)
            .next_multiple_of(replicas)
            .min(concurrency)
            .max(1)
    }
}

fn new_hist() -> Histogram<u64> {
    // 1 ns .. 60 s, 3 significant digits; cannot fail with these bounds.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// One connection to `endpoint`, authenticating as `key` (none for etcd and health); retried
/// while the server is still starting.
pub async fn connect(endpoint: &str, key: Option<&AccessKey>) -> Client {
    let uri = format!("http://{endpoint}");
    for _ in 0..200 {
        match mqtt_tokend_client::connect(&uri, key).await {
            Ok(client) => return client,
            Err(ConnectError::Unreachable { .. }) => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Err(e) => panic!("cannot connect to {endpoint}: {e}"),
        }
    }
    panic!("cannot connect to {endpoint}");
}

/// `n` connections to `endpoint`, each its own HTTP/2 connection.
pub async fn channels(endpoint: &str, key: Option<&AccessKey>, n: usize) -> Vec<Client> {
    spread(&[endpoint.to_owned()], key, n).await
}

/// `n` connections, each its own HTTP/2 connection, to `endpoints` in turn (round-robin).
pub async fn spread(endpoints: &[String], key: Option<&AccessKey>, n: usize) -> Vec<Client> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(connect(&endpoints[i % endpoints.len()], key).await);
    }
    out
}

/// CPU ticks of `pids` summed; `None` if any cannot be read.
pub fn cpu_ticks_of(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| cpu_ticks(p)).sum()
}

/// CPU seconds in `ticks` clock ticks.
pub fn ticks_to_secs(ticks: u64) -> f64 {
    ticks as f64 / clk_tck()
}

/// Runs `op` from `concurrency` tasks for warm-up + measurement and summarizes the window.
pub async fn run_cell(opts: &Opts, target: &Target, concurrency: usize, op: Op) -> Cell {
    let chans = spread(
        &target.endpoints,
        target.key.as_ref(),
        target.connections(concurrency),
    )
    .await;
    let start = Instant::now();
    let window_start = start + opts.warmup;
    let deadline = window_start + opts.measure;
    let stop = Arc::new(AtomicBool::new(false));
    // Wakes the CPU sampler when the op runs out of work, so CPU and calls share one window.
    let ran_out = Arc::new(Notify::new());
    // Nanoseconds after window_start at which the op ran out of work, if it did.
    let exhausted_at = Arc::new(AtomicU64::new(u64::MAX));
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let ch = chans[w % chans.len()].clone();
        let op = op.clone();
        let (stop, ran_out) = (stop.clone(), ran_out.clone());
        let exhausted_at = exhausted_at.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let (mut count, mut errors, mut first_error) = (0u64, 0u64, None);
            let mut seq = w as u64 * 1_000_000_000;
            loop {
                let t = Instant::now();
                if t >= deadline || stop.load(Ordering::Relaxed) {
                    break;
                }
                seq += 1;
                let result = op(&ch, seq).await;
                let dt = t.elapsed();
                let in_window = t >= window_start;
                match result {
                    OpResult::Ok if in_window && t + dt <= deadline => {
                        count += 1;
                        let _ = hist.record((dt.as_nanos() as u64).max(1));
                    }
                    OpResult::Ok => {}
                    OpResult::Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                    OpResult::Exhausted => {
                        let at = Instant::now().saturating_duration_since(window_start);
                        exhausted_at.fetch_min(at.as_nanos() as u64, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                        ran_out.notify_one();
                        break;
                    }
                }
            }
            (hist, count, errors, first_error)
        }));
    }
    // The servers' CPU time over the window, from /proc (clock ticks), until the deadline or
    // until the op ran out of work (a cut-short window: the CPU of the calls it counted).
    let pids: Vec<u32> = target.pids.clone();
    let backend: Vec<u32> = target.backend_pid.into_iter().collect();
    let client = [std::process::id()];
    tokio::time::sleep_until(window_start.into()).await;
    let before = (
        cpu_ticks_of(&pids),
        cpu_ticks_of(&backend),
        cpu_ticks_of(&client),
    );
    tokio::select! {
        _ = tokio::time::sleep_until(deadline.into()) => {}
        _ = ran_out.notified() => {}
    }
    let delta = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| b.saturating_sub(a));
    let cpu = delta(before.0, cpu_ticks_of(&pids)).filter(|_| !pids.is_empty());
    let backend_cpu = delta(before.1, cpu_ticks_of(&backend)).filter(|_| !backend.is_empty());
    let client_cpu = delta(before.2, cpu_ticks_of(&client));
    let mut hist = new_hist();
    let (mut count, mut errors, mut first_error) = (0u64, 0u64, None);
    for t in tasks {
        let (h, c, e, fe) = t.await.expect("load task");
        hist.add(h).expect("same histogram bounds");
        count += c;
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    let at = exhausted_at.load(Ordering::Relaxed);
    let (window, cut_short) = if at == u64::MAX {
        (opts.measure, None)
    } else {
        let w = Duration::from_nanos(at).min(opts.measure);
        (w, Some(w))
    };
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Cell {
        ops_per_s: if window.is_zero() {
            0.0
        } else {
            count as f64 / window.as_secs_f64()
        },
        p50_us: us(0.50),
        p99_us: us(0.99),
        p999_us: us(0.999),
        errors,
        first_error,
        cut_short,
        server_cpu_us_per_op: per_op(cpu, count),
        server_cores: cpu
            .filter(|_| !window.is_zero())
            .map(|ticks| ticks_to_secs(ticks) / window.as_secs_f64()),
        backend_cpu_us_per_op: per_op(backend_cpu, count),
        client_cpu_us_per_op: per_op(client_cpu, count),
    }
}

/// Microseconds of CPU per call, from `ticks` over `count` calls.
fn per_op(ticks: Option<u64>, count: u64) -> Option<f64> {
    ticks
        .filter(|_| count > 0)
        .map(|t| ticks_to_secs(t) * 1e6 / count as f64)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}
