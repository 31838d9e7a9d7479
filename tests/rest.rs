//! The REST shim through a real listener: every action over V1 and V3 signatures, the
//! envelope (JSON, XML, request ids), and the refusals: bad parameters, wrong secret,
//! unknown key, stale timestamp, reused nonce, unknown action, other instance, rate limits,
//! malformed input.

mod common;

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

#[tokio::test]
async fn every_action_over_v1() {
    let ts = TestServer::start().await;
    let key = ts.create_key(&[INSTANCE]).await;
    let rest = Rest::new(&ts);
    let expire = (now_ms() + HOUR).to_string();

    let body = rest
        .v1(
            &key,
            "ApplyToken",
            &[
                ("Actions", "R,W"),
                ("ExpireTime", &expire),
                ("InstanceId", INSTANCE),
                ("Resources", "a/b,a/+/c"),
            ],
        )
        .await
        .ok();
    let token = body["Token"].as_str().expect("Token").to_owned();
    // Our one addition: the token's handle, which names it but does not pass for it.
    let handle = body["TokenHandle"]
        .as_str()
        .expect("TokenHandle")
        .to_owned();
    assert!(handle.starts_with("th_"), "{handle}");
    let h = [("InstanceId", INSTANCE), ("Token", handle.as_str())];
    let body = rest.v1(&key, "QueryToken", &h).await.ok();
    assert_eq!(body["TokenStatus"], Value::Bool(false));

    let q = [("InstanceId", INSTANCE), ("Token", token.as_str())];
    let body = rest.v1(&key, "QueryToken", &q).await.ok();
    assert_eq!(body["TokenStatus"], Value::Bool(true));
    let body = rest.v1(&key, "RevokeToken", &q).await.ok();
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "RequestId only");
    let body = rest.v1(&key, "QueryToken", &q).await.ok();
    assert_eq!(body["TokenStatus"], Value::Bool(false));

    let d = [("InstanceId", INSTANCE), ("ClientId", "GID_rest@@@dev-1")];
    let reg = rest.v1(&key, "RegisterDeviceCredential", &d).await.ok();
    let cred = &reg["DeviceCredential"];
    assert_eq!(cred["ClientId"], "GID_rest@@@dev-1");
    assert_eq!(cred["InstanceId"], INSTANCE);
    assert!(cred["DeviceAccessKeyId"]
        .as_str()
        .is_some_and(|s| s.starts_with("DC.")));
    assert!(cred["CreateTime"].as_i64().is_some() && cred["UpdateTime"].as_i64().is_some());
    rest.v1(&key, "RegisterDeviceCredential", &d)
        .await
        .assert_error(400, "DeviceCredentialExsit");
    let got = rest.v1(&key, "GetDeviceCredential", &d).await.ok();
    assert_eq!(got["DeviceCredential"], reg["DeviceCredential"]);
    let refreshed = rest.v1(&key, "RefreshDeviceCredential", &d).await.ok();
    assert_ne!(
        refreshed["DeviceCredential"]["DeviceAccessKeySecret"],
        cred["DeviceAccessKeySecret"]
    );
    let list = rest
        .v1(
            &key,
            "ListDeviceCredentialClientId",
            &[
                ("InstanceId", INSTANCE),
                ("GroupId", "GID_rest"),
                ("PageNo", "1"),
                ("PageSize", "10"),
            ],
        )
        .await
        .ok();
    let page = &list["DeviceCredentialClientIdList"];
    assert_eq!(
        page["ClientIdList"],
        serde_json::json!(["GID_rest@@@dev-1"])
    );
    assert_eq!(page["PageNo"], "1");
    assert_eq!(page["PageSize"], "10");
    assert_eq!(page["Total"], "1");
    assert_eq!(page["NextToken"], "");
    rest.v1(&key, "UnRegisterDeviceCredential", &d).await.ok();
    rest.v1(&key, "GetDeviceCredential", &d)
        .await
        .assert_error(400, "DeviceCredentialNotFound");
}

