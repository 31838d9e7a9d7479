//! The command line. Every flag has an `MQTT_TOKEND_*` environment variable; defaults are
//! the embedded ones a new user gets from `cargo run --release -- serve`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    core::{CoreConfig, RateLimits},
    observe::AuditDestination,
};

/// Default gRPC listen address.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// Default REST (Action-style HTTP) listen address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default keyring file: outside the data directory, so a copy of the data alone leaks no
/// secret.
pub const DEFAULT_KEYRING: &str = "./mqtt-tokend-keyring.json";

/// mqtt-tokend: MQTT tokens, device credentials and broker checks, Alibaba Cloud MQTT compatible.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the service.
    Serve(Box<ServeConfig>),
    /// Manages access keys on a running server (root key required).
    #[command(subcommand)]
    AccessKey(AccessKeyCommand),
    /// Manages the keyring file (offline).
    #[command(subcommand)]
    Keyring(KeyringCommand),
    /// Disconnects the clients of an EMQX or rmqtt broker whose credential is revoked.
    Kicker(Box<crate::kicker::KickerArgs>),
}

/// Everything `serve` needs.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long, env = "MQTT_TOKEND_GRPC_ADDR", default_value = DEFAULT_GRPC_ADDR)]
    pub grpc_addr: SocketAddr,
    /// REST (Alibaba Action-style HTTP) listen address; "off" disables it.
    #[arg(long, env = "MQTT_TOKEND_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR, value_parser = parse_optional_addr)]
    pub http_addr: OptionalAddr,
    /// Data directory (sled database and root-access-key.json).
    #[arg(long, env = "MQTT_TOKEND_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Keyring file with the master keys; created (0600) on first start. Keep it apart from
    /// the data directory and back it up: without it no token or secret can be verified.
    #[arg(long, env = "MQTT_TOKEND_KEYRING", default_value = DEFAULT_KEYRING)]
    pub keyring: PathBuf,
    /// ApplyToken calls per second per access key; 0 = unlimited.
    #[arg(long, env = "MQTT_TOKEND_RATE_APPLY_TOKEN", default_value_t = 100)]
    pub rate_apply_token: u32,
    /// QueryToken calls per second per access key; 0 = unlimited.
    #[arg(long, env = "MQTT_TOKEND_RATE_QUERY_TOKEN", default_value_t = 100)]
    pub rate_query_token: u32,
    /// RevokeToken calls per second per access key; 0 = unlimited.
    #[arg(long, env = "MQTT_TOKEND_RATE_REVOKE_TOKEN", default_value_t = 5)]
    pub rate_revoke_token: u32,
    /// Calls per second per access key of each device credential operation; 0 = unlimited.
    #[arg(
        long,
        env = "MQTT_TOKEND_RATE_DEVICE_CREDENTIAL",
        default_value_t = 500
    )]
    pub rate_device_credential: u32,
    /// REST requests per second per source IP; 0 = unlimited.
    #[arg(long, env = "MQTT_TOKEND_RATE_PER_IP", default_value_t = 300)]
    pub rate_per_ip: u32,
    /// Most device credentials per instance (DeviceCredentialNumExceed past it).
    #[arg(
        long,
        env = "MQTT_TOKEND_MAX_DEVICES_PER_INSTANCE",
        default_value_t = 1_000_000
    )]
    pub max_devices_per_instance: u64,
    /// Interval of progress messages on idle revocation watch streams.
    #[arg(long, env = "MQTT_TOKEND_WATCH_PROGRESS_INTERVAL", default_value = "10s", value_parser = parse_positive_duration)]
    pub watch_progress_interval: Duration,
    /// Revocation events a watcher may fall behind the live broadcast before it switches to
    /// catching up from storage (it is never dropped).
    #[arg(long, env = "MQTT_TOKEND_WATCH_BUFFER", default_value_t = 4096)]
    pub watch_buffer: usize,
    /// How long revocations without an expiry (device credentials, access keys) stay
    /// resumable on the watch stream.
    #[arg(long, env = "MQTT_TOKEND_REVOCATION_RETENTION", default_value = "7days", value_parser = humantime::parse_duration)]
    pub revocation_retention: Duration,
    /// How often expired tokens are swept and the revocation log compacted.
    #[arg(long, env = "MQTT_TOKEND_MAINTENANCE_INTERVAL", default_value = "60s", value_parser = parse_positive_duration)]
    pub maintenance_interval: Duration,
    /// Longest life of a broker session recorded by the EMQX/rmqtt HTTP endpoints and the
    /// mosquitto-go-auth backend (capped at --revocation-retention); EMQX and rmqtt disconnect
    /// the client when it ends, and it reconnects.
    #[arg(long, env = "MQTT_TOKEND_BROKER_SESSION_TTL", default_value = "7days", value_parser = parse_positive_duration)]
    pub broker_session_ttl: Duration,
    /// Access key the mosquitto-go-auth gRPC backend (`grpc.AuthService`) acts as; unset, the
    /// service is not served. go-auth sends no credentials: serve it only where the broker
    /// alone can reach the gRPC port.
    #[arg(long, env = "MQTT_TOKEND_GO_AUTH_ACCESS_KEY")]
    pub go_auth_access_key: Option<String>,
    /// How long shutdown waits for in-flight calls before closing.
    #[arg(long, env = "MQTT_TOKEND_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `mqtt_tokend=debug`.
    #[arg(long, env = "MQTT_TOKEND_LOG", default_value = "info")]
    pub log: String,
    /// TLS and mutual TLS of both listeners.
    #[command(flatten)]
    pub tls: TlsOptions,
    /// Metrics, health and the audit log.
    #[command(flatten)]
    pub observe: ObserveOptions,
}

