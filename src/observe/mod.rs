//! The operations endpoint (`/metrics`, `/healthz`, `/readyz`) served on `--metrics-addr`: an
//! HTTP transport beside gRPC and REST. It reads what the core keeps (the metrics registry in
//! [`crate::core::metrics`], the revision bounds, the record counts, readiness); the core
//! knows nothing of it.
//!
//! Children: `http` (the endpoint).

pub mod http;
