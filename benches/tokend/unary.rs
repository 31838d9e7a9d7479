//! mqtt-tokend's unary cells on an empty store: the floor, QueryToken, AuthenticateConnect
//! (token and device credential), AuthorizeTopic, the REST shim, ApplyToken and RevokeToken,
//! each at every [`CONCURRENCY`] and each against its etcd peer, through every replica of a
//! [`Fleet`] (set-up calls go to the first replica).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use mqtt_tokend::{
    app::RootKeyFile,
    core::broker::mqtt_password,
    proto::{AuthenticateConnectRequest, RegisterDeviceCredentialRequest},
};

use crate::{
    args::Opts,
    fleet::Fleet,
    measure::{connect, run_cell, Target, CONCURRENCY},
    ops::{
        mint, need_for, op_apply, op_authorize, op_connect, op_health, op_query, op_revoke,
        pool_len, top_up, Pool, CLIENT_ID, INSTANCE,
    },
    paired::pair,
    report::{Peer, Report},
    rest::{op_rest_apply, op_rest_query},
};

/// Runs the sections `opts` wants against `fleet`.
pub async fn tokend_cells(opts: &Opts, fleet: &Fleet, report: &mut Report) {
    let main = fleet.section();
    let main = main.as_str();
    let eps = fleet.endpoints();
    let ep_t = fleet.target();
    let key = fleet.key();
    if opts.wants("floor") {
        for c in CONCURRENCY {
            let cell = run_cell(opts, &ep_t, c, op_health()).await;
            report.floor.insert((main.to_owned(), c), cell.ops_per_s);
            report.add(main, "floor: Health/Check (tokend)", c, cell, Peer::Health);
        }
    }

    // Set-up through the API: one live token, a device credential, a session handle.
    let setup = connect(&fleet.first().endpoint, Some(&key)).await;
    let token = mint(&eps, &key, 1).await.remove(0);
    if opts.wants("query") {
        let sample = Arc::new(vec![token.clone()]);
        for c in CONCURRENCY {
            let cell = run_cell(opts, &ep_t, c, op_query(sample.clone())).await;
            report.add(main, "QueryToken", c, cell, Peer::Range);
        }
        for _ in 0..opts.pairs {
            let p = pair(opts, &ep_t, op_query(sample.clone())).await;
            report.pairs.add(main, "QueryToken", p);
        }
    }
    let token_user = format!("Token|{}|{INSTANCE}", fleet.root().access_key_id);
    let token_pass = format!("RW|{token}");
    if opts.wants("connect-token") || opts.wants("authenticateconnect") {
        for c in CONCURRENCY {
            let op = op_connect(token_user.clone(), token_pass.clone());
            let cell = run_cell(opts, &ep_t, c, op).await;
            report.add(main, "AuthenticateConnect (token)", c, cell, Peer::Range);
        }
        for _ in 0..opts.pairs {
            let p = pair(
                opts,
                &ep_t,
                op_connect(token_user.clone(), token_pass.clone()),
            )
            .await;
            report.pairs.add(main, "AuthenticateConnect (token)", p);
        }
    }
    if opts.wants("connect-device") || opts.wants("authenticateconnect") {
        let cred = setup
            .devices()
            .register_device_credential(RegisterDeviceCredentialRequest {
                instance_id: INSTANCE.into(),
                client_id: CLIENT_ID.into(),
            })
            .await
            .expect("RegisterDeviceCredential")
            .into_inner()
            .device_credential
            .expect("credential in response");
        let user = format!("DeviceCredential|{}|{INSTANCE}", cred.device_access_key_id);
        let pass = mqtt_password(&cred.device_access_key_secret, CLIENT_ID);
        for c in CONCURRENCY {
            let cell = run_cell(opts, &ep_t, c, op_connect(user.clone(), pass.clone())).await;
            report.add(
                main,
                "AuthenticateConnect (device credential)",
                c,
                cell,
                Peer::Range,
            );
        }
        for _ in 0..opts.pairs {
            let p = pair(opts, &ep_t, op_connect(user.clone(), pass.clone())).await;
            report
                .pairs
                .add(main, "AuthenticateConnect (device credential)", p);
        }
    }
    if opts.wants("authorize") {
        let handle = setup
            .broker()
            .authenticate_connect(AuthenticateConnectRequest {
                client_id: CLIENT_ID.into(),
                username: token_user.clone(),
                password: token_pass.clone(),
            })
            .await
            .expect("AuthenticateConnect")
            .into_inner()
            .session_handle;
        for c in CONCURRENCY {
            let cell = run_cell(opts, &ep_t, c, op_authorize(handle.clone())).await;
            report.add(
                main,
                "AuthorizeTopic (session handle)",
                c,
                cell,
                Peer::Range,
            );
        }
        for _ in 0..opts.pairs {
            let p = pair(opts, &ep_t, op_authorize(handle.clone())).await;
            report.pairs.add(main, "AuthorizeTopic (session handle)", p);
        }
    }
    if opts.wants("rest") {
        rest_cells(opts, fleet, &token, report).await;
    }
    let pool: Pool = Arc::new(Mutex::new(Vec::new()));
    let mut apply_rate = BTreeMap::new();
    if opts.wants("apply") || opts.wants("revoke") {
        for c in CONCURRENCY {
            let cell = run_cell(opts, &ep_t, c, op_apply(Some(pool.clone()))).await;
            apply_rate.insert(c, cell.ops_per_s);
            report.add(main, "ApplyToken (durable)", c, cell, Peer::Put);
        }
        for _ in 0..opts.pairs {
            let p = pair(opts, &ep_t, op_apply(Some(pool.clone()))).await;
            report.pairs.add(main, "ApplyToken (durable)", p);
        }
    }
    if opts.wants("revoke") {
        // On etcd a revocation is a Put (the record and the counter, in one Txn); on sled it
        // is still compared with the DeleteRange of earlier runs.
        let peer = if opts.on_etcd() {
            Peer::Put
        } else {
            Peer::Delete
        };
        for c in CONCURRENCY {
            let guess = apply_rate.get(&c).copied().unwrap_or(8_000.0);
            top_up(&pool, need_for(opts, guess), |n| mint(&eps, &key, n)).await;
            let cell = run_cell(opts, &ep_t, c, op_revoke(pool.clone())).await;
            report.add(main, "RevokeToken (durable)", c, cell, peer);
        }
        let guess = apply_rate.get(&64).copied().unwrap_or(8_000.0);
        for _ in 0..opts.pairs {
            top_up(&pool, need_for(opts, guess), |n| mint(&eps, &key, n)).await;
            let p = pair(opts, &ep_t, op_revoke(pool.clone())).await;
            report.pairs.add(main, "RevokeToken (durable)", p);
        }
        let left = pool_len(&pool);
        eprintln!("  revoke pool left: {left}");
    }
}

