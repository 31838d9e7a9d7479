//! Several mqtt-tokend replicas on one etcd: what one replica acknowledges is visible on the
//! others at once, the revocation log is one gap-free sequence whichever replica writes, and
//! read-modify-writes stay exact under concurrency. Real etcd, real servers, real gRPC clients.

mod common;
#[path = "etcd_kit/mod.rs"]
mod etcd_kit;

use std::collections::BTreeSet;

use common::{code_of, now_ms, test_config, Key, TestServer};
use etcd_kit::EtcdCluster;
use mqtt_tokend::{app::Server, config::StoreKind};
use mqtt_tokend_client::proto::{
    ApplyTokenRequest, DeleteAccessKeyRequest, GetDeviceCredentialRequest, QueryTokenRequest,
    RefreshDeviceCredentialRequest, RegisterDeviceCredentialRequest, RevokeTokenRequest,
    TokenAction, UnRegisterDeviceCredentialRequest,
};

/// `n` replicas on one etcd prefix, sharing one keyring (as every replica must).
async fn replicas(etcd: &EtcdCluster, n: usize) -> (tempfile::TempDir, Vec<TestServer>) {
    let shared = tempfile::tempdir().expect("tempdir");
    let keyring = shared.path().join("keyring.json");
    let prefix = etcd_kit::unique_prefix();
    let mut servers = Vec::new();
    for _ in 0..n {
        let endpoints = etcd.endpoints();
        let (keyring, prefix) = (keyring.clone(), prefix.clone());
        servers.push(
            TestServer::start_with(move |c| {
                c.keyring = keyring;
                c.store.kind = StoreKind::Etcd;
                c.store.etcd_endpoints = endpoints;
                c.store.etcd_prefix = prefix;
            })
            .await,
        );
    }
    (shared, servers)
}

async fn apply(ts: &TestServer, key: &Key, instance: &str) -> String {
    ts.tokens(key)
        .apply_token(ApplyTokenRequest {
            instance_id: instance.into(),
            actions: vec![TokenAction::Read as i32],
            resources: vec!["a/b".into()],
            expire_time: now_ms() + 3_600_000,
        })
        .await
        .expect("apply")
        .into_inner()
        .token
}

async fn valid(ts: &TestServer, key: &Key, instance: &str, token: &str) -> bool {
    ts.tokens(key)
        .query_token(QueryTokenRequest {
            instance_id: instance.into(),
            token: token.into(),
        })
        .await
        .expect("query")
        .into_inner()
        .token_status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_one_replica_acknowledges_the_others_see_at_once() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (_keyring, rs) = replicas(&etcd, 3).await;
    let (a, b, c) = (&rs[0], &rs[1], &rs[2]);
    assert_eq!(a.root.id, b.root.id, "one root key for every replica");

    // A token applied on A is valid on B; revoked on B, it is invalid on A and C.
    let token = apply(a, &a.root, "i1").await;
    assert!(valid(b, &b.root, "i1", &token).await);
    b.tokens(&b.root)
        .revoke_token(RevokeTokenRequest {
            instance_id: "i1".into(),
            token: token.clone(),
        })
        .await
        .expect("revoke on B");
    assert!(!valid(a, &a.root, "i1", &token).await);
    assert!(!valid(c, &c.root, "i1", &token).await);

    // A key created on A authenticates on C; deleted on A, it fails on C.
    let key = a.create_key(&["i1"]).await;
    let token = apply(c, &key, "i1").await;
    assert!(valid(b, &key, "i1", &token).await);
    a.access_keys(&a.root)
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: key.id.clone(),
        })
        .await
        .expect("delete on A");
    let refused = c
        .tokens(&key)
        .apply_token(ApplyTokenRequest {
            instance_id: "i1".into(),
            actions: vec![TokenAction::Read as i32],
            resources: vec!["a/b".into()],
            expire_time: now_ms() + 3_600_000,
        })
        .await
        .expect_err("a deleted key fails on another replica");
    assert_eq!(code_of(&refused), "InvalidAccessKeyId.NotFound");

    // A credential registered on B is on C; refreshed on A, B sees the new secret.
    let registered = b
        .devices(&b.root)
        .register_device_credential(RegisterDeviceCredentialRequest {
            instance_id: "i1".into(),
            client_id: "GID_group1@@@dev1".into(),
        })
        .await
        .expect("register on B")
        .into_inner()
        .device_credential
        .expect("credential");
    let get = |ts: &TestServer| {
        let mut devices = ts.devices(&ts.root);
        async move {
            devices
                .get_device_credential(GetDeviceCredentialRequest {
                    instance_id: "i1".into(),
                    client_id: "GID_group1@@@dev1".into(),
                })
                .await
                .expect("get")
                .into_inner()
                .device_credential
                .expect("credential")
        }
    };
    assert_eq!(
        get(c).await.device_access_key_secret,
        registered.device_access_key_secret
    );
    let refreshed = a
        .devices(&a.root)
        .refresh_device_credential(RefreshDeviceCredentialRequest {
            instance_id: "i1".into(),
            client_id: "GID_group1@@@dev1".into(),
        })
        .await
        .expect("refresh on A")
        .into_inner()
        .device_credential
        .expect("credential");
    assert_ne!(
        refreshed.device_access_key_id,
        registered.device_access_key_id
    );
    assert_eq!(
        get(b).await.device_access_key_id,
        refreshed.device_access_key_id
    );
}

