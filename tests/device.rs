//! DeviceCredentialService through a real server: lifecycle, Alibaba error codes, caps,
//! client id validation, listing with paging over thousands of credentials.

mod common;

use common::{code_of, TestServer};
use mqtt_tokend::proto::{
    GetDeviceCredentialRequest, ListDeviceCredentialClientIdRequest,
    RefreshDeviceCredentialRequest, RegisterDeviceCredentialRequest,
    UnRegisterDeviceCredentialRequest,
};
use tonic::Code;

const INSTANCE: &str = "post-cn-dev";

fn register(client_id: &str) -> RegisterDeviceCredentialRequest {
    RegisterDeviceCredentialRequest {
        instance_id: INSTANCE.into(),
        client_id: client_id.into(),
    }
}

fn get(client_id: &str) -> GetDeviceCredentialRequest {
    GetDeviceCredentialRequest {
        instance_id: INSTANCE.into(),
        client_id: client_id.into(),
    }
}

#[tokio::test]
async fn lifecycle_register_get_refresh_unregister() {
    let mut ts = TestServer::start().await;
    let root = ts.root.clone();
    let mut d = ts.devices(&root);
    let before = common::now_ms();
    let reg = d
        .register_device_credential(register("GID_test@@@dev-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(!reg.request_id.is_empty());
    let cred = reg.device_credential.unwrap();
    assert_eq!(cred.client_id, "GID_test@@@dev-1");
    assert_eq!(cred.instance_id, INSTANCE);
    assert!(cred.device_access_key_id.starts_with("DC.") && cred.device_access_key_id.len() == 25);
    assert!(
        cred.device_access_key_secret.starts_with("DC.")
            && cred.device_access_key_secret.len() == 35
    );
    assert!(cred.create_time >= before && cred.create_time == cred.update_time);

    let err = d
        .register_device_credential(register("GID_test@@@dev-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(code_of(&err), "DeviceCredentialExsit");

    let got = d
        .get_device_credential(get("GID_test@@@dev-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.device_credential.as_ref(), Some(&cred));

    let refreshed = d
        .refresh_device_credential(RefreshDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: "GID_test@@@dev-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .device_credential
        .unwrap();
    assert_ne!(refreshed.device_access_key_id, cred.device_access_key_id);
    assert_ne!(
        refreshed.device_access_key_secret,
        cred.device_access_key_secret
    );
    assert_eq!(refreshed.create_time, cred.create_time);
    assert!(refreshed.update_time >= cred.update_time);

    // The secret is derived, not stored: it survives a restart unchanged, and the sled files
    // do not contain it.
    ts.restart().await;
    let mut d = ts.devices(&root);
    let got = d
        .get_device_credential(get("GID_test@@@dev-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.device_credential.as_ref(), Some(&refreshed));
    ts.stop().await;
    let needle = refreshed.device_access_key_secret.as_bytes();
    for file in files(&ts.data_dir()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "secret found in {}",
            file.display()
        );
    }
    ts.restart().await;
    let mut d = ts.devices(&root);

    d.un_register_device_credential(UnRegisterDeviceCredentialRequest {
        instance_id: INSTANCE.into(),
        client_id: "GID_test@@@dev-1".into(),
    })
    .await
    .unwrap();
    let err = d
        .get_device_credential(get("GID_test@@@dev-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(code_of(&err), "DeviceCredentialNotFound");
    let err = d
        .un_register_device_credential(UnRegisterDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: "GID_test@@@dev-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "DeviceCredentialNotFound");
    let err = d
        .refresh_device_credential(RefreshDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: "GID_test@@@dev-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "DeviceCredentialNotFound");
    // Registering again after unregistering works.
    d.register_device_credential(register("GID_test@@@dev-1"))
        .await
        .unwrap();
    ts.stop().await;
}

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn client_ids_are_validated() {
    let ts = TestServer::start().await;
    let mut d = ts.devices(&ts.root);
    let long = format!("GID_test@@@{}", "d".repeat(60));
    for bad in [
        "",
        "nodelimiter",
        "GID_test@@@",
        "@@@dev",
        "gid_test@@@dev",
        "GID_ab@@@dev",
        "GID_te st@@@dev",
        "GID_test@@@de/v",
        "GID_test@@@dé",
        &long,
        "GID_test@@@a@@@b",
    ] {
        let err = d
            .register_device_credential(register(bad))
            .await
            .expect_err(bad);
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(code_of(&err), "InvalidParameter.ClientId", "{bad}");
    }
    for good in ["GID_test@@@dev", "GID-a_b-c@@@D_1-x", "GID_abc@@@0"] {
        d.register_device_credential(register(good))
            .await
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    let err = d
        .register_device_credential(RegisterDeviceCredentialRequest {
            instance_id: "".into(),
            client_id: "GID_test@@@x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InvalidParameter.InstanceId");
    // A key of another instance is refused.
    let other = ts.create_key(&["post-cn-other"]).await;
    let err = ts
        .devices(&other)
        .get_device_credential(get("GID_test@@@dev"))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "InstancePermissionCheckFailed");
}

#[tokio::test]
async fn per_instance_cap_is_enforced() {
    let ts = TestServer::start_with(|c| c.max_devices_per_instance = 3).await;
    let mut d = ts.devices(&ts.root);
    for i in 0..3 {
        d.register_device_credential(register(&format!("GID_cap@@@d{i}")))
            .await
            .unwrap();
    }
    let err = d
        .register_device_credential(register("GID_cap@@@d3"))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "DeviceCredentialNumExceed");
    // Another instance has its own count; unregistering frees a slot.
    d.register_device_credential(RegisterDeviceCredentialRequest {
        instance_id: "post-cn-b".into(),
        client_id: "GID_cap@@@d3".into(),
    })
    .await
    .unwrap();
    d.un_register_device_credential(UnRegisterDeviceCredentialRequest {
        instance_id: INSTANCE.into(),
        client_id: "GID_cap@@@d0".into(),
    })
    .await
    .unwrap();
    d.register_device_credential(register("GID_cap@@@d3"))
        .await
        .unwrap();
}

#[tokio::test]
async fn listing_pages_through_thousands_in_order() {
    let ts = TestServer::start().await;
    let mut d = ts.devices(&ts.root);
    let n = 2_500;
    let mut expected: Vec<String> = (0..n).map(|i| format!("GID_list@@@dev{i:05}")).collect();
    // Register concurrently, and add a neighbouring group that must not leak into the list.
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in expected.chunks(250).map(|c| c.to_vec()) {
        let mut d = d.clone();
        tasks.spawn(async move {
            for id in chunk {
                d.register_device_credential(register(&id)).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for id in ["GID_lis@@@x", "GID_list2@@@x", "GID_lisu@@@x"] {
        d.register_device_credential(register(id)).await.unwrap();
    }
    expected.sort();

    let list =
        |page_no: u32, page_size: u32, next_token: &str| ListDeviceCredentialClientIdRequest {
            instance_id: INSTANCE.into(),
            group_id: "GID_list".into(),
            page_no,
            page_size,
            next_token: next_token.into(),
        };
    // Cursor paging.
    let mut seen = vec![];
    let mut cursor = String::new();
    loop {
        let page = d
            .list_device_credential_client_id(list(1, 100, &cursor))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total, n as u64);
        assert!(page.client_id_list.len() <= 100);
        seen.extend(page.client_id_list);
        if page.next_token.is_empty() {
            break;
        }
        cursor = page.next_token;
    }
    assert_eq!(seen, expected);
    // Page-number paging gives the same pages.
    let page = d
        .list_device_credential_client_id(list(3, 100, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.client_id_list, expected[200..300]);
    assert_eq!(page.page_no, 3);
    let last = d
        .list_device_credential_client_id(list(25, 100, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.client_id_list, expected[2400..]);
    assert!(last.next_token.is_empty());
    let beyond = d
        .list_device_credential_client_id(list(26, 100, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(beyond.client_id_list.is_empty());

    for (req, code) in [
        (list(1, 0, ""), "InvalidParameter.PageSize"),
        (list(1, 101, ""), "InvalidParameter.PageSize"),
        (list(1, 10, "%%%"), "InvalidParameter.NextToken"),
        (
            ListDeviceCredentialClientIdRequest {
                group_id: "nope".into(),
                ..list(1, 10, "")
            },
            "InvalidParameter.GroupId",
        ),
    ] {
        let err = d.list_device_credential_client_id(req).await.unwrap_err();
        assert_eq!(code_of(&err), code);
    }
}

#[tokio::test]
async fn deep_pages_and_cursors_are_cheap_and_consistent() {
    let ts = TestServer::start().await;
    let mut d = ts.devices(&ts.root);
    for i in 0..5 {
        d.register_device_credential(register(&format!("GID_deep@@@d{i}")))
            .await
            .unwrap();
    }
    // A neighbouring group and tokens after the group's keys must not be scanned into.
    d.register_device_credential(register("GID_deeq@@@x"))
        .await
        .unwrap();
    let list = |page_no: u32, next_token: &str| ListDeviceCredentialClientIdRequest {
        instance_id: INSTANCE.into(),
        group_id: "GID_deep".into(),
        page_no,
        page_size: 2,
        next_token: next_token.into(),
    };
    let started = std::time::Instant::now();
    let page = d
        .list_device_credential_client_id(list(u32::MAX, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(page.client_id_list.is_empty() && page.next_token.is_empty());
    assert_eq!(page.total, 5);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // The cursor wins over the page number.
    let first = d
        .list_device_credential_client_id(list(1, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.client_id_list, ["GID_deep@@@d0", "GID_deep@@@d1"]);
    let second = d
        .list_device_credential_client_id(list(3, &first.next_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.client_id_list, ["GID_deep@@@d2", "GID_deep@@@d3"]);
    let third = d
        .list_device_credential_client_id(list(1, &second.next_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(third.client_id_list, ["GID_deep@@@d4"]);
    assert!(third.next_token.is_empty());
}
