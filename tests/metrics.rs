//! The operations endpoint with real clients: `/metrics` scraped over HTTP and parsed by
//! Prometheus's own Python parser (`prometheus_client.parser`, tests/sdk/parse_metrics.py);
//! counters move by exactly the calls made, a denied CONNECT moves its reason, a revocation
//! moves the revision gauge, and no label value carries a secret, a token or a client id.
//! `/healthz` and `/readyz` answer, and readiness drops when shutdown begins.

mod common;
mod production;

use std::process::{Command, Stdio};

use common::{Key, TestServer};
use mqtt_tokend::proto::{
    ApplyTokenRequest, AuthenticateConnectRequest, QueryTokenRequest,
    RegisterDeviceCredentialRequest, RevokeTokenRequest,
};
use production::{script, venv_python};
use serde_json::Value;

const INSTANCE: &str = "post-cn-metrics";
const CLIENT_ID: &str = "GID_metrics@@@device-7";

/// One parsed sample.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

struct Scraper {
    python: std::path::PathBuf,
    url: String,
    http: reqwest::Client,
}

impl Scraper {
    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    async fn scrape(&self) -> Vec<Sample> {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "{text}");
        let python = self.python.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = Command::new(python)
                .arg(script("parse_metrics.py"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("run parse_metrics.py");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("feed the parser");
            child.wait_with_output().expect("parser output")
        })
        .await
        .unwrap();
        assert!(
            parsed.status.success(),
            "the Prometheus parser refused the exposition"
        );
        let json: Value = serde_json::from_slice(&parsed.stdout).expect("parser JSON");
        json.as_array()
            .expect("a list")
            .iter()
            .map(|s| Sample {
                name: s["name"].as_str().unwrap_or_default().to_owned(),
                labels: s["labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                value: s["value"].as_f64().unwrap_or(f64::NAN),
            })
            .collect()
    }
}

/// The value of the sample `name` whose labels include `labels` (0 when absent, as for a
/// counter that never moved).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}

