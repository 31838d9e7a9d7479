//! A broker-side consumer of the revocation watch stream: keeps a local set of revoked token
//! fingerprints and device/access key ids, and resumes from its last revision after a restart
//! or a dropped connection, so it never misses an event.
//!
//! ```text
//! cargo run --example revocation_consumer -- --key-file data/root-access-key.json
//! ```
//!
//! The resume loop (the whole contract a broker needs):
//! 1. Load `last` from the state file (0 if none).
//! 2. Watch with START_MODE_REVISION from `last + 1` (or START_MODE_SNAPSHOT when `last == 0`).
//! 3. For each event: apply it (drop matching clients), then persist `last = event.revision`.
//! 4. On OUT_OF_RANGE (compacted): clear the local set, watch with START_MODE_SNAPSHOT, and
//!    after SNAPSHOT_END continue as in 3.
//! 5. On any other error or end of stream (UNAVAILABLE at server shutdown): back off, go to 2.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Parser;
use mqtt_tokend::proto::{
    revocation_service_client::RevocationServiceClient, watch_revocations_response::Message,
    RevocationEvent, StartMode, WatchRevocationsRequest,
};
use tonic::{transport::Channel, Code, Request};

#[derive(Parser)]
struct Args {
    /// mqtt-tokend gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// JSON file with AccessKeyId and AccessKeySecret.
    #[arg(long, default_value = "data/root-access-key.json")]
    key_file: PathBuf,
    /// Where the last processed revision is kept.
    #[arg(long, default_value = "revocation-consumer.state")]
    state_file: PathBuf,
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
        // A real broker disconnects the clients whose credentials match `key` here.
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

fn load_state(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn save_state(path: &Path, revision: u64) -> std::io::Result<()> {
    // Write then rename, so a crash never leaves a torn file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, revision.to_string())?;
    std::fs::rename(tmp, path)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let key: serde_json::Value = serde_json::from_slice(&std::fs::read(&args.key_file)?)?;
    let bearer = format!(
        "Bearer {}:{}",
        key["AccessKeyId"].as_str().unwrap_or_default(),
        key["AccessKeySecret"].as_str().unwrap_or_default()
    );
    let mut revoked = Revoked::default();
    let mut last = load_state(&args.state_file);
    let mut backoff = Duration::from_millis(100);
    loop {
        let channel = match Channel::from_shared(args.addr.clone())?.connect().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("connect failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let mut client = RevocationServiceClient::new(channel);
        let (mode, start) = if last == 0 {
            (StartMode::Snapshot, 0)
        } else {
            (StartMode::Revision, last + 1)
        };
        let mut request = Request::new(WatchRevocationsRequest {
            start_mode: mode as i32,
            start_revision: start,
            instance_ids: vec![],
        });
        request
            .metadata_mut()
            .insert("authorization", bearer.parse()?);
        let mut stream = match client.watch_revocations(request).await {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == Code::OutOfRange => {
                eprintln!("revision {start} was compacted; resyncing from a snapshot");
                revoked = Revoked::default();
                last = 0;
                continue;
            }
            Err(status) => {
                eprintln!("watch failed: {status}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            match stream.message().await {
                Ok(Some(m)) => match m.message {
                    Some(Message::Event(e)) => {
                        revoked.apply(&e);
                        last = e.revision;
                        save_state(&args.state_file, last)?;
                    }
                    Some(Message::SnapshotEnd(p)) | Some(Message::Progress(p)) => {
                        // Nothing newer than p.revision exists for us: safe to resume after it.
                        if p.revision > last {
                            last = p.revision;
                            save_state(&args.state_file, last)?;
                        }
                        revoked.prune(mqtt_tokend::core::now_ms());
                    }
                    None => {}
                },
                Ok(None) => break,
                Err(status) => {
                    eprintln!("stream ended: {status}; resuming after revision {last}");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}
