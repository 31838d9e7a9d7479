//! The one place that wires things together: keyring, store, core, the gRPC and REST servers,
//! background tasks, and graceful shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::serve::ListenerExt;
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
    task::JoinHandle,
};

use crate::{
    config::ServeConfig,
    core::{audit::AuditLog, Core},
    grpc, observe, proto, rest,
    store::StoreClosed,
    tls::{ServerTls, TlsIncoming, TlsListener},
};

mod data_dir;
mod error;
mod root_key;

pub use error::AppError;
use error::{bind_error, io};
use root_key::write_root_key;
pub use root_key::RootKeyFile;

/// A running service.
pub struct Server {
    grpc_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    tls: Option<Arc<ServerTls>>,
    core: Arc<Core>,
    /// Resolves once the store is closed: the last of the tasks holding it has let it go.
    store_closed: Option<StoreClosed>,
    /// The data directory's lock, released once the store is closed.
    lock: Option<data_dir::DirLock>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    /// Cuts the gRPC connections still open when the shutdown grace period is over.
    cut: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), AppError>>>,
    health: tonic_health::server::HealthReporter,
    grace: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

/// Longest shutdown waits for the database to close after the servers have stopped.
const STORE_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The services health reports on (besides the server as a whole, "").
const SERVICE_NAMES: [&str; 6] = [
    "mqtt.token.v1.TokenService",
    "mqtt.token.v1.AccessKeyService",
    "mqtt.token.v1.DeviceCredentialService",
    "mqtt.token.v1.BrokerAuthService",
    "mqtt.token.v1.RevocationService",
    "mqtt.token.v1.BrokerSessionService",
];