fn requests(samples: &[Sample], transport: &str, operation: &str, code: &str) -> f64 {
    value(
        samples,
        "mqtt_tokend_requests_total",
        &[
            ("transport", transport),
            ("operation", operation),
            ("code", code),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_the_calls_made_and_carry_no_secrets() {
    let Some(python) = tokio::task::spawn_blocking(venv_python).await.unwrap() else {
        return;
    };
    let ts = TestServer::start_with(|c| {
        c.observe.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        c.rate_query_token = 1;
    })
    .await;
    let scraper = Scraper {
        python,
        url: format!("http://{}", ts.server().metrics_addr().expect("metrics on")),
        http: reqwest::Client::new(),
    };
    assert_eq!(scraper.get("/healthz").await.0, 200);
    assert_eq!(scraper.get("/readyz").await.0, 200);
    let key = ts.create_key(&[INSTANCE]).await;
    let before = scraper.scrape().await;

    let mut watch = ts
        .revocations(&ts.root)
        .watch_revocations(common::from_now())
        .await
        .expect("watch")
        .into_inner();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(
            ts.tokens(&key)
                .apply_token(ApplyTokenRequest {
                    instance_id: INSTANCE.into(),
                    actions: vec![1, 2],
                    resources: vec!["devices/#".into()],
                    expire_time: common::now_ms() + 3_600_000,
                })
                .await
                .expect("apply")
                .into_inner()
                .token,
        );
    }
    // Rate 1/s: the first query passes, the second is refused.
    let query = QueryTokenRequest {
        instance_id: INSTANCE.into(),
        token: tokens[0].clone(),
    };
    ts.tokens(&key)
        .query_token(query.clone())
        .await
        .expect("first query");
    let refused = ts
        .tokens(&key)
        .query_token(query.clone())
        .await
        .unwrap_err();
    assert_eq!(common::code_of(&refused), "QueryTokenOverFlow");
    let wrong = Key::new(key.id.clone(), "wrong");
    ts.tokens(&wrong).query_token(query).await.unwrap_err();
    let denied = ts
        .broker(&key)
        .authenticate_connect(AuthenticateConnectRequest {
            client_id: CLIENT_ID.into(),
            username: format!("Signature|{}|{INSTANCE}", key.id),
            password: "bm90IHRoZSBzaWduYXR1cmU=".into(),
        })
        .await
        .expect("connect check")
        .into_inner();
    assert!(!denied.allowed);
    let device = ts
        .devices(&key)
        .register_device_credential(RegisterDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: CLIENT_ID.into(),
        })
        .await
        .expect("register")
        .into_inner()
        .device_credential
        .expect("credential");
    let revision = ts
        .tokens(&key)
        .revoke_token(RevokeTokenRequest {
            instance_id: INSTANCE.into(),
            token: tokens[1].clone(),
        })
        .await
        .expect("revoke")
        .into_inner()
        .revision;
    let event = watch.message().await.expect("stream").expect("event");
    assert!(event.message.is_some());
    // One REST request without credentials.
    let rest = ts.server().http_addr().expect("REST on");
    let r = reqwest::get(format!("http://{rest}/?Action=QueryToken"))
        .await
        .expect("REST round trip");
    assert_eq!(r.status().as_u16(), 400);

    let after = scraper.scrape().await;
    let moved = |f: &dyn Fn(&[Sample]) -> f64| f(&after) - f(&before);
    assert_eq!(moved(&|s| requests(s, "grpc", "ApplyToken", "OK")), 3.0);
    assert_eq!(moved(&|s| requests(s, "grpc", "QueryToken", "OK")), 1.0);
    assert_eq!(
        moved(&|s| requests(s, "grpc", "QueryToken", "QueryTokenOverFlow")),
        1.0
    );
    assert_eq!(
        moved(&|s| requests(s, "grpc", "QueryToken", "InvalidAccessKeySecret")),
        1.0
    );
    assert_eq!(moved(&|s| requests(s, "grpc", "RevokeToken", "OK")), 1.0);
    assert_eq!(
        moved(&|s| requests(s, "rest", "QueryToken", "MissingParameter")),
        1.0
    );
    assert_eq!(
        moved(&|s| value(
            s,
            "mqtt_tokend_rate_limited_total",
            &[("transport", "grpc"), ("operation", "QueryToken")]
        )),
        1.0
    );
    assert_eq!(
        moved(&|s| value(
            s,
            "mqtt_tokend_request_duration_seconds_count",
            &[("transport", "grpc"), ("operation", "ApplyToken")]
        )),
        3.0
    );
    assert_eq!(
        moved(&|s| value(
            s,
            "mqtt_tokend_connect_denied_total",
            &[("reason", "DENY_REASON_BAD_SIGNATURE")]
        )),
        1.0
    );
    assert_eq!(
        value(&after, "mqtt_tokend_revocation_revision", &[]),
        revision as f64
    );
    assert_eq!(
        moved(&|s| value(s, "mqtt_tokend_revocation_revision", &[])),
        1.0
    );
    assert_eq!(
        value(&after, "mqtt_tokend_revocation_oldest_revision", &[]),
        1.0
    );
    // Three applied, one revoked: two live; one device; root and `key`.
    assert_eq!(value(&after, "mqtt_tokend_tokens", &[]), 2.0);
    assert_eq!(value(&after, "mqtt_tokend_device_credentials", &[]), 1.0);
    assert_eq!(value(&after, "mqtt_tokend_access_keys", &[]), 2.0);
    assert_eq!(value(&after, "mqtt_tokend_watch_streams", &[]), 1.0);
    assert_eq!(
        moved(&|s| value(s, "mqtt_tokend_watch_events_sent_total", &[])),
        1.0
    );
    // Every durable write (3 applies, 1 register, 1 revoke) waited on a flush.
    assert!(moved(&|s| value(s, "mqtt_tokend_group_commit_batch_size_sum", &[])) >= 5.0);
    assert!(value(&after, "mqtt_tokend_store_size_bytes", &[]) > 0.0);

    let secrets: Vec<&str> = [
        ts.root.secret.as_str(),
        key.secret.as_str(),
        device.device_access_key_secret.as_str(),
        device.device_access_key_id.as_str(),
        CLIENT_ID,
        "device-7",
    ]
    .into_iter()
    .chain(tokens.iter().map(String::as_str))
    .collect();
    for sample in &after {
        for (_, v) in &sample.labels {
            for secret in &secrets {
                assert!(!v.contains(secret), "{sample:?} carries {secret}");
            }
        }
    }
    let Key { id, .. } = key;
    assert!(
        !after
            .iter()
            .any(|s| s.labels.iter().any(|(_, v)| v.contains(&id))),
        "no access key id in labels either"
    );

    ts.server().core().begin_shutdown();
    assert_eq!(scraper.get("/readyz").await.0, 503);
    assert_eq!(scraper.get("/healthz").await.0, 200);
}
