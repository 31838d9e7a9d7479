//! The HTTP authentication and authorization contract of EMQX 5 (`authn` and `authz` backend
//! `http`) and of brokers that copy it (rmqtt's `rmqtt-auth-http`), on the REST listener:
//!
//! - `GET|POST|PUT /mqtt/auth`: a CONNECT (`clientid`, `username`, `password`). Decided by
//!   AuthenticateConnect; on allow the session is recorded (see `core::broker_session`) and
//!   the reply carries `expire_at` and the grant as an `acl`.
//! - `GET|POST|PUT /mqtt/acl`: a publish or subscribe (`clientid`, `username`, `topic`, and
//!   `action` = `publish`/`subscribe` or `access` = `2`/`1`). Brokers send no password here,
//!   so it is decided with the session the CONNECT recorded, by AuthorizeTopic's rules.
//!
//! Guarantees: every request from an authenticated broker gets HTTP 200 with `allow` or an
//! explicit `deny`, never `ignore` (a request it cannot parse is a deny, the reason logged);
//! storage failures are a deny too (logged), never a 5xx a broker might read as "ignore".
//!
//! The broker authenticates with an access key, as HTTP Basic (`Authorization: Basic
//! base64(id:secret)`) or `Authorization: Bearer id:secret`; the key must be allowed on the
//! clients' instances, and it names the namespace its sessions are recorded in. Without a
//! valid key the answer is 401: the caller is not a broker we speak for, so it gets no decision
//! (that would make the endpoint a credential oracle for anyone who can reach it), and a
//! misconfigured broker shows up in its logs as a refused request instead of as mysteriously
//! denied clients. Both brokers read a 4xx as "ignore", which refuses the CONNECT when
//! mqtt-tokend is the authenticator.
//!
//! Children: `params` (request fields from query, JSON or form), `reply` (the JSON answers and
//! the ACL rules).

mod params;
mod reply;

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{RawQuery, State},
    http::{header, HeaderMap},
    response::Response,
    routing::get,
    Router,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use tracing::Instrument;

use crate::core::{
    broker_session::{BrokerAccess, SessionDecision, SessionTopicRequest},
    new_request_id, Caller, Core, Error,
};
use params::{Action, Fields};

/// The CONNECT endpoint.
pub const AUTH_PATH: &str = "/mqtt/auth";
/// The publish/subscribe endpoint.
pub const ACL_PATH: &str = "/mqtt/acl";

/// The two routes, for the REST router to merge. No per-IP limit applies: a broker calls once
/// per CONNECT and per uncached topic check, all from one address.
pub fn routes<S: Clone + Send + Sync + 'static>(core: Arc<Core>) -> Router<S> {
    Router::new()
        .route(AUTH_PATH, get(auth).post(auth).put(auth))
        .route(ACL_PATH, get(acl).post(acl).put(acl))
        .with_state(core)
}

/// Authenticates the broker from `Authorization: Basic …` or `Authorization: Bearer id:secret`.
fn authenticate(core: &Core, headers: &HeaderMap) -> Result<Caller, Error> {
    const MALFORMED: &str =
        "authorization must be Basic base64(<AccessKeyId>:<AccessKeySecret>) or Bearer <AccessKeyId>:<AccessKeySecret>";
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(Error::Unauthenticated(MALFORMED))?
        .to_str()
        .map_err(|_| Error::Unauthenticated(MALFORMED))?;
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or(Error::Unauthenticated(MALFORMED))?;
    let pair = if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(rest.trim())
            .map_err(|_| Error::Unauthenticated(MALFORMED))?;
        String::from_utf8(decoded).map_err(|_| Error::Unauthenticated(MALFORMED))?
    } else if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_owned()
    } else {
        return Err(Error::Unauthenticated(MALFORMED));
    };
    let (id, secret) = pair
        .split_once(':')
        .ok_or(Error::Unauthenticated(MALFORMED))?;
    core.authenticate(id, secret)
}

/// Authenticates the broker and reads the request fields; `Err` is the reply to send.
async fn open(
    core: &Core,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body,
    request_id: &str,
) -> Result<(Caller, Result<Fields, String>), Response> {
    // On a shared store, first catch up with every write acknowledged by any replica.
    let caller = match core.sync().await.and_then(|()| authenticate(core, headers)) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(code = %e.code(), "broker not authenticated");
            return Err(reply::unauthenticated(
                &e.code(),
                &e.to_string(),
                request_id,
            ));
        }
    };
    let fields = match axum::body::to_bytes(body, super::MAX_BODY_BYTES).await {
        Ok(bytes) => Fields::parse(
            query,
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            &bytes,
        ),
        Err(_) => Err(format!(
            "the body is larger than {} bytes",
            super::MAX_BODY_BYTES
        )),
    };
    Ok((caller, fields))
}

async fn auth(
    State(core): State<Arc<Core>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = new_request_id();
    let span = tracing::info_span!("broker_auth", request_id = %request_id);
    async move {
        let (caller, fields) =
            match open(&core, &headers, query.as_deref(), body, &request_id).await {
                Ok(opened) => opened,
                Err(reply) => return reply,
            };
        let fields = match fields {
            Ok(f) => f,
            Err(reason) => {
                tracing::info!(%reason, "CONNECT check not understood; denied");
                return reply::connect_denied(&request_id);
            }
        };
        let decision = core
            .open_broker_session(&caller, &fields.client_id, &fields.username, &fields.password)
            .await;
        match decision {
            Ok(SessionDecision::Allow { grant, expire_ms }) => {
                tracing::debug!(client_id = %fields.client_id, "CONNECT allowed");
                reply::connect_allowed(&grant, expire_ms, &request_id)
            }
            Ok(SessionDecision::Deny(reason)) => {
                tracing::debug!(client_id = %fields.client_id, ?reason, "CONNECT denied");
                reply::connect_denied(&request_id)
            }
            Err(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "CONNECT check failed; denied");
                reply::connect_denied(&request_id)
            }
        }
    }
    .instrument(span)
    .await
}

async fn acl(
    State(core): State<Arc<Core>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = new_request_id();
    let span = tracing::info_span!("broker_acl", request_id = %request_id);
    async move {
        let (caller, fields) =
            match open(&core, &headers, query.as_deref(), body, &request_id).await {
                Ok(opened) => opened,
                Err(reply) => return reply,
            };
        let parsed = fields.and_then(|f| f.action().map(|a| (f, a)));
        let (fields, action) = match parsed {
            Ok(p) => p,
            Err(reason) => {
                tracing::info!(%reason, "topic check not understood; denied");
                return reply::topic_decision(false, &request_id);
            }
        };
        let decision = core.authorize_broker_session(
            &caller,
            SessionTopicRequest {
                client_id: &fields.client_id,
                username: &fields.username,
                password: &fields.password,
                access: match action {
                    Action::Publish => BrokerAccess::Publish,
                    Action::Subscribe => BrokerAccess::Subscribe,
                },
                topic: &fields.topic,
            },
        );
        match decision {
            Ok(Ok(())) => reply::topic_decision(true, &request_id),
            Ok(Err(reason)) => {
                tracing::debug!(client_id = %fields.client_id, ?reason, ?action, "topic denied");
                reply::topic_decision(false, &request_id)
            }
            Err(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "topic check failed; denied");
                reply::topic_decision(false, &request_id)
            }
        }
    }
    .instrument(span)
    .await
}
