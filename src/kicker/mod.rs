//! `mqtt-tokend kicker`: disconnects the clients of HTTP-auth brokers (EMQX 5, rmqtt) whose
//! credential was revoked. A client of the service like any broker: it uses the client crate
//! only (`connect`, `RevocationFollower`, `BrokerSessionService`), never the core.
//!
//! For each revocation event, in revision order: the credential it names (token fingerprint,
//! device access key id or access key id), the client ids recorded on it under the kicker's
//! key (`ListCredentialSessions`, paged, in the event's instance), and one `DELETE` per client
//! id through the broker's management API.
//!
//! Guarantees:
//! - No kick is dropped: an event's revision is saved (in `--state-file`) only after every
//!   kick of the event succeeded (2xx, or 404: already gone). A kick that fails is retried with
//!   backoff, `--kick-attempts` times at most; then the kicker exits with an error and the
//!   unsaved event is handled again by its restart (kicks are idempotent).
//! - Resume: a restart continues after the saved revision, so handled events are not kicked
//!   again; with no saved revision, or one the service has compacted (OUT_OF_RANGE), it reads a
//!   snapshot, which holds every revocation whose credential has not expired, and kicks the
//!   sessions on each. Nothing is saved mid-snapshot.
//! - Service outages: the stream reconnects with backoff; a listing that keeps failing makes
//!   the kicker resume from its saved revision, on the next `--service` endpoint if several.
//! - Memory: one event, one page of client ids and `--kick-concurrency` requests at a time;
//!   no set grows with the number of events or sessions.
//!
//! Children: `args` (the flags), `sessions` (event to credential, paged listing),
//! `broker_api` (the EMQX and rmqtt kick requests and their retries).

pub mod args;
pub mod broker_api;
pub mod sessions;

use std::{future::Future, time::Duration};

use mqtt_tokend_client::{
    AccessKey, Client, ClientConfig, ConnectError, FollowItem, FollowerOptions, RevisionFile,
    RevisionStore, RevocationEvent, RevocationFollower, WatchError,
};
use tokio::task::JoinSet;
use tonic::Code;

pub use args::{BrokerKind, KickerArgs};
use broker_api::{BrokerApi, BrokerApiError, Kicked, RetryPolicy};
use sessions::{credential_of, instances_of, ListError, SessionPages};

/// Consecutive stream failures before the kicker moves to the next `--service` endpoint.
const FAILOVER_AFTER: u32 = 3;
/// Bound on establishing a connection to the service.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a unary call to the service.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the kicker stopped.
#[derive(Debug, thiserror::Error)]
pub enum KickerError {
    /// Neither a key file nor an id and secret were given.
    #[error("no access key: set --access-key-file, or --access-key-id and --access-key-secret")]
    NoAccessKey,
    /// The key file is unusable.
    #[error("reading the access key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        source: mqtt_tokend_client::KeyFileError,
    },
    /// EMQX's API always needs an API key.
    #[error("--broker emqx needs --broker-api-key and --broker-api-secret (an EMQX API key)")]
    NoBrokerCredential,
    /// A `--service` endpoint or the key cannot be used.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The broker API cannot be used, or a kick failed over every attempt.
    #[error(transparent)]
    BrokerApi(#[from] BrokerApiError),
    /// The service refused the kicker for a reason retrying cannot fix.
    #[error("the service refused the kicker: {}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
}

/// The revision file, logging each save (the point from which a restart resumes).
#[derive(Debug, Clone)]
struct StateFile(RevisionFile);

impl RevisionStore for StateFile {
    fn load(&mut self) -> Option<u64> {
        self.0.load()
    }

    fn save(&mut self, revision: u64) -> std::io::Result<()> {
        self.0.save(revision)?;
        tracing::debug!(revision, "state saved");
        Ok(())
    }
}

/// A kick task's result, with its client id.
type KickOutcome = (String, Result<Kicked, BrokerApiError>);

/// How handling one event ended, when not in success.
enum EventError {
    /// Stop the kicker.
    Fatal(KickerError),
    /// The service is unreachable: resume from the saved revision.
    Unavailable(tonic::Status),
}

