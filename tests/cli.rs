//! The binary as a user meets it: `serve` and the management commands run as child processes
//! (the built `mqtt-tokend`), and what they print is checked word for word where it matters.
//! A failure is one line on stderr, printed once, without a backtrace even under
//! `RUST_BACKTRACE=1`, and says what to do.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-tokend");
const WAIT: Duration = Duration::from_secs(20);

/// A command of the binary with a clean environment for our variables, and backtraces on,
/// so that a test sees any backtrace a user could.
fn mqtt_tokend(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).env("RUST_BACKTRACE", "1");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MQTT_TOKEND_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs a management command to completion.
fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run mqtt-tokend")
}

/// The single line a failed command must print.
#[track_caller]
fn one_error_line(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure: {output:?}");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for noise in ["Caused by", "backtrace", "Os {", "WouldBlock", "sled"] {
        assert!(!stderr.contains(noise), "{noise:?} in:\n{stderr}");
    }
    lines[0].to_owned()
}

/// A `serve` child process, its stderr read line by line.
struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Serve {
    fn spawn(dir: &Path, args: &[&str]) -> Self {
        let mut child = mqtt_tokend(dir)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mqtt-tokend serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Starts a server on free ports in `dir` and waits for its "serving" line.
    fn start(dir: &Path) -> Self {
        let mut serve = Self::spawn(dir, &["--grpc-addr", "127.0.0.1:0", "--http-addr", "off"]);
        serve.wait_for("serving");
        serve
    }

    /// Waits for a log line containing `needle` and returns it.
    #[track_caller]
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The `key=value` field of the "serving" line.
    fn field(&self, name: &str) -> String {
        let serving = self
            .log
            .iter()
            .find(|l| l.contains("serving"))
            .expect("serving line");
        let start = serving
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("{name} in {serving}"))
            + name.len()
            + 1;
        serving[start..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    fn grpc_addr(&self) -> String {
        self.field("grpc_addr")
    }

    /// Sends SIGINT and returns how long the process took to exit, its status, and the rest
    /// of its log.
    fn interrupt(mut self) -> (Duration, ExitStatus, Vec<String>) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        let (tx, exited) = mpsc::channel();
        let sent = Instant::now();
        // SAFETY: kill only sends a signal to our own child, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "send SIGINT");
        let mut child = self.child;
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = exited
            .recv_timeout(WAIT)
            .expect("the server exits after SIGINT")
            .expect("wait for the server");
        let took = sent.elapsed();
        self.log.extend(self.lines.iter());
        (took, status, self.log)
    }
}

/// Runs `serve` until it exits by itself (a start-up failure).
fn serve_fails(dir: &Path, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = run(mqtt_tokend(dir)
        .arg("serve")
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "off"])
        .args(args));
    (output, started.elapsed())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[test]
fn a_second_server_on_one_data_directory_says_another_is_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Serve::start(dir.path());
    let (output, took) = serve_fails(dir.path(), &[]);
    let line = one_error_line(&output);
    assert_eq!(
        line,
        "error: another mqtt-tokend is running on ./data (the lock is held): stop it first, or give this one another --data-dir"
    );
    assert!(
        took < Duration::from_secs(3),
        "refused at once, took {took:?}"
    );
    let (_, status, _) = first.interrupt();
    assert!(status.success());
}

#[test]
fn a_mistyped_keyring_is_refused_before_any_file_is_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, status, _) = Serve::start(dir.path()).interrupt();
    assert!(status.success());
    let typo = dir.path().join("mqtt-tokend-keyrnig.json");
    let (output, _) = serve_fails(dir.path(), &["--keyring", "mqtt-tokend-keyrnig.json"]);
    let line = one_error_line(&output);
    assert!(
        line.contains("the keyring mqtt-tokend-keyrnig.json does not exist, but the data directory ./data was created with a keyring: point --keyring"),
        "{line}"
    );
    assert!(!typo.exists(), "no stray keyring file is left behind");
    // The right keyring still starts.
    let (_, status, _) = Serve::start(dir.path()).interrupt();
    assert!(status.success());
}

#[test]
fn no_server_at_the_address_is_one_line_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("data")).expect("mkdir");
    std::fs::write(
        dir.path().join("data/root-access-key.json"),
        r#"{"AccessKeyId":"MTAKx","AccessKeySecret":"y"}"#,
    )
    .expect("write key");
    let port = free_port();
    let output = run(mqtt_tokend(dir.path()).args([
        "access-key",
        "list",
        "--grpc-addr",
        &format!("127.0.0.1:{port}"),
    ]));
    let line = one_error_line(&output);
    assert!(
        line.starts_with(&format!("error: cannot connect to 127.0.0.1:{port}: connection refused; is `mqtt-tokend serve` running at 127.0.0.1:{port}?")),
        "{line}"
    );
}

