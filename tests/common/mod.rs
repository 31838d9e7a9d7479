//! The test server harness: a real server on 127.0.0.1:0 with a temporary data directory,
//! real gRPC clients, and restart on the same directory.
#![allow(dead_code)]

use std::{path::PathBuf, time::Duration};

use mqtt_tokend::{app::Server, config::ServeConfig};
use mqtt_tokend_client::{
    proto::{
        access_key_service_client::AccessKeyServiceClient,
        broker_auth_service_client::BrokerAuthServiceClient,
        device_credential_service_client::DeviceCredentialServiceClient,
        revocation_service_client::RevocationServiceClient,
        token_service_client::TokenServiceClient, ApplyTokenRequest,
        RegisterDeviceCredentialRequest, RevokeTokenRequest, StartMode, TokenAction,
        UnRegisterDeviceCredentialRequest, WatchRevocationsRequest,
    },
    AuthChannel, Client, ClientConfig, ClientTls,
};
use tonic::Status;

/// An access key id and secret (the client crate's).
pub use mqtt_tokend_client::AccessKey as Key;

/// A running server plus what a test needs to talk to it.
pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub config: ServeConfig,
    pub root: Key,
    /// A connection without a credential; [`TestServer::client`] adds one.
    pub conn: Client,
    /// How the harness's own connection speaks TLS to a server started with TLS flags.
    pub client_tls: Option<ClientTls>,
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
        Self::start_with_tls(|config, _| tweak(config), None).await
    }

    /// A server whose configuration `tweak` may turn TLS on (its files can live in `dir`,
    /// the server's temporary directory); the harness connects with `client_tls`.
    pub async fn start_with_tls(
        tweak: impl FnOnce(&mut ServeConfig, &std::path::Path),
        client_tls: Option<ClientTls>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(&dir);
        tweak(&mut config, dir.path());
        let server = Server::start(config.clone()).await.expect("server starts");
        let root = read_root_key(&config.root_key_path());
        let conn = connect_with(server.grpc_addr(), client_tls.as_ref()).await;
        Self {
            server: Some(server),
            dir,
            config,
            root,
            conn,
            client_tls,
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
        self.conn = connect_with(server.grpc_addr(), self.client_tls.as_ref()).await;
        self.server = Some(server);
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }

    /// The server's connection, authenticating as `key`.
    pub fn client(&self, key: &Key) -> Client {
        self.conn.with_access_key(Some(key)).expect("ascii key")
    }

    pub fn tokens(&self, key: &Key) -> TokenServiceClient<AuthChannel> {
        self.client(key).tokens()
    }

    pub fn access_keys(&self, key: &Key) -> AccessKeyServiceClient<AuthChannel> {
        self.client(key).access_keys()
    }

    pub fn devices(&self, key: &Key) -> DeviceCredentialServiceClient<AuthChannel> {
        self.client(key).devices()
    }

    pub fn broker(&self, key: &Key) -> BrokerAuthServiceClient<AuthChannel> {
        self.client(key).broker()
    }

    pub fn revocations(&self, key: &Key) -> RevocationServiceClient<AuthChannel> {
        self.client(key).revocations()
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
        Key::new(r.access_key_id, r.access_key_secret)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }
}

pub fn read_root_key(path: &std::path::Path) -> Key {
    Key::from_json_file(path).expect("root key file")
}

/// A loopback address that was free a moment ago, for a server that must keep its address
/// across restarts.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// A new connection without a credential.
pub async fn connect(addr: std::net::SocketAddr) -> Client {
    connect_with(addr, None).await
}

/// A new connection without a credential, over TLS when `tls` is given.
pub async fn connect_with(addr: std::net::SocketAddr, tls: Option<&ClientTls>) -> Client {
    let url = mqtt_tokend_client::endpoint_url(&addr.to_string(), tls.is_some());
    ClientConfig::new([url])
        .tls_opt(tls.cloned())
        .connect()
        .await
        .expect("connect")
}

/// Mints and revokes one token on `instance`; returns (revision, token).
pub async fn revoke_one(ts: &TestServer, key: &Key, instance: &str) -> (u64, String) {
    revoke_with(&mut ts.tokens(key), instance).await
}

