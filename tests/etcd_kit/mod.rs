//! A real etcd cluster on loopback for the tests of the etcd store backend: `members` processes
//! of the `etcd` binary (Debian's `etcd-server` 3.4.23, which `scripts/install-tools.sh`
//! installs), each on free client and peer ports with a data directory of its own in one
//! temporary directory, started as a fresh cluster with a unique `--initial-cluster-token` and
//! etcd's default limits (`--max-txn-ops` 128, 1 s election timeout). `start` returns once every
//! member answers `GET /health` with `{"health":"true"}`, which etcd gives only when the member
//! has a leader and a quorum read went through: the cluster is ready, not just listening.
//!
//! A member can be killed with SIGKILL and restarted on the same data directory and ports, where
//! it rejoins; dropping the cluster kills every member. Each member's output goes to
//! `member-<i>.log` in the temporary directory; when a test panics, the end of every log is
//! printed. Skips when `etcd` is missing and `CI` is unset; with `CI` set that fails instead.
//!
//! Everything blocks the calling thread (no async runtime needed): `start`, `restart` and
//! `leader` for up to [`WAIT`]. In a `#[tokio::test]` whose servers must keep running meanwhile,
//! use `flavor = "multi_thread"` or `tokio::task::spawn_blocking`.
//!
//! `gateway` talks to one member over etcd's HTTP/JSON gateway (`/v3/...`), independently of
//! the backend under test, to write, read and find the leader. `watch_proxy` is a proxy that
//! can repeat a watch response (as etcd 3.4 sometimes does) or hold the watch back.
#![allow(dead_code)]

mod gateway;
pub mod watch_proxy;

use std::{
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// How long the kit waits for a member to become healthy or a leader to be elected.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often readiness is polled: etcd gives no signal to block on, `/health` is the signal.
const POLL: Duration = Duration::from_millis(50);

/// Starts of a whole cluster before giving up when a port picked free was taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// Where `etcd` is: `$ETCD`, else `PATH`. `None` (after saying why) when the test must skip;
/// with `CI` set a missing binary fails instead.
pub fn etcd_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    });
    let found = std::env::var_os("ETCD")
        .map(PathBuf::from)
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the etcd binary is missing: run scripts/install-tools.sh etcd"
        );
        eprintln!(
            "SKIPPED: etcd is not installed (scripts/install-tools.sh etcd installs Debian's \
             etcd-server; or set ETCD to the binary)"
        );
    }
    found
}

/// A key prefix no other test uses, `/mqtt-tokend-test-<32 hex>/`, so tests may share a
/// cluster (or run against one) without seeing each other's keys.
pub fn unique_prefix() -> String {
    format!("/mqtt-tokend-test-{}/", uuid::Uuid::new_v4().simple())
}

/// One member: its fixed ports and files, and its process while it runs.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Why member `member` did not become healthy.
struct NotReady {
    member: usize,
    /// How the process ended; `None` when it runs but was not healthy by the deadline.
    exited: Option<ExitStatus>,
    /// Its log says a port was taken: another process bound it after we probed it free.
    port_taken: bool,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.member;
        match self.exited {
            Some(status) if self.port_taken => {
                write!(f, "etcd member {m} {status}: one of its ports was taken")
            }
            Some(status) => write!(f, "etcd member {m} {status}"),
            None => write!(f, "etcd member {m} was not healthy within {WAIT:?}"),
        }
    }
}

/// A running etcd cluster of one or more members on 127.0.0.1; every member is killed on drop.
pub struct EtcdCluster {
    binary: PathBuf,
    token: String,
    members: Vec<Member>,
    /// Set once a panic message carried the logs, so that drop does not print them twice.
    logs_shown: bool,
    // Last: the members' directories outlive their processes.
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts a fresh cluster of `members` (1 or 3 in our tests) and waits until every member is
    /// healthy. `None` (after saying why) when `etcd` is not installed; see [`etcd_binary`].
    /// Panics, showing the members' logs, when the cluster does not come up within [`WAIT`].
    pub fn start(members: usize) -> Option<Self> {
        etcd_binary().map(|binary| Self::start_with(&binary, members))
    }

    /// [`EtcdCluster::start`] with a given `etcd` binary.
    pub fn start_with(binary: &Path, members: usize) -> Self {
        assert!(members >= 1, "a cluster has at least one member");
        for attempt in 1..=START_ATTEMPTS {
            let mut cluster = Self::spawn(binary, members);
            match cluster.wait_all_healthy() {
                Ok(()) => return cluster,
                // Another process took a port between our probe and etcd's bind: new ports.
                Err(why) if why.port_taken && attempt < START_ATTEMPTS => {
                    eprintln!("etcd_kit: {why}; retrying on new ports");
                }
                Err(why) => {
                    cluster.logs_shown = true;
                    panic!(
                        "the etcd cluster of {members} did not start: {why}\n{}",
                        cluster.log_tails()
                    )
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Picks free ports and starts every member, without waiting for them.
    fn spawn(binary: &Path, members: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for the etcd cluster");
        // All listeners are held at once so the 2n ports are distinct, then closed for etcd.
        let listeners: Vec<TcpListener> = (0..2 * members)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("bound address").port())
            .collect();
        drop(listeners);
        let members = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.path().join(format!("member-{i}")),
                log: dir.path().join(format!("member-{i}.log")),
                child: None,
            })
            .collect();
        let mut cluster = Self {
            binary: binary.to_owned(),
            token: format!("mqtt-tokend-test-{}", uuid::Uuid::new_v4().simple()),
            members,
            logs_shown: false,
            dir,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn_member(i);
        }
        cluster
    }

    /// Runs member `i` with its fixed flags. On a restart etcd reads the membership from its
    /// data directory and ignores the `--initial-*` flags, so the same command serves both.
    fn spawn_member(&mut self, i: usize) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let m = &self.members[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("open the member's log");
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log);
        // etcd also reads its flags from ETCD_* variables: none of the caller's may leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.members[i].child = Some(child);
    }

