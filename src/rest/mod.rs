//! The Action-style REST shim: accepts Alibaba Cloud MQTT's documented requests
//! (`/?Action=ApplyToken&...`, V1 or V3 signed) so the official SDKs work unmodified.
//! A thin transport over the same core as gRPC: parse, authenticate, call the core, map the
//! result. Every response carries a `RequestId` and an `x-acs-request-id` header.
//!
//! Children: `params` (query and form parameters), `auth` (V1/V3 verification, timestamp
//! window, nonce replay cache), `signature` (the signature arithmetic), `actions` (the eight
//! operations), `envelope` (JSON/XML bodies, error codes and HTTP statuses), `recommend` (the
//! hint in error bodies), `observe` (metrics and audit of a request, hooked in `handle`),
//! `broker_http` (the EMQX/rmqtt HTTP auth endpoints under `/mqtt/`). The per-source-IP limit
//! is the core's [`RateLimiter`] keyed by address.

mod actions;
mod auth;
pub mod broker_http;
mod envelope;
mod observe;
mod params;
mod recommend;
pub mod signature;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderMap, HeaderName, Method},
    response::Response,
    routing::any,
};
use tracing::Instrument;

use crate::core::{limits::RateLimiter, new_request_id, now_ms, Core};
use envelope::{Format, RestError};
use params::Params;

/// Largest request body accepted, in bytes. The biggest legitimate request (ApplyToken with
/// 100 resources) is well under this.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest `Host` value echoed back as `HostId`.
const MAX_HOST_ID_LEN: usize = 256;

/// REST-only settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestConfig {
    /// Requests per second per source IP; 0 = unlimited.
    pub rate_per_ip: u32,
}

impl RestConfig {
    /// The defaults (Alibaba: 300 requests/s per IP). The command line's defaults are these.
    pub const DEFAULT: Self = Self { rate_per_ip: 300 };
}

struct RestState {
    core: Arc<Core>,
    auth: auth::Authenticator,
    ip_limit: RateLimiter<IpAddr>,
    rate_per_ip: u32,
}

/// Builds the HTTP router: every request to `/` (GET or POST) is one Action call. Serve it
/// with `into_make_service_with_connect_info::<SocketAddr>()` so the per-IP limit applies;
/// without connection info the limit is skipped.
pub fn router(core: Arc<Core>, config: RestConfig) -> axum::Router {
    let brokers = broker_http::routes(core.clone());
    let state = Arc::new(RestState {
        core,
        auth: auth::Authenticator::default(),
        ip_limit: RateLimiter::default(),
        rate_per_ip: config.rate_per_ip,
    });
    axum::Router::new()
        .route("/", any(handle))
        .merge(brokers)
        .fallback(not_found)
        .with_state(state)
}

/// Paths other than `/`: no such API.
async fn not_found(headers: HeaderMap, request: Request) -> Response {
    let request_id = new_request_id();
    let format = Format::choose(
        Params::from_query(request.uri().query()).get("Format"),
        header_str(&headers, header::ACCEPT),
    );
    envelope::error(
        &RestError::ApiNotSupport,
        &request_id,
        &host_id(&headers),
        format,
    )
}

async fn handle(State(state): State<Arc<RestState>>, request: Request) -> Response {
    let request_id = new_request_id();
    let span = tracing::info_span!("rest", request_id = %request_id);
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let call = observe::RestCall::start(&state.core, &request_id, source);
    async {
        let (parts, body) = request.into_parts();
        let mut params = Params::from_query(parts.uri.query());
        let mut format = Format::choose(
            params.get("Format"),
            header_str(&parts.headers, header::ACCEPT),
        );
        let host = host_id(&parts.headers);
        let fail = |err: RestError, format: Format| {
            log_failure(&err);
            call.record(Some(&err));
            envelope::error(&err, &request_id, &host, format)
        };
        call.set_action(params.get("Action"));

        if let Some(addr) = source {
            if let Err(retry_after_ms) = state.ip_limit.check(addr.ip(), state.rate_per_ip) {
                return fail(RestError::Throttling { retry_after_ms }, format);
            }
        }
        if parts.method != Method::GET && parts.method != Method::POST {
            return fail(RestError::UnsupportedHttpMethod, format);
        }
        let body = match read_body(body).await {
            Ok(b) => b,
            Err(e) => return fail(e, format),
        };
        params.add_form_body(header_str(&parts.headers, header::CONTENT_TYPE), &body);
        format = Format::choose(
            params.get("Format"),
            header_str(&parts.headers, header::ACCEPT),
        );
        call.set_action(
            header_str(&parts.headers, HeaderName::from_static("x-acs-action"))
                .or(params.get("Action")),
        );

        let req = auth::RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            headers: &parts.headers,
            params: &params,
            body: &body,
        };
        // On a shared store, first catch up with every write acknowledged by any replica.
        let synced = state.core.sync().await;
        let authed = match synced
            .map_err(RestError::from)
            .and_then(|()| state.auth.authenticate(&state.core, &req, now_ms()))
        {
            Ok(a) => a,
            Err(e) => {
                let authorization = header_str(&parts.headers, header::AUTHORIZATION);
                return fail(call.auth_failed(e, authorization, &params), format);
            }
        };
        call.set_action(Some(&authed.action));
        tracing::debug!(
            action = %authed.action,
            access_key_id = authed.caller.access_key_id(),
            scheme = authed.scheme.as_str(),
            "request"
        );
        let outcome = actions::dispatch(&state.core, &authed.caller, &authed.action, &params).await;
        match call.audit_action(&authed.caller, &authed.action, &params, outcome) {
            Ok(fields) => {
                call.record(None);
                envelope::success(&authed.action, &request_id, format, fields)
            }
            Err(e) => fail(e, format),
        }
    }
    .instrument(span)
    .await
}

async fn read_body(body: Body) -> Result<axum::body::Bytes, RestError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| RestError::BodyTooLarge {
            limit: MAX_BODY_BYTES,
        })
}

/// Client errors at debug level (they are the client's business), internal ones are logged
/// by the envelope with their cause. Never logs parameters: they may hold tokens.
fn log_failure(err: &RestError) {
    let (status, code, _) = err.describe();
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), %code, "request failed");
    } else {
        tracing::debug!(status = status.as_u16(), %code, "request refused");
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn host_id(headers: &HeaderMap) -> String {
    let host = header_str(headers, header::HOST).unwrap_or("");
    let mut end = host.len().min(MAX_HOST_ID_LEN);
    while !host.is_char_boundary(end) {
        end -= 1;
    }
    host[..end].to_owned()
}
