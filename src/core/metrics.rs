//! The service's Prometheus metrics, on one `prometheus-client` registry per server.
//!
//! Counters and histograms are recorded where things happen (the transports' request choke
//! points, group commit, the watchers); gauges that the store already knows (revisions, live
//! records, store size) are set at scrape time by the operations endpoint (`observe::http`)
//! from what [`Core`](super::Core) reports, so a scrape never scans data. The registry lives
//! here, beside the core that records into it; serving it over HTTP is the endpoint's job.
//! Label values are fixed names (operations, codes, reasons): never a secret, a token, a
//! client id or anything else a client chose, which also keeps cardinality bounded.

use std::{borrow::Cow, time::Duration};

use prometheus_client::{
    encoding::{prometheus_text, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use super::Counts;

mod ok_series;

/// Prefix of every metric name.
pub const PREFIX: &str = "mqtt_tokend";

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    transport: &'static str,
    operation: &'static str,
    code: Cow<'static, str>,
}

/// Labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    transport: &'static str,
    operation: &'static str,
}

/// A denial reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// A topic denial: the action and the reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    action: &'static str,
    reason: &'static str,
}

/// One listener (gRPC or REST).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

/// A success or a failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Every metric of one server. Cheap to record into from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<OperationLabels, Histogram, fn() -> Histogram>,
    rate_limited: Family<OperationLabels, Counter>,
    connect_denied: Family<ReasonLabels, Counter>,
    topic_denied: Family<TopicLabels, Counter>,
    flush_batch: Histogram,
    flush_seconds: Histogram,
    flush_failures: Counter,
    write_conflicts: Counter,
    watch_streams: Gauge,
    watch_catching_up: Gauge,
    watch_events: Counter,
    audit_failures: Counter,
    tls_reloads: Family<ResultLabels, Counter>,
    tls_handshake_failures: Family<ListenerLabels, Counter>,
    /// Handles to the OK series of `requests` and `request_seconds`, by operation.
    ok: ok_series::OkTable,
    // Set from the core and the store at scrape time.
    revision: Gauge,
    oldest_revision: Gauge,
    tokens: Gauge,
    device_credentials: Gauge,
    access_keys: Gauge,
    store_bytes: Gauge,
}

