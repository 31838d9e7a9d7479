//! The command line. Every flag has an `MQTT_TOKEND_*` environment variable; defaults are
//! the embedded ones a new user gets from `cargo run --release -- serve`.
//!
//! Each default is written once, as a constant (here, or `CoreConfig::DEFAULT`,
//! `RateLimits::DEFAULT` and `RestConfig::DEFAULT` for the knobs of those layers); clap
//! shows and parses the constants, and [`ServeConfig::default`] builds the same values
//! without clap, so code that needs a configuration (tests, benchmarks) never reads the
//! process's environment.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};

use crate::{
    core::{
        audit::{AuditDestination, AuditLog},
        CoreConfig, RateLimits,
    },
    rest::RestConfig,
};

mod listen_addr;
mod store;
pub use listen_addr::HostPort;
pub use store::{StoreKind, StoreOptions};

/// Default gRPC listen address.
pub const DEFAULT_GRPC_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 50051));
/// Default REST (Action-style HTTP) listen address.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default keyring file: outside the data directory, so a copy of the data alone leaks no
/// secret.
pub const DEFAULT_KEYRING: &str = "./mqtt-tokend-keyring.json";
/// Name of the root access key file inside the data directory.
pub const ROOT_KEY_FILE_NAME: &str = "root-access-key.json";
/// Default time shutdown waits for in-flight calls.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default log filter.
pub const DEFAULT_LOG: &str = "info";

/// A default computed from a constant, as the `&'static str` clap shows in `--help` and
/// parses when the flag is absent. Computed once per call site.
macro_rules! default_text {
    ($value:expr) => {{
        static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        TEXT.get_or_init(|| $value).as_str()
    }};
}

/// A duration the way people write it and humantime parses it back: whole days as `7days`,
/// whole seconds as `60s`, anything finer as humantime formats it.
fn duration_text(d: Duration) -> String {
    const DAY: u64 = 24 * 3600;
    match (d.as_secs(), d.subsec_nanos()) {
        (secs, 0) if secs > 0 && secs % DAY == 0 => format!("{}days", secs / DAY),
        (secs, 0) => format!("{secs}s"),
        _ => humantime::format_duration(d).to_string(),
    }
}

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
    /// Lists and revokes tokens on a running server, by handle, minting key or instance.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Disconnects the clients of an EMQX or rmqtt broker whose credential is revoked.
    Kicker(Box<crate::kicker::KickerArgs>),
}

