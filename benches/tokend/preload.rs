//! Filling a store before a scale cell: in-process, through the core, because that is about 2x
//! faster than through gRPC with the same validation, storage and durable group commit.

use std::{
    future::Future,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use mqtt_tokend::{
    app::{RootKeyFile, Server},
    config::ServeConfig,
    core::{Actions, Caller, Core, TokenRequest},
};

use crate::ops::{INSTANCE, RESOURCE};

/// Starts an in-process server on `dir` (rate limits off, `tweak` applied), runs
/// `item(core, root caller, i)` for every i in 0..n from 256 tasks, and shuts the server down.
/// Returns the time the items took.
pub async fn preload_in_process<F, Fut>(
    dir: &Path,
    n: usize,
    what: &'static str,
    tweak: impl FnOnce(&mut ServeConfig),
    item: F,
) -> Duration
where
    F: Fn(Arc<Core>, Caller, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut config = ServeConfig::with_dirs(dir.join("data"), dir.join("keyring.json"));
    config.rate_apply_token = 0;
    config.rate_query_token = 0;
    config.rate_revoke_token = 0;
    config.rate_device_credential = 0;
    config.rate_per_ip = 0;
    config.http_addr = mqtt_tokend::config::OptionalAddr(None);
    tweak(&mut config);
    let server = Server::start(config.clone())
        .await
        .expect("in-process server");
    let raw = std::fs::read(config.root_key_path()).expect("root key file");
    let root: RootKeyFile = serde_json::from_slice(&raw).expect("root key json");
    let core = server.core().clone();
    let caller = core
        .authenticate(&root.access_key_id, &root.access_key_secret)
        .expect("root key authenticates");
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let item = Arc::new(item);
    let mut tasks = Vec::new();
    for _ in 0..256 {
        let (core, caller, next, item) = (core.clone(), caller.clone(), next.clone(), item.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                item(core.clone(), caller.clone(), i).await;
                if i % 100_000 == 0 {
                    eprintln!("  preload {what}: {i}, {:.0} s", t0.elapsed().as_secs_f64());
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("preload task");
    }
    let took = t0.elapsed();
    drop(core);
    server.shutdown().await.expect("in-process shutdown");
    took
}

/// Preloads `n` live tokens; returns every 100th token as a sample, and the time taken.
pub async fn preload_tokens(dir: &Path, n: usize) -> (Vec<String>, Duration) {
    let sample = Arc::new(Mutex::new(Vec::with_capacity(n / 100 + 1)));
    let keep = sample.clone();
    let took = preload_in_process(
        dir,
        n,
        "tokens",
        |_| {},
        move |core, caller, i| {
            let keep = keep.clone();
            async move {
                let applied = core
                    .apply_token(
                        &caller,
                        TokenRequest {
                            instance_id: INSTANCE.into(),
                            actions: Actions {
                                read: true,
                                write: true,
                            },
                            resources: vec![RESOURCE.into()],
                            expire_time: mqtt_tokend::core::now_ms() + 6 * 3_600_000,
                        },
                    )
                    .await
                    .expect("preload apply_token");
                if i % 100 == 0 {
                    keep.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(applied.token);
                }
            }
        },
    )
    .await;
    let v = std::mem::take(&mut *sample.lock().unwrap_or_else(|p| p.into_inner()));
    (v, took)
}

/// Client id of the i-th preloaded device: one group, ids in key order.
pub fn device_client_id(i: usize) -> String {
    format!("GID_bench@@@d{i:07}")
}

/// Registers `n` device credentials in one group; returns the time taken.
pub async fn preload_devices(dir: &Path, n: usize) -> Duration {
    let cap = n as u64 + 1;
    preload_in_process(
        dir,
        n,
        "devices",
        move |c| c.max_devices_per_instance = cap,
        |core, caller, i| async move {
            core.register_device(&caller, INSTANCE, &device_client_id(i))
                .await
                .expect("preload register_device");
        },
    )
    .await
}
