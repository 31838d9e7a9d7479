//! The `kicker` subcommand's flags. Every flag has an `MQTT_TOKEND_KICKER_*` environment
//! variable (secrets are best passed that way: flags show in `ps`); `--help` hides their values.

use std::{path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};
use mqtt_tokend_client::AccessKey;

use super::{broker_api::BrokerAuth, KickerError};

/// Default mqtt-tokend gRPC endpoint.
pub const DEFAULT_SERVICE: &str = "http://127.0.0.1:50051";
/// Default revision state file.
pub const DEFAULT_STATE_FILE: &str = "./mqtt-tokend-kicker.revision";
/// Default attempts per kick before the kicker gives up and exits (without saving the
/// revision, so its restart retries).
pub const DEFAULT_KICK_ATTEMPTS: u32 = 8;
/// Default first delay between attempts of one kick.
pub const DEFAULT_KICK_BACKOFF_MIN: &str = "200ms";
/// Default longest delay between attempts of one kick.
pub const DEFAULT_KICK_BACKOFF_MAX: &str = "10s";
/// Default bound on one broker API request.
pub const DEFAULT_BROKER_API_TIMEOUT: &str = "5s";
/// Default kicks in flight at once.
pub const DEFAULT_KICK_CONCURRENCY: u16 = 8;
/// Default sessions per ListCredentialSessions page.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;

/// A secret from the command line or the environment: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// The broker whose management API the kicker calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BrokerKind {
    /// EMQX 5: `DELETE /api/v5/clients/{clientid}`, API key and secret as HTTP Basic.
    Emqx,
    /// rmqtt (rmqtt-http-api): `DELETE /api/v1/clients/{clientid}`, its `http_bearer_token` as
    /// `Authorization: Bearer`.
    Rmqtt,
}

/// Everything `kicker` needs.
#[derive(Debug, Clone, Args)]
pub struct KickerArgs {
    /// mqtt-tokend gRPC endpoint(s), e.g. http://127.0.0.1:50051; several (comma-separated)
    /// are tried in turn when one stays unreachable.
    #[arg(
        long,
        env = "MQTT_TOKEND_KICKER_SERVICE",
        default_value = DEFAULT_SERVICE,
        value_delimiter = ','
    )]
    pub service: Vec<String>,
    /// JSON key file ({"AccessKeyId": …, "AccessKeySecret": …}) of the access key the broker
    /// calls /mqtt/auth with: sessions are recorded under that key.
    #[arg(
        long,
        env = "MQTT_TOKEND_KICKER_ACCESS_KEY_FILE",
        conflicts_with_all = ["access_key_id", "access_key_secret"]
    )]
    pub access_key_file: Option<PathBuf>,
    /// The access key id (instead of --access-key-file).
    #[arg(
        long,
        env = "MQTT_TOKEND_KICKER_ACCESS_KEY_ID",
        requires = "access_key_secret"
    )]
    pub access_key_id: Option<String>,
    /// The access key secret (prefer the environment variable).
    #[arg(
        long,
        env = "MQTT_TOKEND_KICKER_ACCESS_KEY_SECRET",
        hide_env_values = true,
        requires = "access_key_id"
    )]
    pub access_key_secret: Option<Secret>,
    /// Only revocations of these instances (comma-separated or repeated); default: every
    /// instance the key may see.
    #[arg(
        long = "instance-id",
        env = "MQTT_TOKEND_KICKER_INSTANCE_ID",
        value_delimiter = ','
    )]
    pub instance_ids: Vec<String>,
    /// The broker.
    #[arg(long, env = "MQTT_TOKEND_KICKER_BROKER", value_enum)]
    pub broker: BrokerKind,
    /// Base URL of the broker's management API, e.g. http://127.0.0.1:18083 (EMQX) or
    /// http://127.0.0.1:6060 (rmqtt); `/api/v5/clients/…` or `/api/v1/clients/…` is appended.
    #[arg(long, env = "MQTT_TOKEND_KICKER_BROKER_API")]
    pub broker_api: String,
    /// API key (EMQX) or user name sent as HTTP Basic with --broker-api-secret.
    #[arg(
        long,
        env = "MQTT_TOKEND_KICKER_BROKER_API_KEY",
        requires = "broker_api_secret",
        conflicts_with = "broker_api_token"
    )]
    pub broker_api_key: Option<String>,
    /// Secret of --broker-api-key (prefer the environment variable).
    #[arg(
        long,
        env = "MQTT_TOKEND_KICKER_BROKER_API_SECRET",
        hide_env_values = true,
        requires = "broker_api_key"
    )]
    pub broker_api_secret: Option<Secret>,
    /// Bearer token for the broker API (rmqtt's `http_bearer_token`; prefer the environment
    /// variable).
    #[arg(
        long,
        env = "MQTT_TOKEND_KICKER_BROKER_API_TOKEN",
        hide_env_values = true
    )]
    pub broker_api_token: Option<Secret>,
    /// PEM CA certificate(s) to trust, besides the system's, for an https broker API.
    #[arg(long, env = "MQTT_TOKEND_KICKER_BROKER_API_CA")]
    pub broker_api_ca: Option<PathBuf>,
    /// Bound on one broker API request.
    #[arg(long, env = "MQTT_TOKEND_KICKER_BROKER_API_TIMEOUT", default_value = DEFAULT_BROKER_API_TIMEOUT, value_parser = humantime::parse_duration)]
    pub broker_api_timeout: Duration,
    /// File holding the last revocation revision whose kicks all succeeded (created 0600);
    /// a restart resumes after it.
    #[arg(long, env = "MQTT_TOKEND_KICKER_STATE_FILE", default_value = DEFAULT_STATE_FILE)]
    pub state_file: PathBuf,
    /// Attempts per kick (the first included) before the kicker exits with an error, leaving
    /// the revision unsaved so that its restart retries.
    #[arg(long, env = "MQTT_TOKEND_KICKER_KICK_ATTEMPTS", default_value_t = DEFAULT_KICK_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..))]
    pub kick_attempts: u32,
    /// First delay between attempts of a kick; doubles (with jitter) up to --kick-backoff-max.
    #[arg(long, env = "MQTT_TOKEND_KICKER_KICK_BACKOFF_MIN", default_value = DEFAULT_KICK_BACKOFF_MIN, value_parser = humantime::parse_duration)]
    pub kick_backoff_min: Duration,
    /// Longest delay between attempts of a kick.
    #[arg(long, env = "MQTT_TOKEND_KICKER_KICK_BACKOFF_MAX", default_value = DEFAULT_KICK_BACKOFF_MAX, value_parser = humantime::parse_duration)]
    pub kick_backoff_max: Duration,
    /// Kicks in flight at once.
    #[arg(long, env = "MQTT_TOKEND_KICKER_KICK_CONCURRENCY", default_value_t = DEFAULT_KICK_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub kick_concurrency: u16,
    /// Sessions per ListCredentialSessions page (at most 10000).
    #[arg(long, env = "MQTT_TOKEND_KICKER_PAGE_SIZE", default_value_t = DEFAULT_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size: u32,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `mqtt_tokend=debug`.
    #[arg(long, env = "MQTT_TOKEND_LOG", default_value = "info")]
    pub log: String,
}

