//! The brokers' management APIs: disconnecting one client id, with bounded retries.
//!
//! - EMQX 5: `DELETE {base}/api/v5/clients/{clientid}`, API key and secret as HTTP Basic;
//!   204 when kicked, 404 when no such client.
//! - rmqtt (`rmqtt-http-api`): `DELETE {base}/api/v1/clients/{clientid}`, `Authorization:
//!   Bearer <http_bearer_token>` when the broker sets one; 200 when kicked, 404 when no such
//!   client.
//!
//! The client id is percent-encoded as one path segment (everything but `A-Z a-z 0-9 - . _ ~`),
//! so `GID_x@@@dev/1` travels as `GID_x%40%40%40dev%2F1`. Any 2xx, and 404 (the client is
//! already gone: a kick is idempotent), is success; anything else, and a transport error, is
//! retried.

use std::{fmt, time::Duration};

use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::Rng;
use reqwest::{header::HeaderValue, StatusCode};

use super::args::BrokerKind;

/// Bytes of a client id that are sent percent-encoded: all but RFC 3986's unreserved ones.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How the kicker authenticates to the broker API.
#[derive(Clone, Default)]
pub enum BrokerAuth {
    /// No `Authorization` header (rmqtt without `http_bearer_token`).
    #[default]
    None,
    /// HTTP Basic (EMQX API key and secret).
    Basic {
        /// The API key (user name).
        key: String,
        /// The secret.
        secret: String,
    },
    /// `Authorization: Bearer <token>` (rmqtt's `http_bearer_token`).
    Bearer(String),
}

impl fmt::Debug for BrokerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret or the token.
        match self {
            Self::None => f.write_str("None"),
            Self::Basic { key, .. } => f.debug_struct("Basic").field("key", key).finish(),
            Self::Bearer(_) => f.write_str("Bearer(…)"),
        }
    }
}

impl BrokerAuth {
    fn header(&self) -> Result<Option<HeaderValue>, BrokerApiError> {
        let value = match self {
            Self::None => return Ok(None),
            Self::Basic { key, secret } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
            ),
            Self::Bearer(token) => format!("Bearer {token}"),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| BrokerApiError::BadCredential)?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// Retries of one kick: `attempts` in all, the delay doubling from `min` to `max` with jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// First delay.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl RetryPolicy {
    /// The delay after failed attempt `n` (1-based): `min * 2^(n-1)`, capped at `max`, in its
    /// upper half at random so kickers that failed together do not retry together.
    fn delay(&self, n: u32) -> Duration {
        let step = self
            .min
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1)))
            .min(self.max.max(self.min));
        let half = step / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=step - half)
    }
}

