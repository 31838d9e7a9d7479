//! The official Alibaba Cloud Python SDKs (V3 `alibabacloud-onsmqtt20200420` and V1
//! `aliyun-python-sdk-onsmqtt`) against a real server: `tests/sdk/compat.py` drives every
//! action and the main error codes. The virtualenv lives in `target/sdk-venv`; when it is
//! missing, `tests/sdk/setup.sh` creates it (needs python3 and PyPI). Set
//! `MQTT_TOKEND_SKIP_SDK=1` to skip the suite on machines without Python; otherwise a setup
//! or script failure fails the test.

mod common;

use std::{path::PathBuf, process::Command};

use common::TestServer;

const INSTANCE: &str = "post-cn-sdk";
const OTHER_INSTANCE: &str = "post-cn-other";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, running setup.sh first (it is idempotent and quick when done).
fn venv_python() -> PathBuf {
    let venv = repo().join("target").join("sdk-venv");
    let status = Command::new("bash")
        .arg(repo().join("tests/sdk/setup.sh"))
        .arg(&venv)
        .status()
        .expect("run tests/sdk/setup.sh (bash must be installed)");
    assert!(
        status.success(),
        "tests/sdk/setup.sh failed ({status}); set MQTT_TOKEND_SKIP_SDK=1 to skip the SDK suite"
    );
    venv.join("bin").join("python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_work_against_the_rest_shim() {
    if std::env::var_os("MQTT_TOKEND_SKIP_SDK").is_some() {
        eprintln!("MQTT_TOKEND_SKIP_SDK is set: skipping the official SDK suite");
        return;
    }
    let python = tokio::task::spawn_blocking(venv_python)
        .await
        .expect("setup task");

    // The documented RevokeToken limit (5/s) so the SDKs see RevokeTokenOverFlow.
    let ts = TestServer::start_with(|c| c.rate_revoke_token = 5).await;
    // A second server with a small per-IP limit for Throttling.User.
    let limited = TestServer::start_with(|c| c.rate_per_ip = 3).await;
    let key = ts.create_key(&[INSTANCE]).await;

    let endpoint = ts.server().http_addr().expect("REST enabled").to_string();
    let limited_endpoint = limited
        .server()
        .http_addr()
        .expect("REST enabled")
        .to_string();
    let script = repo().join("tests/sdk/compat.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(&script)
            .env("MQTT_TOKEND_ENDPOINT", &endpoint)
            .env("MQTT_TOKEND_AK_ID", &key.id)
            .env("MQTT_TOKEND_AK_SECRET", &key.secret)
            .env("MQTT_TOKEND_INSTANCE", INSTANCE)
            .env("MQTT_TOKEND_OTHER_INSTANCE", OTHER_INSTANCE)
            .env("MQTT_TOKEND_IP_LIMITED_ENDPOINT", &limited_endpoint)
            .output()
    })
    .await
    .expect("script task")
    .expect("run the SDK compatibility script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "SDK compatibility suite failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("all passed"),
        "unexpected output:\n{stdout}"
    );
}
