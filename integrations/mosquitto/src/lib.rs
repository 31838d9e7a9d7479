//! mqtt-tokend for Mosquitto 2.0: a broker plugin (plugin API v5) that checks every CONNECT with
//! the service's AuthenticateConnect, caches the grant per client, decides publish, subscribe
//! and delivery locally with the service's own topic matcher, and follows the revocation watch
//! stream to kick exactly the clients whose token or device credential was revoked.
//!
//! Threads: Mosquitto calls the plugin on its single event-loop thread. The plugin owns a small
//! tokio runtime; a CONNECT blocks the broker thread for at most `timeout_ms`, and the watch
//! stream runs on the runtime's threads.
//!
//! Several service addresses are replicas: a CONNECT check that finds its replica unreachable
//! or UNAVAILABLE asks the next one within the same `timeout_ms`, and the watch moves to the
//! next replica and resumes there from its revision (the client crate's failover). Broker functions that touch broker state (kick, log)
//! are only called on the broker thread: the watch queues kicks and log lines, and the
//! `MOSQ_EVT_TICK` callback drains them.
//!
//! Children: `config` (the `plugin_opt_*` options), `sessions` (the grant cache and kick
//! queue), `watch` (the revocation stream and the state file), `ffi` (the only unsafe code: the
//! C entry points and callbacks, absent from unit-test builds because the broker's symbols
//! exist only inside the `mosquitto` process).

pub mod config;
#[cfg(not(test))]
mod ffi;
pub mod sessions;
pub mod watch;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Instant,
};

use mqtt_tokend_client::{
    grant_from_proto, now_ms, proto::AuthenticateConnectRequest, AccessKey, Client, ClientConfig,
    ClientTls, ConnectError, FollowerOptions, RevisionFile, RevocationFollower,
};

pub use config::{Config, OnUnreachable};
pub use sessions::{Access, Grant, Sessions};

/// Log levels, mapped to `MOSQ_LOG_*` at the boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Informational.
    Info,
    /// Worth noting (kicks).
    Notice,
    /// Something is wrong but handled.
    Warning,
    /// An error.
    Error,
}

/// Log lines from the plugin's own threads, printed by the broker thread on its next tick
/// (Mosquitto's logger may publish to `$SYS`, which is not safe off its thread). Bounded: when
/// full, the oldest lines are dropped and counted.
#[derive(Default)]
pub struct LogQueue {
    lines: Mutex<(VecDeque<(Level, String)>, u64)>,
}

const LOG_QUEUE_MAX: usize = 1000;

impl LogQueue {
    /// Queues a line.
    pub fn push(&self, level: Level, line: String) {
        let mut q = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if q.0.len() >= LOG_QUEUE_MAX {
            q.0.pop_front();
            q.1 += 1;
        }
        q.0.push_back((level, line));
    }

    /// Takes every queued line (plus a note on how many were dropped).
    pub fn drain(&self) -> Vec<(Level, String)> {
        let mut q = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = q.0.drain(..).collect();
        if q.1 > 0 {
            out.push((Level::Warning, format!("{} log lines dropped", q.1)));
            q.1 = 0;
        }
        out
    }
}

/// What to answer a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it in.
    Allow,
    /// Refuse it, with a reason for the log.
    Deny(String),
    /// Let another plugin decide (service unreachable and `on_unreachable defer`).
    Defer(String),
}

