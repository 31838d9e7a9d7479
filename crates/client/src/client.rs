//! Connecting to mqtt-tokend: one [`Client`] per service, with the access key set as
//! `authorization: Bearer <AccessKeyId>:<AccessKeySecret>` on every call, handing out typed
//! clients of every service.
//!
//! [`ClientConfig`] is the one place connection options live (endpoints, timeouts, the key,
//! TLS). Several endpoints are replicas of one service, in order of preference: calls go to
//! one at a time and move to the next when it fails (see [`crate::failover`]); the key and
//! the TLS options apply to every endpoint.
//!
//! TLS follows each endpoint's scheme: `https://` speaks TLS (with the [`ClientTls`] given, or
//! the system's trust store without one), `http://` plaintext; TLS options with an `http://`
//! endpoint are refused rather than ignored, so a secret never goes out in plaintext by a
//! typo in the scheme.

use std::{sync::Arc, time::Duration};

use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, ClientTlsConfig, Endpoint},
};

pub use crate::credentials::{AccessKey, BearerAuth, KeyFileError};
use crate::{
    failover::{FailoverChannel, Pool, Target},
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

/// Why a [`Client`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration names no endpoint.
    #[error("no endpoint to connect to")]
    NoEndpoint,
    /// Never returned any more: several endpoints are now failover targets. Kept so that
    /// exhaustive matches written against the one-endpoint client still compile.
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
    /// The connection could not be established (to any of the endpoints, when there are
    /// several: `endpoint` then lists them all and `source` is the last one's error).
    #[error("connecting to {endpoint}: {source}")]
    Unreachable {
        /// The endpoint, or the endpoints.
        endpoint: String,
        /// The transport's error.
        source: tonic::transport::Error,
    },
}

/// The transport every typed client of a [`Client`] runs on: the connection (failing over
/// between the endpoints) plus its credential.
pub type AuthChannel = InterceptedService<FailoverChannel, BearerAuth>;

/// How to reach the service and as whom. Built with [`ClientConfig::new`] (or
/// [`ClientConfig::from_list`]) and the chained setters, so new options do not break callers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    endpoints: Vec<String>,
    access_key: Option<AccessKey>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    tls: Option<ClientTls>,
}

impl ClientConfig {
    /// Endpoints are URIs such as `http://127.0.0.1:50051`. Several are replicas of one
    /// service, tried in this order: calls go to the first until it fails, then to the next
    /// (see [`crate::failover`]).
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

