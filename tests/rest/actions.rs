//! Every action over V1 and V3 signatures, V1 by GET, business parameters in a form body.

use mqtt_tokend::rest::signature;
use serde_json::Value;

use crate::{
    common::{now_ms, TestServer},
    encode, owned, Rest, HOUR, INSTANCE,
};

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