/// The plugin: configuration, runtime, clients and the grant cache.
pub struct Plugin {
    config: Config,
    runtime: Option<tokio::runtime::Runtime>,
    /// The service's replicas; shared with the watch, so both go where the service answers.
    client: Client,
    sessions: Arc<Sessions>,
    logs: Arc<LogQueue>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Plugin {
    /// Starts the runtime and the watch task. Does not wait for the service: it may come up
    /// later (CONNECTs are refused until it does).
    ///
    /// # Errors
    /// The runtime cannot start or the address or key is unusable.
    pub fn start(config: Config) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mqtt-tokend-plugin")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the plugin runtime: {e}"))?;
        // Pairs were checked by `Config::from_options`; the files are read (and a bad one
        // named) when the client is built below, so a broken file fails the broker's start.
        let tls = ClientTls::from_files(
            config.ca_file.clone(),
            config.cert_file.clone(),
            config.key_file.clone(),
        )
        .map_err(|e| e.to_string())?;
        // Each replica's connection attempt gets its share of the CONNECT budget, so one whose
        // host does not answer at all (dropped SYNs) leaves time for the next. A replica that
        // accepts but does not answer (hung) is left after the budget: a CONNECT check moves
        // on after its share, the watch when its stream does not open within `timeout`.
        let replicas = u32::try_from(config.service_addrs.len().max(1)).unwrap_or(u32::MAX);
        let client = {
            // The lazy connections' worker tasks are spawned on the plugin's runtime.
            let _guard = runtime.enter();
            ClientConfig::new(config.service_addrs.iter())
                .tls_opt(tls)
                .access_key(AccessKey::new(
                    &config.access_key_id,
                    &config.access_key_secret,
                ))
                .connect_timeout(config.timeout / replicas)
                .timeout(config.timeout)
                .connect_lazy()
        }
        .map_err(|e| match e {
            ConnectError::InvalidEndpoint { source, .. } => {
                format!("plugin_opt_service_addr: {source}")
            }
            other => other.to_string(),
        })?;
        let sessions = Arc::new(Sessions::default());
        let logs = Arc::new(LogQueue::default());
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let wake_addr = config.wake_addr;
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(addr) = wake_addr {
                // A connection the broker accepts and sees close: enough to end its wait.
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_millis(500),
                        tokio::net::TcpStream::connect(addr),
                    )
                    .await;
                });
            }
        });
        let watch = watch::Watch {
            follower: RevocationFollower::new(
                &client,
                config.state_file.clone().map(RevisionFile::new),
                FollowerOptions::default().instance_ids(config.instance_id.iter()),
            ),
            client: client.clone(),
            sessions: sessions.clone(),
            logs: logs.clone(),
            wake,
        };
        runtime.spawn(watch.run(shutdown_rx));
        Ok(Self {
            config,
            runtime: Some(runtime),
            client,
            sessions,
            logs,
            shutdown,
        })
    }

    /// Decides a CONNECT and, on allow, caches the grant for `connection`. Blocks for at most
    /// the configured timeout, within which an unreachable or UNAVAILABLE replica is followed
    /// by the next.
    pub fn on_connect(
        &self,
        client_id: &str,
        connection: usize,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Verdict {
        let (Some(username), Some(password)) = (username, password) else {
            return Verdict::Deny("no username or password".into());
        };
        let Some(runtime) = &self.runtime else {
            return Verdict::Deny("plugin is shutting down".into());
        };
        let request = AuthenticateConnectRequest {
            client_id: client_id.to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
        };
        let answer = runtime.block_on(self.client.call_with_failover(self.config.timeout, |c| {
            let request = request.clone();
            async move { c.broker().authenticate_connect(request).await }
        }));
        let unreachable = |why: String| match self.config.on_unreachable {
            OnUnreachable::Deny => Verdict::Deny(why),
            OnUnreachable::Defer => Verdict::Defer(why),
        };
        let response = match answer {
            Err(status) => {
                return unreachable(format!(
                    "service error {:?}: {}",
                    status.code(),
                    status.message()
                ))
            }
            Ok(r) => r.into_inner(),
        };
        if !response.allowed {
            return Verdict::Deny(format!("{:?}", response.reason()));
        }
        let Some(grant) = response.grant else {
            return Verdict::Deny("service allowed without a grant".into());
        };
        let Some(grant) = grant_from_proto(grant) else {
            return Verdict::Deny("service allowed with an unknown mode".into());
        };
        if let Some(instance) = &self.config.instance_id {
            if &grant.instance_id != instance {
                return Verdict::Deny(format!("instance {} is not served here", grant.instance_id));
            }
        }
        match self
            .sessions
            .insert(client_id, connection, grant, now_ms(), Instant::now())
        {
            Ok(()) => Verdict::Allow,
            Err(refused) => Verdict::Deny(format!("{refused:?}")),
        }
    }

    /// Decides a publish, subscribe or delivery from the cached grant.
    pub fn on_acl(&self, client_id: &str, connection: usize, access: Access, topic: &str) -> bool {
        self.sessions
            .allows(client_id, connection, access, topic, now_ms())
    }

    /// Forgets the grant of a connection that closed.
    pub fn on_disconnect(&self, client_id: &str, connection: usize) {
        self.sessions.remove(client_id, connection);
    }

    /// On the broker thread, once per loop: client ids to kick now, and log lines to print.
    pub fn on_tick(&self) -> (Vec<String>, Vec<(Level, String)>) {
        (self.sessions.take_due(now_ms()), self.logs.drain())
    }

    /// Stops the watch and the runtime, waiting at most a second.
    pub fn stop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        }
    }
}
