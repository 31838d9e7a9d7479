//! `scripts/install-tools.sh` installs each tool on its own and fails loudly: a missing npm
//! (buf) neither stops the grpcurl step nor passes silently, nor does a missing apt-get (etcd).
//! Runs the script with a PATH that lacks npm, python3 and apt-get and a tools directory of its
//! own, so it touches no registry.

use std::{
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `name` on this process's PATH.
fn which(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is on PATH"))
}

/// A directory holding only the commands the script needs besides the tools themselves.
fn bare_path(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).expect("mkdir bin");
    for name in ["dirname", "mkdir"] {
        symlink(which(name), bin.join(name)).expect("symlink");
    }
    bin
}

fn fake_tool(path: &Path, exit: i32) {
    std::fs::write(path, format!("#!/bin/sh\necho fake\nexit {exit}\n")).expect("write fake");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn install(dir: &Path, tools: &[&str]) -> (Output, String, String) {
    install_with_commands(dir, tools, &[])
}

/// [`install`] with these fake commands (name, exit code) on the bare PATH too.
fn install_with_commands(
    dir: &Path,
    tools: &[&str],
    commands: &[(&str, i32)],
) -> (Output, String, String) {
    let bin = bare_path(dir);
    for (name, exit) in commands {
        fake_tool(&bin.join(name), *exit);
    }
    let output = Command::new(which("bash"))
        .arg(repo().join("scripts/install-tools.sh"))
        .args(tools)
        .env("PATH", bin)
        .env("MQTT_TOKEND_TOOLS_DIR", dir.join("tools"))
        .output()
        .expect("run install-tools.sh");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

#[test]
fn a_missing_npm_fails_buf_loudly_and_grpcurl_is_still_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("tools")).expect("mkdir tools");
    // An installed grpcurl that runs: the script keeps it.
    fake_tool(&dir.path().join("tools/grpcurl"), 0);
    let (output, stdout, stderr) = install(dir.path(), &["buf", "grpcurl"]);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("buf needs npm"), "{stderr}");
    assert!(stdout.contains("install-tools: grpcurl ok"), "{stdout}");
    assert!(stderr.contains("FAILED: buf\n"), "{stderr}");
}

#[test]
fn a_grpcurl_that_cannot_be_installed_is_a_failure_not_a_silent_skip() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("tools")).expect("mkdir tools");
    // A broken grpcurl, and no python3 to fetch a new one.
    fake_tool(&dir.path().join("tools/grpcurl"), 1);
    let (output, stdout, stderr) = install(dir.path(), &["grpcurl", "nonsense"]);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("python3 is not installed"), "{stderr}");
    assert!(stderr.contains("unknown tool nonsense"), "{stderr}");
    assert!(stderr.contains("FAILED: grpcurl nonsense"), "{stderr}");
}

#[test]
fn an_etcd_on_path_that_runs_is_kept_and_a_missing_one_without_apt_fails_loudly() {
    // Installed: a working etcd on PATH, and apt-get is never needed.
    let dir = tempfile::tempdir().expect("tempdir");
    let (output, stdout, stderr) = install_with_commands(dir.path(), &["etcd"], &[("etcd", 0)]);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("install-tools: etcd ok"), "{stdout}");

    // Missing, and no apt-get to install etcd-server with.
    let dir = tempfile::tempdir().expect("tempdir");
    let (output, stdout, stderr) = install(dir.path(), &["etcd"]);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("etcd is installed with apt-get"),
        "{stderr}"
    );
    assert!(stderr.contains("FAILED: etcd\n"), "{stderr}");
}
