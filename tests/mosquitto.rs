//! End to end with a real Mosquitto 2.0 and the plugin from `integrations/mosquitto`: a real
//! mqtt-tokend (the TestServer harness), a real broker process on a free loopback port, and a
//! real MQTT client (rumqttc). Skips only when `mosquitto` is not installed and `CI` is unset;
//! in CI a missing broker fails the test (`scripts/install-mosquitto.sh` installs it). The main
//! test runs twice: over plaintext gRPC, and over mutual TLS (a server with `--tls-client-ca`,
//! the plugin configured with `plugin_opt_ca_file`, `plugin_opt_cert_file`,
//! `plugin_opt_key_file` and an `https://` service address).

mod common;
mod production;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc as std_mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use common::{free_addr, Key, TestServer};
use mqtt_tokend::{
    core::broker::mqtt_password,
    proto::{
        revoke_tokens_request::Scope, ApplyTokenRequest, RefreshDeviceCredentialRequest,
        RegisterDeviceCredentialRequest, RevokeTokenRequest, RevokeTokensRequest, TokenAction,
        UnRegisterDeviceCredentialRequest,
    },
};
use mqtt_tokend_client::ClientTls;
use production::{Ca, TlsDir};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;

const INSTANCE: &str = "post-cn-mosq";
const WAIT: Duration = Duration::from_secs(10);