#[tokio::test]
async fn v3_with_query_or_form_body_and_v1_by_get_with_form_body() {
    let ts = TestServer::start().await;
    let key = ts.create_key(&[INSTANCE]).await;
    let rest = Rest::new(&ts);
    let expire = (now_ms() + HOUR).to_string();
    let apply = [
        ("Actions", "W"),
        ("ExpireTime", expire.as_str()),
        ("InstanceId", INSTANCE),
        ("Resources", "x/#"),
    ];
    let token = rest.v3(&key, "ApplyToken", &apply, &[]).await.ok()["Token"]
        .as_str()
        .expect("Token")
        .to_owned();
    // Business parameters in a form body (covered by x-acs-content-sha256).
    let body = rest
        .v3(
            &key,
            "QueryToken",
            &[],
            &[("InstanceId", INSTANCE), ("Token", &token)],
        )
        .await
        .ok();
    assert_eq!(body["TokenStatus"], Value::Bool(true));
    let body = rest
        .v3(
            &key,
            "ListDeviceCredentialClientId",
            &[
                ("InstanceId", INSTANCE),
                ("GroupId", "GID_none"),
                ("PageSize", "5"),
            ],
            &[],
        )
        .await
        .ok();
    assert_eq!(body["DeviceCredentialClientIdList"]["Total"], "0");

    // V1 by GET, signed over the query alone.
    let params = Rest::v1_params(
        &key,
        "QueryToken",
        &[("InstanceId", INSTANCE), ("Token", &token)],
    );
    let reply = rest
        .v1_raw("GET", &Rest::v1_sign("GET", &key.secret, params))
        .await;
    assert_eq!(reply.ok()["TokenStatus"], Value::Bool(true));
    // A GET signature replayed as POST does not match.
    let params = Rest::v1_params(
        &key,
        "QueryToken",
        &[("InstanceId", INSTANCE), ("Token", &token)],
    );
    let reply = rest
        .v1_raw("POST", &Rest::v1_sign("GET", &key.secret, params))
        .await;
    reply.assert_error(400, "SignatureDoesNotMatch");

    // V1 with business parameters in a form body: the signature covers them too.
    let mut params = Rest::v1_params(&key, "QueryToken", &[]);
    let form = owned(&[("InstanceId", INSTANCE), ("Token", &token)]);
    let mut all = params.clone();
    all.extend(form.clone());
    let sts = signature::v1_string_to_sign("POST", &all);
    params.push((
        "Signature".into(),
        signature::v1_signature(&key.secret, &sts),
    ));
    let reply = rest
        .send(
            rest.http
                .post(format!("http://{}/?{}", rest.addr, encode(&params)))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encode(&form)),
        )
        .await;
    assert_eq!(reply.ok()["TokenStatus"], Value::Bool(true));
}

#[tokio::test]
async fn bad_parameters_are_invalid_parameter_codes() {
    let ts = TestServer::start().await;
    let key = ts.create_key(&[INSTANCE]).await;
    let rest = Rest::new(&ts);
    let expire = (now_ms() + HOUR).to_string();
    let cases: Vec<(&str, Params<'_>, &str)> = vec![
        (
            "ApplyToken",
            vec![
                ("Actions", "RW"),
                ("ExpireTime", &expire),
                ("InstanceId", INSTANCE),
                ("Resources", "a"),
            ],
            "InvalidParameter.Actions",
        ),
        (
            "ApplyToken",
            vec![
                ("Actions", "R"),
                ("InstanceId", INSTANCE),
                ("Resources", "a"),
            ],
            "InvalidParameter.ExpireTime",
        ),
        (
            "ApplyToken",
            vec![
                ("Actions", "R"),
                ("ExpireTime", "soon"),
                ("InstanceId", INSTANCE),
                ("Resources", "a"),
            ],
            "InvalidParameter.ExpireTime",
        ),
        (
            "ApplyToken",
            vec![
                ("Actions", "R"),
                ("ExpireTime", &expire),
                ("InstanceId", INSTANCE),
            ],
            "InvalidParameter.Resources",
        ),
        (
            "ApplyToken",
            vec![
                ("Actions", "R"),
                ("ExpireTime", &expire),
                ("Resources", "a"),
            ],
            "InvalidParameter.InstanceId",
        ),
        (
            "QueryToken",
            vec![("InstanceId", INSTANCE)],
            "InvalidParameter.Token",
        ),
        (
            "RevokeToken",
            vec![("InstanceId", INSTANCE), ("Token", "garbage")],
            "InvalidParameter.Token",
        ),
        (
            "GetDeviceCredential",
            vec![("InstanceId", INSTANCE), ("ClientId", "nogroup")],
            "InvalidParameter.ClientId",
        ),
        (
            "ListDeviceCredentialClientId",
            vec![
                ("InstanceId", INSTANCE),
                ("GroupId", "GID_rest"),
                ("PageSize", "ten"),
            ],
            "InvalidParameter.PageSize",
        ),
        (
            "ListDeviceCredentialClientId",
            vec![("InstanceId", INSTANCE), ("GroupId", "GID_rest")],
            "InvalidParameter.PageSize",
        ),
        (
            "ListDeviceCredentialClientId",
            vec![
                ("InstanceId", INSTANCE),
                ("GroupId", "GID_rest"),
                ("PageSize", "5"),
                ("PageNo", "-1"),
            ],
            "InvalidParameter.PageNo",
        ),
    ];
    for (action, params, code) in cases {
        rest.v1(&key, action, &params).await.assert_error(400, code);
    }
}

