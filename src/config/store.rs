//! Where the data lives: the embedded sled store (default) or an etcd cluster shared by
//! several replicas.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::store::EtcdOptions;

/// The storage backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// sled in `--data-dir`: one process, nothing to install.
    #[default]
    Sled,
    /// etcd v3 (`--etcd-endpoints`): any number of replicas sharing one `--etcd-prefix`.
    Etcd,
}

/// The storage flags.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct StoreOptions {
    /// Storage backend: `sled` (embedded, in --data-dir) or `etcd` (several replicas).
    #[arg(long = "store", env = "MQTT_TOKEND_STORE", value_enum, default_value_t = StoreKind::Sled)]
    pub kind: StoreKind,
    /// etcd client URLs, comma-separated (with --store etcd).
    #[arg(long, env = "MQTT_TOKEND_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix in etcd; replicas sharing it share every token, key and credential.
    #[arg(long, env = "MQTT_TOKEND_ETCD_PREFIX", default_value = EtcdOptions::DEFAULT_PREFIX)]
    pub etcd_prefix: String,
    /// etcd user name (with --etcd-password), when etcd authentication is on.
    #[arg(long, env = "MQTT_TOKEND_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// etcd password; prefer the environment variable to the flag (the flag shows in `ps`).
    #[arg(long, env = "MQTT_TOKEND_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    /// PEM CA certificate that signed etcd's server certificates (https endpoints).
    #[arg(long, env = "MQTT_TOKEND_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// PEM client certificate, when etcd requires client certificates (with --etcd-key-file).
    #[arg(long, env = "MQTT_TOKEND_ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// PEM private key of --etcd-cert-file.
    #[arg(long, env = "MQTT_TOKEND_ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// Most operations in one etcd transaction: etcd's --max-txn-ops (128 by default).
    #[arg(long, env = "MQTT_TOKEND_ETCD_MAX_TXN_OPS", default_value_t = EtcdOptions::DEFAULT_MAX_TXN_OPS as u64, value_parser = clap::value_parser!(u64).range(8..))]
    pub etcd_max_txn_ops: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sled,
            etcd_endpoints: Vec::new(),
            etcd_prefix: EtcdOptions::DEFAULT_PREFIX.to_owned(),
            etcd_user: None,
            etcd_password: None,
            etcd_ca_file: None,
            etcd_cert_file: None,
            etcd_key_file: None,
            etcd_max_txn_ops: EtcdOptions::DEFAULT_MAX_TXN_OPS as u64,
        }
    }
}

impl StoreOptions {
    /// The etcd connection, with `--store etcd`.
    ///
    /// # Errors
    /// A flag that needs another is missing (a message naming both).
    pub fn etcd(&self) -> Result<Option<EtcdOptions>, String> {
        if self.kind != StoreKind::Etcd {
            return Ok(None);
        }
        if self.etcd_endpoints.iter().all(|e| e.trim().is_empty()) {
            return Err("--store etcd needs --etcd-endpoints, e.g. http://127.0.0.1:2379".into());
        }
        if !self.etcd_prefix.starts_with('/') || !self.etcd_prefix.ends_with('/') {
            return Err(format!(
                "--etcd-prefix {:?} must start and end with '/', e.g. /mqtt-tokend/",
                self.etcd_prefix
            ));
        }
        let user = match (&self.etcd_user, &self.etcd_password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => return Err("--etcd-user and --etcd-password go together".into()),
        };
        let client_cert = match (&self.etcd_cert_file, &self.etcd_key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => return Err("--etcd-cert-file and --etcd-key-file go together".into()),
        };
        Ok(Some(EtcdOptions {
            endpoints: self
                .etcd_endpoints
                .iter()
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty())
                .collect(),
            prefix: self.etcd_prefix.clone(),
            user,
            ca_file: self.etcd_ca_file.clone(),
            client_cert,
            max_txn_ops: usize::try_from(self.etcd_max_txn_ops).unwrap_or(usize::MAX),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd() -> StoreOptions {
        StoreOptions {
            kind: StoreKind::Etcd,
            etcd_endpoints: vec!["http://a:2379".into(), " http://b:2379 ".into()],
            ..StoreOptions::default()
        }
    }

    #[test]
    fn sled_needs_no_etcd_options() {
        assert_eq!(StoreOptions::default().etcd(), Ok(None));
    }

    #[test]
    fn etcd_flags_become_the_connection() {
        let mut o = etcd();
        o.etcd_user = Some("u".into());
        o.etcd_password = Some("p".into());
        o.etcd_cert_file = Some("c.pem".into());
        o.etcd_key_file = Some("k.pem".into());
        let got = o.etcd().expect("valid").expect("etcd");
        assert_eq!(got.endpoints, vec!["http://a:2379", "http://b:2379"]);
        assert_eq!(got.prefix, "/mqtt-tokend/");
        assert_eq!(got.user, Some(("u".into(), "p".into())));
        assert_eq!(got.client_cert, Some(("c.pem".into(), "k.pem".into())));
        assert_eq!(got.max_txn_ops, 128);
    }

    #[test]
    fn incomplete_or_contradicting_etcd_flags_are_refused_by_name() {
        type Change = fn(&mut StoreOptions);
        let cases: [(Change, &str); 4] = [
            (|o| o.etcd_endpoints.clear(), "--etcd-endpoints"),
            (|o| o.etcd_prefix = "mqtt".into(), "--etcd-prefix"),
            (|o| o.etcd_user = Some("u".into()), "--etcd-password"),
            (|o| o.etcd_key_file = Some("k".into()), "--etcd-cert-file"),
        ];
        for (change, flag) in cases {
            let mut o = etcd();
            change(&mut o);
            let err = o.etcd().expect_err("refused");
            assert!(err.contains(flag), "{err}");
        }
    }
}
