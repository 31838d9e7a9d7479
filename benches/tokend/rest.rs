//! The REST shim's calls, V3-signed as the current official SDK sends them, over plain HTTP/1.1
//! keep-alive connections from a pool.

use std::sync::Arc;

use mqtt_tokend::app::RootKeyFile;

use crate::{
    measure::{Op, OpResult},
    ops::{apply_request, INSTANCE},
};

/// One V3-signed Action call to the REST shim, as the current official SDK sends it: POST
/// `/?<params>`, empty body, every `x-acs-*` header and `host` signed.
async fn rest_v3_call(
    http: &reqwest::Client,
    endpoint: &str,
    key: &RootKeyFile,
    action: &str,
    query: Vec<(String, String)>,
) -> Result<serde_json::Value, String> {
    use mqtt_tokend::rest::signature;
    let empty = signature::sha256_hex(b"");
    let headers = vec![
        ("host".to_string(), endpoint.to_string()),
        ("x-acs-action".into(), action.into()),
        ("x-acs-content-sha256".into(), empty.clone()),
        (
            "x-acs-date".into(),
            signature::format_timestamp_ms(mqtt_tokend::core::now_ms()),
        ),
        (
            "x-acs-signature-nonce".into(),
            mqtt_tokend::core::new_request_id(),
        ),
        ("x-acs-version".into(), "2020-04-20".into()),
    ];
    let authorization = signature::v3_authorization(
        &key.access_key_id,
        &key.access_key_secret,
        "POST",
        &query,
        &headers,
        &empty,
    );
    let url = format!(
        "http://{endpoint}/?{}",
        query
            .iter()
            .map(|(k, v)| format!(
                "{}={}",
                signature::percent_encode(k),
                signature::percent_encode(v)
            ))
            .collect::<Vec<_>>()
            .join("&")
    );
    let mut req = http.post(url).header("authorization", authorization);
    for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// The REST address of the replica that takes call `seq`: the replicas in turn.
fn pick(endpoints: &[String], seq: u64) -> String {
    endpoints[(seq % endpoints.len() as u64) as usize].clone()
}

/// QueryToken of `token` through the REST shim at `endpoints` (in turn), expecting it live.
pub fn op_rest_query(
    http: reqwest::Client,
    endpoints: Arc<Vec<String>>,
    key: Arc<RootKeyFile>,
    token: String,
) -> Op {
    Arc::new(move |_, seq| {
        let (http, endpoint, key) = (http.clone(), pick(&endpoints, seq), key.clone());
        let query = vec![
            ("InstanceId".to_string(), INSTANCE.to_string()),
            ("Token".to_string(), token.clone()),
        ];
        Box::pin(async move {
            match rest_v3_call(&http, &endpoint, &key, "QueryToken", query).await {
                Ok(v) if v["TokenStatus"] == serde_json::Value::Bool(true) => OpResult::Ok,
                Ok(v) => OpResult::Err(format!("unexpected body {v}")),
                Err(e) => OpResult::Err(e),
            }
        })
    })
}

/// ApplyToken through the REST shim at `endpoints` (in turn), expecting a token back.
pub fn op_rest_apply(
    http: reqwest::Client,
    endpoints: Arc<Vec<String>>,
    key: Arc<RootKeyFile>,
) -> Op {
    Arc::new(move |_, seq| {
        let (http, endpoint, key) = (http.clone(), pick(&endpoints, seq), key.clone());
        let req = apply_request();
        let query = vec![
            ("Actions".to_string(), "R,W".to_string()),
            ("ExpireTime".to_string(), req.expire_time.to_string()),
            ("InstanceId".to_string(), INSTANCE.to_string()),
            ("Resources".to_string(), req.resources.join(",")),
        ];
        Box::pin(async move {
            match rest_v3_call(&http, &endpoint, &key, "ApplyToken", query).await {
                Ok(v) if v["Token"].is_string() => OpResult::Ok,
                Ok(v) => OpResult::Err(format!("unexpected body {v}")),
                Err(e) => OpResult::Err(e),
            }
        })
    })
}
