//! The results: each row as it is measured goes to stderr, and at the end the markdown tables
//! (with every tokend row's ratio to the floor and to its etcd peer) go to stdout.

use std::collections::BTreeMap;

use crate::{
    args::Opts,
    measure::{Cell, PER_CHANNEL},
};

/// Which etcd row a tokend row compares to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Peer {
    /// etcd's Health/Check.
    Health,
    /// A serializable Range of one key.
    Range,
    /// A Put with a lease.
    Put,
    /// A DeleteRange of one key.
    Delete,
}

/// Everything a run prints at the end.
#[derive(Default)]
pub struct Report {
    /// (section, row name, concurrency, cell, peer), in insertion order per section.
    rows: Vec<(String, String, usize, Cell, Peer)>,
    /// The floor's ops/s per concurrency.
    pub floor: BTreeMap<usize, f64>,
    /// etcd's ops/s per (peer, concurrency).
    pub etcd: BTreeMap<(Peer, usize), f64>,
    /// Lines under the tables: errors, cells cut short, missing peers.
    pub notes: Vec<String>,
    /// Paragraphs and tables after the unary tables (start-up, RSS, fan-out, preloads).
    pub extra: Vec<String>,
}

impl Report {
    /// Records a row and prints it to stderr at once.
    pub fn add(&mut self, section: &str, name: &str, c: usize, cell: Cell, peer: Peer) {
        eprintln!(
            "  {name:<46} c={c:<3} {:>9.0} ops/s  p50 {:>8.1} us  p99 {:>8.1} us  p999 {:>8.1} us  srv {:>6.1} us/op {:>4.2} cores{}",
            cell.ops_per_s,
            cell.p50_us,
            cell.p99_us,
            cell.p999_us,
            cell.server_cpu_us_per_op.unwrap_or(f64::NAN),
            cell.server_cores.unwrap_or(f64::NAN),
            if cell.errors > 0 {
                format!("  ERRORS {} ({:?})", cell.errors, cell.first_error)
            } else {
                String::new()
            }
        );
        if let Some(e) = &cell.first_error {
            self.notes.push(format!(
                "{name} at concurrency {c}: {} errors, first: {e}",
                cell.errors
            ));
        }
        if let Some(w) = cell.cut_short {
            self.notes.push(format!(
                "{name} at concurrency {c}: ran out of pre-made work after {:.2} s of the window; ops/s is over that time",
                w.as_secs_f64()
            ));
        }
        self.rows.push((section.into(), name.into(), c, cell, peer));
    }

    fn ratio(num: f64, den: Option<f64>) -> String {
        match den {
            Some(d) if d > 0.0 => format!("{:.2}", num / d),
            _ => "–".into(),
        }
    }

    /// Prints the markdown tables, the extra lines and the notes to stdout.
    pub fn print(&self, opts: &Opts) {
        println!();
        println!(
            "Each cell: {:.1} s warm-up, {:.1} s measured; one HTTP/2 connection per {PER_CHANNEL} in flight. \
             Floor = grpc.health.v1.Health/Check on the same mqtt-tokend server.",
            opts.warmup.as_secs_f64(),
            opts.measure.as_secs_f64()
        );
        let mut section = String::new();
        for (sec, name, c, cell, peer) in &self.rows {
            if *sec != section {
                section = sec.clone();
                println!();
                println!("### {section}");
                println!();
                println!("| operation | in flight | ops/s | p50 µs | p99 µs | p99.9 µs | × floor | × etcd | server CPU µs/op | server cores |");
                println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            }
            let etcd = self.etcd.get(&(*peer, *c)).copied();
            let opt = |v: Option<f64>, digits: usize| match v {
                Some(v) => format!("{v:.digits$}"),
                None => "–".into(),
            };
            println!(
                "| {name} | {c} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} |",
                cell.ops_per_s,
                cell.p50_us,
                cell.p99_us,
                cell.p999_us,
                Self::ratio(cell.ops_per_s, self.floor.get(c).copied()),
                Self::ratio(cell.ops_per_s, etcd),
                opt(cell.server_cpu_us_per_op, 1),
                opt(cell.server_cores, 2),
            );
        }
        for e in &self.extra {
            println!("{e}");
        }
        if !self.notes.is_empty() {
            println!();
            println!("Notes:");
            for n in &self.notes {
                println!("- {n}");
            }
        }
    }
}