/// A count as a gauge value (gauges are `i64`); saturates rather than wrapping.
fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~6.5 s: reads take tens of µs, durable writes a few ms.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics on its own registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds: Family<OperationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let rate_limited = Family::<OperationLabels, Counter>::default();
        let connect_denied = Family::<ReasonLabels, Counter>::default();
        let topic_denied = Family::<TopicLabels, Counter>::default();
        let flush_batch = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let flush_seconds = latency_histogram();
        let mut metrics = Self {
            requests,
            request_seconds,
            rate_limited,
            connect_denied,
            topic_denied,
            flush_batch,
            flush_seconds,
            flush_failures: Counter::default(),
            write_conflicts: Counter::default(),
            watch_streams: Gauge::default(),
            watch_catching_up: Gauge::default(),
            watch_events: Counter::default(),
            audit_failures: Counter::default(),
            tls_reloads: Family::default(),
            tls_handshake_failures: Family::default(),
            ok: ok_series::OkTable::new(),
            revision: Gauge::default(),
            oldest_revision: Gauge::default(),
            tokens: Gauge::default(),
            device_credentials: Gauge::default(),
            access_keys: Gauge::default(),
            store_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        let r = &mut registry;
        r.register(
            "requests",
            "Finished API calls by transport (grpc, rest), operation and result code (OK or the error code)",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Latency of API calls by transport and operation, from authentication to response",
            m.request_seconds.clone(),
        );
        r.register(
            "rate_limited",
            "Calls refused by a rate limit (per access key, or per source IP on REST), by transport and operation",
            m.rate_limited.clone(),
        );
        r.register(
            "connect_denied",
            "AuthenticateConnect calls answered allowed=false, by deny reason",
            m.connect_denied.clone(),
        );
        r.register(
            "topic_denied",
            "AuthorizeTopic calls answered allowed=false, by action and deny reason",
            m.topic_denied.clone(),
        );
        r.register(
            "group_commit_batch_size",
            "Writes made durable by one group-commit flush",
            m.flush_batch.clone(),
        );
        r.register(
            "group_commit_flush_duration_seconds",
            "Duration of one group-commit flush",
            m.flush_seconds.clone(),
        );
        r.register(
            "group_commit_flush_failures",
            "Group-commit flushes that failed (their writers got InternalError)",
            m.flush_failures.clone(),
        );
        r.register(
            "store_write_conflicts",
            "Writes built again because another replica changed what they read (shared store)",
            m.write_conflicts.clone(),
        );
        r.register(
            "revocation_revision",
            "The newest durable revocation revision",
            m.revision.clone(),
        );
        r.register(
            "revocation_oldest_revision",
            "The oldest revocation revision still retained (older ones are compacted)",
            m.oldest_revision.clone(),
        );
        r.register(
            "watch_streams",
            "Open WatchRevocations streams",
            m.watch_streams.clone(),
        );
        r.register(
            "watch_catching_up",
            "Watch streams currently reading missed events from storage",
            m.watch_catching_up.clone(),
        );
        r.register(
            "watch_events_sent",
            "Revocation events sent on watch streams",
            m.watch_events.clone(),
        );
        r.register(
            "tokens",
            "Live tokens: issued and not revoked (an expired token leaves at the next sweep)",
            m.tokens.clone(),
        );
        r.register(
            "device_credentials",
            "Registered device credentials",
            m.device_credentials.clone(),
        );
        r.register(
            "access_keys",
            "Access keys, root included",
            m.access_keys.clone(),
        );
        r.register(
            "store_size_bytes",
            "Bytes the data directory's database occupies on disk",
            m.store_bytes.clone(),
        );
        r.register(
            "audit_write_failures",
            "Audit lines that could not be written (their requests failed with InternalError)",
            m.audit_failures.clone(),
        );
        r.register(
            "tls_reloads",
            "Certificate reloads (SIGHUP) by result (ok, error: the old certificate stays)",
            m.tls_reloads.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener",
            m.tls_handshake_failures.clone(),
        );
        metrics.registry = registry;
        metrics
    }

    /// Encodes every metric in the Prometheus text format.
    ///
    /// # Errors
    /// Writing to `out` failed.
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_text::encode(out, &self.registry)
    }

    /// Sets the revocation log's revision gauges: the oldest retained and the newest durable.
    pub fn set_revisions(&self, oldest: u64, last: u64) {
        self.oldest_revision.set(gauge_value(oldest));
        self.revision.set(gauge_value(last));
    }

    /// Sets the record-count gauges.
    pub fn set_counts(&self, counts: &Counts) {
        self.tokens.set(gauge_value(counts.tokens));
        self.device_credentials
            .set(gauge_value(counts.device_credentials));
        self.access_keys.set(gauge_value(counts.access_keys));
    }

    /// Sets the gauge of the store's size on disk.
    pub fn set_store_bytes(&self, bytes: u64) {
        self.store_bytes.set(gauge_value(bytes));
    }

    /// Records one finished API call. `code` is `OK` or the error code the client got.
    pub fn request(
        &self,
        transport: &'static str,
        operation: &'static str,
        code: Cow<'static, str>,
        elapsed: Duration,
    ) {
        if code == "OK" {
            let make = || {
                let labels = RequestLabels {
                    transport,
                    operation,
                    code: Cow::Borrowed("OK"),
                };
                let op = OperationLabels {
                    transport,
                    operation,
                };
                let count = self.requests.get_or_create(&labels).clone();
                (count, self.request_seconds.get_or_create(&op).clone())
            };
            if let Some(series) = self.ok.get(transport, operation, make) {
                series.count.inc();
                series.seconds.observe(elapsed.as_secs_f64());
                return;
            }
        }
        self.requests
            .get_or_create(&RequestLabels {
                transport,
                operation,
                code,
            })
            .inc();
        self.request_seconds
            .get_or_create(&OperationLabels {
                transport,
                operation,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records a call refused by a rate limit.
    pub fn rate_limited(&self, transport: &'static str, operation: &'static str) {
        self.rate_limited
            .get_or_create(&OperationLabels {
                transport,
                operation,
            })
            .inc();
    }

    /// Records a denied CONNECT.
    pub fn connect_denied(&self, reason: &'static str) {
        self.connect_denied
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Records a denied publish or subscribe.
    pub fn topic_denied(&self, action: &'static str, reason: &'static str) {
        self.topic_denied
            .get_or_create(&TopicLabels { action, reason })
            .inc();
    }

    /// Records one group-commit flush of `batch` waiting writers.
    pub fn flush(&self, batch: usize, elapsed: Duration, ok: bool) {
        self.flush_batch.observe(batch as f64);
        self.flush_seconds.observe(elapsed.as_secs_f64());
        if !ok {
            self.flush_failures.inc();
        }
    }

    /// Records a write that lost a compare-and-swap race with another replica.
    pub fn write_conflict(&self) {
        self.write_conflicts.inc();
    }

    /// Counts an open watch stream until the returned guard drops.
    pub fn watch_stream(&self) -> GaugeGuard {
        GaugeGuard::new(&self.watch_streams)
    }

    /// Counts a watcher reading from storage until the returned guard drops.
    pub fn watch_catching_up(&self) -> GaugeGuard {
        GaugeGuard::new(&self.watch_catching_up)
    }

    /// Records one event sent to a watcher.
    pub fn watch_event_sent(&self) {
        self.watch_events.inc();
    }

    /// Records an audit line that could not be written.
    pub fn audit_failure(&self) {
        self.audit_failures.inc();
    }

    /// Records a certificate reload.
    pub fn tls_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Records a failed TLS handshake on `listener` (`grpc` or `rest`).
    pub fn tls_handshake_failure(&self, listener: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }
}

/// Increments a gauge now and decrements it when dropped, so every exit path (an error, a
/// cancelled task) gives the count back.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
