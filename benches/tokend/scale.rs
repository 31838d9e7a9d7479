//! The cells at scale, each on its own preloaded store served by a fresh child process:
//! `--big` (live tokens: QueryToken of a random one, ApplyToken) and `--devices` (device
//! credentials in one group: listing must stay fast at 1,000,000, issue 3).

use std::{sync::Arc, time::Instant};

use mqtt_tokend::proto::{GetDeviceCredentialRequest, ListDeviceCredentialClientIdRequest};

use crate::{
    args::Opts,
    measure::{connect, ok_or, run_cell, Op, CONCURRENCY},
    ops::{op_apply, op_query, INSTANCE},
    preload::{device_client_id, preload_devices, preload_tokens},
    report::{Peer, Report},
    server::{dir_size, Tokend},
};

/// QueryToken (random live token) and ApplyToken with `opts.big_tokens` live tokens.
pub async fn big(opts: &Opts, report: &mut Report) {
    let n = opts.big_tokens;
    const BIG: &str = "Unary calls with 1,000,000 live tokens";
    eprintln!("  preloading {n} tokens in-process ...");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (sample, took) = preload_tokens(tmp.path(), n).await;
    let size = dir_size(&tmp.path().join("data"));
    let (server, restart) = Tokend::start(tmp.path()).await;
    let ep_t = server.target();
    let (rss0, _) = server.rss_mib();
    let sample = Arc::new(sample);
    let section = if n == 1_000_000 {
        BIG.to_string()
    } else {
        format!("Unary calls with {n} live tokens")
    };
    for c in CONCURRENCY {
        let cell = run_cell(opts, &ep_t, c, op_query(sample.clone())).await;
        report.add(
            &section,
            "QueryToken (random live token)",
            c,
            cell,
            Peer::Range,
        );
    }
    for c in CONCURRENCY {
        let cell = run_cell(opts, &ep_t, c, op_apply(None)).await;
        report.add(&section, "ApplyToken (durable)", c, cell, Peer::Put);
    }
    let (rss, hwm) = server.rss_mib();
    server.stop();
    report.extra.push(format!(
        "\n{n} live tokens: preload {:.1} s in-process ({:.0} tokens/s through Core::apply_token, 256 tasks); \
         store {:.0} MiB on disk; restart (spawn → SERVING) {:.2} s; RSS {rss0:.0} MiB after restart, \
         {rss:.0} MiB after the cells (peak {hwm:.0} MiB).",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        size as f64 / 1048576.0,
        restart.as_secs_f64()
    ));
}

fn op_list(page_no: u32, next_token: String) -> Op {
    Arc::new(move |ch, _| {
        let mut c = ch.devices();
        let req = ListDeviceCredentialClientIdRequest {
            instance_id: INSTANCE.into(),
            group_id: "GID_bench".into(),
            page_no,
            page_size: 100,
            next_token: next_token.clone(),
        };
        Box::pin(async move {
            ok_or(c.list_device_credential_client_id(req).await, |r| {
                let r = r.into_inner();
                if r.client_id_list.len() == 100 {
                    Ok(())
                } else {
                    Err(format!("page of {}", r.client_id_list.len()))
                }
            })
        })
    })
}

fn op_get_device(n: usize) -> Op {
    Arc::new(move |ch, seq| {
        let mut c = ch.devices();
        let i = (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as usize % n;
        let req = GetDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: device_client_id(i),
        };
        Box::pin(async move { ok_or(c.get_device_credential(req).await, |_| Ok(())) })
    })
}

/// ListDeviceCredentialClientId and GetDeviceCredential with `opts.devices` credentials in one
/// group of one instance.
pub async fn devices(opts: &Opts, report: &mut Report) {
    let n = opts.devices;
    eprintln!("  preloading {n} device credentials in-process ...");
    let tmp = tempfile::tempdir().expect("tempdir");
    let took = preload_devices(tmp.path(), n).await;
    let size = dir_size(&tmp.path().join("data"));
    let (server, restart) = Tokend::start(tmp.path()).await;
    let ep_t = server.target();
    let section = format!("Device credentials: {n} in one group");
    // A cursor from the middle of the group, fetched once through the API.
    let mid_page = (n / 200).max(1) as u32;
    let client = connect(&server.endpoint, Some(&server.key())).await;
    let t0 = Instant::now();
    let mid = client
        .devices()
        .list_device_credential_client_id(ListDeviceCredentialClientIdRequest {
            instance_id: INSTANCE.into(),
            group_id: "GID_bench".into(),
            page_no: mid_page,
            page_size: 100,
            next_token: String::new(),
        })
        .await
        .expect("list mid page")
        .into_inner();
    let deep_page_once = t0.elapsed();
    assert_eq!(mid.total, n as u64);
    for c in [1, 16] {
        let cell = run_cell(opts, &ep_t, c, op_list(1, String::new())).await;
        report.add(&section, "List, first page (100)", c, cell, Peer::Range);
        let cell = run_cell(opts, &ep_t, c, op_list(1, mid.next_token.clone())).await;
        report.add(
            &section,
            "List, mid-group page by NextToken",
            c,
            cell,
            Peer::Range,
        );
    }
    let cell = run_cell(opts, &ep_t, 1, op_list(mid_page, String::new())).await;
    report.add(
        &section,
        &format!(
            "List, PageNo {mid_page} (skips {} entries)",
            (mid_page as usize - 1) * 100
        ),
        1,
        cell,
        Peer::Range,
    );
    for c in CONCURRENCY {
        let cell = run_cell(opts, &ep_t, c, op_get_device(n)).await;
        report.add(
            &section,
            "GetDeviceCredential (random device)",
            c,
            cell,
            Peer::Range,
        );
    }
    let (rss, _) = server.rss_mib();
    server.stop();
    report.extra.push(format!(
        "\n{n} device credentials: preload {:.1} s in-process ({:.0}/s through Core::register_device, 256 tasks); \
         store {:.0} MiB on disk; restart {:.2} s; first PageNo {mid_page} call {:.1} ms; RSS {rss:.0} MiB.",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        size as f64 / 1048576.0,
        restart.as_secs_f64(),
        deep_page_once.as_secs_f64() * 1000.0,
    ));
}
