//! The plugin's `plugin_opt_*` lines from `mosquitto.conf`, parsed and checked once at load.

use std::{path::PathBuf, time::Duration};

/// Default bound on one CONNECT check (every endpoint tried included), in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 2000;

/// What a CONNECT gets when the service cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnreachable {
    /// Refuse the CONNECT (fail closed). The default.
    Deny,
    /// Let the next plugin or Mosquitto's own password file decide.
    Defer,
}

/// The plugin's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC URLs of mqtt-tokend, e.g. `http://127.0.0.1:50051` or `https://tokend:50051`;
    /// several (comma-separated in the option) are replicas, tried in order on failure.
    pub service_addrs: Vec<String>,
    /// CA certificates (PEM) the service's certificate must be signed by; unset, an
    /// `https://` service is checked against the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for a service that requires one (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Access key the plugin calls the service with.
    pub access_key_id: String,
    /// Its secret.
    pub access_key_secret: String,
    /// Only clients of this instance may connect, and only its revocations are watched.
    pub instance_id: Option<String>,
    /// Bound on one CONNECT check, failover to the other replicas included; the broker
    /// thread waits at most this long.
    pub timeout: Duration,
    /// File holding the last processed revocation revision, so a broker restart resumes.
    pub state_file: Option<PathBuf>,
    /// Service unreachable on CONNECT: deny (default) or defer.
    pub on_unreachable: OnUnreachable,
    /// A listener of this broker (e.g. `127.0.0.1:1883`) the plugin briefly connects to after a
    /// revocation, so the broker's event loop wakes and kicks at once instead of at its next
    /// idle tick (up to 100 ms later in Debian's build).
    pub wake_addr: Option<std::net::SocketAddr>,
}