/// A broker API the kicker cannot use, or a kick that failed for good.
#[derive(Debug, thiserror::Error)]
pub enum BrokerApiError {
    /// The base URL does not parse or is not http(s).
    #[error("--broker-api {url:?} is not an http(s) URL")]
    BadUrl {
        /// The URL as given.
        url: String,
    },
    /// The credential cannot travel in a header.
    #[error("the broker API credential must be printable ASCII")]
    BadCredential,
    /// The CA file cannot be read or holds no certificate.
    #[error("--broker-api-ca {path}: {reason}")]
    BadCa {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// Every attempt of a kick failed.
    #[error("kicking {client_id:?} failed {attempts} time(s), last: {last}")]
    KickFailed {
        /// The client id.
        client_id: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

/// What a successful kick found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kicked {
    /// The broker disconnected the client.
    Disconnected,
    /// The broker had no such client (404): already gone.
    AlreadyGone,
}

/// A broker's management API.
#[derive(Debug, Clone)]
pub struct BrokerApi {
    http: reqwest::Client,
    /// `{base}/api/v5/clients/` or `{base}/api/v1/clients/`.
    clients_url: String,
    auth: Option<HeaderValue>,
    retry: RetryPolicy,
}

impl BrokerApi {
    /// The API of `kind` at `base` (e.g. `http://127.0.0.1:18083`).
    ///
    /// # Errors
    /// The URL, credential or CA file is unusable.
    pub fn new(
        kind: BrokerKind,
        base: &str,
        auth: &BrokerAuth,
        ca: Option<&std::path::Path>,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, BrokerApiError> {
        let parsed = reqwest::Url::parse(base).map_err(|_| BrokerApiError::BadUrl {
            url: base.to_owned(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.cannot_be_a_base() {
            return Err(BrokerApiError::BadUrl {
                url: base.to_owned(),
            });
        }
        let path = match kind {
            BrokerKind::Emqx => "api/v5/clients/",
            BrokerKind::Rmqtt => "api/v1/clients/",
        };
        let clients_url = format!("{}/{path}", parsed.as_str().trim_end_matches('/'));
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = ca {
            let bad = |reason: String| BrokerApiError::BadCa {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no certificate in the file".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: builder.build().map_err(BrokerApiError::Client)?,
            clients_url,
            auth: auth.header()?,
            retry,
        })
    }

    /// The URL that kicks `client_id`.
    pub fn kick_url(&self, client_id: &str) -> String {
        format!(
            "{}{}",
            self.clients_url,
            utf8_percent_encode(client_id, SEGMENT)
        )
    }

    /// Disconnects `client_id`, retrying failures per the policy.
    ///
    /// # Errors
    /// `KickFailed`: every attempt failed; the caller must not consider the kick done.
    pub async fn kick(&self, client_id: &str) -> Result<Kicked, BrokerApiError> {
        let url = self.kick_url(client_id);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.kick_once(&url).await {
                Ok(kicked) => return Ok(kicked),
                Err(failure) => failure,
            };
            if attempt >= self.retry.attempts {
                return Err(BrokerApiError::KickFailed {
                    client_id: client_id.to_owned(),
                    attempts: attempt,
                    last: failure,
                });
            }
            let delay = self.retry.delay(attempt);
            tracing::warn!(client_id, attempt, %failure, retry_in = ?delay, "kick failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// One DELETE; `Err` carries a description of the failure (never a credential).
    async fn kick_once(&self, url: &str) -> Result<Kicked, String> {
        let mut request = self.http.delete(url);
        if let Some(auth) = &self.auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("request failed: {}", without_url(&e)))?;
        match response.status() {
            s if s.is_success() => Ok(Kicked::Disconnected),
            StatusCode::NOT_FOUND => Ok(Kicked::AlreadyGone),
            s => Err(format!("HTTP {s}")),
        }
    }
}

/// A reqwest error with its URL dropped, and its causes: the URL holds the client id, which
/// the caller logs in its own field.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(kind: BrokerKind, base: &str) -> BrokerApi {
        BrokerApi::new(
            kind,
            base,
            &BrokerAuth::None,
            None,
            Duration::from_secs(1),
            RetryPolicy {
                attempts: 1,
                min: Duration::ZERO,
                max: Duration::ZERO,
            },
        )
        .expect("valid")
    }

    #[test]
    fn kick_urls_encode_the_client_id_as_one_segment() {
        assert_eq!(
            api(BrokerKind::Emqx, "http://h:18083").kick_url("GID_a@@@d-1.x~"),
            "http://h:18083/api/v5/clients/GID_a%40%40%40d-1.x~"
        );
        assert_eq!(
            api(BrokerKind::Rmqtt, "https://h/prefix/").kick_url("a/b c?%"),
            "https://h/prefix/api/v1/clients/a%2Fb%20c%3F%25"
        );
        assert_eq!(
            api(BrokerKind::Rmqtt, "http://h:6060").kick_url("é"),
            "http://h:6060/api/v1/clients/%C3%A9"
        );
    }

    #[test]
    fn bad_urls_and_credentials_are_refused() {
        let new = |base: &str, auth: &BrokerAuth| {
            BrokerApi::new(
                BrokerKind::Emqx,
                base,
                auth,
                None,
                Duration::from_secs(1),
                RetryPolicy {
                    attempts: 1,
                    min: Duration::ZERO,
                    max: Duration::ZERO,
                },
            )
        };
        for base in ["127.0.0.1:18083", "ftp://h", "mailto:x@y", ""] {
            assert!(
                matches!(
                    new(base, &BrokerAuth::None),
                    Err(BrokerApiError::BadUrl { .. })
                ),
                "{base}"
            );
        }
        assert!(matches!(
            new("http://h", &BrokerAuth::Bearer("a\nb".into())),
            Err(BrokerApiError::BadCredential)
        ));
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let basic = BrokerAuth::Basic {
            key: "k".into(),
            secret: "s3cret".into(),
        };
        assert!(!format!("{basic:?}").contains("s3cret"));
        assert!(!format!("{:?}", BrokerAuth::Bearer("t0ken".into())).contains("t0ken"));
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let ms = Duration::from_millis;
        let p = RetryPolicy {
            attempts: 10,
            min: ms(100),
            max: ms(1000),
        };
        for (n, step) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let d = p.delay(n);
            assert!(d >= ms(step / 2) && d <= ms(step), "attempt {n}: {d:?}");
        }
    }
}