#[tokio::test]
async fn authentication_failures_use_the_gateway_codes() {
    let ts = TestServer::start().await;
    let key = ts.create_key(&[INSTANCE]).await;
    let rest = Rest::new(&ts);
    let q = [("InstanceId", INSTANCE), ("Token", "t")];

    // Wrong secret, V1: the message echoes the server's string to sign, which the old SDK
    // compares with its own.
    let wrong = Key {
        id: key.id.clone(),
        secret: format!("{}x", key.secret),
    };
    let params = Rest::v1_params(&wrong, "QueryToken", &q);
    let expected_sts = signature::v1_string_to_sign("POST", &params);
    let reply = rest
        .v1_raw("POST", &Rest::v1_sign("POST", &wrong.secret, params))
        .await;
    reply.assert_error(400, "SignatureDoesNotMatch");
    let message = reply.json()["Message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        message
            .split_once("server string to sign is:")
            .map(|(_, s)| s),
        Some(expected_sts.as_str())
    );
    // Wrong secret, V3.
    rest.v3(&wrong, "QueryToken", &q, &[])
        .await
        .assert_error(400, "SignatureDoesNotMatch");

    // Unknown key, both schemes.
    let unknown = Key {
        id: "LTAIunknown".into(),
        secret: "s".into(),
    };
    rest.v1(&unknown, "QueryToken", &q)
        .await
        .assert_error(404, "InvalidAccessKeyId.NotFound");
    rest.v3(&unknown, "QueryToken", &q, &[])
        .await
        .assert_error(404, "InvalidAccessKeyId.NotFound");

    // Stale and malformed timestamps.
    let with_timestamp = |ts: String| {
        let mut p = Rest::v1_params(&key, "QueryToken", &q);
        p.retain(|(k, _)| k != "Timestamp");
        p.push(("Timestamp".into(), ts));
        Rest::v1_sign("POST", &key.secret, p)
    };
    rest.v1_raw(
        "POST",
        &with_timestamp(timestamp(now_ms() - 16 * 60 * 1000)),
    )
    .await
    .assert_error(400, "InvalidTimeStamp.Expired");
    rest.v1_raw(
        "POST",
        &with_timestamp(timestamp(now_ms() + 16 * 60 * 1000)),
    )
    .await
    .assert_error(400, "InvalidTimeStamp.Expired");
    rest.v1_raw("POST", &with_timestamp("2026-13-01T00:00:00Z".into()))
        .await
        .assert_error(400, "InvalidTimeStamp.Format");

    // A reused nonce: the identical request twice.
    let query = Rest::v1_sign("POST", &key.secret, Rest::v1_params(&key, "QueryToken", &q));
    assert_eq!(rest.v1_raw("POST", &query).await.status, 200);
    rest.v1_raw("POST", &query)
        .await
        .assert_error(400, "SignatureNonceUsed");

    // Missing common parameters and a wrong signature method.
    let mut p = Rest::v1_params(&key, "QueryToken", &q);
    p.retain(|(k, _)| k != "SignatureNonce");
    rest.v1_raw("POST", &Rest::v1_sign("POST", &key.secret, p))
        .await
        .assert_error(400, "MissingParameter");
    rest.v1_raw("POST", "Action=QueryToken")
        .await
        .assert_error(400, "MissingParameter");
    let mut p = Rest::v1_params(&key, "QueryToken", &q);
    p.retain(|(k, _)| k != "SignatureMethod");
    p.push(("SignatureMethod".into(), "HMAC-MD5".into()));
    rest.v1_raw("POST", &Rest::v1_sign("POST", &key.secret, p))
        .await
        .assert_error(400, "InvalidSignatureMethod");
    let mut p = Rest::v1_params(&key, "QueryToken", &q);
    p.retain(|(k, _)| k != "Version");
    p.push(("Version".into(), "2019-01-01".into()));
    rest.v1_raw("POST", &Rest::v1_sign("POST", &key.secret, p))
        .await
        .assert_error(400, "InvalidVersion");

    // V3 oddities: malformed Authorization, unsigned x-acs headers, a body that does not
    // match x-acs-content-sha256.
    let base = format!("http://{}/", rest.addr);
    rest.send(
        rest.http
            .post(&base)
            .header("authorization", "ACS3-HMAC-SHA256 junk"),
    )
    .await
    .assert_error(400, "IncompleteSignature");
    rest.send(rest.http.post(&base).header(
        "authorization",
        format!(
            "ACS3-HMAC-SHA256 Credential={},SignedHeaders=host,Signature=00",
            key.id
        ),
    ))
    .await
    .assert_error(400, "IncompleteSignature");
    rest.send(
        rest.http
            .post(&base)
            .header("authorization", "ACS3-HMAC-SM3 Credential=a"),
    )
    .await
    .assert_error(400, "InvalidSignatureMethod");
    let signed = "x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version";
    rest.send(
        rest.http
            .post(&base)
            .header(
                "authorization",
                format!(
                    "ACS3-HMAC-SHA256 Credential={},SignedHeaders={signed},Signature=00",
                    key.id
                ),
            )
            .header("x-acs-action", "QueryToken")
            .header("x-acs-version", "2020-04-20")
            .header("x-acs-date", timestamp(now_ms()))
            .header("x-acs-signature-nonce", "n-1")
            .header("x-acs-content-sha256", signature::sha256_hex(b""))
            .body("tampered"),
    )
    .await
    .assert_error(400, "SignatureDoesNotMatch");
}