    /// Number of members, running or not.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Every member's client URL, `http://127.0.0.1:<port>`, in member order (killed ones too:
    /// a client is configured with the whole cluster).
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.member_count())
            .map(|i| self.member_endpoint(i))
            .collect()
    }

    /// [`EtcdCluster::endpoints`] joined by commas, as `--etcd-endpoints` takes them.
    pub fn endpoints_csv(&self) -> String {
        self.endpoints().join(",")
    }

    /// Member `i`'s client URL, `http://127.0.0.1:<port>`; the same across restarts.
    pub fn member_endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Member `i`'s log file (stdout and stderr of every run, appended).
    pub fn log_path(&self, i: usize) -> &Path {
        &self.members[i].log
    }

    /// Whether member `i`'s process is running (not killed, not exited).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.members[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Whether member `i` answers `GET /health` with `{"health":"true"}` now: it runs, has a
    /// leader and served a quorum read.
    pub fn is_healthy(&self, i: usize) -> bool {
        gateway::healthy(self.members[i].client_port)
    }

    /// Kills member `i` with SIGKILL (as `kill -9`: no shutdown, no flush beyond what etcd
    /// already fsynced) and reaps it. Panics if it is not running.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.members[i]
            .child
            .take()
            .unwrap_or_else(|| panic!("etcd member {i} is not running"));
        // std's Child::kill sends SIGKILL on Unix.
        child.kill().expect("SIGKILL the etcd member");
        child.wait().expect("reap the etcd member");
    }

    /// Starts member `i` again on its data directory and ports and waits until it is healthy,
    /// which needs a quorum: with three members, at least one other must be running. Panics if
    /// it is running, or, showing the logs, if it does not come back within [`WAIT`].
    pub fn restart(&mut self, i: usize) {
        assert!(
            !self.is_running(i),
            "etcd member {i} is running: kill it before restarting it"
        );
        self.members[i].child = None;
        self.spawn_member(i);
        if let Err(why) = self.wait_healthy(i, Instant::now() + WAIT) {
            self.logs_shown = true;
            panic!("restarting: {why}\n{}", self.log_tails());
        }
    }

    /// The index of the current leader, waiting (up to [`WAIT`]) for the running members to
    /// have one: a running member that reports itself as the leader. Panics if none does.
    pub fn leader(&mut self) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            for i in 0..self.member_count() {
                if !self.is_running(i) {
                    continue;
                }
                if let Ok(status) = gateway::status(self.members[i].client_port) {
                    if status.leader != 0 && status.leader == status.member_id {
                        return i;
                    }
                }
            }
            if Instant::now() >= deadline {
                self.logs_shown = true;
                panic!(
                    "no etcd member is the leader after {WAIT:?}\n{}",
                    self.log_tails()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Puts `key` = `value` through member `i`'s gateway; the store revision of the write.
    ///
    /// # Errors
    /// The connection's or etcd's error as text (e.g. during an election, or a killed member).
    pub fn put(&self, i: usize, key: &[u8], value: &[u8]) -> Result<i64, String> {
        gateway::put(self.members[i].client_port, key, value)
    }

    /// Reads `key` through member `i`'s gateway (a linearizable read); `None` when absent.
    ///
    /// # Errors
    /// The connection's or etcd's error as text.
    pub fn get(&self, i: usize, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        gateway::get(self.members[i].client_port, key)
    }

    fn wait_all_healthy(&mut self) -> Result<(), NotReady> {
        let deadline = Instant::now() + WAIT;
        (0..self.member_count()).try_for_each(|i| self.wait_healthy(i, deadline))
    }

    fn wait_healthy(&mut self, i: usize, deadline: Instant) -> Result<(), NotReady> {
        loop {
            let exited = match self.members[i].child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(status),
                Some(Err(e)) => panic!("waiting for etcd member {i}: {e}"),
                None => panic!("etcd member {i} was not started"),
            };
            if let Some(status) = exited {
                let log = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
                return Err(NotReady {
                    member: i,
                    exited: Some(status),
                    port_taken: log.contains("address already in use"),
                });
            }
            if self.is_healthy(i) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady {
                    member: i,
                    exited: None,
                    port_taken: false,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// The last lines of every member's log, with its path.
    fn log_tails(&self) -> String {
        const LINES: usize = 40;
        let mut out = String::new();
        for m in &self.members {
            let log = std::fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LINES)..];
            out += &format!(
                "--- etcd {} (client :{}, peer :{}) {}, last {} lines ---\n{}\n",
                m.name,
                m.client_port,
                m.peer_port,
                m.log.display(),
                tail.len(),
                tail.join("\n")
            );
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() && !self.logs_shown {
            eprintln!("{}", self.log_tails());
        }
    }
}
