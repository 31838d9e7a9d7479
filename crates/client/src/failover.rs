//! Failover across several endpoints of one service (replicas that share one store).
//!
//! Guarantees:
//! - A [`Client`](crate::Client) sends every call to its *current* endpoint: the one that last
//!   worked, the first one at the start. Clones share it, so the typed clients, the
//!   [`RevocationFollower`](crate::RevocationFollower) and any helper agree on where the
//!   service is.
//! - A call that fails in the transport (connection refused or reset, TLS handshake failed,
//!   no answer within [`ClientConfig::timeout`](crate::ClientConfig::timeout)) or is answered
//!   UNAVAILABLE (a replica shutting down) moves the current endpoint to the next in the
//!   list, round-robin. The failed call itself is not repeated here: only the
//!   caller knows whether it is safe to repeat; [`Client::call_with_failover`] does it for
//!   calls that are.
//! - Concurrent failures of one endpoint move past it once, not once per call.
//! - With one endpoint nothing changes: it stays current, and its connection reconnects by
//!   itself as before.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use tonic::{
    body::Body,
    codegen::{http, Service, StdError},
    transport::Channel,
    Code, Status,
};

use crate::{body::EndsWithLastFrame, client::Client};

/// One endpoint: its URI as configured and its connection (lazy unless it was connected
/// eagerly).
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) uri: String,
    pub(crate) channel: Channel,
}

/// The endpoints of one [`Client`] and its clones, and which one calls go to.
#[derive(Debug)]
pub(crate) struct Pool {
    /// Never empty: [`crate::ClientConfig`] refuses an empty list.
    targets: Vec<Target>,
    /// Index of the current endpoint, always `< targets.len()`.
    current: AtomicUsize,
}