/// Everything `serve` needs.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ServeConfig {
    /// gRPC listen address, host:port (a host name is resolved at start; port 0 picks a
    /// free port).
    #[arg(long, env = "MQTT_TOKEND_GRPC_ADDR", default_value_t = HostPort::from(DEFAULT_GRPC_ADDR))]
    pub grpc_addr: HostPort,
    /// REST (Alibaba Action-style HTTP) listen address; "off" disables it.
    #[arg(long, env = "MQTT_TOKEND_HTTP_ADDR", default_value_t = OptionalAddr(Some(HostPort::from(DEFAULT_HTTP_ADDR))), value_parser = parse_optional_addr)]
    pub http_addr: OptionalAddr,
    /// Data directory (the sled database, and root-access-key.json with either store).
    #[arg(long, env = "MQTT_TOKEND_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Keyring file with the master keys; created (0600) on first start. Keep it apart from
    /// the data directory and back it up: without it no token or secret can be verified.
    #[arg(long, env = "MQTT_TOKEND_KEYRING", default_value = DEFAULT_KEYRING)]
    pub keyring: PathBuf,
    /// ApplyToken calls per second per access key; 0 = unlimited.
    #[arg(long, env = "MQTT_TOKEND_RATE_APPLY_TOKEN", default_value_t = RateLimits::DEFAULT.apply_token)]
    pub rate_apply_token: u32,
    /// QueryToken calls per second per access key; 0 = unlimited.
    #[arg(long, env = "MQTT_TOKEND_RATE_QUERY_TOKEN", default_value_t = RateLimits::DEFAULT.query_token)]
    pub rate_query_token: u32,
    /// RevokeToken calls per second per access key; 0 = unlimited.
    #[arg(long, env = "MQTT_TOKEND_RATE_REVOKE_TOKEN", default_value_t = RateLimits::DEFAULT.revoke_token)]
    pub rate_revoke_token: u32,
    /// Calls per second per access key of each device credential operation; 0 = unlimited.
    #[arg(long, env = "MQTT_TOKEND_RATE_DEVICE_CREDENTIAL", default_value_t = RateLimits::DEFAULT.device_credential)]
    pub rate_device_credential: u32,
    /// REST requests per second per source IP; 0 = unlimited.
    #[arg(long, env = "MQTT_TOKEND_RATE_PER_IP", default_value_t = RestConfig::DEFAULT.rate_per_ip)]
    pub rate_per_ip: u32,
    /// Most device credentials per instance (DeviceCredentialNumExceed past it).
    #[arg(long, env = "MQTT_TOKEND_MAX_DEVICES_PER_INSTANCE", default_value_t = CoreConfig::DEFAULT.max_devices_per_instance)]
    pub max_devices_per_instance: u64,
    /// Interval of progress messages on idle revocation watch streams.
    #[arg(long, env = "MQTT_TOKEND_WATCH_PROGRESS_INTERVAL", default_value = default_text!(duration_text(CoreConfig::DEFAULT.watch_progress_interval)), value_parser = parse_positive_duration)]
    pub watch_progress_interval: Duration,
    /// Revocation events a watcher may fall behind the live broadcast before it switches to
    /// catching up from storage (it is never dropped).
    #[arg(long, env = "MQTT_TOKEND_WATCH_BUFFER", default_value_t = CoreConfig::DEFAULT.watch_buffer)]
    pub watch_buffer: usize,
    /// Most revocation watch streams one access key may hold open at once (the next is
    /// refused with WatchStreamNumExceed until one closes); 0 = no limit. Give each broker
    /// (cluster) its own key.
    #[arg(long, env = "MQTT_TOKEND_MAX_WATCHES_PER_KEY", default_value_t = CoreConfig::DEFAULT.max_watches_per_key)]
    pub max_watches_per_key: usize,
    /// How long revocations without an expiry (device credentials, access keys) stay
    /// resumable on the watch stream.
    #[arg(long, env = "MQTT_TOKEND_REVOCATION_RETENTION", default_value = default_text!(duration_text(CoreConfig::DEFAULT.revocation_retention)), value_parser = humantime::parse_duration)]
    pub revocation_retention: Duration,
    /// How often expired tokens are swept and the revocation log compacted.
    #[arg(long, env = "MQTT_TOKEND_MAINTENANCE_INTERVAL", default_value = default_text!(duration_text(CoreConfig::DEFAULT.maintenance_interval)), value_parser = parse_positive_duration)]
    pub maintenance_interval: Duration,
    /// Longest life of a broker session recorded by the EMQX/rmqtt HTTP endpoints and the
    /// mosquitto-go-auth backend (capped at --revocation-retention); EMQX and rmqtt disconnect
    /// the client when it ends, and it reconnects.
    #[arg(long, env = "MQTT_TOKEND_BROKER_SESSION_TTL", default_value = default_text!(duration_text(CoreConfig::DEFAULT.broker_session_ttl)), value_parser = parse_positive_duration)]
    pub broker_session_ttl: Duration,
    /// Access key the mosquitto-go-auth gRPC backend (`grpc.AuthService`) acts as; unset, the
    /// service is not served. go-auth sends no credentials: serve it only where the broker
    /// alone can reach the gRPC port.
    #[arg(long, env = "MQTT_TOKEND_GO_AUTH_ACCESS_KEY")]
    pub go_auth_access_key: Option<String>,
    /// How long shutdown waits for in-flight calls before closing.
    #[arg(long, env = "MQTT_TOKEND_SHUTDOWN_GRACE", default_value = default_text!(duration_text(DEFAULT_SHUTDOWN_GRACE)), value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `mqtt_tokend=debug`.
    #[arg(long, env = "MQTT_TOKEND_LOG", default_value = DEFAULT_LOG)]
    pub log: String,
    /// TLS and mutual TLS of both listeners.
    #[command(flatten)]
    pub tls: TlsOptions,
    /// Metrics, health and the audit log.
    #[command(flatten)]
    pub observe: ObserveOptions,
    /// The storage backend: sled (default) or etcd.
    #[command(flatten)]
    pub store: StoreOptions,
}

