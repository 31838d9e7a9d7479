//! The test server harness: a real server on 127.0.0.1:0 with a temporary data directory,
//! real gRPC clients, and restart on the same directory.
#![allow(dead_code)]

use std::{path::PathBuf, time::Duration};

use mqtt_tokend::{
    app::{RootKeyFile, Server},
    config::ServeConfig,
    proto::{
        access_key_service_client::AccessKeyServiceClient,
        broker_auth_service_client::BrokerAuthServiceClient,
        device_credential_service_client::DeviceCredentialServiceClient,
        revocation_service_client::RevocationServiceClient,
        token_service_client::TokenServiceClient,
    },
};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::Channel,
    Request, Status,
};

/// Adds `authorization: Bearer id:secret` to every call.
#[derive(Clone)]
pub struct Bearer(pub Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

/// An access key id and secret.
#[derive(Clone, Debug)]
pub struct Key {
    pub id: String,
    pub secret: String,
}

impl Key {
    pub fn bearer(&self) -> Bearer {
        Bearer(Some(
            format!("Bearer {}:{}", self.id, self.secret)
                .parse()
                .expect("ascii key"),
        ))
    }
}

/// A running server plus what a test needs to talk to it.
pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub config: ServeConfig,
    pub root: Key,
    pub channel: Channel,
}

/// Test configuration: no rate limits unless a test sets them.
pub fn test_config(dir: &tempfile::TempDir) -> ServeConfig {
    let mut config =
        ServeConfig::with_dirs(dir.path().join("data"), dir.path().join("keyring.json"));
    config.rate_apply_token = 0;
    config.rate_query_token = 0;
    config.rate_revoke_token = 0;
    config.rate_device_credential = 0;
    config.rate_per_ip = 0;
    config.shutdown_grace = Duration::from_secs(5);
    config
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(&dir);
        tweak(&mut config);
        let server = Server::start(config.clone()).await.expect("server starts");
        let root = read_root_key(&config.root_key_path());
        let channel = connect(server.grpc_addr()).await;
        Self {
            server: Some(server),
            dir,
            config,
            root,
            channel,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// Stops the server and starts a new one on the same data directory (and ports 0).
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
        let server = Server::start(self.config.clone())
            .await
            .expect("server restarts");
        self.channel = connect(server.grpc_addr()).await;
        self.server = Some(server);
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }

    pub fn tokens(&self, key: &Key) -> TokenServiceClient<Authed> {
        TokenServiceClient::with_interceptor(self.channel.clone(), key.bearer())
    }

    pub fn tokens_unauthenticated(&self, bearer: Bearer) -> TokenServiceClient<Authed> {
        TokenServiceClient::with_interceptor(self.channel.clone(), bearer)
    }

    pub fn access_keys(&self, key: &Key) -> AccessKeyServiceClient<Authed> {
        AccessKeyServiceClient::with_interceptor(self.channel.clone(), key.bearer())
    }

    pub fn devices(&self, key: &Key) -> DeviceCredentialServiceClient<Authed> {
        DeviceCredentialServiceClient::with_interceptor(self.channel.clone(), key.bearer())
    }

    pub fn broker(&self, key: &Key) -> BrokerAuthServiceClient<Authed> {
        BrokerAuthServiceClient::with_interceptor(self.channel.clone(), key.bearer())
    }

    pub fn revocations(&self, key: &Key) -> RevocationServiceClient<Authed> {
        RevocationServiceClient::with_interceptor(self.channel.clone(), key.bearer())
    }

    /// Creates an access key allowed on `instances` with the root key.
    pub async fn create_key(&self, instances: &[&str]) -> Key {
        let r = self
            .access_keys(&self.root)
            .create_access_key(mqtt_tokend::proto::CreateAccessKeyRequest {
                instance_ids: instances.iter().map(|s| s.to_string()).collect(),
                description: "test".into(),
            })
            .await
            .expect("create key")
            .into_inner();
        Key {
            id: r.access_key_id,
            secret: r.access_key_secret,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }
}

pub fn read_root_key(path: &std::path::Path) -> Key {
    let raw = std::fs::read(path).expect("root key file exists");
    let key: RootKeyFile = serde_json::from_slice(&raw).expect("root key json");
    Key {
        id: key.access_key_id,
        secret: key.access_key_secret,
    }
}

pub async fn connect(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// The Alibaba error code a status carries in its ErrorInfo reason.
pub fn code_of(status: &Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_else(|| format!("<no ErrorInfo: {status:?}>"))
}

pub fn now_ms() -> i64 {
    mqtt_tokend::core::now_ms()
}
