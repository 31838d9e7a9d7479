//! The README's and docs' examples, run as written against real servers, so an example that
//! stops working fails the build.
//!
//! How blocks are found: every ```` ```sh ```` / ```` ```python ```` block in README.md and
//! docs/*.md carries an HTML comment marker (invisible on GitHub): `<!-- example -->`,
//! `<!-- example: session=NAME, needs=TOOLS -->` or `<!-- example: skip, REASON -->`
//! (`readme/markdown.rs`). An unmarked block, or a runnable one with a placeholder such as
//! `<AccessKeyId>` or `MTAK…`, fails `every_code_block_is_marked_and_placeholder_free`.
//!
//! How they run: per file, the blocks of each session run in order in one bash
//! (`readme/session.rs`), in a fresh temporary directory. The `main` session gets a real
//! `mqtt-tokend serve` (the built binary) started there first, its addresses passed in
//! `MQTT_TOKEND_GRPC_ADDR` / `MQTT_TOKEND_HTTP_ADDR`, which the examples read with the
//! defaults as fallback; other sessions (the Mosquitto demo, the backup round trip) start
//! their own servers on free ports given the same way.
//!
//! A session whose tools are missing (grpcurl: `scripts/install-tools.sh`; mosquitto:
//! `scripts/install-mosquitto.sh`) says SKIPPED, unless `CI` is set, where it fails. Python
//! blocks that need the official SDKs run in `target/sdk-venv` (`tests/sdk/setup.sh`), or are
//! left out under `MQTT_TOKEND_SKIP_SDK`, as in `tests/sdk_compat.rs`.

#[path = "readme/markdown.rs"]
mod markdown;
#[path = "readme/session.rs"]
mod session;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Mutex, OnceLock},
    thread,
    time::Duration,
};

use markdown::{Marker, MAIN};
use session::{Env, Step};

/// Every Markdown file with examples; `every_code_block_is_marked_and_placeholder_free`
/// checks that no file in docs/ is missing here.
const FILES: [&str; 6] = [
    "README.md",
    "docs/rest.md",
    "docs/mosquitto.md",
    "docs/benchmarks.md",
    "docs/brokers.md",
    "docs/replicas.md",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `name` on this process's PATH.
fn which(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn read(file: &str) -> Vec<markdown::Block> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    markdown::blocks(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A missing prerequisite: skip (saying so), or fail under CI.
fn skip_or_fail(what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {what}: run scripts/install-tools.sh"
    );
    eprintln!("SKIPPED: {what} (scripts/install-tools.sh installs it)");
}

/// The SDK virtualenv's bin directory, created once per test run; `None` under
/// `MQTT_TOKEND_SKIP_SDK`.
fn sdk_bin() -> Option<PathBuf> {
    static VENV: OnceLock<Option<PathBuf>> = OnceLock::new();
    VENV.get_or_init(|| {
        if std::env::var_os("MQTT_TOKEND_SKIP_SDK").is_some() {
            eprintln!("MQTT_TOKEND_SKIP_SDK is set: the SDK examples are left out");
            return None;
        }
        let venv = repo().join("target").join("sdk-venv");
        let status = Command::new(which("bash"))
            .arg(repo().join("tests/sdk/setup.sh"))
            .arg(&venv)
            .status()
            .expect("run tests/sdk/setup.sh");
        assert!(
            status.success(),
            "tests/sdk/setup.sh failed ({status}); set MQTT_TOKEND_SKIP_SDK=1 to leave the SDK examples out"
        );
        Some(venv.join("bin"))
    })
    .clone()
}

/// The Mosquitto plugin, built once with this test's profile.
fn plugin() -> PathBuf {
    static PLUGIN: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = PLUGIN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-p", "mqtt-tokend-mosquitto"])
        .current_dir(repo());
    if bin_dir().file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "building the plugin failed");
    let so = bin_dir().join("libmqtt_tokend_mosquitto.so");
    assert!(so.is_file(), "{} missing", so.display());
    *built = Some(so.clone());
    so
}

/// target/<profile>, where the built `mqtt-tokend` is.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_mqtt-tokend"))
        .parent()
        .expect("target/<profile>")
        .to_path_buf()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The `serve` the main session's examples talk to: run in the session's directory with the
/// defaults (so `data/root-access-key.json` is where the README says), on free ports.
struct Server {
    child: Child,
    grpc: String,
    http: String,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mqtt-tokend"))
            .args([
                "serve",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mqtt-tokend serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[serve] {line}");
                if line.contains(" serving ") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs 'serving'");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} in {line}"))
                .to_owned()
        };
        Self {
            grpc: field("grpc_addr"),
            http: field("http_addr"),
            child,
        }
    }

    /// SIGINT, and a clean exit.
    fn stop(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: signals our own child, not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let status = self.child.wait().expect("wait for serve");
        assert!(status.success(), "serve exited with {status}");
    }
}