/// The REST shim's V3-signed QueryToken (of `token`) and ApplyToken, the replicas in turn.
async fn rest_cells(opts: &Opts, fleet: &Fleet, token: &str, report: &mut Report) {
    let main = fleet.section();
    // Plain HTTP/1.1 keep-alive connections from a pool, as the SDKs use.
    let http = reqwest::Client::new();
    let root = fleet.root();
    let key = Arc::new(RootKeyFile {
        access_key_id: root.access_key_id.clone(),
        access_key_secret: root.access_key_secret.clone(),
    });
    let https = Arc::new(fleet.http_endpoints());
    // The cell's gRPC connections go unused: these ops send HTTP.
    let rest_t = Target {
        key: None,
        ..fleet.target()
    };
    for c in CONCURRENCY {
        let op = op_rest_query(http.clone(), https.clone(), key.clone(), token.to_owned());
        let cell = run_cell(opts, &rest_t, c, op).await;
        report.add(&main, "REST V3-signed QueryToken", c, cell, Peer::Range);
    }
    for c in CONCURRENCY {
        let op = op_rest_apply(http.clone(), https.clone(), key.clone());
        let cell = run_cell(opts, &rest_t, c, op).await;
        report.add(
            &main,
            "REST V3-signed ApplyToken (durable)",
            c,
            cell,
            Peer::Put,
        );
    }
}
