//! End to end with a real Mosquitto 2.0 and the plugin from `integrations/mosquitto`: a real
//! mqtt-tokend (the TestServer harness), a real broker process on a free loopback port, and a
//! real MQTT client (rumqttc). Skips only when `mosquitto` is not installed and `CI` is unset;
//! in CI a missing broker fails the test (`scripts/install-mosquitto.sh` installs it). The main
//! test runs twice: over plaintext gRPC, and over mutual TLS (a server with `--tls-client-ca`,
//! the plugin configured with `plugin_opt_ca_file`, `plugin_opt_cert_file`,
//! `plugin_opt_key_file` and an `https://` service address).
//!
//! One test binary: this file sets up a service, a broker and an application key; in
//! `mosquitto/`, `broker` runs the broker process with the plugin, `client` is the MQTT client,
//! and the tests are by concern: `enforcement` (CONNECT, topics and revocations, plaintext and
//! mutual TLS), `kicks` (kicks at token expiry and by key scope, the kick latency benchmark),
//! `failover` (several service addresses: one that refuses, one whose server stops),
//! `replicas` (two real replicas on one etcd: the plugin's replica stops or is killed).

mod common;
#[path = "etcd_kit/mod.rs"]
mod etcd_kit;
mod mqtt_kit;
mod production;

#[path = "mosquitto/broker.rs"]
mod broker;
#[path = "mosquitto/client.rs"]
mod client;
#[path = "mosquitto/enforcement.rs"]
mod enforcement;
#[path = "mosquitto/failover.rs"]
mod failover;
#[path = "mosquitto/kicks.rs"]
mod kicks;
#[path = "mosquitto/replicas.rs"]
mod replicas;

use std::{net::SocketAddr, path::Path, time::Duration};

use broker::{build_plugin, Broker, PluginTls};
use client::{mqtt, Mqtt};
use common::{free_addr, Key, TestServer};
use mqtt_tokend::{
    core::broker::mqtt_password,
    proto::{ApplyTokenRequest, RegisterDeviceCredentialRequest, RevokeTokenRequest, TokenAction},
};
use mqtt_tokend_client::ClientTls;
use production::{Ca, TlsDir};

const INSTANCE: &str = "post-cn-mosq";
const WAIT: Duration = Duration::from_secs(10);

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
    setup_services(binary, mutual_tls, |grpc| vec![grpc]).await
}

/// Like [`setup_with`], the plugin knowing the service at `services(grpc)`, where `grpc` is
/// the address the service listens on.
async fn setup_services(
    binary: &Path,
    mutual_tls: bool,
    services: impl FnOnce(SocketAddr) -> Vec<SocketAddr>,
) -> Setup {
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
    let broker = Broker::start(
        binary,
        &plugin,
        &services(grpc),
        &plugin_key,
        plugin_tls.as_ref(),
    );
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