#[tokio::test]
async fn unknown_action_other_instance_and_xml() {
    let ts = TestServer::start().await;
    let key = ts.create_key(&[INSTANCE]).await;
    let rest = Rest::new(&ts);

    rest.v1(&key, "DescribeInstances", &[])
        .await
        .assert_error(404, "ApiNotSupport");
    rest.v3(&key, "applytoken", &[], &[])
        .await
        .assert_error(404, "ApiNotSupport");
    rest.v1(&key, "QueryToken", &[("InstanceId", OTHER), ("Token", "t")])
        .await
        .assert_error(400, "InstancePermissionCheckFailed");
    rest.v1(
        &key,
        "GetDeviceCredential",
        &[("InstanceId", OTHER), ("ClientId", "GID_other@@@b")],
    )
    .await
    .assert_error(400, "InstancePermissionCheckFailed");

    // XML success: root <QueryTokenResponse>.
    let mut p = Rest::v1_params(
        &key,
        "QueryToken",
        &[("InstanceId", INSTANCE), ("Token", "t")],
    );
    p.retain(|(k, _)| k != "Format");
    p.push(("Format".into(), "XML".into()));
    let reply = rest
        .v1_raw("POST", &Rest::v1_sign("POST", &key.secret, p))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/xml")));
    let id = reply.headers["x-acs-request-id"]
        .to_str()
        .unwrap_or_default();
    assert_eq!(
        reply.text,
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><QueryTokenResponse><RequestId>{id}</RequestId><TokenStatus>false</TokenStatus></QueryTokenResponse>")
    );
    // XML error: root <Error>.
    let mut p = Rest::v1_params(&key, "Nope", &[]);
    p.retain(|(k, _)| k != "Format");
    p.push(("Format".into(), "XML".into()));
    let reply = rest
        .v1_raw("POST", &Rest::v1_sign("POST", &key.secret, p))
        .await;
    assert_eq!(reply.status, 404);
    assert!(reply.text.contains("<Error><RequestId>"), "{}", reply.text);
    assert!(reply.text.contains("<Code>ApiNotSupport</Code>"));
    assert!(reply
        .text
        .contains("<Message>The specified API is not supported.</Message>"));
}