/// TLS of the gRPC and REST listeners. Without these flags both serve plaintext.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<HostPort>);

impl std::fmt::Display for OptionalAddr {
    /// The form the flag takes: the address, or `off`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("off"),
        }
    }
}

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
        .map_err(|e| format!("{e}, or \"off\""))
}

impl Default for ServeConfig {
    /// What `serve` runs with when no flag and no `MQTT_TOKEND_*` variable is given, built
    /// from the constants without clap, so it never depends on the environment.
    fn default() -> Self {
        let core = CoreConfig::DEFAULT;
        Self {
            grpc_addr: HostPort::from(DEFAULT_GRPC_ADDR),
            http_addr: OptionalAddr(Some(HostPort::from(DEFAULT_HTTP_ADDR))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            keyring: PathBuf::from(DEFAULT_KEYRING),
            rate_apply_token: core.rate_limits.apply_token,
            rate_query_token: core.rate_limits.query_token,
            rate_revoke_token: core.rate_limits.revoke_token,
            rate_device_credential: core.rate_limits.device_credential,
            rate_per_ip: RestConfig::DEFAULT.rate_per_ip,
            max_devices_per_instance: core.max_devices_per_instance,
            watch_progress_interval: core.watch_progress_interval,
            watch_buffer: core.watch_buffer,
            max_watches_per_key: core.max_watches_per_key,
            revocation_retention: core.revocation_retention,
            maintenance_interval: core.maintenance_interval,
            broker_session_ttl: core.broker_session_ttl,
            go_auth_access_key: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            log: DEFAULT_LOG.to_owned(),
            tls: TlsOptions::default(),
            observe: ObserveOptions::default(),
            store: StoreOptions::default(),
        }
    }
}

impl ServeConfig {
    /// The defaults with the given data directory and keyring and both listeners on
    /// 127.0.0.1 port 0, for tests and benchmarks. Like [`ServeConfig::default`], it reads
    /// neither the command line nor the environment.
    pub fn with_dirs(data_dir: PathBuf, keyring: PathBuf) -> Self {
        let any_port = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        Self {
            grpc_addr: HostPort::from(any_port),
            http_addr: OptionalAddr(Some(HostPort::from(any_port))),
            data_dir,
            keyring,
            ..Self::default()
        }
    }

    /// The REST shim's part of the configuration.
    pub fn rest(&self) -> RestConfig {
        RestConfig {
            rate_per_ip: self.rate_per_ip,
        }
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
            audit: AuditLog::OFF,
            // A session must not outlive the revocation events that would end it: a kicker
            // that resumes within the retention then finds every session it has to end.
            broker_session_ttl: self.broker_session_ttl.min(self.revocation_retention),
            max_watches_per_key: self.max_watches_per_key,
        }
    }

    /// Where the root access key is written on first start.
    pub fn root_key_path(&self) -> PathBuf {
        self.data_dir.join(ROOT_KEY_FILE_NAME)
    }
}

/// Client-side connection options for the management subcommands.
#[derive(Debug, Clone, Args)]
pub struct ClientOptions {
    /// The server's gRPC address: `host:port`, or a URL (`http://…`, `https://…`). A bare
    /// `host:port` speaks TLS when --ca-file or --cert-file is set; `https://` without
    /// --ca-file trusts the system's CAs.
    #[arg(long, env = "MQTT_TOKEND_GRPC_ADDR", default_value = default_text!(DEFAULT_GRPC_ADDR.to_string()))]
    pub grpc_addr: String,
    /// The server's data directory, where `serve` wrote root-access-key.json.
    #[arg(long, env = "MQTT_TOKEND_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// File with the root key [default: <data dir>/root-access-key.json].
    #[arg(long, env = "MQTT_TOKEND_ROOT_KEY_FILE")]
    pub root_key_file: Option<PathBuf>,
    /// CA certificates (PEM) the server's certificate must be signed by (the server's
    /// --tls-cert issuer); turns TLS on.
    #[arg(long, env = "MQTT_TOKEND_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for a server with --tls-client-ca (mutual TLS); turns TLS on.
    #[arg(long, env = "MQTT_TOKEND_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert-file.
    #[arg(long, env = "MQTT_TOKEND_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
}

