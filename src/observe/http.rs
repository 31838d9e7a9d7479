//! The operations endpoint: `/metrics` (Prometheus text format), `/healthz` (the process
//! answers) and `/readyz` (serving, not shutting down, and the store answers). Plain HTTP:
//! nothing here is secret, and Prometheus scrapes it on a private address.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus_client::encoding::prometheus_text;

use crate::core::Core;

/// The router of the operations endpoint.
pub fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(core)
}

/// Sets the gauges the core and store know, then encodes every metric.
fn render(core: &Core) -> Result<String, String> {
    let m = core.metrics();
    let (oldest, last) = core.revision_bounds();
    m.set_revisions(oldest, last);
    let counts = core.counts().map_err(|e| format!("reading counts: {e}"))?;
    m.set_counts(&counts);
    let size = core
        .store_size()
        .map_err(|e| format!("reading the store size: {e}"))?;
    m.set_store_bytes(size);
    let mut out = String::new();
    m.encode(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

async fn metrics(State(core): State<Arc<Core>>) -> Response {
    match render(&core) {
        Ok(body) => (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(core): State<Arc<Core>>) -> Response {
    match core.ready() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::debug!(code = %e.code(), "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", e.code()),
            )
                .into_response()
        }
    }
}
