//! The REST shim through a real listener: every action over V1 and V3 signatures, the
//! envelope (JSON, XML, request ids), and the refusals: bad parameters, wrong secret,
//! unknown key, stale timestamp, reused nonce, unknown action, other instance, rate limits,
//! malformed input.
//!
//! One test binary: this file is the client (signing, sending, reading the envelope); the
//! tests are in `rest/` by concern: `actions` (every action over both signatures, GET and form
//! bodies), `parameters` (the InvalidParameter codes and what their messages say), `gateway`
//! (the gateway's refusals: authentication, unknown action or instance, XML errors, rate
//! limits, hostile input).

mod common;

#[path = "rest/actions.rs"]
mod actions;
#[path = "rest/gateway.rs"]
mod gateway;
#[path = "rest/parameters.rs"]
mod parameters;

use common::{now_ms, Key, TestServer};
use mqtt_tokend::rest::signature;
use serde_json::Value;

const INSTANCE: &str = "post-cn-rest";
const OTHER: &str = "post-cn-elsewhere";
const HOUR: i64 = 3600 * 1000;

type Params<'a> = Vec<(&'a str, &'a str)>;

/// `YYYY-MM-DDThh:mm:ssZ` for a millisecond epoch (civil-from-days, proleptic Gregorian).
fn timestamp(ms: i64) -> String {
    signature::format_timestamp_ms(ms)
}

fn encode(params: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

fn owned(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
    fn code(&self) -> String {
        self.json()["Code"].as_str().unwrap_or("<none>").to_owned()
    }
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code().as_str()),
            (status, code),
            "{}",
            self.text
        );
        let body = self.json();
        assert_eq!(
            body["RequestId"].as_str(),
            self.headers
                .get("x-acs-request-id")
                .and_then(|v| v.to_str().ok())
        );
        assert!(body["Message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(body.get("HostId").is_some() && body.get("Recommend").is_some());
    }
    #[track_caller]
    fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.text);
        let body = self.json();
        let id = body["RequestId"].as_str().expect("RequestId");
        assert_eq!(
            self.headers
                .get("x-acs-request-id")
                .and_then(|v| v.to_str().ok()),
            Some(id)
        );
        body
    }
}

struct Rest {
    addr: std::net::SocketAddr,
    http: reqwest::Client,
}

impl Rest {
    fn new(ts: &TestServer) -> Self {
        Self {
            addr: ts.server().http_addr().expect("REST enabled"),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let r = req.send().await.expect("HTTP round trip");
        Reply {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().await.expect("body"),
        }
    }

    /// The V1 common parameters for `action`, signed-ready (no Signature yet).
    fn v1_params(key: &Key, action: &str, business: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut params = owned(business);
        params.extend(owned(&[
            ("Action", action),
            ("Version", "2020-04-20"),
            ("Format", "JSON"),
            ("AccessKeyId", &key.id),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("RegionId", "cn-hangzhou"),
            ("SignatureType", ""),
        ]));
        params.push(("SignatureNonce".into(), uuid::Uuid::new_v4().to_string()));
        params.push(("Timestamp".into(), timestamp(now_ms())));
        params
    }

    fn v1_sign(method: &str, secret: &str, mut params: Vec<(String, String)>) -> String {
        let sts = signature::v1_string_to_sign(method, &params);
        params.push(("Signature".into(), signature::v1_signature(secret, &sts)));
        encode(&params)
    }

    /// POST `/?<signed params>` with an empty body, as the SDKs do.
    async fn v1(&self, key: &Key, action: &str, business: &[(&str, &str)]) -> Reply {
        let query = Self::v1_sign("POST", &key.secret, Self::v1_params(key, action, business));
        self.v1_raw("POST", &query).await
    }

    async fn v1_raw(&self, method: &str, query: &str) -> Reply {
        let url = format!("http://{}/?{query}", self.addr);
        let req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        self.send(req).await
    }

    /// A V3 request: query params in the URL, optional form body, all x-acs headers signed.
    async fn v3(
        &self,
        key: &Key,
        action: &str,
        query: &[(&str, &str)],
        form: &[(&str, &str)],
    ) -> Reply {
        let body = encode(&owned(form));
        let hash = signature::sha256_hex(body.as_bytes());
        let mut headers = vec![
            ("host".to_string(), self.addr.to_string()),
            ("x-acs-action".into(), action.into()),
            ("x-acs-content-sha256".into(), hash),
            ("x-acs-date".into(), timestamp(now_ms())),
            (
                "x-acs-signature-nonce".into(),
                uuid::Uuid::new_v4().to_string(),
            ),
            ("x-acs-version".into(), "2020-04-20".into()),
        ];
        if !form.is_empty() {
            headers.push((
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ));
        }
        let signed: Vec<String> = headers.iter().map(|(k, _)| k.clone()).collect();
        let query = owned(query);
        let canonical =
            signature::v3_canonical_request("POST", "/", &query, &headers, &signed, &headers[2].1);
        let sig = signature::v3_signature(&key.secret, &signature::v3_string_to_sign(&canonical));
        let mut req = self
            .http
            .post(format!("http://{}/?{}", self.addr, encode(&query)))
            .header(
                "authorization",
                format!(
                    "ACS3-HMAC-SHA256 Credential={},SignedHeaders={},Signature={sig}",
                    key.id,
                    signed.join(";")
                ),
            )
            .body(body);
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            req = req.header(k.as_str(), v.as_str());
        }
        self.send(req).await
    }
}