/// The running kicker.
struct Kicker {
    args: KickerArgs,
    api: BrokerApi,
    /// One lazily connecting client per `--service` endpoint, in order.
    clients: Vec<Client>,
    /// The endpoint in use.
    endpoint: usize,
    follower: RevocationFollower<StateFile>,
    /// Consecutive stream failures.
    failures: u32,
}

/// Runs the kicker until `shutdown` completes. A shutdown in the middle of an event leaves
/// the event unsaved: the next start handles it again.
///
/// # Errors
/// The configuration is unusable, the service refuses the kicker's key, or a kick failed over
/// every attempt.
pub async fn run(args: KickerArgs, shutdown: impl Future<Output = ()>) -> Result<(), KickerError> {
    let mut kicker = Kicker::new(args)?;
    tracing::info!(
        service = %kicker.args.service[kicker.endpoint],
        broker = ?kicker.args.broker,
        broker_api = %kicker.args.broker_api,
        resume_after = ?kicker.follower.revision(),
        "kicker started"
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => {
                tracing::info!("kicker stopped");
                return Ok(());
            }
            step = kicker.step() => step?,
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `host:port` means `http://host:port`.
fn endpoint_uri(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

impl Kicker {
    fn new(args: KickerArgs) -> Result<Self, KickerError> {
        let key = args.access_key()?;
        let api = BrokerApi::new(
            args.broker,
            &args.broker_api,
            &args.broker_auth()?,
            args.broker_api_ca.as_deref(),
            args.broker_api_timeout,
            RetryPolicy {
                attempts: args.kick_attempts,
                min: args.kick_backoff_min,
                max: args.kick_backoff_max,
            },
        )?;
        if args.service.is_empty() {
            return Err(ConnectError::NoEndpoint.into());
        }
        // Every endpoint is checked now, not at the first failover.
        let clients = args
            .service
            .iter()
            .map(|endpoint| Self::connect(endpoint, &key))
            .collect::<Result<Vec<_>, _>>()?;
        let store = StateFile(RevisionFile::new(&args.state_file));
        let follower = Self::follow(&clients[0], store, &args);
        Ok(Self {
            args,
            api,
            clients,
            endpoint: 0,
            follower,
            failures: 0,
        })
    }

    /// A client that connects on its first call, so the kicker may start before the service.
    fn connect(endpoint: &str, key: &AccessKey) -> Result<Client, ConnectError> {
        ClientConfig::new([endpoint_uri(endpoint)])
            .access_key(key.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy()
    }

    fn follow(
        client: &Client,
        store: StateFile,
        args: &KickerArgs,
    ) -> RevocationFollower<StateFile> {
        RevocationFollower::new(
            client,
            store,
            FollowerOptions::default().instance_ids(args.instance_ids.clone()),
        )
    }

    /// Follows from the saved revision again, on the next endpoint if there are several. The
    /// event being handled, unsaved, is delivered again.
    fn resume(&mut self) {
        if self.clients.len() > 1 {
            self.endpoint = (self.endpoint + 1) % self.clients.len();
            tracing::warn!(service = %self.args.service[self.endpoint], "switching to the next service endpoint");
        }
        let store = self.follower.store().clone();
        self.follower = Self::follow(&self.clients[self.endpoint], store, &self.args);
    }

    /// Takes the next item from the stream and handles it. Returning means the item is
    /// handled; the follower saves its revision when asked for the next one.
    async fn step(&mut self) -> Result<(), KickerError> {
        match self.follower.next().await {
            FollowItem::Event(event) => {
                self.failures = 0;
                match self.handle(&event).await {
                    Ok(()) => {}
                    Err(EventError::Fatal(e)) => return Err(e),
                    Err(EventError::Unavailable(status)) => {
                        tracing::warn!(revision = event.revision, code = ?status.code(), message = status.message(), "the service is unavailable mid-event; resuming from the saved revision");
                        self.resume();
                    }
                }
            }
            FollowItem::SnapshotBegin(reason) => {
                self.failures = 0;
                tracing::info!(
                    ?reason,
                    "reading a snapshot: kicking the sessions of every revocation in it"
                );
            }
            FollowItem::SnapshotEnd { revision } => {
                tracing::info!(revision, "snapshot complete; following live revocations");
            }
            FollowItem::Progress { revision } => {
                self.failures = 0;
                tracing::trace!(revision, "progress");
            }
            FollowItem::Disconnected { error, retry_in } => {
                if let WatchError::Status(status) = &error {
                    if !sessions::transient(status.code()) && status.code() != Code::OutOfRange {
                        return Err(KickerError::Refused(status.clone()));
                    }
                }
                self.failures += 1;
                tracing::warn!(%error, ?retry_in, "revocation stream interrupted");
                if self.failures >= FAILOVER_AFTER && self.clients.len() > 1 {
                    self.failures = 0;
                    self.resume();
                }
            }
            FollowItem::SaveFailed { revision, error } => {
                tracing::error!(revision, %error, state_file = %self.args.state_file.display(), "saving the revision failed; a restart will handle some events again");
            }
        }
        Ok(())
    }

    /// Kicks every session resting on the credential `event` revokes.
    async fn handle(&self, event: &RevocationEvent) -> Result<(), EventError> {
        let Some(credential) = credential_of(event) else {
            tracing::debug!(revision = event.revision, kind = ?event.kind, "revocation ends no session");
            return Ok(());
        };
        let mut kicked = 0usize;
        for instance in instances_of(event, &self.args.instance_ids) {
            let mut pages = SessionPages::new(
                &self.clients[self.endpoint],
                instance,
                credential.clone(),
                self.args.page_size,
            );
            while let Some(page) = pages.next_page().await.map_err(|e| match e {
                ListError::Refused(status) => EventError::Fatal(KickerError::Refused(status)),
                ListError::Unavailable(status) => EventError::Unavailable(status),
            })? {
                kicked += page.len();
                self.kick_all(event, page)
                    .await
                    .map_err(EventError::Fatal)?;
            }
        }
        tracing::info!(
            revision = event.revision,
            kind = ?event.kind,
            instance = %event.instance_id,
            sessions = kicked,
            "revocation handled"
        );
        Ok(())
    }

    /// Kicks `client_ids`, `--kick-concurrency` at a time; the first kick that fails for
    /// good fails the whole event (the others in flight are aborted).
    async fn kick_all(
        &self,
        event: &RevocationEvent,
        client_ids: Vec<String>,
    ) -> Result<(), KickerError> {
        let mut in_flight = JoinSet::new();
        for client_id in client_ids {
            while in_flight.len() >= usize::from(self.args.kick_concurrency) {
                if let Some(done) = in_flight.join_next().await {
                    Self::joined(done, event)?;
                }
            }
            let api = self.api.clone();
            in_flight.spawn(async move {
                let result = api.kick(&client_id).await;
                (client_id, result)
            });
        }
        while let Some(done) = in_flight.join_next().await {
            Self::joined(done, event)?;
        }
        Ok(())
    }

    /// Logs a finished kick; a failed one fails the event.
    fn joined(
        done: Result<KickOutcome, tokio::task::JoinError>,
        event: &RevocationEvent,
    ) -> Result<(), KickerError> {
        let (client_id, result) = match done {
            Ok(pair) => pair,
            // A kick task cannot panic short of a bug; count it as a failed kick.
            Err(e) => {
                return Err(BrokerApiError::KickFailed {
                    client_id: String::new(),
                    attempts: 0,
                    last: e.to_string(),
                }
                .into())
            }
        };
        match result {
            Ok(Kicked::Disconnected) => {
                tracing::info!(revision = event.revision, client_id, "kicked");
            }
            Ok(Kicked::AlreadyGone) => {
                tracing::info!(revision = event.revision, client_id, "already disconnected");
            }
            Err(e) => {
                tracing::error!(revision = event.revision, client_id, error = %e, "kick failed; exiting without saving the revision so that a restart retries it");
                return Err(e.into());
            }
        }
        Ok(())
    }
}
