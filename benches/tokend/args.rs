//! The command line. clap derive, so a bad value stops the run with a message and exit code 2
//! instead of quietly falling back to a default; everything else is derived once into [`Opts`].

use std::time::Duration;

use clap::{CommandFactory, Parser};
use mqtt_tokend::config::StoreKind;

/// Section names `--only` selects from. A section runs when its name contains one of the given
/// words, so `connect` picks both connect sections and `etcd` every etcd peer.
pub const SECTIONS: &[&str] = &[
    "floor",
    "query",
    "connect-token",
    "connect-device",
    "authenticateconnect",
    "authorize",
    "rest",
    "apply",
    "revoke",
    "fanout",
    "scope",
    "etcd-health",
    "etcd-range",
    "etcd-put",
    "etcd-put-lease",
    "etcd-delete",
];

/// The `--only` word that selects no section (to run only --big or --devices).
const NONE: &str = "none";

/// Benchmarks mqtt-tokend against the empty-RPC floor and etcd over loopback; progress on
/// stderr, markdown tables on stdout. scripts/bench.sh starts etcd and runs this.
#[derive(Debug, Parser)]
#[command(name = "tokend", bin_name = "cargo bench --bench tokend --")]
pub struct Args {
    /// Short cells (0.3 s warm-up, 1 s measured) and 10 fan-out rounds: a smoke test.
    #[arg(long)]
    pub quick: bool,
    /// Also measure with many live tokens (--big-tokens), preloaded in-process.
    #[arg(long)]
    pub big: bool,
    /// Run only the sections whose names contain one of these words (comma-separated,
    /// case-insensitive; "none" for no section): floor, query, connect-token, connect-device
    /// (both: authenticateconnect), authorize, rest, apply, revoke, fanout, scope (revoking
    /// --scope-tokens tokens of one key in one call), etcd-health, etcd-range, etcd-put (no
    /// lease), etcd-put-lease, etcd-delete. A tokend section also runs its etcd peer.
    #[arg(long, value_name = "NAME[,NAME...]", value_delimiter = ',', value_parser = parse_section)]
    pub only: Option<Vec<String>>,
    /// Revocation fan-out rounds per watcher count [default: 10 with --quick, else 30].
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub rounds: Option<usize>,
    /// Watcher counts of the fan-out cells (comma-separated).
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',', value_parser = parse_positive,
          default_values_t = [1_000, 10_000])]
    pub watchers: Vec<usize>,
    /// Live tokens of one key the scope section revokes in one call.
    #[arg(long, value_name = "N", value_parser = parse_positive, default_value_t = 100_000)]
    pub scope_tokens: usize,
    /// Live tokens to preload for --big.
    #[arg(long, value_name = "N", value_parser = parse_positive, default_value_t = 1_000_000)]
    pub big_tokens: usize,
    /// Device credentials to preload for the listing cells; 0 skips them, the flag without a
    /// value means 1000000.
    #[arg(long, value_name = "N", num_args = 0..=1, default_value_t = 0,
          default_missing_value = "1000000")]
    pub devices: usize,
    /// etcd's client address (host:port); without it the etcd rows are skipped.
    #[arg(long, value_name = "HOST:PORT", env = "ETCD_ENDPOINT")]
    pub etcd_endpoint: Option<String>,
    /// etcd's process id, for its CPU time per call.
    #[arg(long, value_name = "PID", env = "ETCD_PID")]
    pub etcd_pid: Option<u32>,
    /// Where the servers under test keep their data: `sled` (one process, its own directory) or
    /// `etcd`, the etcd at --etcd-endpoint (a fresh key prefix per replica set).
    #[arg(long, value_enum, default_value_t = StoreKind::Sled, hide_possible_values = true)]
    pub store: StoreKind,
    /// Replica counts to measure, one set of `serve` processes on one etcd prefix each, the
    /// load spread over them by connection (comma-separated; more than 1 needs --store etcd)
    /// [default: 1 with sled, 1,3 with etcd].
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',', value_parser = parse_positive)]
    pub replicas: Option<Vec<usize>>,
    /// Alternations of the floor and each unary operation at 64 in flight, back to back, for
    /// ratios that see the same machine on both sides (a table of their medians)
    /// [default: 0 with --quick, else 3].
    #[arg(long, value_name = "N")]
    pub pairs: Option<usize>,
    /// Passed by `cargo bench` to every bench; nothing to do here.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_section(s: &str) -> Result<String, String> {
    let word = s.trim().to_lowercase();
    if word == NONE || (!word.is_empty() && SECTIONS.iter().any(|name| name.contains(&word))) {
        Ok(word)
    } else {
        Err(format!(
            "no section matches; sections: {}, or {NONE}",
            SECTIONS.join(", ")
        ))
    }
}