impl Pool {
    /// A pool over `targets` (not empty), calls going to `current` first.
    pub(crate) fn new(targets: Vec<Target>, current: usize) -> Self {
        debug_assert!(!targets.is_empty() && current < targets.len());
        Self {
            targets,
            current: AtomicUsize::new(current),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.targets.len()
    }

    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    /// The endpoint at `index`, wrapping around.
    pub(crate) fn target(&self, index: usize) -> &Target {
        &self.targets[index % self.targets.len()]
    }

    /// `index` failed: the next endpoint becomes current, unless another caller has already
    /// moved on (so a burst of failures on one endpoint skips it once, not once per call).
    pub(crate) fn failed(&self, index: usize) {
        let next = (index + 1) % self.targets.len();
        let _ = self
            .current
            .compare_exchange(index, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// `index` answered: it becomes current.
    pub(crate) fn worked(&self, index: usize) {
        self.current
            .store(index % self.targets.len(), Ordering::Release);
    }
}

/// The transport of a [`Client`]: routes each call to the current endpoint (or to the one
/// it is pinned to) and moves to the next endpoint when the call fails in the transport or
/// is answered UNAVAILABLE. See the module docs.
#[derive(Debug)]
pub struct FailoverChannel {
    pool: Arc<Pool>,
    /// Every call goes to this endpoint, whichever is current (one attempt of
    /// [`Client::call_with_failover`], one stream of the follower).
    pinned: Option<usize>,
    /// The endpoint `poll_ready` reserved a slot on, for the `call` that follows.
    ready: Option<(usize, Channel)>,
}

impl FailoverChannel {
    pub(crate) fn new(pool: Arc<Pool>, pinned: Option<usize>) -> Self {
        Self {
            pool,
            pinned,
            ready: None,
        }
    }
}

/// A clone has no reserved slot: the slot belongs to the clone whose `poll_ready` took it (as
/// with the channel's own buffer, whose clones do not share permits).
impl Clone for FailoverChannel {
    fn clone(&self) -> Self {
        Self::new(self.pool.clone(), self.pinned)
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, StdError>> + Send + 'static>>;

impl Service<http::Request<Body>> for FailoverChannel {
    type Response = http::Response<Body>;
    type Error = StdError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let (index, channel) = self.ready.get_or_insert_with(|| {
            let index = self.pinned.unwrap_or_else(|| self.pool.current());
            (index, self.pool.target(index).channel.clone())
        });
        match Service::poll_ready(channel, cx) {
            Poll::Ready(Err(e)) => {
                self.pool.failed(*index);
                self.ready = None;
                Poll::Ready(Err(e.into()))
            }
            other => other.map_err(Into::into),
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The slot reserved by `poll_ready` belongs to that clone of the channel; calling
        // without one breaks the `Service` contract (and would panic in the channel's buffer).
        let Some((index, mut channel)) = self.ready.take() else {
            return Box::pin(async { Err("FailoverChannel called before poll_ready".into()) });
        };
        let pool = self.pool.clone();
        let pinned = self.pinned.is_some();
        let response = channel.call(request.map(EndsWithLastFrame::wrap));
        Box::pin(async move {
            match response.await {
                Ok(response) if answered_unavailable(&response) => {
                    pool.failed(index);
                    Ok(response)
                }
                Ok(response) => {
                    if pinned {
                        pool.worked(index);
                    }
                    Ok(response)
                }
                Err(e) => {
                    pool.failed(index);
                    Err(e.into())
                }
            }
        })
    }
}

/// A "trailers-only" answer whose status is UNAVAILABLE: how a server that refuses a call
/// (shutting down, overloaded) answers before any message.
fn answered_unavailable(response: &http::Response<Body>) -> bool {
    response
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"14")
}

/// Whether a status means "try another endpoint": the endpoint cannot be reached or refuses
/// service for now (UNAVAILABLE is also what the transport's connection errors become).
pub(crate) fn is_unavailable(status: &Status) -> bool {
    status.code() == Code::Unavailable
}

impl Client {
    /// Runs a call that is safe to repeat (a check, a read) with failover: first on the
    /// current endpoint and, while it fails with UNAVAILABLE (refused connection, a replica
    /// shutting down) or outlasts its share of `budget`, on the next one; each endpoint at
    /// most once. An attempt's share is what is left of `budget` divided by the endpoints
    /// not tried yet, so one hung endpoint cannot spend the others' time; the whole call
    /// never takes longer than `budget`. The endpoint that answers becomes current.
    ///
    /// `call` gets a client pinned to the attempt's endpoint:
    /// ```no_run
    /// # async fn f(client: mqtt_tokend_client::Client, request: mqtt_tokend_client::proto::AuthenticateConnectRequest) -> Result<(), tonic::Status> {
    /// let answer = client
    ///     .call_with_failover(std::time::Duration::from_secs(2), |c| {
    ///         let request = request.clone();
    ///         async move { c.broker().authenticate_connect(request).await }
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The last attempt's status: any status other than UNAVAILABLE at once, UNAVAILABLE
    /// when every endpoint refused, DEADLINE_EXCEEDED when the last attempt ran out of time.
    pub async fn call_with_failover<T, F, Fut>(
        &self,
        budget: Duration,
        mut call: F,
    ) -> Result<T, Status>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = tokio::time::Instant::now() + budget;
        let pool = self.pool();
        let first = self.pinned().unwrap_or_else(|| pool.current());
        // A pinned client has one endpoint to try.
        let attempts = if self.pinned().is_some() {
            1
        } else {
            pool.len()
        };
        let mut last = Status::unavailable("no endpoint was tried");
        for attempt in 0..attempts {
            let index = (first + attempt) % pool.len();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let untried = u32::try_from(attempts - attempt).unwrap_or(u32::MAX);
            let share = left / untried;
            match tokio::time::timeout(share, call(self.pin(index))).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(status)) if is_unavailable(&status) => {
                    pool.failed(index);
                    last = status;
                }
                Ok(Err(status)) => return Err(status),
                Err(_) => {
                    pool.failed(index);
                    last = Status::deadline_exceeded(format!(
                        "{} did not answer within {share:?}",
                        pool.target(index).uri
                    ));
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Pool {
        let targets = (0..n)
            .map(|i| {
                let uri = format!("http://127.0.0.1:{}", 1000 + i);
                let channel = tonic::transport::Endpoint::from_shared(uri.clone())
                    .expect("uri")
                    .connect_lazy();
                Target { uri, channel }
            })
            .collect();
        Pool::new(targets, 0)
    }

    #[tokio::test]
    async fn failures_move_round_robin_and_once_per_endpoint() {
        let p = pool(3);
        p.failed(0);
        p.failed(0);
        assert_eq!(p.current(), 1, "a burst of failures of 0 skips it once");
        p.failed(1);
        p.failed(2);
        assert_eq!(p.current(), 0, "wraps around");
        p.worked(2);
        assert_eq!(p.current(), 2, "the endpoint that answered");
        let one = pool(1);
        one.failed(0);
        assert_eq!(one.current(), 0, "one endpoint stays current");
    }

    #[test]
    fn only_a_trailers_only_unavailable_counts() {
        let answer = |status: Option<&'static str>| {
            let mut response = http::Response::new(Body::empty());
            if let Some(status) = status {
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static(status));
            }
            answered_unavailable(&response)
        };
        assert!(answer(Some("14")));
        assert!(!answer(Some("0")));
        assert!(!answer(Some("4")));
        assert!(!answer(None), "a normal answer's status comes in trailers");
    }
}