impl Server {
    /// Opens the store, starts the core, binds both listeners and starts serving.
    ///
    /// # Errors
    /// The keyring, the store or a listener cannot be opened.
    pub async fn start(config: ServeConfig) -> Result<Self, AppError> {
        // Checked first: a typo in a certificate path should not wait for the store to open.
        let tls = match config.tls.files() {
            Some(files) => Some(Arc::new(ServerTls::load(files)?)),
            None => None,
        };
        let mut core_config = config.core();
        if let Some(destination) = &config.observe.audit_log {
            core_config.audit = AuditLog::open(destination)
                .map_err(io(format!("opening the audit log {destination:?}")))?;
        }
        let data_dir::DataDir {
            lock,
            store,
            closed: store_closed,
            keyring,
        } = data_dir::open(&config).await?;
        let (core, root) = Core::open(store.clone(), keyring, core_config).await?;
        drop(store);
        let path = config.root_key_path();
        if let Some(root) = root {
            write_root_key(&path, &root)?;
            core.flush().await?;
            tracing::info!(path = %path.display(), access_key_id = %root.access_key_id, "created the root access key");
        } else if !path.exists() {
            // The secret is derived from the keyring, so a lost file can be written again.
            if let Some(root) = core.root_key() {
                write_root_key(&path, &root)?;
                tracing::warn!(path = %path.display(), access_key_id = %root.access_key_id, "the root key file was missing; wrote it again");
            }
        }

        let go_auth = match &config.go_auth_access_key {
            Some(key) => Some(
                grpc::go_auth::GoAuthGrpc::server(core.clone(), key.clone()).inspect_err(
                    |_| tracing::error!(access_key_id = %key, "--go-auth-access-key names no access key"),
                )?,
            ),
            None => None,
        };

        let grpc_listener = TcpListener::bind(config.grpc_addr.host_port())
            .await
            .map_err(bind_error("gRPC", &config.grpc_addr, "--grpc-addr"))?;
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(io("gRPC local address"))?;
        warn_if_plaintext_exposed("gRPC", grpc_addr, tls.is_some());
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<proto::token_service_server::TokenServiceServer<grpc::TokenGrpc>>()
            .await;
        for name in SERVICE_NAMES {
            health
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // So grpcurl can decode the google.rpc.ErrorInfo in error details.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let services = grpc::Services::new(core.clone());

        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let shutdown = futures_shared(shutdown_rx);

        let grpc_shutdown = shutdown.clone();
        let grpc_tls = tls.clone();
        let metrics = core.metrics().clone();
        let (cut, cut_rx) = watch::channel(false);
        let grpc_task = tokio::spawn(async move {
            let router = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(services.token)
                .add_service(services.access_key)
                .add_service(services.device)
                .add_service(services.broker)
                .add_service(services.revocation)
                .add_service(services.broker_session)
                .add_optional_service(go_auth);
            match grpc_tls {
                Some(tls) => {
                    router
                        .serve_with_incoming_shutdown(
                            grpc::gather::gathered(grpc::conn::severable(
                                TlsIncoming::new(grpc_listener, tls, metrics),
                                cut_rx,
                            )),
                            grpc_shutdown.wait(),
                        )
                        .await?
                }
                // Plain TCP with TCP_NODELAY (see `severable_incoming`).
                None => {
                    router
                        .serve_with_incoming_shutdown(
                            grpc::gather::gathered(grpc::conn::severable_incoming(
                                grpc_listener,
                                cut_rx,
                            )),
                            grpc_shutdown.wait(),
                        )
                        .await?
                }
            }
            Ok(())
        });
        let mut tasks = vec![grpc_task];

        let http_addr = match &config.http_addr.0 {
            Some(addr) => {
                let listener = TcpListener::bind(addr.host_port())
                    .await
                    .map_err(bind_error("HTTP", addr, "--http-addr"))?;
                let local = listener.local_addr().map_err(io("HTTP local address"))?;
                warn_if_plaintext_exposed("REST", local, tls.is_some());
                let router = rest::router(core.clone(), config.rest());
                let service = router.into_make_service_with_connect_info::<SocketAddr>();
                let http_shutdown = shutdown.clone();
                tasks.push(match &tls {
                    Some(tls) => {
                        // `tap_io` (a no-op here) is what gives a custom listener axum's
                        // `ConnectInfo<SocketAddr>`, which the per-IP limit and audit read.
                        let listener =
                            TlsListener::new(listener, tls.clone(), core.metrics().clone())
                                .map_err(io("HTTP local address"))?
                                .tap_io(|_| {});
                        tokio::spawn(async move {
                            axum::serve(listener, service)
                                .with_graceful_shutdown(http_shutdown.wait())
                                .await
                                .map_err(io("HTTP server"))
                        })
                    }
                    None => tokio::spawn(async move {
                        axum::serve(listener, service)
                            .with_graceful_shutdown(http_shutdown.wait())
                            .await
                            .map_err(io("HTTP server"))
                    }),
                });
                Some(local)
            }
            None => None,
        };

        let metrics_addr = match config.observe.metrics_addr {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(io(format!("binding metrics on {addr}")))?;
                let local = listener.local_addr().map_err(io("metrics local address"))?;
                let router = observe::http::router(core.clone());
                let metrics_shutdown = shutdown.clone();
                tasks.push(tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(metrics_shutdown.wait())
                        .await
                        .map_err(io("metrics server"))
                }));
                Some(local)
            }
            None => None,
        };

        let maintenance = core.clone();
        tasks.push(tokio::spawn(async move {
            maintenance.run_maintenance().await;
            Ok(())
        }));

        let http = http_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
        let metrics = metrics_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
        tracing::info!(%grpc_addr, http_addr = %http, metrics_addr = %metrics, tls = tls.is_some(), mutual_tls = tls.as_ref().is_some_and(|t| t.requires_client_certificates()), data_dir = %config.data_dir.display(), "serving");
        Ok(Self {
            grpc_addr,
            http_addr,
            metrics_addr,
            tls,
            core,
            store_closed,
            lock: Some(lock),
            shutdown_tx: Some(shutdown_tx),
            cut,
            tasks,
            health,
            grace: config.shutdown_grace,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound REST address, if REST is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The bound address of /metrics, /healthz and /readyz, if on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Re-reads the TLS certificate, key and client CA (what SIGHUP does). New connections
    /// get the new files; open connections and their watch streams keep going. On failure the
    /// old configuration stays and the error is logged and returned. Without TLS, a no-op.
    ///
    /// # Errors
    /// A file is missing or malformed, or the key does not match the certificate.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        let Some(tls) = &self.tls else {
            tracing::info!("no TLS configured; nothing to reload");
            return Ok(());
        };
        let result = tls.reload();
        self.core.metrics().tls_reload(result.is_ok());
        match &result {
            Ok(()) => tracing::info!("reloaded the TLS certificates"),
            Err(e) => {
                tracing::error!(error = %e, "reloading the TLS certificates failed; still serving the previous ones")
            }
        }
        result
    }

    /// The core, for in-process benchmarks and tests that need its internals.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Stops gracefully: health to NOT_SERVING, watch streams end with UNAVAILABLE, no new
    /// calls, in-flight calls drain (up to the grace period, after which the gRPC connections
    /// still open are cut), then a final flush and the flusher stops; returns once the data
    /// directory is closed, so a new server may open it.
    ///
    /// # Errors
    /// A server task failed or the final flush failed.
    pub async fn shutdown(mut self) -> Result<(), AppError> {
        self.health
            .set_not_serving::<proto::token_service_server::TokenServiceServer<grpc::TokenGrpc>>()
            .await;
        for name in SERVICE_NAMES {
            self.health
                .set_service_status(name, tonic_health::ServingStatus::NotServing)
                .await;
        }
        self.core.begin_shutdown();
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        let mut first_error = None;
        let deadline = tokio::time::Instant::now() + self.grace;
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Ok(Err(e)) if e.is_cancelled() => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(AppError::Join(e));
                }
                Err(_) => {
                    tracing::warn!("shutdown grace period over; closing remaining connections");
                    // Aborting the server task leaves the connection tasks it spawned running
                    // (and holding the core): cut them, so they end on their own at once.
                    self.cut.send_replace(true);
                    abort.abort();
                }
            }
        }
        self.core.flush().await?;
        self.core.finish_shutdown();
        let closed = self.store_closed.take();
        let lock = self.lock.take();
        drop(self);
        // Open streams and the group-commit task hold the store for a moment after the
        // servers stop, and the last of them to let go closes the database (sled's final
        // flush and fsync). Wait for that close, bounded, so that "stopped" means closed,
        // the directory can be reopened at once, and the process has nothing left to wait
        // for when it exits.
        if let Some(closed) = closed {
            if tokio::time::timeout(STORE_CLOSE_WAIT, closed.wait())
                .await
                .is_err()
            {
                tracing::warn!("the store is still referenced after shutdown");
            }
        }
        drop(lock);
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Plaintext on an address other hosts can reach sends access key secrets and device secrets
/// in the clear: allowed (a proxy may terminate TLS), but said out loud.
fn warn_if_plaintext_exposed(listener: &str, addr: SocketAddr, tls: bool) {
    if !tls && !addr.ip().is_loopback() {
        tracing::warn!(listener, %addr, "serving plaintext on a non-loopback address: secrets travel unencrypted; set --tls-cert and --tls-key (or terminate TLS in front)");
    }
}

/// A cloneable "shutdown requested" signal built on a oneshot receiver.
#[derive(Clone)]
struct SharedShutdown(tokio::sync::watch::Receiver<bool>);

impl SharedShutdown {
    async fn wait(mut self) {
        let _ = self.0.wait_for(|down| *down).await;
    }
}

fn futures_shared(rx: oneshot::Receiver<()>) -> SharedShutdown {
    let (tx, watch_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        // Either a send or the sender being dropped means stop.
        let _ = rx.await;
        let _ = tx.send(true);
    });
    SharedShutdown(watch_rx)
}
