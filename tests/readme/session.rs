//! Runs the marked blocks of one session in one bash process, as a reader would paste them
//! into one terminal: shell blocks are sourced in order (so variables carry over), Python
//! blocks run with `python3` in between, under `set -eEuo pipefail`, so any failing command
//! fails the session and names the Markdown line it came from.
//!
//! The environment is the reader's, with the ports moved: `MQTT_TOKEND_GRPC_ADDR` and
//! `MQTT_TOKEND_HTTP_ADDR` (the variables `serve` reads, which the examples use with the
//! defaults as fallbacks), `MQTT_PORT` and `PLUGIN` for the Mosquitto demo, and a PATH with
//! the debug `mqtt-tokend`, `target/tools` (grpcurl) and the SDK virtualenv in front.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs::File,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

/// The longest a session may run; a hung example (a broker that never kicks, a server that
/// never answers) fails after this instead of blocking the test run.
const SESSION_TIMEOUT: Duration = Duration::from_secs(180);

/// One block to run.
#[derive(Debug, Clone)]
pub struct Step {
    /// The Markdown file, e.g. `README.md`.
    pub file: String,
    /// The opening fence's line, so a failing line inside the block maps back to the
    /// Markdown.
    pub line: usize,
    /// Python (run with python3) or shell (sourced).
    pub python: bool,
    /// The block's text.
    pub code: String,
}

/// What the session runs in.
pub struct Env {
    /// The working directory (a temporary directory the test owns).
    pub dir: PathBuf,
    /// Directories to put in front of PATH.
    pub path_front: Vec<PathBuf>,
    /// Variables to set (after every `MQTT_TOKEND_*` of the test's own environment is
    /// removed).
    pub vars: Vec<(String, String)>,
}

/// Runs `steps` in one bash; returns the combined output, or the output and what failed.
pub fn run(steps: &[Step], env: &Env) -> Result<String, String> {
    let examples = env.dir.join(".examples");
    std::fs::create_dir_all(&examples).map_err(|e| format!("mkdir: {e}"))?;
    let tmp = env.dir.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| format!("mkdir: {e}"))?;
    let mut driver = String::from(
        "set -eEuo pipefail\n\
         on_error() {\n\
           if [ \"$EXAMPLE_KIND\" = sh ]; then\n\
             echo \"EXAMPLE FAILED: $EXAMPLE_FILE line $((EXAMPLE_LINE + $2)) (exit $1)\" >&2\n\
           else\n\
             echo \"EXAMPLE FAILED: the Python block at $EXAMPLE_FILE line $EXAMPLE_LINE (exit $1)\" >&2\n\
           fi\n\
         }\n\
         trap 'on_error $? $LINENO' ERR\n",
    );
    for (i, step) in steps.iter().enumerate() {
        let kind = if step.python { "python" } else { "sh" };
        let file = examples.join(format!(
            "{i:02}-{}-{}.{}",
            step.file.replace('/', "-"),
            step.line,
            if step.python { "py" } else { "sh" }
        ));
        std::fs::write(&file, &step.code).map_err(|e| format!("write {}: {e}", file.display()))?;
        let _ = writeln!(
            driver,
            "EXAMPLE_FILE='{}'; EXAMPLE_LINE={}; EXAMPLE_KIND={kind}\necho '----- {}:{} ({kind})'",
            step.file, step.line, step.file, step.line,
        );
        if step.python {
            let _ = writeln!(driver, "python3 '{}'", file.display());
        } else {
            let _ = writeln!(driver, "source '{}'", file.display());
        }
    }
    let _ = writeln!(driver, "echo '----- all examples passed'");
    let driver_path = examples.join("session.sh");
    std::fs::write(&driver_path, driver).map_err(|e| format!("write driver: {e}"))?;

    let out_path = examples.join("output.txt");
    let out = File::create(&out_path).map_err(|e| format!("create output: {e}"))?;
    let err = out.try_clone().map_err(|e| format!("dup output: {e}"))?;
    let mut path = env.path_front.clone();
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    path.push(PathBuf::from("/usr/sbin"));
    let mut cmd = Command::new(super::which("bash"));
    cmd.arg(&driver_path)
        .current_dir(&env.dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env(
            "PATH",
            std::env::join_paths(path).map_err(|e| e.to_string())?,
        )
        .env("TMPDIR", &tmp)
        // Its own process group, so the servers and brokers the examples start in the
        // background are stopped with it whatever happens.
        .process_group(0);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MQTT_TOKEND_") {
            cmd.env_remove(name);
        }
    }
    for (k, v) in &env.vars {
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(|e| format!("spawn bash: {e}"))?;
    let pgid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel();
    let mut child = child;
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx.recv_timeout(SESSION_TIMEOUT);
    // SAFETY: killpg only signals the process group this test created; whatever is left in
    // it (background servers of a failed example) must go.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Ok(Ok(s)) if s.success() => Ok(output),
        Ok(Ok(s)) => Err(format!("{output}\nthe session exited with {s}")),
        Ok(Err(e)) => Err(format!("{output}\nwaiting for bash: {e}")),
        Err(_) => Err(format!(
            "{output}\nthe session did not finish within {SESSION_TIMEOUT:?}"
        )),
    }
}

/// The tools of `needs` that are not on `path_front` or PATH (besides `sdk` and `plugin`,
/// which the caller provides).
pub fn missing_tools(needs: &BTreeSet<String>, path_front: &[PathBuf]) -> Vec<String> {
    let mut dirs: Vec<PathBuf> = path_front.to_vec();
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    dirs.push(PathBuf::from("/usr/sbin"));
    needs
        .iter()
        .filter(|n| !matches!(n.as_str(), "sdk" | "plugin"))
        .filter(|n| !dirs.iter().any(|d| is_executable(&d.join(n))))
        .cloned()
        .collect()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
