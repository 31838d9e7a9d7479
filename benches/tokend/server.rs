//! The server under test: the release binary (`mqtt-tokend serve`) as a child process, like
//! etcd, so its RSS, CPU and restart time are its own and the two peers are treated alike.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mqtt_tokend::app::RootKeyFile;
use mqtt_tokend_client::AccessKey;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::measure::Target;

/// The rate limits the bench turns off (set to 0): it measures the service, not its throttle.
const RATE_FLAGS: [&str; 5] = [
    "--rate-apply-token",
    "--rate-query-token",
    "--rate-revoke-token",
    "--rate-device-credential",
    "--rate-per-ip",
];

/// A running `mqtt-tokend serve`.
pub struct Tokend {
    child: Child,
    /// The gRPC address.
    pub endpoint: String,
    /// The REST shim's address.
    pub http_endpoint: String,
    /// The sled directory.
    pub data_dir: PathBuf,
    /// The root access key the server wrote on first start.
    pub root: RootKeyFile,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Bytes under `path`, recursively.
pub fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

impl Tokend {
    /// Starts `mqtt-tokend serve` on sled in `dir` and returns once Health/Check answers
    /// SERVING, with the time that took.
    pub async fn start(dir: &Path) -> (Self, Duration) {
        Self::start_with(dir, &dir.join("data"), &[]).await
    }

    /// Starts `mqtt-tokend serve` with its keyring in `dir`, its data directory (the sled
    /// database, or the root key file alone on etcd) at `data_dir`, and `store_args` (the
    /// `--store etcd ...` flags, or none for sled).
    pub async fn start_with(
        dir: &Path,
        data_dir: &Path,
        store_args: &[String],
    ) -> (Self, Duration) {
        let endpoint = format!("127.0.0.1:{}", free_port());
        // sled releases its directory lock from a background thread a moment after the last
        // handle drops (after the in-process preload), so a start that exits early is retried.
        for attempt in 0.. {
            if let Some(started) = Self::try_start(dir, &endpoint, data_dir, store_args).await {
                return started;
            }
            assert!(attempt < 40, "mqtt-tokend keeps exiting at start");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        unreachable!("the loop returns or panics")
    }

    async fn try_start(
        dir: &Path,
        endpoint: &str,
        data_dir: &Path,
        store_args: &[String],
    ) -> Option<(Self, Duration)> {
        let endpoint = endpoint.to_owned();
        let http_endpoint = format!("127.0.0.1:{}", free_port());
        let data_dir = data_dir.to_owned();
        let t0 = Instant::now();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mqtt-tokend"));
        cmd.args([
            "serve",
            "--grpc-addr",
            &endpoint,
            "--http-addr",
            &http_endpoint,
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--keyring")
        .arg(dir.join("keyring.json"))
        .args(store_args);
        for flag in RATE_FLAGS {
            cmd.args([flag, "0"]);
        }
        // The fan-out cells hold thousands of watch streams with the root key.
        cmd.args(["--max-watches-per-key", "0"]);
        let mut child = cmd
            .args(["--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn mqtt-tokend");
        loop {
            if t0.elapsed() > Duration::from_secs(120) {
                panic!("mqtt-tokend did not become ready in 120 s");
            }
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("  mqtt-tokend exited at start ({status}); retrying");
                return None;
            }
            if let Ok(c) = mqtt_tokend_client::connect(&format!("http://{endpoint}"), None).await {
                let ok = HealthClient::new(c.channel())
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner().status == 1)
                    .unwrap_or(false);
                if ok {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ready = t0.elapsed();
        eprintln!("  mqtt-tokend pid {} on {endpoint}", child.id());
        let raw = std::fs::read(data_dir.join("root-access-key.json")).expect("root key file");
        let root: RootKeyFile = serde_json::from_slice(&raw).expect("root key json");
        Some((
            Self {
                child,
                endpoint,
                http_endpoint,
                data_dir,
                root,
            },
            ready,
        ))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The root key, which every gRPC cell authenticates as.
    pub fn key(&self) -> AccessKey {
        AccessKey::new(&self.root.access_key_id, &self.root.access_key_secret)
    }

    /// A target for the load cells: this server, as the root key.
    pub fn target(&self) -> Target {
        Target::single(&self.endpoint, Some(self.pid()), Some(self.key()))
    }

    /// VmRSS and VmHWM of the server, in MiB.
    pub fn rss_mib(&self) -> (f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
                .unwrap_or(0.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGTERM, then wait for the graceful shutdown (final flush) to finish.
    pub fn stop(mut self) {
        // SAFETY: kill only sends a signal to our own child's pid.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
