//! Bad business parameters: each gets its `InvalidParameter.<Field>` code, and the message
//! and recommendation say what was wrong and how to fix it, as gRPC does.

use crate::{
    common::{now_ms, TestServer},
    timestamp, Params, Rest, HOUR, INSTANCE, OTHER,
};

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