impl ClientOptions {
    /// The root key file: `--root-key-file`, else the one `serve` writes in the data directory.
    pub fn root_key_file(&self) -> PathBuf {
        self.root_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(ROOT_KEY_FILE_NAME))
    }

    /// The connection these options describe, authenticating with `key`.
    ///
    /// # Errors
    /// A certificate without its key, or a key without its certificate.
    pub fn client_config(
        &self,
        key: mqtt_tokend_client::AccessKey,
    ) -> Result<mqtt_tokend_client::ClientConfig, mqtt_tokend_client::TlsError> {
        let tls = mqtt_tokend_client::ClientTls::from_files(
            self.ca_file.clone(),
            self.cert_file.clone(),
            self.key_file.clone(),
        )?;
        let endpoint = mqtt_tokend_client::endpoint_url(&self.grpc_addr, tls.is_some());
        Ok(mqtt_tokend_client::ClientConfig::new([endpoint])
            .access_key(key)
            .tls_opt(tls))
    }
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

/// `token` subcommands (with the root key, which may act on every instance).
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Lists the tokens of an instance, one JSON object per line, by handle (never the token).
    List {
        /// The instance.
        #[arg(long)]
        instance: String,
        /// Only the tokens this access key minted.
        #[arg(long)]
        access_key: Option<String>,
        /// Tokens fetched per call (at most 1000); every page is printed.
        #[arg(long, default_value_t = 1000)]
        page_size: u32,
        /// Connection options.
        #[command(flatten)]
        client: ClientOptions,
    },
    /// Revokes tokens of an instance in one call: one by handle, all of one minting key, or
    /// all; prints the revocation's revision.
    #[command(group(clap::ArgGroup::new("scope").required(true)))]
    Revoke {
        /// The instance.
        #[arg(long)]
        instance: String,
        /// One token, by its handle (`th_…`).
        #[arg(long, group = "scope")]
        handle: Option<String>,
        /// Every token this access key minted on the instance.
        #[arg(long, group = "scope")]
        access_key: Option<String>,
        /// Every token of the instance.
        #[arg(long, group = "scope")]
        all: bool,
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
    }

    #[test]
    fn token_revoke_takes_exactly_one_scope() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(
                ["mqtt-tokend", "token", "revoke", "--instance", "i"]
                    .iter()
                    .chain(args),
            )
        };
        assert!(parse(&["--all"]).is_ok());
        assert!(parse(&["--handle", "th_x"]).is_ok());
        assert!(parse(&["--handle", "th_x", "--all"]).is_err());
        assert!(parse(&[]).is_err());
        let cli = Cli::try_parse_from(["mqtt-tokend", "serve"]).unwrap();
        let Command::Serve(config) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(
            config.max_watches_per_key,
            CoreConfig::DEFAULT.max_watches_per_key
        );
    }

    #[test]
    fn duration_defaults_read_as_the_readme_writes_them() {
        let core = CoreConfig::DEFAULT;
        for (d, text) in [
            (core.watch_progress_interval, "10s"),
            (core.revocation_retention, "7days"),
            (core.maintenance_interval, "60s"),
            (DEFAULT_SHUTDOWN_GRACE, "10s"),
            (Duration::from_millis(1500), "1s 500ms"),
        ] {
            assert_eq!(duration_text(d), text);
            assert_eq!(humantime::parse_duration(text).ok(), Some(d));
        }
        assert_eq!(
            OptionalAddr(Some(HostPort::from(DEFAULT_HTTP_ADDR))).to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(parse_optional_addr("off"), Ok(OptionalAddr(None)));
    }
}