/// TLS of the gRPC and REST listeners. Without these flags both serve plaintext.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsOptions {
    /// Server certificate chain (PEM, leaf first) for both listeners; turns TLS on. Re-read,
    /// with the key and client CA, on SIGHUP.
    #[arg(long, env = "MQTT_TOKEND_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "MQTT_TOKEND_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM): clients must present a certificate signed by one (mutual TLS).
    #[arg(long, env = "MQTT_TOKEND_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl TlsOptions {
    /// The files to load, when TLS is on.
    pub fn files(&self) -> Option<crate::tls::TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        }
    }
}

/// The operations endpoint and the audit log.
#[derive(Debug, Clone, Default, Args)]
pub struct ObserveOptions {
    /// Listen address of /metrics (Prometheus), /healthz and /readyz, plain HTTP; off unless
    /// set, e.g. 127.0.0.1:9464.
    #[arg(long, env = "MQTT_TOKEND_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Audit log: a file (created 0600, appended to) or `-` for stdout; off unless set.
    #[arg(long, env = "MQTT_TOKEND_AUDIT_LOG")]
    pub audit_log: Option<AuditDestination>,
}

/// A listen address that can be turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be greater than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(OptionalAddr(None));
    }
    s.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("{e} (expected host:port or \"off\")"))
}

impl ServeConfig {
    /// The embedded defaults with the given data directory and keyring, for tests and
    /// benchmarks; everything else as `serve` without flags.
    pub fn with_dirs(data_dir: PathBuf, keyring: PathBuf) -> Self {
        let cli = Cli::parse_from([
            "mqtt-tokend",
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ]);
        let Command::Serve(mut config) = cli.command else {
            unreachable!("parsed a serve command")
        };
        config.data_dir = data_dir;
        config.keyring = keyring;
        *config
    }

    /// The core's part of the configuration.
    pub fn core(&self) -> CoreConfig {
        CoreConfig {
            rate_limits: RateLimits {
                apply_token: self.rate_apply_token,
                query_token: self.rate_query_token,
                revoke_token: self.rate_revoke_token,
                device_credential: self.rate_device_credential,
            },
            max_devices_per_instance: self.max_devices_per_instance,
            watch_progress_interval: self.watch_progress_interval,
            revocation_retention: self.revocation_retention,
            maintenance_interval: self.maintenance_interval,
            watch_buffer: self.watch_buffer,
            // Opened by the app, which reports a failure to open it.
            audit: crate::observe::AuditLog::default(),
            // A session must not outlive the revocation events that would end it: a kicker
            // that resumes within the retention then finds every session it has to end.
            broker_session_ttl: self.broker_session_ttl.min(self.revocation_retention),
        }
    }

    /// Where the root access key is written on first start.
    pub fn root_key_path(&self) -> PathBuf {
        self.data_dir.join("root-access-key.json")
    }
}

/// Client-side connection options for the management subcommands.
#[derive(Debug, Clone, Args)]
pub struct ClientOptions {
    /// The server's gRPC address.
    #[arg(long, env = "MQTT_TOKEND_GRPC_ADDR", default_value = DEFAULT_GRPC_ADDR)]
    pub grpc_addr: SocketAddr,
    /// File with the root key, as written on first start.
    #[arg(
        long,
        env = "MQTT_TOKEND_ROOT_KEY_FILE",
        default_value = "./data/root-access-key.json"
    )]
    pub root_key_file: PathBuf,
}

/// `access-key` subcommands.
#[derive(Debug, Subcommand)]
pub enum AccessKeyCommand {
    /// Creates an access key and prints it as JSON.
    Create {
        /// Instance the key may act on; repeat for several, `*` for all.
        #[arg(long = "instance", required = true)]
        instances: Vec<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientOptions,
    },
    /// Lists access keys as JSON.
    List {
        /// Connection options.
        #[command(flatten)]
        client: ClientOptions,
    },
    /// Deletes an access key.
    Delete {
        /// The key id.
        access_key_id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientOptions,
    },
}

/// `keyring` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyringCommand {
    /// Adds a new master key and makes it active; existing tokens and credentials keep working.
    /// Restart the server afterwards.
    Rotate {
        /// The keyring file.
        #[arg(long, env = "MQTT_TOKEND_KEYRING", default_value = DEFAULT_KEYRING)]
        keyring: PathBuf,
        /// Audit log to record the rotation in (the server's --audit-log).
        #[arg(long, env = "MQTT_TOKEND_AUDIT_LOG")]
        audit_log: Option<AuditDestination>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_intervals_are_refused_and_off_disables_http() {
        for flag in ["--maintenance-interval", "--watch-progress-interval"] {
            let err = Cli::try_parse_from(["mqtt-tokend", "serve", flag, "0s"]).unwrap_err();
            assert!(err.to_string().contains("greater than zero"), "{err}");
        }
        let cli = Cli::try_parse_from(["mqtt-tokend", "serve", "--http-addr", "off"]).unwrap();
        let Command::Serve(config) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(config.http_addr, OptionalAddr(None));
        assert_eq!(config.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
        assert_eq!(config.rate_revoke_token, 5);
    }
}
