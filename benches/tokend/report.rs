//! The results: each row as it is measured goes to stderr, and at the end the markdown tables
//! (with every tokend row's ratio to the floor and to its etcd peer) go to stdout.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    args::Opts,
    measure::{Cell, PER_CHANNEL},
    paired::Pairs,
};

/// Which etcd row a tokend row compares to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Peer {
    /// etcd's Health/Check.
    Health,
    /// A serializable Range of one key.
    Range,
    /// A linearizable Range of one key (shown, not a peer of any row).
    RangeLinearizable,
    /// A Put without a lease: a token needs none, its expiry is checked on read.
    Put,
    /// A Put with a lease (shown, not a peer of any row).
    PutLease,
    /// A DeleteRange of one key.
    Delete,
}

/// One measured row, with the floor's and the etcd peer's ops/s of its moment.
struct Row {
    section: String,
    name: String,
    c: usize,
    cell: Cell,
    floor: Option<f64>,
    etcd: Option<f64>,
}

/// Everything a run prints at the end.
#[derive(Default)]
pub struct Report {
    /// The rows, in insertion order per section.
    rows: Vec<Row>,
    /// The floor's ops/s per (section, concurrency): each replica set has its own.
    pub floor: BTreeMap<(String, usize), f64>,
    /// The unary sections of the replica sets on etcd, with their replica counts, for the
    /// scaling table.
    pub replica_sections: Vec<(usize, String)>,
    /// etcd's latest ops/s per (peer, concurrency): a row takes its ratio from the peer cell
    /// measured last before it.
    pub etcd: BTreeMap<(Peer, usize), f64>,
    /// Lines under the tables: errors, cells cut short, missing peers.
    pub notes: Vec<String>,
    /// Paragraphs and tables after the unary tables (start-up, RSS, fan-out, preloads).
    pub extra: Vec<String>,
    /// The operations measured back to back with the floor.
    pub pairs: Pairs,
}

impl Report {
    /// Records a row and prints it to stderr at once.
    pub fn add(&mut self, section: &str, name: &str, c: usize, cell: Cell, peer: Peer) {
        eprintln!(
            "  {name:<46} c={c:<3} {:>9.0} ops/s  p50 {:>8.1} us  p99 {:>8.1} us  p999 {:>8.1} us  srv {:>6.1} us/op {:>4.2} cores  client {:>6.1} us/op{}{}",
            cell.ops_per_s,
            cell.p50_us,
            cell.p99_us,
            cell.p999_us,
            cell.server_cpu_us_per_op.unwrap_or(f64::NAN),
            cell.server_cores.unwrap_or(f64::NAN),
            cell.client_cpu_us_per_op.unwrap_or(f64::NAN),
            match cell.backend_cpu_us_per_op {
                Some(us) => format!("  etcd {us:>6.1} us/op"),
                None => String::new(),
            },
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
        self.rows.push(Row {
            section: section.into(),
            name: name.into(),
            c,
            floor: self.floor.get(&(section.to_owned(), c)).copied(),
            etcd: self.etcd.get(&(peer, c)).copied(),
            cell,
        });
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
            "Each cell: {:.1} s warm-up, {:.1} s measured; one HTTP/2 connection per {PER_CHANNEL} in flight \
             (at least one per replica, spread round-robin). Floor = grpc.health.v1.Health/Check on the same \
             mqtt-tokend server(s). × etcd: reads against etcd Range (serializable), ApplyToken against etcd Put \
             (no lease), RevokeToken against etcd DeleteRange on sled and etcd Put (no lease) on etcd. \
             Server CPU: every replica's, summed; etcd CPU: the etcd the replicas store in; \
             client CPU: this bench process's (the load generator shares the machine).",
            opts.warmup.as_secs_f64(),
            opts.measure.as_secs_f64()
        );
        // Sections whose servers store in etcd get a column for etcd's share of the cost.
        let with_backend: BTreeSet<&str> = self
            .rows
            .iter()
            .filter(|r| r.cell.backend_cpu_us_per_op.is_some())
            .map(|r| r.section.as_str())
            .collect();
        let opt = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "–".into(),
        };
        let mut section = "";
        for Row {
            section: sec,
            name,
            c,
            cell,
            floor,
            etcd,
        } in &self.rows
        {
            let backend = with_backend.contains(sec.as_str());
            if sec != section {
                section = sec;
                println!();
                println!("### {section}");
                println!();
                println!(
                    "| operation | in flight | ops/s | p50 µs | p99 µs | p99.9 µs | × floor | × etcd | server CPU µs/op | server cores | client CPU µs/op |{}",
                    if backend { " etcd CPU µs/op |" } else { "" }
                );
                println!(
                    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{}",
                    if backend { "---:|" } else { "" }
                );
            }
            println!(
                "| {name} | {c} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} |{}",
                cell.ops_per_s,
                cell.p50_us,
                cell.p99_us,
                cell.p999_us,
                Self::ratio(cell.ops_per_s, *floor),
                Self::ratio(cell.ops_per_s, *etcd),
                opt(cell.server_cpu_us_per_op, 1),
                opt(cell.server_cores, 2),
                opt(cell.client_cpu_us_per_op, 1),
                if backend {
                    format!(" {} |", opt(cell.backend_cpu_us_per_op, 1))
                } else {
                    String::new()
                },
            );
        }
        self.print_scaling();
        if let Some(table) = self.pairs.table() {
            print!("{table}");
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

    /// With several replica sets on etcd: each row of the first set's table beside the same row
    /// of the others, as ops/s and × etcd, and the last set's ops/s over the first's.
    fn print_scaling(&self) {
        let [(first_n, first), .., (last_n, last)] = self.replica_sections.as_slice() else {
            return;
        };
        let find = |sec: &str, name: &str, c: usize| {
            self.rows
                .iter()
                .find(|r| r.section == sec && r.name == name && r.c == c)
                .map(|r| (r.cell.ops_per_s, r.etcd))
        };
        println!();
        println!("### Replicas on etcd side by side");
        println!();
        let sets = &self.replica_sections;
        let mut head = String::from("| operation | in flight |");
        let mut rule = String::from("|---|---:|");
        for (n, _) in sets {
            head += &format!(" ops/s, {n} | × etcd, {n} |");
            rule += "---:|---:|";
        }
        println!("{head} {last_n} ÷ {first_n} |");
        println!("{rule}---:|");
        for Row { name, c, .. } in self.rows.iter().filter(|r| &r.section == first) {
            let mut line = format!("| {name} | {c} |");
            for (_, sec) in sets {
                match find(sec, name, *c) {
                    Some((ops, etcd)) => {
                        line += &format!(" {ops:.0} | {} |", Self::ratio(ops, etcd));
                    }
                    None => line += " – | – |",
                }
            }
            let scale = match (find(first, name, *c), find(last, name, *c)) {
                (Some((a, _)), Some((b, _))) => Self::ratio(b, Some(a)),
                _ => "–".into(),
            };
            println!("{line} {scale} |");
        }
    }
}
