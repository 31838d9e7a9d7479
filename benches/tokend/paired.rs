//! Cells paired with the floor: at 64 calls in flight, the floor and an operation measured one
//! right after the other, `--pairs` times, and each operation's ratios to the floor taken as the
//! median of its pairs.
//!
//! Why: on 2 shared cores the machine's speed drifts by 10–30% over a run, and a row's "× floor"
//! divides by a floor measured minutes earlier. A ratio taken from two adjacent cells sees the
//! same machine on both sides; the median of several such pairs is the figure the issue-18
//! goals are checked against.

use std::collections::BTreeMap;

use crate::{
    args::Opts,
    measure::{run_cell, Cell, Op, Target},
    ops::op_health,
};

/// Calls in flight in every paired cell (the goals are set at 64).
pub const PAIRED_CONCURRENCY: usize = 64;

/// One pair: the floor's cell and the operation's, measured back to back.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The floor (Health/Check) just before the operation.
    pub floor: Cell,
    /// The operation.
    pub op: Cell,
}

impl Pair {
    /// The operation's throughput over the floor's.
    fn throughput_ratio(&self) -> f64 {
        self.op.ops_per_s / self.floor.ops_per_s
    }

    /// The operation's server CPU per call over the floor's, when both were read.
    fn cpu_ratio(&self) -> Option<f64> {
        Some(self.op.server_cpu_us_per_op? / self.floor.server_cpu_us_per_op?)
    }
}

/// Measures the floor and then `op` at [`PAIRED_CONCURRENCY`] against `target`.
pub async fn pair(opts: &Opts, target: &Target, op: Op) -> Pair {
    let floor = run_cell(opts, target, PAIRED_CONCURRENCY, op_health()).await;
    let op = run_cell(opts, target, PAIRED_CONCURRENCY, op).await;
    eprintln!(
        "    paired: {:.0} / {:.0} ops/s = {:.2}× the floor, server CPU {:.1} / {:.1} µs",
        op.ops_per_s,
        floor.ops_per_s,
        op.ops_per_s / floor.ops_per_s,
        op.server_cpu_us_per_op.unwrap_or(f64::NAN),
        floor.server_cpu_us_per_op.unwrap_or(f64::NAN),
    );
    Pair { floor, op }
}

/// The pairs of a run, by section and operation, in the order they were first measured.
#[derive(Default)]
pub struct Pairs {
    order: Vec<(String, String)>,
    pairs: BTreeMap<(String, String), Vec<Pair>>,
}

impl Pairs {
    /// Records one pair of `name` in `section`, skipping a pair with an error or without calls
    /// (a ratio of it would mean nothing).
    pub fn add(&mut self, section: &str, name: &str, pair: Pair) {
        if pair.floor.errors > 0 || pair.op.errors > 0 || pair.floor.ops_per_s <= 0.0 {
            eprintln!("    paired: {name} left out (errors or no calls)");
            return;
        }
        let key = (section.to_owned(), name.to_owned());
        if !self.pairs.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.pairs.entry(key).or_default().push(pair);
    }

    /// The markdown table, or `None` when no pair was measured.
    pub fn table(&self) -> Option<String> {
        if self.order.is_empty() {
            return None;
        }
        let mut out = format!(
            "\n### Paired with the floor ({PAIRED_CONCURRENCY} in flight)\n\n\
             Each pair: the floor's cell, then the operation's, back to back; the median of the \
             pairs, with their range.\n\n\
             | section | operation | pairs | × floor | server CPU × floor | server CPU µs/op | floor µs/op | client CPU µs/op |\n\
             |---|---|---:|---:|---:|---:|---:|---:|\n"
        );
        for key in &self.order {
            let pairs = &self.pairs[key];
            let ratio: Vec<f64> = pairs.iter().map(Pair::throughput_ratio).collect();
            let cpu: Vec<f64> = pairs.iter().filter_map(Pair::cpu_ratio).collect();
            let server: Vec<f64> = pairs
                .iter()
                .filter_map(|p| p.op.server_cpu_us_per_op)
                .collect();
            let floor: Vec<f64> = pairs
                .iter()
                .filter_map(|p| p.floor.server_cpu_us_per_op)
                .collect();
            let client: Vec<f64> = pairs
                .iter()
                .filter_map(|p| p.op.client_cpu_us_per_op)
                .collect();
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                key.0,
                key.1,
                pairs.len(),
                spread(&ratio, 2),
                spread(&cpu, 2),
                spread(&server, 1),
                spread(&floor, 1),
                spread(&client, 1),
            );
        }
        Some(out)
    }
}

/// "median (min–max)", or "–" for no values.
fn spread(values: &[f64], digits: usize) -> String {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "–".into();
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    if n == 1 {
        format!("{median:.digits$}")
    } else {
        format!(
            "{median:.digits$} ({:.digits$}–{:.digits$})",
            v[0],
            v[n - 1]
        )
    }
}