#[tokio::test]
async fn rate_limits_per_ip_and_per_key() {
    let ts = TestServer::start_with(|c| {
        c.rate_per_ip = 5;
        c.rate_revoke_token = 2;
    })
    .await;
    let key = ts.create_key(&[INSTANCE]).await;
    let rest = Rest::new(&ts);
    let q = [("InstanceId", INSTANCE), ("Token", "a.b.c")];

    let mut codes = Vec::new();
    for _ in 0..4 {
        let reply = rest.v1(&key, "RevokeToken", &q).await;
        let code = reply.code();
        if code.ends_with("OverFlow") {
            assert_eq!(reply.status, 400);
            assert!(reply.headers.get("x-acs-retry-after").is_some());
        }
        codes.push(code);
    }
    assert!(
        codes.contains(&"RevokeTokenOverFlow".to_owned()),
        "{codes:?}"
    );

    let mut throttled = None;
    for _ in 0..8 {
        let reply = rest.v1(&key, "QueryToken", &q).await;
        if reply.status != 200 && reply.code() == "Throttling.User" {
            throttled = Some(reply);
            break;
        }
    }
    let reply = throttled.expect("the per-IP limit refuses a burst");
    reply.assert_error(400, "Throttling.User");
    let retry_after: u64 = reply.headers["x-acs-retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=1000).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn hostile_input_gets_an_envelope_not_a_crash() {
    let ts = TestServer::start().await;
    let rest = Rest::new(&ts);
    let base = format!("http://{}", rest.addr);

    rest.send(rest.http.put(format!("{base}/?Action=QueryToken")))
        .await
        .assert_error(400, "UnsupportedHTTPMethod");
    rest.send(rest.http.get(format!("{base}/other/path")))
        .await
        .assert_error(404, "ApiNotSupport");
    rest.send(
        rest.http
            .post(format!("{base}/"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![b'a'; 70 * 1024]),
    )
    .await
    .assert_error(413, "RequestEntityTooLarge");
    for query in [
        "%zz=%ff&&&==",
        "Signature=&AccessKeyId=&Timestamp=",
        "Action=ApplyToken&AccessKeyId=x&Signature=y&SignatureMethod=HMAC-SHA1&Version=2020-04-20&Timestamp=9999-99-99T99:99:99Z&SignatureNonce=n",
        "Action=%00%01&AccessKeyId=%F0%9F%92%A9&Signature=%E2%82&SignatureMethod=HMAC-SHA1&Version=2020-04-20&Timestamp=2026-01-01T00:00:00.123456789Z&SignatureNonce=n",
    ] {
        let reply = rest.v1_raw("POST", query).await;
        assert_eq!(reply.status / 100, 4, "{query}: {}", reply.text);
        reply.json();
    }
    // The server still answers.
    let reply = rest.v1_raw("GET", "").await;
    reply.assert_error(400, "MissingParameter");
}

/// A REST error says what gRPC says: the field and the reason in `Message` (after Alibaba's
/// sentence), and what to do in `Recommend`. Seconds sent for milliseconds is named as such.
#[tokio::test]
async fn error_messages_name_the_field_the_reason_and_the_fix() {
    let ts = TestServer::start().await;
    let key = ts.create_key(&[INSTANCE]).await;
    let rest = Rest::new(&ts);
    let now_s = (now_ms() / 1000).to_string();
    let past = (now_ms() - HOUR).to_string();
    let soon = (now_ms() + 10_000).to_string();
    let apply = |expire: &str| {
        vec![
            ("Actions", "R"),
            ("ExpireTime", expire),
            ("InstanceId", INSTANCE),
            ("Resources", "a"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .collect::<Vec<_>>()
    };
    let cases = [
        (apply(&now_s), "looks like seconds, not milliseconds"),
        (apply(&past), "is in the past"),
        (apply(&soon), "seconds from now"),
        (apply("tomorrow"), "\"tomorrow\" is not an integer"),
        (apply(""), "is required"),
    ];
    for (params, reason) in cases {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = rest.v1(&key, "ApplyToken", &params).await;
        reply.assert_error(400, "InvalidParameter.ExpireTime");
        let body = reply.json();
        let message = body["Message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("An error occurred while validating the parameter ExpireTime: ")
                && message.contains(reason),
            "{message}"
        );
        let recommend = body["Recommend"].as_str().unwrap_or_default();
        assert!(
            recommend.contains("milliseconds since the Unix epoch")
                && recommend.contains("$(( $(date +%s) * 1000 + 3600000 ))"),
            "{recommend}"
        );
    }

    // gRPC gives the same reason for the same mistake.
    let status = ts
        .tokens(&key)
        .apply_token(mqtt_tokend::proto::ApplyTokenRequest {
            instance_id: INSTANCE.into(),
            actions: vec![1],
            resources: vec!["a".into()],
            expire_time: now_ms() / 1000,
        })
        .await
        .expect_err("seconds are refused");
    assert!(
        status
            .message()
            .starts_with("InvalidParameter.ExpireTime: ")
            && status
                .message()
                .contains("looks like seconds, not milliseconds"),
        "{}",
        status.message()
    );

    // XML carries the same fields.
    let mut params = Rest::v1_params(
        &key,
        "ApplyToken",
        &[
            ("Actions", "R"),
            ("ExpireTime", &now_s),
            ("InstanceId", INSTANCE),
            ("Resources", "a"),
        ],
    );
    params.retain(|(k, _)| k != "Format");
    params.push(("Format".into(), "XML".into()));
    let xml = rest
        .v1_raw("POST", &Rest::v1_sign("POST", &key.secret, params))
        .await
        .text;
    assert!(
        xml.contains("<Code>InvalidParameter.ExpireTime</Code>")
            && xml.contains("looks like seconds")
            && xml.contains("<Recommend>Send milliseconds"),
        "{xml}"
    );

    // Other fields and the gateway's own errors recommend a fix too.
    let reply = rest
        .v1(
            &key,
            "GetDeviceCredential",
            &[("InstanceId", INSTANCE), ("ClientId", "car-1")],
        )
        .await;
    reply.assert_error(400, "InvalidParameter.ClientId");
    let body = reply.json();
    assert!(
        body["Message"]
            .as_str()
            .is_some_and(|m| m.contains("ClientId: must be GroupId@@@DeviceId")),
        "{body}"
    );
    assert!(
        body["Recommend"]
            .as_str()
            .is_some_and(|r| r.contains("GID_car@@@vin0001")),
        "{body}"
    );
    let mut stale = Rest::v1_params(
        &key,
        "QueryToken",
        &[("InstanceId", INSTANCE), ("Token", "t")],
    );
    stale.retain(|(k, _)| k != "Timestamp");
    stale.push(("Timestamp".into(), timestamp(now_ms() - 16 * 60 * 1000)));
    let reply = rest
        .v1_raw("POST", &Rest::v1_sign("POST", &key.secret, stale))
        .await;
    reply.assert_error(400, "InvalidTimeStamp.Expired");
    assert!(
        reply.json()["Recommend"]
            .as_str()
            .is_some_and(|r| r.contains("clock")),
        "{}",
        reply.text
    );
    let other = rest
        .v1(&key, "QueryToken", &[("InstanceId", OTHER), ("Token", "t")])
        .await;
    other.assert_error(400, "InstancePermissionCheckFailed");
    assert!(
        other.json()["Recommend"]
            .as_str()
            .is_some_and(|r| r.contains("access-key create --instance")),
        "{}",
        other.text
    );
}
