//! etcd's HTTP/JSON gateway on one member's client port (`/health`, `/v3/kv/put`,
//! `/v3/kv/range`, `/v3/maintenance/status`; keys and values in base64), over a blocking
//! HTTP/1.0 exchange on a std `TcpStream`: the kit needs no async runtime and no etcd client,
//! so it checks the backend with a path that shares none of its code. HTTP/1.0 makes etcd
//! close the connection after the response, so the body is everything after the headers.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD, Engine};
use serde_json::{json, Value};

/// Connecting to a loopback port either works at once or is refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Above etcd's own request timeout (5 s plus two election timeouts), so that a request
/// waiting for a leader ends with etcd's error rather than ours.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What `/v3/maintenance/status` says about the member that answered.
pub(super) struct Status {
    /// This member's id.
    pub member_id: u64,
    /// The leader's id as this member knows it; 0 when it knows none.
    pub leader: u64,
}

/// One request; the status code and the body.
fn exchange(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let fail = |e: std::io::Error| format!("{method} {path} on {addr}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(fail)?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(fail)?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(fail)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path} on {addr}: no end of headers in {response:?}"))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path} on {addr}: no status in {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// A JSON POST that must answer 200; its parsed body.
fn post(port: u16, path: &str, body: &Value) -> Result<Value, String> {
    let (code, text) = exchange(port, "POST", path, &body.to_string())?;
    if code != 200 {
        return Err(format!("POST {path} on port {port}: {code} {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("POST {path}: {e} in {text:?}"))
}

/// etcd's JSON gives 64-bit integers as decimal strings, and omits zeros. Member ids use all
/// 64 bits, revisions are signed.
fn int<T: std::str::FromStr + Default>(v: &Value) -> Option<T> {
    match v {
        Value::Null => Some(T::default()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `GET /health` answers 200 `{"health":"true"}` only with a leader and a working quorum read.
pub(super) fn healthy(port: u16) -> bool {
    exchange(port, "GET", "/health", "").is_ok_and(|(code, body)| {
        code == 200
            && serde_json::from_str::<Value>(&body).is_ok_and(|v| v["health"] == json!("true"))
    })
}

/// This member's id and its leader's.
pub(super) fn status(port: u16) -> Result<Status, String> {
    let v = post(port, "/v3/maintenance/status", &json!({}))?;
    let id = |v: &Value| int::<u64>(v).ok_or(format!("bad id in {v}"));
    Ok(Status {
        member_id: id(&v["header"]["member_id"])?,
        leader: id(&v["leader"])?,
    })
}

/// A put; the revision etcd gave it.
pub(super) fn put(port: u16, key: &[u8], value: &[u8]) -> Result<i64, String> {
    let body = json!({ "key": STANDARD.encode(key), "value": STANDARD.encode(value) });
    let v = post(port, "/v3/kv/put", &body)?;
    int(&v["header"]["revision"]).ok_or(format!("no revision in {v}"))
}

/// A linearizable read of one key.
pub(super) fn get(port: u16, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let v = post(
        port,
        "/v3/kv/range",
        &json!({ "key": STANDARD.encode(key) }),
    )?;
    let Some(kv) = v["kvs"].as_array().and_then(|kvs| kvs.first()) else {
        return Ok(None);
    };
    // An empty value is omitted from the JSON.
    match &kv["value"] {
        Value::Null => Ok(Some(Vec::new())),
        Value::String(b64) => STANDARD
            .decode(b64)
            .map(Some)
            .map_err(|e| format!("value {b64:?}: {e}")),
        other => Err(format!("value {other} is not base64 text")),
    }
}
