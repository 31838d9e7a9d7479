//! Connecting to mqtt-tokend: one [`Client`] per connection, with the access key set as
//! `authorization: Bearer <AccessKeyId>:<AccessKeySecret>` on every call, handing out typed
//! clients of every service.
//!
//! [`ClientConfig`] is the one place connection options live (endpoints, timeouts, the key,
//! TLS), so failover across several endpoints arrives as a new option without breaking callers.
//!
//! TLS follows the endpoint's scheme: `https://` speaks TLS (with the [`ClientTls`] given, or
//! the system's trust store without one), `http://` plaintext; TLS options on an `http://`
//! endpoint are refused rather than ignored, so a secret never goes out in plaintext by a
//! typo in the scheme.

use std::{fmt, path::Path, time::Duration};

use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Channel, Endpoint},
    Request, Status,
};

use crate::{
    proto::{
        access_key_service_client::AccessKeyServiceClient,
        broker_auth_service_client::BrokerAuthServiceClient,
        broker_session_service_client::BrokerSessionServiceClient,
        device_credential_service_client::DeviceCredentialServiceClient,
        revocation_service_client::RevocationServiceClient,
        token_service_client::TokenServiceClient,
    },
    tls::{ClientTls, TlsError},
};

/// An access key: what a client authenticates with. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The key id (`AccessKeyId`).
    pub id: String,
    /// The key secret (`AccessKeySecret`).
    pub secret: String,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The JSON form of a key file, as the server writes `root-access-key.json`.
#[derive(serde::Deserialize)]
struct KeyFile {
    #[serde(rename = "AccessKeyId")]
    id: String,
    #[serde(rename = "AccessKeySecret")]
    secret: String,
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// The file is not `{"AccessKeyId": "...", "AccessKeySecret": "..."}`.
    #[error(transparent)]
    Parse(#[from] serde_json::Error),
}

impl AccessKey {
    /// A key from its id and secret.
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: secret.into(),
        }
    }

    /// Reads a key file such as the server's `root-access-key.json`:
    /// `{"AccessKeyId": "...", "AccessKeySecret": "..."}`.
    ///
    /// # Errors
    /// The file cannot be read or does not hold a key.
    pub fn from_json_file(path: &Path) -> Result<Self, KeyFileError> {
        let key: KeyFile = serde_json::from_slice(&std::fs::read(path)?)?;
        Ok(Self::new(key.id, key.secret))
    }
}

/// Why a [`Client`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration names no endpoint.
    #[error("no endpoint to connect to")]
    NoEndpoint,
    /// Several endpoints were given; failover between them is not built yet.
    #[error("{count} endpoints given; this client connects to exactly one")]
    SeveralEndpoints {
        /// How many were given.
        count: usize,
    },
    /// An endpoint is not a URI such as `http://127.0.0.1:50051`.
    #[error("invalid endpoint {endpoint}: {source}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it does not parse.
        source: tonic::transport::Error,
    },
    /// A TLS input (CA, client certificate or key) cannot be used; the error names it.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// TLS options were given for an endpoint that is not `https://`.
    #[error("TLS options are set but {endpoint} is not an https:// endpoint")]
    TlsWithoutHttps {
        /// The endpoint as given.
        endpoint: String,
    },
    /// The TLS inputs were read but do not make a TLS client: the certificate and key do not
    /// match, the domain name is not a valid name, or (without a CA) the system has no CA
    /// certificates.
    #[error("TLS set-up for {endpoint}: {source}")]
    TlsConfig {
        /// The endpoint.
        endpoint: String,
        /// The transport's error.
        source: tonic::transport::Error,
    },
    /// The key id or secret is not printable ASCII, so it cannot travel in a header.
    #[error("the access key id and secret must be printable ASCII")]
    InvalidAccessKey,
    /// The connection could not be established.
    #[error("connecting to {endpoint}: {source}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// The transport's error.
        source: tonic::transport::Error,
    },
}

/// Adds `authorization: Bearer <AccessKeyId>:<AccessKeySecret>` to every call (nothing when
/// made without a key). The header is built once, so a call only clones it.
#[derive(Clone, Default)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl BearerAuth {
    /// The credential of `key`, or none.
    ///
    /// # Errors
    /// `InvalidAccessKey`: the id or secret is not printable ASCII.
    pub fn new(key: Option<&AccessKey>) -> Result<Self, ConnectError> {
        key.map(|k| {
            format!("Bearer {}:{}", k.id, k.secret)
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| ConnectError::InvalidAccessKey)
        })
        .transpose()
        .map(Self)
    }
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = if self.0.is_some() { "set" } else { "none" };
        f.debug_tuple("BearerAuth").field(&set).finish()
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The transport every typed client of a [`Client`] runs on: the connection plus its
/// credential.
pub type AuthChannel = InterceptedService<Channel, BearerAuth>;