/// Runs every session of `file`; panics with the session's output if one fails.
fn run_examples(file: &str) {
    let blocks = read(file);
    let mut sessions: Vec<(String, Vec<Step>, BTreeSet<String>)> = Vec::new();
    for b in &blocks {
        let Some(Marker::Run { session, needs }) = &b.marker else {
            continue;
        };
        let index = match sessions.iter().position(|(name, ..)| name == session) {
            Some(i) => i,
            None => {
                sessions.push((session.clone(), Vec::new(), BTreeSet::new()));
                sessions.len() - 1
            }
        };
        let (_, steps, all_needs) = &mut sessions[index];
        all_needs.extend(needs.iter().cloned());
        steps.push(Step {
            file: file.to_owned(),
            line: b.line,
            python: b.is_python(),
            code: b.code.clone(),
        });
        // A block that needs the SDKs is left out when they are.
        if needs.iter().any(|n| n == "sdk") && sdk_bin().is_none() {
            steps.pop();
        }
    }
    assert!(!sessions.is_empty(), "{file} has no runnable example");
    for (name, steps, needs) in sessions {
        let mut path_front = vec![bin_dir(), repo().join("target/tools")];
        if needs.contains("sdk") {
            path_front.extend(sdk_bin());
        }
        let missing = session::missing_tools(&needs, &path_front);
        if !missing.is_empty() {
            skip_or_fail(&format!(
                "the {file} examples ({name}) need {} on PATH",
                missing.join(", ")
            ));
            continue;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vars = Vec::new();
        let server = (name == MAIN).then(|| Server::start(dir.path()));
        match &server {
            Some(s) => {
                vars.push(("MQTT_TOKEND_GRPC_ADDR".to_owned(), s.grpc.clone()));
                vars.push(("MQTT_TOKEND_HTTP_ADDR".to_owned(), s.http.clone()));
            }
            None => {
                vars.push((
                    "MQTT_TOKEND_GRPC_ADDR".to_owned(),
                    format!("127.0.0.1:{}", free_port()),
                ));
                vars.push((
                    "MQTT_TOKEND_HTTP_ADDR".to_owned(),
                    format!("127.0.0.1:{}", free_port()),
                ));
                vars.push(("MQTT_PORT".to_owned(), free_port().to_string()));
            }
        }
        if needs.contains("plugin") {
            vars.push(("PLUGIN".to_owned(), plugin().display().to_string()));
        }
        let env = Env {
            dir: dir.path().to_owned(),
            path_front,
            vars,
        };
        let result = session::run(&steps, &env);
        if let Some(s) = server {
            s.stop();
        }
        match result {
            Ok(output) => println!("{file} ({name}):\n{output}"),
            Err(output) => panic!("an example in {file} ({name} session) failed:\n{output}"),
        }
    }
}

#[test]
fn every_code_block_is_marked_and_placeholder_free() {
    let mut docs: Vec<String> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok())
        .map(|e| format!("docs/{}", e.file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".md"))
        .collect();
    docs.push("README.md".into());
    docs.sort();
    let mut listed: Vec<String> = FILES.iter().map(|f| f.to_string()).collect();
    listed.sort();
    assert_eq!(
        docs, listed,
        "every Markdown file is listed in FILES and has a test"
    );
    let mut problems = Vec::new();
    for file in FILES {
        for b in read(file) {
            match &b.marker {
                None if b.must_be_marked() => problems.push(format!(
                    "{file}:{}: a ```{} block without <!-- example --> or <!-- example: skip, REASON -->",
                    b.line, b.lang
                )),
                Some(Marker::Run { .. }) => {
                    for p in markdown::placeholders(&b.code) {
                        problems.push(format!("{file}:{}: placeholder in a runnable example: {p}", b.line));
                    }
                }
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn readme_examples_run() {
    run_examples("README.md");
}

#[test]
fn docs_rest_examples_run() {
    run_examples("docs/rest.md");
}

#[test]
fn docs_brokers_shows_configuration_not_commands() {
    // Its blocks are broker configuration (HOCON, TOML, JSON bodies): the README's broker
    // sections hold the commands, and tests/emqx.rs, tests/go_auth.rs run the contracts.
    let blocks = read("docs/brokers.md");
    assert!(blocks.iter().all(|b| !b.must_be_marked()));
}

#[test]
fn docs_mosquitto_examples_run() {
    run_examples("docs/mosquitto.md");
}

#[test]
fn docs_replicas_examples_run() {
    run_examples("docs/replicas.md");
}

#[test]
fn docs_benchmarks_examples_are_all_marked_skip() {
    // The benchmark runs take minutes of the whole machine: nothing there runs in `cargo
    // test`, and the marker says so.
    let blocks = read("docs/benchmarks.md");
    assert!(blocks
        .iter()
        .filter(|b| b.must_be_marked())
        .all(|b| matches!(b.marker, Some(Marker::Skip(_)))));
}
