//! The broker: finding `mosquitto`, building the plugin, and running `mosquitto -c` with it
//! on a free loopback port, its log captured.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc as std_mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    common::{free_addr, Key},
    INSTANCE, WAIT,
};

/// `None` (after saying why) when the test must skip.
pub(crate) fn mosquitto_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin")])
            .map(|d| d.join("mosquitto"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the mosquitto binary is missing: run scripts/install-mosquitto.sh"
        );
        eprintln!("SKIPPED: mosquitto is not installed (scripts/install-mosquitto.sh installs it)");
    }
    found
}

/// Builds the plugin with the same profile as this test and returns the `.so`.
pub(crate) fn build_plugin() -> PathBuf {
    // target/<profile>/deps/mosquitto-<hash>  ->  target/<profile>
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "mqtt-tokend-mosquitto"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "building the plugin failed");
    let so = profile_dir.join("libmqtt_tokend_mosquitto.so");
    assert!(so.is_file(), "{} missing", so.display());
    so
}

/// A running `mosquitto -c` with the plugin; killed on drop.
pub(crate) struct Broker {
    child: Child,
    pub(crate) port: u16,
    log: Arc<Mutex<Vec<String>>>,
    pub(crate) state_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// What the plugin needs for mutual TLS to the service: the CA and its own pair, PEM.
pub(crate) struct PluginTls {
    pub(crate) ca: String,
    pub(crate) cert: String,
    pub(crate) key: String,
}

impl Broker {
    /// A broker whose plugin knows the service at `services`, in this order (several:
    /// replicas, comma-separated in `plugin_opt_service_addr`).
    pub(crate) fn start(
        binary: &Path,
        plugin: &Path,
        services: &[SocketAddr],
        key: &Key,
        tls: Option<&PluginTls>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let service = services
            .iter()
            .map(|addr| format!("{scheme}://{addr}"))
            .collect::<Vec<_>>()
            .join(",");
        let service = match tls {
            None => format!("{service}\n"),
            Some(tls) => {
                let file = |name: &str, pem: &str| {
                    let path = dir.path().join(name);
                    std::fs::write(&path, pem).expect("write PEM");
                    path.display().to_string()
                };
                format!(
                    "{service}\nplugin_opt_ca_file {}\nplugin_opt_cert_file {}\n\
                     plugin_opt_key_file {}\n",
                    file("ca.pem", &tls.ca),
                    file("broker.pem", &tls.cert),
                    file("broker.key", &tls.key),
                )
            }
        };
        let port = free_addr().port();
        let state_file = dir.path().join("revision");
        // Running as root, Mosquitto would switch to the `mosquitto` user, which cannot read
        // the temporary directory.
        let user = if std::env::var("USER").is_ok_and(|u| u == "root")
            || std::fs::metadata("/proc/self").is_ok_and(|m| {
                use std::os::unix::fs::MetadataExt;
                m.uid() == 0
            }) {
            "user root\n"
        } else {
            ""
        };
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\n\
             log_dest stderr\nlog_type all\n{user}\
             plugin {plugin}\n\
             plugin_opt_service_addr {service}\
             plugin_opt_access_key_id {id}\n\
             plugin_opt_access_key_secret {secret}\n\
             plugin_opt_instance_id {INSTANCE}\n\
             plugin_opt_timeout_ms 2000\n\
             plugin_opt_state_file {state}\n\
             {wake}",
            plugin = plugin.display(),
            id = key.id,
            secret = key.secret,
            state = state_file.display(),
            // KICK_BENCH_NO_WAKE=1 measures the broker's idle tick alone (up to 100 ms).
            wake = if std::env::var_os("KICK_BENCH_NO_WAKE").is_some() {
                String::new()
            } else {
                format!("plugin_opt_wake_addr 127.0.0.1:{port}\n")
            },
        );
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).expect("write conf");
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosquitto");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std_mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(" running") => break,
                Ok(_) => {}
                Err(_) => panic!(
                    "mosquitto did not start:\n{}",
                    log.lock().unwrap().join("\n")
                ),
            }
        }
        Self {
            child,
            port,
            log,
            state_file,
            _dir: dir,
        }
    }

    fn dump_log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Every broker log line read so far, in order: for tests that count or order lines
    /// (wait for the last one with [`Broker::wait_log`] first).
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) until a broker log line contains `needle`. The log is read by another
    /// thread, so a line may trail the event the client already saw.
    pub(crate) async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(
                Instant::now() < deadline,
                "no broker log line containing {needle:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- mosquitto log ---\n{}", self.dump_log());
        }
    }
}
