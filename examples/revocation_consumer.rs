//! A broker-side consumer of the revocation watch stream: keeps a local set of revoked token
//! fingerprints and device/access key ids, and resumes from its last revision after a restart
//! or a dropped connection, so it never misses an event.
//!
//! ```text
//! cargo run --example revocation_consumer -- --root-key-file data/root-access-key.json
//! # against a server with --tls-cert and --tls-client-ca:
//! cargo run --example revocation_consumer -- --root-key-file data/root-access-key.json \
//!     --grpc-addr 127.0.0.1:50051 --ca-file tls/ca.pem --cert-file tls/client.pem --key-file tls/client.key
//! ```
//!
//! The flags and their `MQTT_TOKEND_*` variables are those of `mqtt-tokend access-key`, so one
//! environment serves both.
//!
//! The resume loop is the client crate's `RevocationFollower`, the same one the Mosquitto
//! plugin runs:
//! 1. Resume after the revision in the state file, or read a snapshot when there is none.
//! 2. Hand over each event; its revision is saved once this program has applied it.
//! 3. On OUT_OF_RANGE (the revision was compacted): read a snapshot, announced by
//!    `SnapshotBegin` so the local set can be cleared; no revision is saved until its
//!    `SnapshotEnd`, so a crash mid-snapshot starts the snapshot over.
//! 4. On any other error or end of stream (UNAVAILABLE at server shutdown): back off, resume.
//!
//! This program only applies what it is handed.

use std::{collections::HashMap, path::PathBuf};

use clap::Parser;
use mqtt_tokend_client::{
    endpoint_url, now_ms, AccessKey, ClientConfig, ClientTls, FollowItem, FollowerOptions,
    RevisionFile, RevocationEvent, RevocationFollower,
};

#[derive(Parser)]
struct Args {
    /// mqtt-tokend gRPC address: `host:port` (https when --ca-file or --cert-file is set),
    /// or a URL (`http://…`, `https://…`).
    #[arg(
        long,
        alias = "addr",
        env = "MQTT_TOKEND_GRPC_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    grpc_addr: String,
    /// JSON file with AccessKeyId and AccessKeySecret.
    #[arg(
        long,
        env = "MQTT_TOKEND_ROOT_KEY_FILE",
        default_value = "data/root-access-key.json"
    )]
    root_key_file: PathBuf,
    /// Where the last processed revision is kept.
    #[arg(long, default_value = "revocation-consumer.state")]
    state_file: PathBuf,
    /// CA certificates (PEM) the server's certificate must be signed by; unset, an https
    /// address trusts the system's CAs.
    #[arg(long, env = "MQTT_TOKEND_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for a server that requires one (mutual TLS).
    #[arg(long, env = "MQTT_TOKEND_CERT_FILE", requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert-file.
    #[arg(long, env = "MQTT_TOKEND_KEY_FILE", requires = "cert_file")]
    key_file: Option<PathBuf>,
}

/// What this broker must refuse: fingerprints and key ids, with when each stops mattering.
#[derive(Default)]
struct Revoked {
    /// Key -> expiry in ms (0 = never expires on its own).
    entries: HashMap<String, i64>,
}

impl Revoked {
    fn apply(&mut self, e: &RevocationEvent) {
        let key = if e.token_fingerprint.is_empty() {
            &e.key_id
        } else {
            &e.token_fingerprint
        };
        self.entries.insert(key.clone(), e.expire_time);
        // A real broker disconnects the clients whose credentials match `key` here
        // (`RevocationEvent::hits` tells which grants it ends).
        println!(
            "revision {}: drop clients using {} (instance {}, {}, client {})",
            e.revision, key, e.instance_id, e.reason, e.client_id
        );
    }

    /// Expired credentials fail on their own; forget them so the set stays bounded.
    fn prune(&mut self, now_ms: i64) {
        self.entries.retain(|_, exp| *exp == 0 || *exp > now_ms);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let key = AccessKey::from_json_file(&args.root_key_file)?;
    let tls = ClientTls::from_files(args.ca_file, args.cert_file, args.key_file)?;
    // Lazy: the service may start after this program; the follower retries until it answers.
    let client = ClientConfig::new([endpoint_url(&args.grpc_addr, tls.is_some())])
        .access_key(key)
        .tls_opt(tls)
        .connect_lazy()?;
    let follower = RevocationFollower::new(
        &client,
        RevisionFile::new(&args.state_file),
        FollowerOptions::default(),
    );
    let mut revoked = Revoked::default();
    let handle = |item| match item {
        FollowItem::SnapshotBegin(reason) => {
            eprintln!("reading a snapshot ({reason:?})");
            revoked = Revoked::default();
        }
        FollowItem::Event(e) => revoked.apply(&e),
        FollowItem::SnapshotEnd { .. } | FollowItem::Progress { .. } => revoked.prune(now_ms()),
        FollowItem::Disconnected { error, retry_in } => {
            eprintln!("stream stopped: {error}; resuming in {retry_in:?}");
        }
        FollowItem::SaveFailed { revision, error } => {
            eprintln!("cannot save revision {revision}: {error}");
        }
    };
    let ctrl_c = async {
        // If the handler cannot be installed, run until killed, as before.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    follower.run(handle, ctrl_c).await;
    Ok(())
}
