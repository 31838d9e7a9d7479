//! The benchmark harness (issue 6): mqtt-tokend against the empty-RPC floor and etcd, with the
//! same client code, over loopback.
//!
//! `cargo bench --bench tokend -- [--quick] [--only NAME[,NAME...]] [--big] [--devices N] ...`
//! (`-- --help` lists every flag); `scripts/bench.sh` starts etcd and passes its address in
//! `ETCD_ENDPOINT` (without it the etcd rows are skipped).
//!
//! - The server under test is the release binary (`mqtt-tokend serve`) run as a child process,
//!   like etcd, so its RSS and restart time are its own and the two peers are treated alike.
//!   With `--store etcd` it stores in that etcd, and `--replicas 1,3` measures one and then
//!   three replicas on one prefix (a fresh prefix per set), the load spread over them.
//! - Clients are real tonic clients on one tokio runtime (2 workers) in this process: one
//!   HTTP/2 connection per 16 requests in flight, each in-flight slot a task issuing one call
//!   after another. A cell warms up, then measures for a fixed time; latency is per call
//!   (hdrhistogram, ns), throughput counts calls started and finished inside the window.
//! - The floor is `grpc.health.v1.Health/Check` on the same mqtt-tokend server: tonic, HTTP/2,
//!   routing and protobuf, no authentication and no storage.
//! - Progress goes to stderr, the markdown tables to stdout.
//!
//! Modules: `args` (the command line), `measure` (one cell), `report` (the tables), `server`
//! (the child process), `fleet` (the replica set the cells load), `ops` (the gRPC calls and
//! their set-up), `rest` (the REST shim's calls), `etcd` (the peer's client and cells), `unary`
//! (tokend's unary cells), `fanout` (revocation fan-out), `preload` and `scale` (`--big` and
//! `--devices`), `scope` (revoking 100,000 tokens of one key in one call).

mod args;
mod etcd;
mod fanout;
mod fleet;
mod measure;
mod ops;
mod paired;
mod preload;
mod report;
mod rest;
mod scale;
mod scope;
mod server;
mod unary;

use args::Opts;
use etcd::PeerSet;
use fanout::Fanout;
use fleet::{describe_etcd, Fleet};
use report::Report;

fn main() {
    let opts = Opts::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(opts));
}

async fn run(opts: Opts) {
    let mut report = Report::default();
    eprintln!(
        "mqtt-tokend bench: quick={} big={} only={:?} etcd={:?} store={:?} replicas={:?}",
        opts.quick, opts.big, opts.only, opts.etcd, opts.store, opts.replicas
    );
    if opts.etcd.is_none() {
        report
            .notes
            .push("ETCD_ENDPOINT not set: etcd rows skipped (run scripts/bench.sh)".into());
    }

    // etcd's own cells come first so every tokend row can show its ratio.
    if let Some(etcd) = &opts.etcd {
        etcd::peer_cells(&opts, etcd, &mut report, etcd::ETCD, PeerSet::All).await;
    }
    let mut fanout = Fanout::default();
    for (i, &n) in opts.replicas.iter().enumerate() {
        let seen = opts.replicas[..i].iter().filter(|&&m| m == n).count();
        let tag = if seen == 0 {
            String::new()
        } else {
            format!(" #{}", seen + 1)
        };
        if let (true, true, Some(etcd)) = (i > 0, opts.on_etcd(), &opts.etcd) {
            etcd::quiesce(etcd, opts.etcd_pid).await;
            let heading = format!("{} again, before {}", etcd::ETCD, describe_etcd(n, &tag));
            etcd::peer_cells(&opts, etcd, &mut report, &heading, PeerSet::Again).await;
        }
        if let (true, Some(etcd)) = (opts.on_etcd(), &opts.etcd) {
            etcd::quiesce(etcd, opts.etcd_pid).await;
        }
        let (fleet, ready) = Fleet::start(&opts, n, tag).await;
        let on = if opts.on_etcd() {
            format!(" ({})", fleet.describe())
        } else {
            String::new()
        };
        report.extra.push(format!(
            "\nmqtt-tokend start on an empty store{on}: {:.0} ms to SERVING.",
            ready.as_secs_f64() * 1000.0
        ));
        if opts.on_etcd() {
            report.replica_sections.push((n, fleet.section()));
        }
        unary::tokend_cells(&opts, &fleet, &mut report).await;
        report.extra.push(fleet.memory_line());
        if opts.wants("fanout") {
            if let (true, Some(etcd)) = (opts.on_etcd(), &opts.etcd) {
                etcd::quiesce(etcd, opts.etcd_pid).await;
            }
            fanout.measure(&opts, &fleet).await;
        }
        fleet.stop().await;
    }
    fanout.finish(&opts, &mut report);

    if opts.wants("scope") {
        if opts.on_etcd() {
            report
                .notes
                .push("scope preloads a sled store in-process: run it without --store etcd".into());
        } else {
            scope::section(&opts, &mut report).await;
        }
    }
    if opts.big {
        scale::big(&opts, &mut report).await;
    }
    if opts.devices > 0 {
        scale::devices(&opts, &mut report).await;
    }
    report.print(&opts);
}
