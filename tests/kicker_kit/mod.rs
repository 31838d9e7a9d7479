//! The kicker as a real process (`mqtt-tokend kicker`, the binary under test), and the
//! broker side of the HTTP contract (`/mqtt/auth` as EMQX and rmqtt call it) that records the
//! sessions it kicks.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::broker_kit::Login;
use crate::common::{Key, TestServer};

/// How long a test waits for the kicker.
pub const WAIT: Duration = Duration::from_secs(20);

/// How the kicker reaches the broker API.
pub struct BrokerApiFlags {
    /// `emqx` or `rmqtt`.
    pub broker: &'static str,
    /// The API's base URL.
    pub url: String,
    /// Extra flags (credentials, retries).
    pub extra: Vec<String>,
    /// Environment variables (secrets).
    pub env: Vec<(String, String)>,
}

/// A running `mqtt-tokend kicker`; killed on drop.
pub struct Kicker {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    lines: mpsc::UnboundedReceiver<Option<String>>,
}

impl Kicker {
    /// Starts the kicker against the service at `service` (a gRPC address), calling with
    /// `key` (the broker's key), its revision in `state_file`, logging at debug level.
    pub fn start(service: &str, key: &Key, api: &BrokerApiFlags, state_file: &Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mqtt-tokend"));
        cmd.arg("kicker")
            .args(["--service", service])
            .args(["--broker", api.broker])
            .args(["--broker-api", &api.url])
            .arg("--state-file")
            .arg(state_file)
            .args(&api.extra)
            .env("MQTT_TOKEND_KICKER_ACCESS_KEY_ID", &key.id)
            .env("MQTT_TOKEND_KICKER_ACCESS_KEY_SECRET", &key.secret)
            .env("MQTT_TOKEND_LOG", "mqtt_tokend=debug")
            .envs(api.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start the kicker");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::unbounded_channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(Some(line));
            }
            // End of stderr: the process has exited.
            let _ = tx.send(None);
        });
        Self { child, log, lines }
    }

    /// The log so far.
    pub fn dump_log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits for the next log line containing every one of `needles` (lines before it are
    /// passed over for good); returns it.
    pub async fn wait_log(&mut self, needles: &[&str]) -> String {
        self.wait_line(&format!("{needles:?}"), |line| {
            needles.iter().all(|n| line.contains(n))
        })
        .await
    }

    /// Waits until the kicker has saved `revision` to its state file (it logs each save).
    pub async fn wait_saved(&mut self, revision: u64) {
        let field = format!("revision={revision}");
        self.wait_line(&format!("state saved {field}"), |line| {
            line.contains("state saved") && line.ends_with(&field)
        })
        .await;
    }

    async fn wait_line(&mut self, what: &str, found: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(Some(line))) if found(&line) => return line,
                Ok(Some(Some(_))) => {}
                Ok(_) => panic!(
                    "the kicker exited before logging {what}:\n{}",
                    self.dump_log()
                ),
                Err(_) => panic!("no kicker log line {what} in time:\n{}", self.dump_log()),
            }
        }
    }

    /// Waits for the process to exit by itself; returns its status.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT * 3;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(Some(_))) => {}
                Ok(_) => break,
                Err(_) => panic!("the kicker did not exit:\n{}", self.dump_log()),
            }
        }
        self.child.wait().expect("wait for the kicker")
    }

    /// SIGTERM, and waits for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.wait_exit().await
    }
}

impl Drop for Kicker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- kicker log ---\n{}", self.dump_log());
        }
    }
}

/// Reads the state file's revision.
pub fn saved_revision(state_file: &Path) -> Option<u64> {
    std::fs::read_to_string(state_file)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A state file path in `dir`.
pub fn state_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("kicker.revision")
}

/// The broker side of `/mqtt/auth`: records sessions under the broker's key, as rmqtt's
/// `rmqtt-auth-http` (form body) and EMQX do.
pub struct AuthEndpoint {
    http: reqwest::Client,
    url: String,
    authorization: String,
}

impl AuthEndpoint {
    /// The endpoint of `ts`, called with `key` as HTTP Basic.
    pub fn new(ts: &TestServer, key: &Key) -> Self {
        use base64::Engine;
        let pair = format!("{}:{}", key.id, key.secret);
        Self {
            http: reqwest::Client::new(),
            url: format!(
                "http://{}/mqtt/auth",
                ts.server().http_addr().expect("REST on")
            ),
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ),
        }
    }

    /// A CONNECT check that must be allowed: the session is recorded.
    pub async fn connect(&self, client_id: &str, login: &Login) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("clientid", client_id),
                ("username", &login.username),
                ("password", &login.password),
            ])
            .finish();
        let text = self
            .http
            .post(&self.url)
            .header("authorization", &self.authorization)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("HTTP round trip")
            .text()
            .await
            .expect("body");
        let reply: serde_json::Value = serde_json::from_str(&text).expect("JSON answer");
        assert_eq!(reply["result"], "allow", "{client_id}: {reply}");
    }
}
