//! A real `rmqttd` (rmqtt 0.24, built by `scripts/install-tools.sh`) configured with
//! `rmqtt-auth-http` against mqtt-tokend's `/mqtt/auth` and `/mqtt/acl` and with
//! `rmqtt-http-api` for the kicker, on free loopback ports; and rumqttc clients.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc as std_mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use crate::common::{free_addr, Key};

/// The pinned version `scripts/install-tools.sh` builds.
pub const RMQTT_VERSION: &str = "0.24.0";
/// How long a test waits for the broker or a client.
pub const WAIT: Duration = Duration::from_secs(20);
/// The bearer token of the broker's HTTP API in these tests.
pub const API_TOKEN: &str = "rmqtt-api-t0ken";

/// Where `rmqttd` is: `$RMQTTD`, `target/tools/rmqttd`, the tools cache, or `PATH`. `None`
/// (after saying why) when the test must skip; with `CI` set a missing broker fails instead.
pub fn rmqttd_binary() -> Option<PathBuf> {
    let cache = std::env::var_os("MQTT_TOKEND_TOOLS_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/mqtt-tokend-tools"))
        })
        .map(|c| c.join(format!("rmqtt-{RMQTT_VERSION}/bin/rmqttd")));
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("rmqttd"))
            .find(|p| p.is_file())
    });
    let found = std::env::var_os("RMQTTD")
        .map(PathBuf::from)
        .into_iter()
        .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/rmqttd")])
        .chain(cache)
        .chain(on_path)
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but rmqttd {RMQTT_VERSION} is missing: run scripts/install-tools.sh"
        );
        eprintln!(
            "SKIPPED: rmqttd {RMQTT_VERSION} is not installed (scripts/install-tools.sh builds it \
             into ~/.cache/mqtt-tokend-tools and links target/tools/rmqttd; or set RMQTTD)"
        );
    }
    found
}

/// A running `rmqttd -f rmqtt.toml`; killed on drop.
pub struct Rmqtt {
    child: Child,
    /// The MQTT listener.
    pub mqtt_port: u16,
    /// The HTTP API's base URL (for the kicker).
    pub api_url: String,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Rmqtt {
    /// Starts rmqtt asking mqtt-tokend's REST listener `http` as the broker `key`.
    pub fn start(binary: &Path, http: SocketAddr, key: &Key) -> Self {
        use base64::Engine;
        let dir = tempfile::tempdir().expect("tempdir");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).expect("plugins dir");
        let mqtt_port = free_addr().port();
        let rpc = free_addr();
        let api = free_addr();
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", key.id, key.secret));
        // rmqtt-acl starts by default and its stock rules end in "allow all": off, so that
        // only mqtt-tokend decides.
        let main = format!(
            r#"node.id = 1
rpc.server_addr = "{rpc}"
log.to = "console"
log.level = "info"
log.dir = "{dir}"
plugins.dir = "{plugins}/"
plugins.default_startups = ["rmqtt-auth-http", "rmqtt-http-api"]
plugins.disabled_default_startups = ["rmqtt-acl"]
listener.tcp.external.addr = "127.0.0.1:{mqtt_port}"
listener.tcp.external.allow_anonymous = false
"#,
            dir = dir.path().display(),
            plugins = plugins.display(),
        );
        // The configuration docs/brokers.md gives, pointed at this service.
        let auth_http = format!(
            r#"http_timeout = "5s"
http_headers.accept = "*/*"
http_headers.authorization = "Basic {basic}"
disconnect_if_pub_rejected = true
disconnect_if_expiry = true
deny_if_error = true

http_auth_req.url = "http://{http}/mqtt/auth"
http_auth_req.method = "post"
http_auth_req.headers = {{ content-type = "application/x-www-form-urlencoded" }}
http_auth_req.params = {{ clientid = "%c", username = "%u", password = "%P" }}

http_acl_req.url = "http://{http}/mqtt/acl"
http_acl_req.method = "post"
http_acl_req.headers = {{ content-type = "application/x-www-form-urlencoded" }}
http_acl_req.params = {{ access = "%A", username = "%u", clientid = "%c", ipaddr = "%a", topic = "%t" }}
"#
        );
        let http_api = format!("http_laddr = \"{api}\"\nhttp_bearer_token = \"{API_TOKEN}\"\n");
        let conf = dir.path().join("rmqtt.toml");
        std::fs::write(&conf, main).expect("write rmqtt.toml");
        std::fs::write(plugins.join("rmqtt-auth-http.toml"), auth_http).expect("write auth-http");
        std::fs::write(plugins.join("rmqtt-http-api.toml"), http_api).expect("write http-api");

        // Run in the temporary directory: rmqtt also reads ./rmqtt.toml and RMQTT_* variables.
        let mut child = Command::new(binary)
            .arg("-f")
            .arg(&conf)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rmqttd");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std_mpsc::channel();
        for out in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let sink = log.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let broker = Self {
            child,
            mqtt_port,
            api_url: format!("http://{api}"),
            log,
            _dir: dir,
        };
        // Ready once the MQTT listener and the HTTP API are both up.
        let deadline = Instant::now() + WAIT;
        let (mut mqtt_up, mut api_up) = (false, false);
        while !(mqtt_up && api_up) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    mqtt_up |= line.contains("MQTT Broker Listening")
                        && line.contains(&format!("127.0.0.1:{mqtt_port}"));
                    api_up |=
                        line.contains("HTTP API Listening") && line.contains(&api.to_string());
                }
                Err(_) => panic!("rmqttd did not start:\n{}", broker.dump_log()),
            }
        }
        broker
    }

    /// Everything rmqtt logged.
    pub fn dump_log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Rmqtt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- rmqttd log ---\n{}", self.dump_log());
        }
    }
}

/// What a client's event loop saw.
pub use crate::mqtt_kit::{ok, Ev, Mqtt};

/// Connects with a 5 s keepalive; `Err` with the reason if the broker refuses.
pub async fn mqtt(
    port: u16,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<Mqtt, String> {
    // rmqtt checks `expire_at` when a packet arrives: a short keepalive bounds that wait.
    crate::mqtt_kit::connect(port, client_id, username, password, Duration::from_secs(5)).await
}