/// [`revoke_one`] on a given client (for tasks that own theirs).
pub async fn revoke_with(t: &mut TokenServiceClient<AuthChannel>, instance: &str) -> (u64, String) {
    let token = t
        .apply_token(ApplyTokenRequest {
            instance_id: instance.into(),
            actions: vec![TokenAction::Read as i32],
            resources: vec!["a".into()],
            expire_time: now_ms() + 3_600_000,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let rev = t
        .revoke_token(RevokeTokenRequest {
            instance_id: instance.into(),
            token: token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    (rev, token)
}

/// Configures a server that compacts revocations without an expiry at once.
pub fn compact_at_once(config: &mut ServeConfig) {
    config.revocation_retention = Duration::ZERO;
    config.maintenance_interval = Duration::from_millis(50);
}

/// On a fresh server configured with [`compact_at_once`]: writes three device credential
/// revocations (revisions 1..=3, compacted away) and one token revocation (4, kept until the
/// token would expire, an hour), then waits until resuming from revision 1 fails and returns
/// that error.
pub async fn compacted_log(ts: &TestServer, key: &Key, instance: &str) -> Status {
    let mut d = ts.devices(key);
    for i in 0..3 {
        let client_id = format!("GID_cmp@@@d{i}");
        d.register_device_credential(RegisterDeviceCredentialRequest {
            instance_id: instance.into(),
            client_id: client_id.clone(),
        })
        .await
        .unwrap();
        d.un_register_device_credential(UnRegisterDeviceCredentialRequest {
            instance_id: instance.into(),
            client_id,
        })
        .await
        .unwrap();
    }
    let (kept, _) = revoke_one(ts, key, instance).await;
    assert_eq!(kept, 4);
    let mut w = ts.revocations(key);
    // Compaction runs on the maintenance timer and has no signal of its own: poll, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match w
            .watch_revocations(WatchRevocationsRequest {
                start_mode: StartMode::Revision as i32,
                start_revision: 1,
                instance_ids: vec![],
            })
            .await
        {
            Err(e) => return e,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(_) => panic!("revisions 1..3 were never compacted"),
        }
    }
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

/// A watch request for every instance from now on (no snapshot, no history).
pub fn from_now() -> WatchRevocationsRequest {
    WatchRevocationsRequest {
        start_mode: StartMode::Now as i32,
        start_revision: 0,
        instance_ids: vec![],
    }
}

/// A revocation watch through `client` starting at revision `start`.
pub async fn watch_from(
    client: &Client,
    start: u64,
) -> tonic::Streaming<mqtt_tokend_client::proto::WatchRevocationsResponse> {
    client
        .revocations()
        .watch_revocations(WatchRevocationsRequest {
            start_mode: StartMode::Revision as i32,
            start_revision: start,
            instance_ids: vec![],
        })
        .await
        .expect("watch")
        .into_inner()
}

/// The next message of a watch (event, progress or snapshot end), within 20 s.
pub async fn next_message(
    stream: &mut tonic::Streaming<mqtt_tokend_client::proto::WatchRevocationsResponse>,
) -> Option<mqtt_tokend_client::proto::watch_revocations_response::Message> {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("the watch keeps up")
        .expect("the stream stays open")
        .expect("a message")
        .message
}

/// The next event of a watch (progress messages skipped), within 20 s.
pub async fn next_event(
    stream: &mut tonic::Streaming<mqtt_tokend_client::proto::WatchRevocationsResponse>,
) -> mqtt_tokend_client::proto::RevocationEvent {
    use mqtt_tokend_client::proto::watch_revocations_response::Message;
    loop {
        if let Some(Message::Event(e)) = next_message(stream).await {
            return e;
        }
    }
}

/// Every event from revision `start` through `last`, as a watcher through `client` gets them.
pub async fn events_until(
    client: &Client,
    start: u64,
    last: u64,
) -> Vec<mqtt_tokend_client::proto::RevocationEvent> {
    let mut stream = watch_from(client, start).await;
    let mut events: Vec<mqtt_tokend_client::proto::RevocationEvent> = Vec::new();
    while events
        .last()
        .map_or(start.saturating_sub(1), |e| e.revision)
        < last
    {
        events.push(next_event(&mut stream).await);
    }
    events
}

/// The next item of a follower that is not a heartbeat (those come on a timer, at any point),
/// within 20 s.
pub async fn next_follow_item(
    f: &mut mqtt_tokend_client::RevocationFollower<mqtt_tokend_client::RevisionFile>,
) -> mqtt_tokend_client::FollowItem {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(20), f.next())
            .await
            .expect("an item in time");
        if !matches!(item, mqtt_tokend_client::FollowItem::Progress { .. }) {
            return item;
        }
    }
}
