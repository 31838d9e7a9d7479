//! The benchmark harness (issue 6): mqtt-tokend against the empty-RPC floor and etcd, with the
//! same client code, over loopback.
//!
//! `cargo bench --bench tokend -- [--quick] [--only NAME[,NAME...]] [--big] [--devices N] ...`
//! (`-- --help` lists every flag); `scripts/bench.sh` starts etcd and passes its address in
//! `ETCD_ENDPOINT` (without it the etcd rows are skipped).
//!
//! - The server under test is the release binary (`mqtt-tokend serve`) run as a child process,
//!   like etcd, so its RSS and restart time are its own and the two peers are treated alike.
//! - Clients are real tonic clients on one tokio runtime (2 workers) in this process: one
//!   HTTP/2 connection per 16 requests in flight, each in-flight slot a task issuing one call
//!   after another. A cell warms up, then measures for a fixed time; latency is per call
//!   (hdrhistogram, ns), throughput counts calls started and finished inside the window.
//! - The floor is `grpc.health.v1.Health/Check` on the same mqtt-tokend server: tonic, HTTP/2,
//!   routing and protobuf, no authentication and no storage.
//! - Progress goes to stderr, the markdown tables to stdout.
//!
//! Modules: `args` (the command line), `measure` (one cell), `report` (the tables), `server`
//! (the child process), `ops` (the gRPC calls and their set-up), `rest` (the REST shim's
//! calls), `etcd` (the peer's client and cells), `unary` (tokend's unary cells), `fanout`
//! (revocation fan-out), `preload` and `scale` (`--big` and `--devices`), `scope` (revoking
//! 100,000 tokens of one key in one call).

mod args;
mod etcd;
mod fanout;
mod measure;
mod ops;
mod preload;
mod report;
mod rest;
mod scale;
mod scope;
mod server;
mod unary;

use args::Opts;
use report::Report;
use server::{dir_size, Tokend};

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
        "mqtt-tokend bench: quick={} big={} only={:?} etcd={:?}",
        opts.quick, opts.big, opts.only, opts.etcd
    );
    if opts.etcd.is_none() {
        report
            .notes
            .push("ETCD_ENDPOINT not set: etcd rows skipped (run scripts/bench.sh)".into());
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (server, ready) = Tokend::start(tmp.path()).await;
    report.extra.push(format!(
        "\nmqtt-tokend start on an empty store: {:.0} ms to SERVING.",
        ready.as_secs_f64() * 1000.0
    ));

    // etcd's own cells come first so every tokend row can show its ratio.
    if let Some(etcd) = &opts.etcd {
        etcd::peer_cells(&opts, etcd, &mut report).await;
    }
    unary::tokend_cells(&opts, &server, &mut report).await;
    let (rss, hwm) = server.rss_mib();
    report.extra.push(format!(
        "mqtt-tokend after the unary cells: RSS {rss:.0} MiB (peak {hwm:.0} MiB), store {:.1} MiB on disk.",
        dir_size(&server.data_dir) as f64 / 1048576.0
    ));
    if opts.wants("fanout") {
        fanout::section(&opts, &server, &mut report).await;
    }
    server.stop();

    if opts.wants("scope") {
        scope::section(&opts, &mut report).await;
    }
    if opts.big {
        scale::big(&opts, &mut report).await;
    }
    if opts.devices > 0 {
        scale::devices(&opts, &mut report).await;
    }
    report.print(&opts);
}