/// How to reach the service and as whom. Built with [`ClientConfig::new`] and the chained
/// setters; new options (failover) are added as setters, so existing callers keep working.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    endpoints: Vec<String>,
    access_key: Option<AccessKey>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    tls: Option<ClientTls>,
}

impl ClientConfig {
    /// Endpoints are URIs such as `http://127.0.0.1:50051`. Exactly one is supported today;
    /// the list is the shape failover will take.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            access_key: None,
            timeout: None,
            connect_timeout: None,
            tls: None,
        }
    }

    /// Authenticate every call with `key`. Without one, calls carry no credential (health,
    /// reflection).
    pub fn access_key(mut self, key: AccessKey) -> Self {
        self.access_key = Some(key);
        self
    }

    /// Bound on each call until its response starts (a unary call's answer; a stream's
    /// headers, not its later messages). Unset: no bound.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Bound on establishing the connection. Unset: the operating system's.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// TLS for an `https://` endpoint: the CA to trust, a client certificate for mutual TLS,
    /// the name to check. Without it an `https://` endpoint trusts the system's CAs and
    /// presents no certificate; with it, an `http://` endpoint is an error
    /// ([`ConnectError::TlsWithoutHttps`]). Files are read when the client is built.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Like [`ClientConfig::tls`], but `None` leaves the configuration as it is: for a
    /// program's optional TLS flags ([`ClientTls::from_files`]).
    pub fn tls_opt(self, tls: Option<ClientTls>) -> Self {
        match tls {
            Some(tls) => self.tls(tls),
            None => self,
        }
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Connects now.
    ///
    /// # Errors
    /// The configuration is unusable or the endpoint cannot be reached.
    pub async fn connect(&self) -> Result<Client, ConnectError> {
        let (uri, endpoint) = self.endpoint()?;
        let auth = BearerAuth::new(self.access_key.as_ref())?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ConnectError::Unreachable {
                endpoint: uri,
                source,
            })?;
        Ok(Client { channel, auth })
    }

    /// A client that connects on its first call and reconnects after failures by itself: for
    /// long-running processes that may start before the service does. Must be called inside a
    /// tokio runtime.
    ///
    /// # Errors
    /// The configuration is unusable.
    pub fn connect_lazy(&self) -> Result<Client, ConnectError> {
        let (_, endpoint) = self.endpoint()?;
        let auth = BearerAuth::new(self.access_key.as_ref())?;
        Ok(Client {
            channel: endpoint.connect_lazy(),
            auth,
        })
    }

    fn endpoint(&self) -> Result<(String, Endpoint), ConnectError> {
        let uri = match self.endpoints.as_slice() {
            [] => return Err(ConnectError::NoEndpoint),
            [one] => one.clone(),
            several => {
                return Err(ConnectError::SeveralEndpoints {
                    count: several.len(),
                })
            }
        };
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|source| ConnectError::InvalidEndpoint {
                endpoint: uri.clone(),
                source,
            })?
            .tcp_nodelay(true);
        if let Some(t) = self.timeout {
            endpoint = endpoint.timeout(t);
        }
        if let Some(t) = self.connect_timeout {
            endpoint = endpoint.connect_timeout(t);
        }
        let https = endpoint.uri().scheme_str() == Some("https");
        let tls = match (https, &self.tls) {
            (true, Some(tls)) => tls.load()?,
            (true, None) => ClientTls::new().load()?,
            (false, Some(_)) => return Err(ConnectError::TlsWithoutHttps { endpoint: uri }),
            (false, None) => return Ok((uri, endpoint)),
        };
        let endpoint = endpoint
            .tls_config(tls)
            .map_err(|source| ConnectError::TlsConfig {
                endpoint: uri.clone(),
                source,
            })?;
        Ok((uri, endpoint))
    }
}