    /// Endpoints from a comma-separated list such as `http://a:50051,http://b:50051`, the
    /// form an option or flag takes; blanks around the commas and empty entries are dropped.
    pub fn from_list(list: &str) -> Self {
        Self::new(
            list.split(',')
                .map(str::trim)
                .filter(|endpoint| !endpoint.is_empty()),
        )
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

    /// Bound on establishing a connection (to each endpoint). Unset: the operating system's.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// TLS for `https://` endpoints (all of them): the CA to trust, a client certificate for
    /// mutual TLS, the name to check. Without it an `https://` endpoint trusts the system's
    /// CAs and presents no certificate; with it, an `http://` endpoint is an error
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

    /// Connects now: to the first endpoint that accepts, in order; it becomes the current
    /// one, and the others connect when calls fail over to them.
    ///
    /// # Errors
    /// The configuration is unusable or no endpoint can be reached.
    pub async fn connect(&self) -> Result<Client, ConnectError> {
        let endpoints = self.checked_endpoints()?;
        let auth = BearerAuth::new(self.access_key.as_ref())?;
        let mut targets = Vec::with_capacity(endpoints.len());
        let (mut current, mut last_error) = (None, None);
        for (index, (uri, endpoint)) in endpoints.into_iter().enumerate() {
            let channel = if current.is_some() {
                endpoint.connect_lazy()
            } else {
                match endpoint.connect().await {
                    Ok(channel) => {
                        current = Some(index);
                        channel
                    }
                    Err(source) => {
                        last_error = Some(source);
                        endpoint.connect_lazy()
                    }
                }
            };
            targets.push(Target { uri, channel });
        }
        let Some(current) = current else {
            let endpoint = self.endpoints.join(", ");
            return Err(match last_error {
                Some(source) => ConnectError::Unreachable { endpoint, source },
                // `checked_endpoints()` refuses an empty list, so some attempt was made.
                None => ConnectError::NoEndpoint,
            });
        };
        Ok(Client::new(Pool::new(targets, current), auth))
    }

    /// A client that connects on its first call and reconnects after failures by itself: for
    /// long-running processes that may start before the service does. Calls go to the first
    /// endpoint first. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// The configuration is unusable.
    pub fn connect_lazy(&self) -> Result<Client, ConnectError> {
        let endpoints = self.checked_endpoints()?;
        let auth = BearerAuth::new(self.access_key.as_ref())?;
        let targets = endpoints
            .into_iter()
            .map(|(uri, endpoint)| Target {
                uri,
                channel: endpoint.connect_lazy(),
            })
            .collect();
        Ok(Client::new(Pool::new(targets, 0), auth))
    }

    /// Every endpoint, checked and set up, in order; at least one.
    fn checked_endpoints(&self) -> Result<Vec<(String, Endpoint)>, ConnectError> {
        if self.endpoints.is_empty() {
            return Err(ConnectError::NoEndpoint);
        }
        // Read once for all the https:// endpoints, and only if there is one.
        let mut loaded: Option<ClientTlsConfig> = None;
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for uri in &self.endpoints {
            let endpoint = self.endpoint(uri)?;
            let https = endpoint.uri().scheme_str() == Some("https");
            let endpoint = match (https, &self.tls) {
                (false, Some(_)) => {
                    return Err(ConnectError::TlsWithoutHttps {
                        endpoint: uri.clone(),
                    })
                }
                (false, None) => endpoint,
                (true, tls) => {
                    let config = match &loaded {
                        Some(config) => config.clone(),
                        None => {
                            let config = match tls {
                                Some(tls) => tls.load()?,
                                None => ClientTls::new().load()?,
                            };
                            loaded.insert(config).clone()
                        }
                    };
                    endpoint
                        .tls_config(config)
                        .map_err(|source| ConnectError::TlsConfig {
                            endpoint: uri.clone(),
                            source,
                        })?
                }
            };
            endpoints.push((uri.clone(), endpoint));
        }
        Ok(endpoints)
    }

    /// One endpoint with the timeouts, before TLS.
    fn endpoint(&self, uri: &str) -> Result<Endpoint, ConnectError> {
        let mut endpoint = Endpoint::from_shared(uri.to_owned())
            .map_err(|source| ConnectError::InvalidEndpoint {
                endpoint: uri.to_owned(),
                source,
            })?
            .tcp_nodelay(true);
        if let Some(t) = self.timeout {
            endpoint = endpoint.timeout(t);
        }
        if let Some(t) = self.connect_timeout {
            endpoint = endpoint.connect_timeout(t);
        }
        Ok(endpoint)
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

/// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`, or replicas separated by commas,
/// as [`ClientConfig::from_list`] reads them), authenticating with `key`: the short form of
/// [`ClientConfig::connect`].
///
/// # Errors
/// The endpoint or key is unusable, or no endpoint can be reached.
pub async fn connect(endpoint: &str, key: Option<&AccessKey>) -> Result<Client, ConnectError> {
    let mut config = ClientConfig::from_list(endpoint);
    config.access_key = key.cloned();
    config.connect().await
}

/// A connection to the service with a credential. Cheap to clone; clones share the
/// connections (HTTP/2 multiplexes their calls) and the current endpoint, so when one clone's
/// call fails over, the others' next calls go to the new endpoint too.
#[derive(Debug, Clone)]
pub struct Client {
    pool: Arc<Pool>,
    /// Calls go to this endpoint only (see [`Client::pin`]).
    pinned: Option<usize>,
    auth: BearerAuth,
}

impl Client {
    fn new(pool: Pool, auth: BearerAuth) -> Self {
        Self {
            pool: Arc::new(pool),
            pinned: None,
            auth,
        }
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn pinned(&self) -> Option<usize> {
        self.pinned
    }

    /// The same client with every call going to the endpoint at `index`, whichever is
    /// current; its answers still move the current endpoint (a success makes it current, a
    /// failure moves past it).
    pub(crate) fn pin(&self, index: usize) -> Self {
        Self {
            pool: self.pool.clone(),
            pinned: Some(index % self.pool.len()),
            auth: self.auth.clone(),
        }
    }

    /// Index of the endpoint calls go to now.
    pub(crate) fn current(&self) -> usize {
        self.pinned.unwrap_or_else(|| self.pool.current())
    }

    /// The endpoint calls go to now, as configured: for logs.
    pub fn endpoint(&self) -> &str {
        &self.pool.target(self.current()).uri
    }

    /// The same connection, authenticating as `key` instead (or as nobody).
    ///
    /// # Errors
    /// `InvalidAccessKey`: the id or secret is not printable ASCII.
    pub fn with_access_key(&self, key: Option<&AccessKey>) -> Result<Self, ConnectError> {
        Ok(Self {
            pool: self.pool.clone(),
            pinned: self.pinned,
            auth: BearerAuth::new(key)?,
        })
    }

    /// The current endpoint's connection, without the credential and without failover: for
    /// services outside the API (gRPC health, reflection) or generated clients of other APIs.
    pub fn channel(&self) -> Channel {
        self.pool.target(self.current()).channel.clone()
    }

    /// The connection with the credential and failover, for building any generated client.
    pub fn auth_channel(&self) -> AuthChannel {
        InterceptedService::new(
            FailoverChannel::new(self.pool.clone(), self.pinned),
            self.auth.clone(),
        )
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
    fn bad_configurations_are_named() {
        assert!(matches!(
            ClientConfig::new(Vec::<String>::new()).checked_endpoints(),
            Err(ConnectError::NoEndpoint)
        ));
        assert!(matches!(
            ClientConfig::new(["http://a:1", "http://a b"]).checked_endpoints(),
            Err(ConnectError::InvalidEndpoint { endpoint, .. }) if endpoint == "http://a b"
        ));
        assert!(matches!(
            BearerAuth::new(Some(&AccessKey::new("id", "se\ncret"))),
            Err(ConnectError::InvalidAccessKey)
        ));
        assert!(matches!(
            ClientConfig::new(["https://a:1", "http://b:1"])
                .tls(ClientTls::new())
                .checked_endpoints(),
            Err(ConnectError::TlsWithoutHttps { endpoint }) if endpoint == "http://b:1"
        ));
        assert!(matches!(
            ClientConfig::new(["https://a:1"])
                .tls(ClientTls::new().ca_pem("not a PEM"))
                .checked_endpoints(),
            Err(ConnectError::Tls(TlsError::Invalid { .. }))
        ));
    }

    #[test]
    fn a_list_is_read_in_order_without_blanks() {
        assert_eq!(
            ClientConfig::from_list(" http://a:1 ,http://b:1,, ").endpoints,
            ["http://a:1", "http://b:1"]
        );
        assert!(matches!(
            ClientConfig::from_list(" , ").checked_endpoints(),
            Err(ConnectError::NoEndpoint)
        ));
        let endpoints = ClientConfig::from_list("https://a:1,https://b:1")
            .tls(ClientTls::new())
            .checked_endpoints()
            .expect("both https");
        assert_eq!(endpoints.len(), 2);
    }

    #[test]
    fn bare_addresses_take_the_scheme_of_the_tls_options() {
        assert_eq!(endpoint_url("h:1", false), "http://h:1");
        assert_eq!(endpoint_url("h:1", true), "https://h:1");
        assert_eq!(endpoint_url("https://h:1", false), "https://h:1");
        assert_eq!(endpoint_url("http://h:1", true), "http://h:1");
    }
}
