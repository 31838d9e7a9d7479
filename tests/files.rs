//! File modes. The binary makes everything it writes private (its `main` sets umask 0077);
//! a process that embeds the server keeps its own umask, and the files that hold secrets (the
//! keyring, the root key file) are 0600 whatever that umask is.

mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::TestServer;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// Sets the process umask and returns the previous one.
fn set_umask(mask: libc::mode_t) -> libc::mode_t {
    // SAFETY: umask only sets the process's file mode mask; it cannot fail.
    unsafe { libc::umask(mask) }
}

#[tokio::test]
async fn an_embedded_server_keeps_the_umask_and_writes_secrets_0600() {
    // A permissive umask, as a test runner or an embedding application may have. This is the
    // only test of this binary that creates files in process, so changing it races nothing.
    let previous = set_umask(0o022);
    let mut ts = TestServer::start().await;
    assert_eq!(
        set_umask(0o022),
        0o022,
        "starting a server changed the umask"
    );
    assert_eq!(mode(&ts.config.keyring), 0o600);
    assert_eq!(mode(&ts.config.root_key_path()), 0o600);
    assert_eq!(mode(&ts.data_dir()), 0o700);
    ts.stop().await;
    set_umask(previous);
}

#[test]
fn the_binary_keeps_every_file_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, keyring) = (dir.path().join("data"), dir.path().join("keyring.json"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_mqtt-tokend"));
    command
        .args(["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "off"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--keyring")
        .arg(&keyring)
        .args(["--log", "info"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("MQTT_TOKEND_") {
            command.env_remove(name);
        }
    }
    // SAFETY: umask is async-signal-safe, so it may run between fork and exec. The child
    // starts permissive, so only its own `main` can make the files private.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    let mut child = command.spawn().expect("the server binary starts");
    let mut log = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut line = String::new();
    // Everything is on disk once it logs that it serves.
    loop {
        line.clear();
        let read = log.read_line(&mut line).expect("readable log");
        assert!(read > 0, "the server exited before serving");
        if line.contains("serving") {
            break;
        }
    }
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: sending SIGTERM to our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    while log.read_line(&mut line).expect("readable log") > 0 {}
    assert!(child.wait().expect("exit status").success());

    assert_eq!(mode(&keyring), 0o600);
    assert_eq!(mode(&data.join("root-access-key.json")), 0o600);
    let files = walk(&data);
    assert!(files.len() > 2, "sled wrote its files: {files:?}");
    for path in files {
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is accessible to others",
            path.display()
        );
    }
}