impl Config {
    /// Builds the configuration from `(key, value)` pairs, keys without the `plugin_opt_` prefix.
    ///
    /// # Errors
    /// A required option is missing, an option is unknown, or a value does not parse; the
    /// message names the option.
    pub fn from_options<'a>(
        options: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut service_addr = None;
        let mut access_key_id = None;
        let mut access_key_secret = None;
        let mut instance_id = None;
        let mut timeout = Duration::from_millis(DEFAULT_TIMEOUT_MS);
        let mut state_file = None;
        let mut on_unreachable = OnUnreachable::Deny;
        let mut wake_addr = None;
        let (mut ca_file, mut cert_file, mut key_file) = (None, None, None);
        let path = |value: &str| Some(PathBuf::from(value)).filter(|_| !value.is_empty());
        for (key, value) in options {
            let value = value.trim();
            match key {
                "service_addr" => service_addr = Some(value.to_owned()),
                "ca_file" => ca_file = path(value),
                "cert_file" => cert_file = path(value),
                "key_file" => key_file = path(value),
                "access_key_id" => access_key_id = Some(value.to_owned()),
                "access_key_secret" => access_key_secret = Some(value.to_owned()),
                "instance_id" => instance_id = Some(value.to_owned()).filter(|v| !v.is_empty()),
                "timeout_ms" => {
                    let ms: u64 = value
                        .parse()
                        .ok()
                        .filter(|ms| (1..=60_000).contains(ms))
                        .ok_or(
                            "plugin_opt_timeout_ms must be a number of milliseconds, 1 to 60000",
                        )?;
                    timeout = Duration::from_millis(ms);
                }
                "state_file" => {
                    state_file = Some(PathBuf::from(value)).filter(|_| !value.is_empty())
                }
                "on_unreachable" => {
                    on_unreachable = match value {
                        "deny" => OnUnreachable::Deny,
                        "defer" => OnUnreachable::Defer,
                        _ => return Err("plugin_opt_on_unreachable must be deny or defer".into()),
                    }
                }
                "wake_addr" => {
                    wake_addr = Some(value.parse().map_err(|_| {
                        "plugin_opt_wake_addr must be an address such as 127.0.0.1:1883"
                    })?)
                }
                other => return Err(format!("unknown option plugin_opt_{other}")),
            }
        }
        let required = |v: Option<String>, name: &str| {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| format!("plugin_opt_{name} is required"))
        };
        let service_addrs: Vec<String> = required(service_addr, "service_addr")?
            .split(',')
            .map(str::trim)
            .filter(|addr| !addr.is_empty())
            .map(str::to_owned)
            .collect();
        if service_addrs.is_empty()
            || !service_addrs
                .iter()
                .all(|a| a.starts_with("http://") || a.starts_with("https://"))
        {
            return Err(
                "plugin_opt_service_addr must be a URL such as http://127.0.0.1:50051, \
                 or several separated by commas"
                    .into(),
            );
        }
        match (&cert_file, &key_file) {
            (Some(_), None) => return Err("plugin_opt_cert_file needs plugin_opt_key_file".into()),
            (None, Some(_)) => return Err("plugin_opt_key_file needs plugin_opt_cert_file".into()),
            _ => {}
        }
        // Refused rather than ignored: the access key secret must not go out in plaintext
        // because the scheme was mistyped.
        let tls_set = ca_file.is_some() || cert_file.is_some();
        if tls_set && !service_addrs.iter().all(|a| a.starts_with("https://")) {
            return Err("plugin_opt_ca_file and plugin_opt_cert_file need https:// \
                 plugin_opt_service_addr URLs"
                .into());
        }
        Ok(Self {
            service_addrs,
            ca_file,
            cert_file,
            key_file,
            access_key_id: required(access_key_id, "access_key_id")?,
            access_key_secret: required(access_key_secret, "access_key_secret")?,
            instance_id,
            timeout,
            state_file,
            on_unreachable,
            wake_addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("service_addr", "http://127.0.0.1:50051"),
            ("access_key_id", "LTAI"),
            ("access_key_secret", "secret"),
        ]
    }

    #[test]
    fn defaults_are_fail_closed_with_two_second_timeout() {
        let c = Config::from_options(base()).expect("valid");
        assert_eq!(c.on_unreachable, OnUnreachable::Deny);
        assert_eq!(c.timeout, Duration::from_millis(2000));
        assert!(c.instance_id.is_none() && c.state_file.is_none());
    }

    #[test]
    fn bad_values_are_named() {
        let mut o = base();
        o.push(("timeout_ms", "0"));
        assert!(Config::from_options(o).unwrap_err().contains("timeout_ms"));
        let mut o = base();
        o.push(("on_unreachable", "allow"));
        assert!(Config::from_options(o)
            .unwrap_err()
            .contains("on_unreachable"));
        let mut o = base();
        o.push(("bogus", "1"));
        assert!(Config::from_options(o).unwrap_err().contains("bogus"));
        assert!(Config::from_options(base().into_iter().skip(1))
            .unwrap_err()
            .contains("service_addr"));
    }

    #[test]
    fn tls_options_need_https_and_a_whole_identity() {
        let https = |extra: &[(&'static str, &'static str)]| {
            let mut o = base();
            o[0] = ("service_addr", "https://tokend:50051");
            o.extend_from_slice(extra);
            Config::from_options(o)
        };
        let c = https(&[
            ("ca_file", "/etc/tokend/ca.pem"),
            ("cert_file", "/etc/tokend/broker.pem"),
            ("key_file", "/etc/tokend/broker.key"),
        ])
        .expect("valid");
        assert_eq!(c.ca_file, Some(PathBuf::from("/etc/tokend/ca.pem")));
        assert_eq!(c.key_file, Some(PathBuf::from("/etc/tokend/broker.key")));
        assert!(
            https(&[]).is_ok_and(|c| c.ca_file.is_none()),
            "system roots"
        );
        assert!(https(&[("cert_file", "/c.pem")])
            .unwrap_err()
            .contains("plugin_opt_key_file"));
        assert!(https(&[("key_file", "/k.pem")])
            .unwrap_err()
            .contains("plugin_opt_cert_file"));
        let mut plain = base();
        plain.push(("ca_file", "/etc/tokend/ca.pem"));
        assert!(Config::from_options(plain)
            .unwrap_err()
            .contains("https://"));
        let mut mixed = base();
        mixed[0] = ("service_addr", "https://a:50051,http://b:50051");
        mixed.push(("ca_file", "/ca.pem"));
        assert!(Config::from_options(mixed)
            .unwrap_err()
            .contains("https://"));
    }

    #[test]
    fn several_addresses_are_read_in_order() {
        let mut o = base();
        o[0] = ("service_addr", " http://a:50051 , http://b:50051,");
        let c = Config::from_options(o).expect("valid");
        assert_eq!(c.service_addrs, ["http://a:50051", "http://b:50051"]);
        for bad in [",", "http://a:50051,b:50051"] {
            let mut o = base();
            o[0] = ("service_addr", bad);
            assert!(
                Config::from_options(o)
                    .unwrap_err()
                    .contains("plugin_opt_service_addr"),
                "{bad}"
            );
        }
    }
}
