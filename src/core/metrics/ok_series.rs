//! The two series every successful API call records (its `requests` count with code `OK` and
//! its latency histogram), found without a label lookup. Each (transport, operation) pair takes
//! a slot of a fixed table the first time it succeeds; the slot holds handles to the very
//! series the families encode, so the scrape output is what the families alone would give. A
//! pair whose probe run is taken by other pairs records through the families, as before.
//!
//! Why: a family lookup hashes the label set (SipHash over three strings) under the family's
//! read lock, and every call did two of them.

use std::sync::OnceLock;

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

/// Slots of the table: about 40 pairs exist (every gRPC method and REST action).
const SLOTS: usize = 128;
/// Slots a pair may probe before it gives up on the table.
const PROBES: usize = 8;

/// The handles of one pair's series.
pub(super) struct OkSeries {
    transport: &'static str,
    operation: &'static str,
    /// `requests{transport, operation, code="OK"}`.
    pub(super) count: Counter,
    /// `request_duration_seconds{transport, operation}`.
    pub(super) seconds: Histogram,
}

/// The table; slots are filled once and never change.
pub(super) struct OkTable(Box<[OnceLock<OkSeries>]>);

impl std::fmt::Debug for OkTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.0.iter().filter(|s| s.get().is_some()).count();
        f.debug_struct("OkTable").field("used", &used).finish()
    }
}

/// FNV-1a over the pair, with a separator so ("ab", "c") and ("a", "bc") differ.
fn slot_of(transport: &str, operation: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in transport
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(operation.as_bytes())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // The table's size is far below usize::MAX: the remainder fits.
    usize::try_from(h % SLOTS as u64).unwrap_or(0)
}

impl OkTable {
    pub(super) fn new() -> Self {
        Self((0..SLOTS).map(|_| OnceLock::new()).collect())
    }

    /// The series of the pair, taking a free slot with the handles `make` returns on first
    /// use; None when the pair's probe run is full of other pairs.
    pub(super) fn get(
        &self,
        transport: &'static str,
        operation: &'static str,
        make: impl Fn() -> (Counter, Histogram),
    ) -> Option<&OkSeries> {
        let start = slot_of(transport, operation);
        (0..PROBES).find_map(|i| {
            let series = self.0[(start + i) % SLOTS].get_or_init(|| {
                let (count, seconds) = make();
                OkSeries {
                    transport,
                    operation,
                    count,
                    seconds,
                }
            });
            (series.transport == transport && series.operation == operation).then_some(series)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_keeps_its_slot_and_a_full_run_gives_up() {
        let table = OkTable::new();
        let make = || (Counter::default(), Histogram::new([1.0]));
        let first = table.get("grpc", "QueryToken", make).expect("a free slot");
        first.count.inc();
        let again = table.get("grpc", "QueryToken", make).expect("its slot");
        assert_eq!(again.count.get(), 1, "the same handles");
        assert!(table
            .get("rest", "QueryToken", make)
            .is_some_and(|s| s.count.get() == 0));
        // More pairs than one probe run holds, all on one run: the later ones give up.
        let start = slot_of("grpc", "QueryToken");
        let colliding: Vec<&'static str> = (0..100_000)
            .map(|i| &*Box::leak(format!("Op{i}").into_boxed_str()))
            .filter(|op| slot_of("x", op) == start)
            .take(PROBES + 1)
            .collect();
        let found = colliding
            .iter()
            .filter(|op| table.get("x", op, make).is_some())
            .count();
        assert!(found < colliding.len(), "a full run must give up");
    }

    #[test]
    fn cached_and_family_records_are_one_series() {
        use std::{borrow::Cow, time::Duration};
        let metrics = crate::core::Metrics::new();
        let elapsed = Duration::from_micros(30);
        for _ in 0..3 {
            metrics.request("grpc", "QueryToken", Cow::Borrowed("OK"), elapsed);
        }
        let code = Cow::Owned("InvalidParameter.Token".to_owned());
        metrics.request("grpc", "QueryToken", code, elapsed);
        let mut out = String::new();
        metrics.encode(&mut out).expect("encodes");
        for line in [
            r#"mqtt_tokend_requests_total{transport="grpc",operation="QueryToken",code="OK"} 3"#,
            r#"mqtt_tokend_requests_total{transport="grpc",operation="QueryToken",code="InvalidParameter.Token"} 1"#,
            r#"mqtt_tokend_request_duration_seconds_count{transport="grpc",operation="QueryToken"} 4"#,
        ] {
            assert!(out.lines().any(|l| l == line), "{line} not in\n{out}");
        }
    }
}