/// Every revision, in order, from 1 on, as a watcher on `ts` receives them until `last`.
async fn watched_until(ts: &TestServer, last: u64) -> Vec<u64> {
    let events = common::events_until(&ts.client(&ts.root), 1, last).await;
    events.into_iter().map(|e| e.revision).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_every_replica_make_one_gap_free_log() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (_keyring, rs) = replicas(&etcd, 3).await;
    let mut writers = Vec::new();
    for w in 0..16 {
        let mut tokens = rs[w % 3].tokens(&rs[w % 3].root);
        writers.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for _ in 0..5 {
                revisions.push(common::revoke_with(&mut tokens, "i1").await.0);
            }
            revisions
        }));
    }
    let mut acknowledged = BTreeSet::new();
    for w in writers {
        for r in w.await.expect("writer") {
            assert!(acknowledged.insert(r), "revision {r} acknowledged twice");
        }
    }
    let expected: Vec<u64> = (1..=80).collect();
    assert_eq!(acknowledged.into_iter().collect::<Vec<_>>(), expected);
    for ts in &rs {
        assert_eq!(
            watched_until(ts, 80).await,
            expected,
            "every replica, one log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_client_id_registered_on_every_replica_at_once_is_registered_once() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (_keyring, rs) = replicas(&etcd, 3).await;
    for round in 0..5 {
        let client_id = format!("GID_group1@@@race{round}");
        let mut calls = Vec::new();
        for ts in &rs {
            let mut devices = ts.devices(&ts.root);
            let client_id = client_id.clone();
            calls.push(tokio::spawn(async move {
                devices
                    .register_device_credential(RegisterDeviceCredentialRequest {
                        instance_id: "i1".into(),
                        client_id,
                    })
                    .await
            }));
        }
        let mut won = 0;
        for call in calls {
            match call.await.expect("call") {
                Ok(_) => won += 1,
                Err(status) => assert_eq!(code_of(&status), "DeviceCredentialExsit"),
            }
        }
        assert_eq!(won, 1, "exactly one replica registers {client_id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_device_cap_holds_under_concurrent_registration_on_every_replica() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let shared = tempfile::tempdir().expect("tempdir");
    let prefix = etcd_kit::unique_prefix();
    let mut rs = Vec::new();
    for _ in 0..3 {
        let (endpoints, prefix) = (etcd.endpoints(), prefix.clone());
        let keyring = shared.path().join("keyring.json");
        rs.push(
            TestServer::start_with(move |c| {
                c.keyring = keyring;
                c.max_devices_per_instance = 10;
                c.store.kind = StoreKind::Etcd;
                c.store.etcd_endpoints = endpoints;
                c.store.etcd_prefix = prefix;
            })
            .await,
        );
    }
    let mut calls = Vec::new();
    for i in 0..30 {
        let mut devices = rs[i % 3].devices(&rs[i % 3].root);
        calls.push(tokio::spawn(async move {
            devices
                .register_device_credential(RegisterDeviceCredentialRequest {
                    instance_id: "i1".into(),
                    client_id: format!("GID_group1@@@cap{i}"),
                })
                .await
        }));
    }
    let mut registered = 0;
    for call in calls {
        match call.await.expect("call") {
            Ok(_) => registered += 1,
            Err(status) => assert_eq!(code_of(&status), "DeviceCredentialNumExceed"),
        }
    }
    assert_eq!(registered, 10, "the cap is exact across replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_a_keyring_that_does_not_match_the_shared_store() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (_keyring, _rs) = replicas(&etcd, 1).await;
    let other = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(&other);
    config.store.kind = StoreKind::Etcd;
    config.store.etcd_endpoints = etcd.endpoints();
    config.store.etcd_prefix = _rs[0].config.store.etcd_prefix.clone();
    let err = Server::start(config)
        .await
        .expect_err("another keyring is refused");
    assert!(
        err.to_string().contains("does not match") || err.to_string().contains("does not exist"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_larger_than_one_etcd_transaction_are_split_and_stay_gap_free() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (endpoints, prefix) = (etcd.endpoints(), etcd_kit::unique_prefix());
    // At most 8 operations per transaction: concurrent revocations need several.
    let ts = TestServer::start_with(move |c| {
        c.store.kind = StoreKind::Etcd;
        c.store.etcd_endpoints = endpoints;
        c.store.etcd_prefix = prefix;
        c.store.etcd_max_txn_ops = 8;
    })
    .await;
    let mut writers = Vec::new();
    for _ in 0..16 {
        let mut tokens = ts.tokens(&ts.root);
        writers.push(tokio::spawn(async move {
            common::revoke_with(&mut tokens, "i1").await.0
        }));
    }
    let mut acknowledged = BTreeSet::new();
    for w in writers {
        assert!(acknowledged.insert(w.await.expect("writer")));
    }
    let expected: Vec<u64> = (1..=16).collect();
    assert_eq!(acknowledged.into_iter().collect::<Vec<_>>(), expected);
    assert_eq!(watched_until(&ts, 16).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_and_unregister_racing_on_every_replica_leave_one_consistent_answer() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (_keyring, rs) = replicas(&etcd, 3).await;
    for round in 0..4 {
        let client_id = format!("GID_group1@@@race{round}");
        rs[0]
            .devices(&rs[0].root)
            .register_device_credential(RegisterDeviceCredentialRequest {
                instance_id: "i1".into(),
                client_id: client_id.clone(),
            })
            .await
            .expect("register");
        // Replica 0 and 1 refresh while replica 2 unregisters, all at once.
        let mut refreshes = Vec::new();
        for ts in &rs[..2] {
            let (mut devices, client_id) = (ts.devices(&ts.root), client_id.clone());
            refreshes.push(tokio::spawn(async move {
                devices
                    .refresh_device_credential(RefreshDeviceCredentialRequest {
                        instance_id: "i1".into(),
                        client_id,
                    })
                    .await
            }));
        }
        let unregistered = rs[2]
            .devices(&rs[2].root)
            .un_register_device_credential(UnRegisterDeviceCredentialRequest {
                instance_id: "i1".into(),
                client_id: client_id.clone(),
            })
            .await;
        assert!(
            unregistered.is_ok(),
            "the credential existed: {unregistered:?}"
        );
        let mut refreshed_keys = BTreeSet::new();
        for r in refreshes {
            match r.await.expect("call") {
                Ok(r) => {
                    let key = r.into_inner().device_credential.expect("credential");
                    assert!(
                        refreshed_keys.insert(key.device_access_key_id),
                        "one key per refresh"
                    );
                }
                Err(status) => assert_eq!(code_of(&status), "DeviceCredentialNotFound"),
            }
        }
        // Whatever the order, the unregistration was last for someone: every replica agrees
        // the credential is gone, and a second unregistration finds nothing.
        for ts in &rs {
            let got = ts
                .devices(&ts.root)
                .get_device_credential(GetDeviceCredentialRequest {
                    instance_id: "i1".into(),
                    client_id: client_id.clone(),
                })
                .await
                .expect_err("gone on every replica");
            assert_eq!(code_of(&got), "DeviceCredentialNotFound");
        }
    }
}