/// `None` (after saying why) when the test must skip.
fn mosquitto_binary() -> Option<PathBuf> {
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
fn build_plugin() -> PathBuf {
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
struct Broker {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    state_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// What the plugin needs for mutual TLS to the service: the CA and its own pair, PEM.
struct PluginTls {
    ca: String,
    cert: String,
    key: String,
}

impl Broker {
    fn start(
        binary: &Path,
        plugin: &Path,
        service: SocketAddr,
        key: &Key,
        tls: Option<&PluginTls>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = match tls {
            None => format!("http://{service}\n"),
            Some(tls) => {
                let file = |name: &str, pem: &str| {
                    let path = dir.path().join(name);
                    std::fs::write(&path, pem).expect("write PEM");
                    path.display().to_string()
                };
                format!(
                    "https://{service}\nplugin_opt_ca_file {}\nplugin_opt_cert_file {}\n\
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

    /// Waits (bounded) until a broker log line contains `needle`. The log is read by another
    /// thread, so a line may trail the event the client already saw.
    async fn wait_log(&self, needle: &str) {
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

#[derive(Debug)]
enum Ev {
    Publish(String),
    SubAck(Vec<SubscribeReasonCode>),
    Closed(String),
}

/// A connected MQTT client whose event loop runs in a task.
struct Mqtt {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Ev>,
}

async fn mqtt(port: u16, client_id: &str, username: &str, password: &str) -> Result<Mqtt, String> {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_credentials(username, password);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, eventloop.poll()).await {
            Err(_) => return Err("no CONNACK".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
        }
    }
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let ev = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => Ev::Publish(p.topic),
                Ok(Event::Incoming(Packet::SubAck(s))) => Ev::SubAck(s.return_codes),
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Ev::Closed(e.to_string()));
                    return;
                }
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    Ok(Mqtt { client, events })
}

impl Mqtt {
    async fn next(&mut self) -> Ev {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an MQTT event in time")
            .expect("event loop alive")
    }

    /// Subscribes and returns the SUBACK codes; proves the connection is alive.
    async fn subscribe(&mut self, filter: &str) -> Vec<SubscribeReasonCode> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue subscribe");
        loop {
            match self.next().await {
                Ev::SubAck(codes) => return codes,
                Ev::Closed(e) => panic!("connection closed while subscribing: {e}"),
                Ev::Publish(_) => {}
            }
        }
    }

    async fn assert_alive(&mut self) {
        let codes = self.subscribe("alive/check").await;
        assert_eq!(codes.len(), 1);
    }

    async fn assert_kicked(&mut self) {
        loop {
            match self.next().await {
                Ev::Closed(_) => return,
                Ev::Publish(_) | Ev::SubAck(_) => {}
            }
        }
    }

    async fn publish(&self, topic: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, b"x".to_vec())
            .await
            .expect("queue publish");
    }
}

fn ok(codes: &[SubscribeReasonCode]) -> bool {
    codes.len() == 1 && matches!(codes[0], SubscribeReasonCode::Success(_))
}

struct Setup {
    ts: TestServer,
    broker: Broker,
    app: Key,
}

async fn setup(binary: &Path) -> Setup {
    setup_with(binary, false).await
}

/// With `mutual_tls`, the service requires client certificates from a test CA; the harness
/// and the plugin each present their own.
async fn setup_with(binary: &Path, mutual_tls: bool) -> Setup {
    let plugin = tokio::task::spawn_blocking(build_plugin)
        .await
        .expect("build");
    let grpc = free_addr();
    let (ts, plugin_tls) = if mutual_tls {
        let ca = Ca::new("mosquitto test CA");
        let (server, harness, broker) = (ca.server(), ca.client("harness"), ca.client("broker"));
        let ts = TestServer::start_with_tls(
            |c, dir| {
                let files = TlsDir::write(dir, &ca, &server);
                c.grpc_addr = grpc.into();
                c.tls.tls_cert = Some(files.cert);
                c.tls.tls_key = Some(files.key);
                c.tls.tls_client_ca = Some(files.ca);
            },
            Some(
                ClientTls::new()
                    .ca_pem(ca.pem())
                    .identity_pem(harness.cert, harness.key),
            ),
        )
        .await;
        let tls = PluginTls {
            ca: ca.pem(),
            cert: broker.cert,
            key: broker.key,
        };
        (ts, Some(tls))
    } else {
        (
            TestServer::start_with(|c| c.grpc_addr = grpc.into()).await,
            None,
        )
    };
    let plugin_key = ts.create_key(&[INSTANCE]).await;
    let app = ts.create_key(&[INSTANCE]).await;
    let broker = Broker::start(binary, &plugin, grpc, &plugin_key, plugin_tls.as_ref());
    Setup { ts, broker, app }
}

impl Setup {
    async fn token(&self, resources: &[&str]) -> String {
        self.token_until(resources, common::now_ms() + 3600 * 1000)
            .await
    }

    /// An R,W token on `resources` that expires at `expire_ms` (at least 60 s ahead).
    async fn token_until(&self, resources: &[&str], expire_ms: i64) -> String {
        self.token_of(&self.app, resources, expire_ms).await
    }

    /// An R,W token minted by `key`.
    async fn token_of(&self, key: &Key, resources: &[&str], expire_ms: i64) -> String {
        self.ts
            .tokens(key)
            .apply_token(ApplyTokenRequest {
                instance_id: INSTANCE.into(),
                actions: vec![TokenAction::Read as i32, TokenAction::Write as i32],
                resources: resources.iter().map(|s| s.to_string()).collect(),
                expire_time: expire_ms,
            })
            .await
            .expect("apply token")
            .into_inner()
            .token
    }

    async fn revoke(&self, token: &str) {
        self.ts
            .tokens(&self.app)
            .revoke_token(RevokeTokenRequest {
                instance_id: INSTANCE.into(),
                token: token.into(),
            })
            .await
            .expect("revoke");
    }

    fn token_user(&self) -> String {
        format!("Token|{}|{INSTANCE}", self.app.id)
    }

    async fn token_client(&self, client_id: &str, token: &str) -> Result<Mqtt, String> {
        mqtt(
            self.broker.port,
            client_id,
            &self.token_user(),
            &format!("RW|{token}"),
        )
        .await
    }

    /// Registers a device credential and returns (username, password).
    async fn device(&self, client_id: &str) -> (String, String) {
        let cred = self
            .ts
            .devices(&self.app)
            .register_device_credential(RegisterDeviceCredentialRequest {
                instance_id: INSTANCE.into(),
                client_id: client_id.into(),
            })
            .await
            .expect("register")
            .into_inner()
            .device_credential
            .expect("credential");
        (
            format!("DeviceCredential|{}|{INSTANCE}", cred.device_access_key_id),
            mqtt_password(&cred.device_access_key_secret, client_id),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_enforces_connect_topics_and_revocations() {
    enforces_connect_topics_and_revocations(false).await;
}

/// The same over mutual TLS: the service refuses any connection without a certificate from
/// its client CA, so every CONNECT check and the revocation stream prove the plugin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_over_mutual_tls_enforces_connect_topics_and_revocations() {
    enforces_connect_topics_and_revocations(true).await;
}

async fn enforces_connect_topics_and_revocations(mutual_tls: bool) {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let mut s = setup_with(&binary, mutual_tls).await;
    let port = s.broker.port;
    if mutual_tls {
        s.broker
            .wait_log("plugin loaded, service https://127.0.0.1:")
            .await;
        s.broker.wait_log("client certificate").await;
    }

    // Token mode: valid connects; wrong, forged and malformed are refused.
    let t_a = s.token(&["dev/a/#"]).await;
    let t_b = s.token(&["dev/b/#"]).await;
    let mut a = s
        .token_client("GID_test@@@a", &t_a)
        .await
        .expect("valid token connects");
    let mut forged = t_a.clone();
    let last = forged.pop().expect("non-empty token");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert!(
        s.token_client("GID_test@@@x", &forged).await.is_err(),
        "forged token"
    );
    assert!(
        s.token_client("GID_test@@@x", "garbage").await.is_err(),
        "wrong token"
    );
    assert!(
        mqtt(port, "GID_test@@@x", "nobody", "x").await.is_err(),
        "bad username"
    );

    // Signature mode: a subscriber to everything (its grant is `#`).
    let sig_id = "GID_test@@@sig";
    let sig_user = format!("Signature|{}|{INSTANCE}", s.app.id);
    assert!(
        mqtt(port, sig_id, &sig_user, &mqtt_password("wrong", sig_id))
            .await
            .is_err()
    );
    let mut sig = mqtt(
        port,
        sig_id,
        &sig_user,
        &mqtt_password(&s.app.secret, sig_id),
    )
    .await
    .expect("signature connects");
    assert!(ok(&sig.subscribe("#").await));

    // Publish: the denied one is sent first; in-order QoS 1 delivery means it would arrive
    // first if it were not dropped.
    a.publish("other/x").await;
    a.publish("dev/a/x").await;
    match sig.next().await {
        Ev::Publish(topic) => assert_eq!(topic, "dev/a/x", "ungranted publish was delivered"),
        other => panic!("expected a delivery, got {other:?}"),
    }

    // Subscribe: inside the grant succeeds, outside fails, containment is MQTT's.
    assert!(ok(&a.subscribe("dev/a/+").await));
    assert!(ok(&a.subscribe("dev/a/#").await));
    assert!(!ok(&a.subscribe("dev/#").await));
    assert!(!ok(&a.subscribe("other/#").await));
    assert!(!ok(&a.subscribe("#").await));

    // Device credential mode.
    let (d1_user, d1_pass) = s.device("GID_test@@@d1").await;
    let (d2_user, d2_pass) = s.device("GID_test@@@d2").await;
    assert!(mqtt(
        port,
        "GID_test@@@d1",
        &d1_user,
        &mqtt_password("wrong", "GID_test@@@d1")
    )
    .await
    .is_err());
    assert!(
        mqtt(port, "GID_test@@@d2", &d1_user, &d1_pass)
            .await
            .is_err(),
        "other client id"
    );
    let mut d1 = mqtt(port, "GID_test@@@d1", &d1_user, &d1_pass)
        .await
        .expect("device connects");
    let mut d2 = mqtt(port, "GID_test@@@d2", &d2_user, &d2_pass)
        .await
        .expect("device connects");
    let mut b = s
        .token_client("GID_test@@@b", &t_b)
        .await
        .expect("b connects");

    // RevokeToken kicks exactly A.
    s.revoke(&t_a).await;
    a.assert_kicked().await;
    b.assert_alive().await;
    d1.assert_alive().await;
    assert!(
        s.token_client("GID_test@@@a", &t_a).await.is_err(),
        "revoked token"
    );

    // RefreshDeviceCredential kicks exactly D1.
    s.ts.devices(&s.app)
        .refresh_device_credential(RefreshDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: "GID_test@@@d1".into(),
        })
        .await
        .expect("refresh");
    d1.assert_kicked().await;
    d2.assert_alive().await;
    b.assert_alive().await;
    assert!(
        mqtt(port, "GID_test@@@d1", &d1_user, &d1_pass)
            .await
            .is_err(),
        "refreshed away"
    );

    // UnRegisterDeviceCredential kicks exactly D2.
    s.ts.devices(&s.app)
        .un_register_device_credential(UnRegisterDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: "GID_test@@@d2".into(),
        })
        .await
        .expect("unregister");
    d2.assert_kicked().await;
    b.assert_alive().await;
    sig.assert_alive().await;

    // Service down: new CONNECTs are refused, existing sessions keep their grants.
    let grpc = s.ts.config.grpc_addr.clone();
    s.ts.stop().await;
    let t_c = {
        // Tokens cannot be applied while the service is down; this one is made afterwards.
        String::from("not-yet")
    };
    assert!(
        s.token_client("GID_test@@@c", &t_c).await.is_err(),
        "fail closed"
    );
    b.publish("dev/b/1").await;
    match sig.next().await {
        Ev::Publish(topic) => assert_eq!(topic, "dev/b/1"),
        other => panic!("expected a delivery while the service is down, got {other:?}"),
    }
    b.assert_alive().await;

    // A revocation the plugin cannot see live: made while the service listens elsewhere.
    s.ts.config.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    s.ts.restart().await;
    s.revoke(&t_b).await;
    s.ts.stop().await;
    s.ts.config.grpc_addr = grpc;
    s.ts.restart().await;
    // The plugin reconnects, resumes from its persisted revision and kicks B.
    b.assert_kicked().await;
    sig.assert_alive().await;
    let t_c = s.token(&["dev/c/#"]).await;
    let mut c = s
        .token_client("GID_test@@@c", &t_c)
        .await
        .expect("service back: connects");
    c.assert_alive().await;
    let rev: u64 = std::fs::read_to_string(&s.broker.state_file)
        .expect("state file written")
        .trim()
        .parse()
        .expect("a revision");
    assert!(rev >= 4, "state file holds the last revision, got {rev}");
}

/// A token's grant ends at its expiry: the plugin kicks the client on the first broker tick
/// after it (`MOSQ_EVT_TICK`), leaves a client with a long-lived token alone, and the service
/// refuses the expired token on a new CONNECT. Tokens live at least 60 s, so this waits ~61 s;
/// it has its own service and broker and runs in parallel with the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_kicks_at_token_expiry_and_refuses_expired_tokens() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let s = setup(&binary).await;
    let expire_ms = common::now_ms() + 61_000;
    let short = s.token_until(&["exp/x/#"], expire_ms).await;
    let long = s.token(&["exp/y/#"]).await;
    let mut x = s
        .token_client("GID_test@@@expx", &short)
        .await
        .expect("an unexpired token connects");
    let mut y = s
        .token_client("GID_test@@@expy", &long)
        .await
        .expect("a long-lived token connects");
    assert!(ok(&x.subscribe("exp/x/#").await));
    assert!(ok(&y.subscribe("exp/y/#").await));

    // Wait for X's disconnect: bounded by its expiry plus slack, failing if it comes early.
    const SLACK_MS: i64 = 2_000;
    let left = u64::try_from(expire_ms + SLACK_MS - common::now_ms()).unwrap_or(0);
    let closed_ms = tokio::time::timeout(Duration::from_millis(left), async {
        loop {
            match x.events.recv().await {
                Some(Ev::Closed(_)) | None => return common::now_ms(),
                Some(Ev::Publish(_) | Ev::SubAck(_)) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("X was not disconnected within {SLACK_MS} ms of its expiry"));
    assert!(
        closed_ms >= expire_ms,
        "X was disconnected {} ms before its expiry",
        expire_ms - closed_ms
    );
    eprintln!(
        "X disconnected {} ms after its token expired",
        closed_ms - expire_ms
    );
    s.broker.wait_log("kicked GID_test@@@expx").await;

    // Y, on a long-lived token, is untouched.
    y.assert_alive().await;
    y.publish("exp/y/1").await;
    loop {
        match y.next().await {
            Ev::Publish(topic) => {
                assert_eq!(topic, "exp/y/1");
                break;
            }
            Ev::SubAck(_) => {}
            Ev::Closed(e) => panic!("Y was disconnected: {e}"),
        }
    }

    // A fresh CONNECT with the expired token is refused by the service (CONNACK not authorised).
    let err = match s.token_client("GID_test@@@expx", &short).await {
        Ok(_) => panic!("an expired token connected"),
        Err(e) => e,
    };
    assert!(
        err.contains("NotAuthorized"),
        "expected CONNACK not authorised, got {err}"
    );
    s.broker
        .wait_log("CONNECT of GID_test@@@expx denied: TokenExpired")
        .await;
    y.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_kicks_exactly_the_clients_of_a_revoked_key_scope() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let s = setup(&binary).await;
    let key_b = s.ts.create_key(&[INSTANCE]).await;
    let hour = common::now_ms() + 3600 * 1000;
    // Three clients on tokens key A (`s.app`) minted, one on a token of key B; and one in
    // Signature mode with key A, whose key stays valid.
    let mut of_a = Vec::new();
    let mut a_tokens = Vec::new();
    for i in 0..3 {
        let token = s.token(&["scope/#"]).await;
        let c = s
            .token_client(&format!("GID_scope@@@a{i}"), &token)
            .await
            .expect("a token of key A connects");
        of_a.push(c);
        a_tokens.push(token);
    }
    let b_token = s.token_of(&key_b, &["scope/#"], hour).await;
    let mut of_b = mqtt(
        s.broker.port,
        "GID_scope@@@b0",
        &format!("Token|{}|{INSTANCE}", key_b.id),
        &format!("RW|{b_token}"),
    )
    .await
    .expect("a token of key B connects");
    let sig_id = "GID_scope@@@sig";
    let mut signature = mqtt(
        s.broker.port,
        sig_id,
        &format!("Signature|{}|{INSTANCE}", s.app.id),
        &mqtt_password(&s.app.secret, sig_id),
    )
    .await
    .expect("a Signature client of key A connects");
    for c in of_a.iter_mut().chain([&mut of_b, &mut signature]) {
        c.assert_alive().await;
    }

    // One call, one event: every session on a token of key A goes, and only those.
    let revision =
        s.ts.tokens(&s.ts.root)
            .revoke_tokens(RevokeTokensRequest {
                instance_id: INSTANCE.into(),
                scope: Some(Scope::AccessKeyId(s.app.id.clone())),
            })
            .await
            .expect("RevokeTokens")
            .into_inner()
            .revision;
    for c in &mut of_a {
        c.assert_kicked().await;
    }
    s.broker
        .wait_log(&format!(
            "revocation {revision} (RevokeTokens) ends 3 session(s)"
        ))
        .await;
    of_b.assert_alive().await;
    signature.assert_alive().await;

    // An old token of key A is refused; one key A mints now connects.
    let err = match s.token_client("GID_scope@@@a0", &a_tokens[0]).await {
        Ok(_) => panic!("a revoked token connected"),
        Err(e) => e,
    };
    assert!(err.contains("NotAuthorized"), "{err}");
    let fresh = s.token(&["scope/#"]).await;
    let mut again = s
        .token_client("GID_scope@@@a0", &fresh)
        .await
        .expect("a token minted after the revocation connects");
    again.assert_alive().await;
    of_b.assert_alive().await;
}

/// Kick latency: from RevokeToken returning to the client seeing the disconnect, 100 tries.
/// `cargo test --release --test mosquitto -- --ignored --nocapture kick_latency`
/// (set `KICK_BENCH_NO_WAKE=1` to run without `plugin_opt_wake_addr`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; prints figures"]
async fn kick_latency() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let s = setup(&binary).await;
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for i in 0..100 {
        let token = s.token(&["bench/#"]).await;
        let mut c = s
            .token_client(&format!("GID_bench@@@{i}"), &token)
            .await
            .expect("connects");
        s.revoke(&token).await;
        let rpc_done = Instant::now();
        c.assert_kicked().await;
        hist.record(rpc_done.elapsed().as_micros() as u64)
            .expect("record");
    }
    println!(
        "kick latency over {} tries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        hist.len(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
}