/// The endpoint URL of a program's address flag: a URL (`http://…`, `https://…`) as given, a
/// bare `host:port` with `https://` when TLS options are set and `http://` otherwise, so
/// `--ca-file` alone turns TLS on.
pub fn endpoint_url(addr: &str, tls: bool) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`), authenticating with `key`: the
/// short form of [`ClientConfig::connect`].
///
/// # Errors
/// The endpoint or key is unusable, or the endpoint cannot be reached.
pub async fn connect(endpoint: &str, key: Option<&AccessKey>) -> Result<Client, ConnectError> {
    let mut config = ClientConfig::new([endpoint]);
    config.access_key = key.cloned();
    config.connect().await
}

/// A connection to the service with a credential. Cheap to clone; clones share the connection
/// (HTTP/2 multiplexes their calls).
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    auth: BearerAuth,
}

impl Client {
    /// The same connection, authenticating as `key` instead (or as nobody).
    ///
    /// # Errors
    /// `InvalidAccessKey`: the id or secret is not printable ASCII.
    pub fn with_access_key(&self, key: Option<&AccessKey>) -> Result<Self, ConnectError> {
        Ok(Self {
            channel: self.channel.clone(),
            auth: BearerAuth::new(key)?,
        })
    }

    /// The connection without the credential, for services outside the API (gRPC health,
    /// reflection) or generated clients of other APIs.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The connection with the credential, for building any generated client.
    pub fn auth_channel(&self) -> AuthChannel {
        InterceptedService::new(self.channel.clone(), self.auth.clone())
    }

    /// TokenService: ApplyToken, QueryToken, RevokeToken.
    pub fn tokens(&self) -> TokenServiceClient<AuthChannel> {
        TokenServiceClient::new(self.auth_channel())
    }

    /// DeviceCredentialService: one secret per device.
    pub fn devices(&self) -> DeviceCredentialServiceClient<AuthChannel> {
        DeviceCredentialServiceClient::new(self.auth_channel())
    }

    /// AccessKeyService: managing callers.
    pub fn access_keys(&self) -> AccessKeyServiceClient<AuthChannel> {
        AccessKeyServiceClient::new(self.auth_channel())
    }

    /// BrokerAuthService: AuthenticateConnect and AuthorizeTopic.
    pub fn broker(&self) -> BrokerAuthServiceClient<AuthChannel> {
        BrokerAuthServiceClient::new(self.auth_channel())
    }

    /// RevocationService: the watch stream (see [`crate::RevocationFollower`] to follow it).
    pub fn revocations(&self) -> RevocationServiceClient<AuthChannel> {
        RevocationServiceClient::new(self.auth_channel())
    }

    /// BrokerSessionService: which broker clients rest on a credential (for kickers).
    pub fn broker_sessions(&self) -> BrokerSessionServiceClient<AuthChannel> {
        BrokerSessionServiceClient::new(self.auth_channel())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let key = AccessKey::new("MTAKid", "s3cret");
        assert!(!format!("{key:?}").contains("s3cret"));
        let auth = BearerAuth::new(Some(&key)).expect("ascii");
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn bad_configurations_are_named() {
        assert!(matches!(
            ClientConfig::new(Vec::<String>::new()).endpoint(),
            Err(ConnectError::NoEndpoint)
        ));
        assert!(matches!(
            ClientConfig::new(["http://a:1", "http://b:1"]).endpoint(),
            Err(ConnectError::SeveralEndpoints { count: 2 })
        ));
        assert!(matches!(
            ClientConfig::new(["http://a b"]).endpoint(),
            Err(ConnectError::InvalidEndpoint { .. })
        ));
        assert!(matches!(
            BearerAuth::new(Some(&AccessKey::new("id", "se\ncret"))),
            Err(ConnectError::InvalidAccessKey)
        ));
        assert!(matches!(
            ClientConfig::new(["http://a:1"])
                .tls(ClientTls::new())
                .endpoint(),
            Err(ConnectError::TlsWithoutHttps { .. })
        ));
        assert!(matches!(
            ClientConfig::new(["https://a:1"])
                .tls(ClientTls::new().ca_pem("not a PEM"))
                .endpoint(),
            Err(ConnectError::Tls(TlsError::Invalid { .. }))
        ));
    }

    #[test]
    fn bare_addresses_take_the_scheme_of_the_tls_options() {
        assert_eq!(endpoint_url("h:1", false), "http://h:1");
        assert_eq!(endpoint_url("h:1", true), "https://h:1");
        assert_eq!(endpoint_url("https://h:1", false), "https://h:1");
        assert_eq!(endpoint_url("http://h:1", true), "http://h:1");
    }

    #[test]
    fn key_files_are_read_as_the_server_writes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.json");
        std::fs::write(&path, r#"{"AccessKeyId": "MTAKx", "AccessKeySecret": "s"}"#)
            .expect("write");
        assert_eq!(
            AccessKey::from_json_file(&path).expect("key"),
            AccessKey::new("MTAKx", "s")
        );
        std::fs::write(&path, "{}").expect("write");
        assert!(matches!(
            AccessKey::from_json_file(&path),
            Err(KeyFileError::Parse(_))
        ));
        assert!(matches!(
            AccessKey::from_json_file(&dir.path().join("missing")),
            Err(KeyFileError::Read(_))
        ));
    }
}