impl KickerArgs {
    /// The access key the kicker calls the service with.
    ///
    /// # Errors
    /// None given, or the key file is unusable.
    pub fn access_key(&self) -> Result<AccessKey, KickerError> {
        match (
            &self.access_key_file,
            &self.access_key_id,
            &self.access_key_secret,
        ) {
            (Some(path), _, _) => {
                AccessKey::from_json_file(path).map_err(|source| KickerError::KeyFile {
                    path: path.display().to_string(),
                    source,
                })
            }
            (None, Some(id), Some(secret)) => Ok(AccessKey::new(id.clone(), secret.0.clone())),
            _ => Err(KickerError::NoAccessKey),
        }
    }

    /// How the kicker authenticates to the broker API.
    ///
    /// # Errors
    /// `NoBrokerCredential`: EMQX without an API key.
    pub fn broker_auth(&self) -> Result<BrokerAuth, KickerError> {
        let auth = match (
            &self.broker_api_key,
            &self.broker_api_secret,
            &self.broker_api_token,
        ) {
            (Some(key), Some(secret), _) => BrokerAuth::Basic {
                key: key.clone(),
                secret: secret.0.clone(),
            },
            (_, _, Some(token)) => BrokerAuth::Bearer(token.0.clone()),
            _ => BrokerAuth::None,
        };
        if self.broker == BrokerKind::Emqx && !matches!(auth, BrokerAuth::Basic { .. }) {
            return Err(KickerError::NoBrokerCredential);
        }
        Ok(auth)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::config::{Cli, Command};

    #[test]
    fn secrets_never_show_in_debug() {
        let cli = Cli::try_parse_from([
            "mqtt-tokend",
            "kicker",
            "--broker",
            "emqx",
            "--broker-api",
            "http://127.0.0.1:18083",
            "--access-key-id",
            "MTAKid",
            "--access-key-secret",
            "ak-s3cret",
            "--broker-api-key",
            "ek",
            "--broker-api-secret",
            "api-s3cret",
        ])
        .expect("parses");
        let Command::Kicker(args) = cli.command else {
            panic!("not the kicker")
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(args.service, [super::DEFAULT_SERVICE]);
        assert_eq!(args.kick_attempts, super::DEFAULT_KICK_ATTEMPTS);
    }

    #[test]
    fn conflicting_and_incomplete_credentials_are_refused() {
        let base = [
            "mqtt-tokend",
            "kicker",
            "--broker",
            "rmqtt",
            "--broker-api",
            "http://h:6060",
        ];
        for extra in [
            &["--broker-api-key", "k"][..],
            &["--access-key-id", "MTAK"][..],
            &[
                "--broker-api-key",
                "k",
                "--broker-api-secret",
                "s",
                "--broker-api-token",
                "t",
            ][..],
            &[
                "--access-key-file",
                "f",
                "--access-key-id",
                "i",
                "--access-key-secret",
                "s",
            ][..],
            &["--kick-attempts", "0"][..],
        ] {
            let argv: Vec<&str> = base.iter().chain(extra).copied().collect();
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?}");
        }
    }
}
