//! The gateway's refusals: authentication failures with the gateway codes, unknown actions
//! and instances, XML bodies, rate limits, and hostile input answered with an envelope.

use mqtt_tokend::rest::signature;

use crate::{
    common::{now_ms, Key, TestServer},
    timestamp, Rest, INSTANCE, OTHER,
};

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
