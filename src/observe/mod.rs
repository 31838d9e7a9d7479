//! Observability: Prometheus metrics, the audit log sink, and the operations endpoint
//! (`/metrics`, `/healthz`, `/readyz`) served on `--metrics-addr`.
//!
//! `metrics` and `audit` are leaves (no core types), so the core and both transports record
//! into them; `http` reads the core's gauges at scrape time.
//!
//! Children: `metrics` (the metric families), `audit` (the JSON-lines sink), `http` (the
//! endpoint).

pub mod audit;
pub mod http;
pub mod metrics;

pub use audit::{AuditDestination, AuditLog};
pub use metrics::Metrics;