#[test]
fn management_commands_follow_the_data_directory_and_confirm_a_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_dir = dir.path().join("srv");
    std::fs::create_dir(&server_dir).expect("mkdir");
    let serve = Serve::start(&server_dir);
    let grpc = serve.grpc_addr();
    let port = grpc.rsplit(':').next().expect("port").to_owned();
    // From another directory: without the data directory the root key is not found, and the
    // message says which flag fixes it.
    let output = run(mqtt_tokend(dir.path()).args(["access-key", "list", "--grpc-addr", &grpc]));
    let line = one_error_line(&output);
    assert!(
        line.contains(
            "reading the root key file ./data/root-access-key.json: No such file or directory"
        ) && line.contains("--data-dir (MQTT_TOKEND_DATA_DIR)"),
        "{line}"
    );
    // MQTT_TOKEND_DATA_DIR, as `serve` reads it, locates the root key; a host name works as
    // the address.
    let env_data_dir = server_dir.join("data");
    let created = run(mqtt_tokend(dir.path())
        .env("MQTT_TOKEND_DATA_DIR", &env_data_dir)
        .args([
            "access-key",
            "create",
            "--instance",
            "post-cn-demo",
            "--grpc-addr",
        ])
        .arg(format!("localhost:{port}")));
    assert!(created.status.success(), "{created:?}");
    let key: serde_json::Value = serde_json::from_slice(&created.stdout).expect("JSON key");
    let id = key["AccessKeyId"].as_str().expect("AccessKeyId").to_owned();
    let deleted = run(mqtt_tokend(dir.path())
        .args([
            "access-key",
            "delete",
            &id,
            "--grpc-addr",
            &grpc,
            "--data-dir",
        ])
        .arg(&env_data_dir));
    assert!(deleted.status.success(), "{deleted:?}");
    assert_eq!(
        String::from_utf8_lossy(&deleted.stdout).trim(),
        format!(r#"{{"AccessKeyId":"{id}","Deleted":true}}"#)
    );
    // Deleting it again is the server's refusal, on one line.
    let again = run(mqtt_tokend(dir.path())
        .args([
            "access-key",
            "delete",
            &id,
            "--grpc-addr",
            &grpc,
            "--data-dir",
        ])
        .arg(&env_data_dir));
    assert_eq!(
        one_error_line(&again),
        "error: AccessKeyNotFound: the access key does not exist"
    );
    let (_, status, _) = serve.interrupt();
    assert!(status.success());
}

#[test]
fn host_names_are_accepted_and_the_log_prints_addresses_plainly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = Serve::spawn(
        dir.path(),
        &["--grpc-addr", "localhost:0", "--http-addr", "localhost:0"],
    );
    let line = serve.wait_for("serving");
    assert!(!line.contains("Some("), "{line}");
    for field in ["grpc_addr", "http_addr"] {
        let addr: std::net::SocketAddr = serve
            .field(field)
            .parse()
            .unwrap_or_else(|e| panic!("{field} in {line}: {e}"));
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{line}");
    }
    let (_, status, _) = serve.interrupt();
    assert!(status.success());

    let mut off = Serve::spawn(
        dir.path(),
        &["--grpc-addr", "localhost:0", "--http-addr", "off"],
    );
    off.wait_for("serving");
    assert_eq!(off.field("http_addr"), "off");
    let (_, status, _) = off.interrupt();
    assert!(status.success());

    let bad = run(mqtt_tokend(dir.path()).args(["serve", "--grpc-addr", "localhost"]));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("\"localhost\" is not host:port"),
        "{stderr}"
    );
}

#[test]
fn the_process_exits_within_a_second_of_sigint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path());
    // Some writes, so the store has something to flush and close.
    for _ in 0..3 {
        let out = run(mqtt_tokend(dir.path()).args([
            "access-key",
            "create",
            "--instance",
            "post-cn-demo",
            "--grpc-addr",
            &serve.grpc_addr(),
        ]));
        assert!(out.status.success(), "{out:?}");
    }
    let (took, status, log) = serve.interrupt();
    assert!(status.success(), "{status}: {log:?}");
    assert!(
        log.last().is_some_and(|l| l.ends_with("stopped")),
        "'stopped' is the last line: {log:?}"
    );
    assert!(
        took < Duration::from_secs(1),
        "exited {took:?} after SIGINT; log: {log:?}"
    );
}

#[test]
fn a_port_in_use_names_the_flag_to_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let output = run(mqtt_tokend(dir.path()).args([
        "serve",
        "--grpc-addr",
        &addr,
        "--http-addr",
        "off",
        "--log",
        "warn",
    ]));
    let line = one_error_line(&output);
    assert!(
        line.starts_with(&format!(
            "error: binding gRPC on {addr}: Address already in use"
        )) && line.ends_with("listens there: stop it, or pass another --grpc-addr"),
        "{line}"
    );
}