/// What the run does, with the durations `--quick` implies.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Short cells.
    pub quick: bool,
    /// Run the many-live-tokens cells.
    pub big: bool,
    /// `--only` words, lowercase; `None` runs every section.
    pub only: Option<Vec<String>>,
    /// Warm-up before each cell's window.
    pub warmup: Duration,
    /// Each cell's measured window.
    pub measure: Duration,
    /// Revocation fan-out rounds per watcher count.
    pub fanout_rounds: usize,
    /// Watcher counts of the fan-out cells.
    pub watchers: Vec<usize>,
    /// Live tokens to preload for `big`.
    pub big_tokens: usize,
    /// Live tokens of one key for the scope section.
    pub scope_tokens: usize,
    /// Device credentials to preload for the listing cells (0 = skip them).
    pub devices: usize,
    /// etcd's client address, if an etcd runs.
    pub etcd: Option<String>,
    /// etcd's process id, if known.
    pub etcd_pid: Option<u32>,
    /// The store of the servers under test.
    pub store: StoreKind,
    /// Replica counts, one replica set each, in order.
    pub replicas: Vec<usize>,
    /// Floor-and-operation pairs per unary operation (0 = none).
    pub pairs: usize,
}

impl Opts {
    /// Parses the command line; exits with a message on `--help` or a bad argument.
    pub fn parse() -> Self {
        let args = Args::parse();
        if let Err(message) = args.check() {
            Args::command()
                .error(clap::error::ErrorKind::ArgumentConflict, message)
                .exit();
        }
        Self::from(args)
    }

    /// Whether the servers under test run on etcd.
    pub fn on_etcd(&self) -> bool {
        self.store == StoreKind::Etcd
    }

    /// Whether a section runs: `--only` words match by case-insensitive substring.
    pub fn wants(&self, name: &str) -> bool {
        debug_assert!(SECTIONS.contains(&name), "unlisted section {name}");
        match &self.only {
            None => true,
            Some(list) => list.iter().any(|w| name.contains(w.as_str())),
        }
    }
}

impl Args {
    /// The combinations clap cannot express: several replicas only share an etcd prefix
    /// (independent sled servers are not one service), the etcd store needs the etcd, and the
    /// sections that preload a store in-process exist for sled only.
    fn check(&self) -> Result<(), String> {
        let etcd = self.etcd_endpoint.as_deref().is_some_and(|e| !e.is_empty());
        match self.store {
            StoreKind::Sled => {
                if self.replicas.iter().flatten().any(|&n| n > 1) {
                    return Err("--replicas above 1 needs --store etcd: independent sled servers do not share their data".into());
                }
            }
            StoreKind::Etcd => {
                if !etcd {
                    return Err("--store etcd needs an etcd: run `scripts/bench.sh --store etcd` (or set --etcd-endpoint)".into());
                }
                if self.big || self.devices > 0 {
                    return Err("--big and --devices preload a sled store in-process: run them without --store etcd".into());
                }
            }
        }
        Ok(())
    }
}

impl From<Args> for Opts {
    fn from(a: Args) -> Self {
        let (warmup, measure, rounds) = if a.quick {
            (Duration::from_millis(300), Duration::from_secs(1), 10)
        } else {
            (Duration::from_secs(1), Duration::from_secs(3), 30)
        };
        Self {
            quick: a.quick,
            big: a.big,
            only: a.only,
            warmup,
            measure,
            fanout_rounds: a.rounds.unwrap_or(rounds),
            watchers: a.watchers,
            big_tokens: a.big_tokens,
            scope_tokens: a.scope_tokens,
            devices: a.devices,
            etcd: a.etcd_endpoint.filter(|s| !s.is_empty()),
            etcd_pid: a.etcd_pid,
            store: a.store,
            pairs: a.pairs.unwrap_or(if a.quick { 0 } else { 3 }),
            replicas: a.replicas.unwrap_or_else(|| match a.store {
                StoreKind::Sled => vec![1],
                StoreKind::Etcd => vec![1, 3],
            }),
        }
    }
}
