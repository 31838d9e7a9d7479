//! The mqtt-tokend gRPC calls the cells measure, each checking its response, and the untimed
//! set-up they need (tokens minted up front, pools topped up before a delete cell).

use std::{
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use mqtt_tokend::proto::{
    ApplyTokenRequest, AuthenticateConnectRequest, AuthorizeTopicRequest, QueryTokenRequest,
    RevokeTokenRequest, TokenAction, TopicAction,
};
use mqtt_tokend_client::{AccessKey, Client};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::{
    args::Opts,
    measure::{ok_or, spread, Op, OpResult},
};

/// The instance every call uses.
pub const INSTANCE: &str = "post-cn-bench";
/// The MQTT client id of the connect and authorize calls.
pub const CLIENT_ID: &str = "GID_bench@@@device-1";
/// What every token grants.
pub const RESOURCE: &str = "bench/#";
const TOPIC: &str = "bench/device-1/up";

/// A pool of tokens (or etcd keys) made by the write cells and consumed by the delete cells.
pub type Pool = Arc<Mutex<Vec<String>>>;

/// An ApplyToken for [`RESOURCE`], read and write, valid for an hour.
pub fn apply_request() -> ApplyTokenRequest {
    ApplyTokenRequest {
        instance_id: INSTANCE.into(),
        actions: vec![TokenAction::Read as i32, TokenAction::Write as i32],
        resources: vec![RESOURCE.into()],
        expire_time: mqtt_tokend::core::now_ms() + 3_600_000,
    }
}

/// Takes one item from `pool`.
fn pop(pool: &Pool) -> Option<String> {
    pool.lock().unwrap_or_else(|p| p.into_inner()).pop()
}

/// Adds one item to `pool`.
pub fn push(pool: &Pool, item: String) {
    pool.lock().unwrap_or_else(|p| p.into_inner()).push(item);
}

/// Items left in `pool`.
pub fn pool_len(pool: &Pool) -> usize {
    pool.lock().unwrap_or_else(|p| p.into_inner()).len()
}

/// grpc.health.v1.Health/Check, expecting SERVING: the floor (and etcd's own health).
pub fn op_health() -> Op {
    Arc::new(|ch, _| {
        let mut c = HealthClient::new(ch.channel());
        Box::pin(async move {
            ok_or(
                c.check(HealthCheckRequest {
                    service: String::new(),
                })
                .await,
                |r| match r.into_inner().status {
                    1 => Ok(()),
                    s => Err(format!("health status {s}")),
                },
            )
        })
    })
}

/// QueryToken of a token from `sample`, expecting it live.
pub fn op_query(sample: Arc<Vec<String>>) -> Op {
    Arc::new(move |ch, seq| {
        let mut c = ch.tokens();
        // A cheap scramble so concurrent workers do not walk the sample in step.
        let i = (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as usize % sample.len();
        let req = QueryTokenRequest {
            instance_id: INSTANCE.into(),
            token: sample[i].clone(),
        };
        Box::pin(async move {
            ok_or(c.query_token(req).await, |r| {
                if r.into_inner().token_status {
                    Ok(())
                } else {
                    Err("token_status false".into())
                }
            })
        })
    })
}

/// ApplyToken; the new token goes into `pool` when there is one.
pub fn op_apply(pool: Option<Pool>) -> Op {
    Arc::new(move |ch, _| {
        let mut c = ch.tokens();
        let pool = pool.clone();
        Box::pin(async move {
            ok_or(c.apply_token(apply_request()).await, |r| {
                if let Some(p) = &pool {
                    push(p, r.into_inner().token);
                }
                Ok(())
            })
        })
    })
}

/// An op that takes one item of `pool` per call and ends the cell when the pool is empty.
pub fn op_draining<F, Fut>(pool: Pool, call: F) -> Op
where
    F: Fn(&Client, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = OpResult> + Send + 'static,
{
    Arc::new(move |ch, _| match pop(&pool) {
        Some(item) => Box::pin(call(ch, item)),
        None => Box::pin(async { OpResult::Exhausted }),
    })
}

/// RevokeToken of a token from `pool`, expecting a revocation event.
pub fn op_revoke(pool: Pool) -> Op {
    op_draining(pool, |ch, token| {
        let mut c = ch.tokens();
        async move {
            ok_or(
                c.revoke_token(RevokeTokenRequest {
                    instance_id: INSTANCE.into(),
                    token,
                })
                .await,
                |r| {
                    if r.into_inner().revision > 0 {
                        Ok(())
                    } else {
                        Err("revoke wrote no event".into())
                    }
                },
            )
        }
    })
}

/// A broker decision as a check: denied is an error with the reason code.
fn allowed(allowed: bool, reason: i32) -> Result<(), String> {
    if allowed {
        Ok(())
    } else {
        Err(format!("denied: {reason}"))
    }
}

/// AuthenticateConnect with these MQTT credentials, expecting it allowed.
pub fn op_connect(username: String, password: String) -> Op {
    Arc::new(move |ch, _| {
        let mut c = ch.broker();
        let req = AuthenticateConnectRequest {
            client_id: CLIENT_ID.into(),
            username: username.clone(),
            password: password.clone(),
        };
        Box::pin(async move {
            ok_or(c.authenticate_connect(req).await, |r| {
                let r = r.into_inner();
                allowed(r.allowed, r.reason)
            })
        })
    })
}

/// AuthorizeTopic (publish) by session handle, expecting it allowed.
pub fn op_authorize(handle: String) -> Op {
    Arc::new(move |ch, _| {
        let mut c = ch.broker();
        let req = AuthorizeTopicRequest {
            client_id: CLIENT_ID.into(),
            username: String::new(),
            password: String::new(),
            session_handle: handle.clone(),
            action: TopicAction::Publish as i32,
            topic: TOPIC.into(),
        };
        Box::pin(async move {
            ok_or(c.authorize_topic(req).await, |r| {
                let r = r.into_inner();
                allowed(r.allowed, r.reason)
            })
        })
    })
}

/// Runs `make(connection, i)` for every i below `n` from 64 tasks over `chans` (untimed
/// set-up) and collects what each call made.
pub async fn fill<F, Fut>(chans: Vec<Client>, n: usize, make: F) -> Vec<String>
where
    F: Fn(Client, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = String> + Send,
{
    let out = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let left = Arc::new(AtomicUsize::new(n));
    let make = Arc::new(make);
    let mut tasks = Vec::new();
    for w in 0..64 {
        let ch = chans[w % chans.len()].clone();
        let (out, left, make) = (out.clone(), left.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            while let Ok(i) =
                left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
            {
                let item = make(ch.clone(), i).await;
                out.lock().unwrap_or_else(|p| p.into_inner()).push(item);
            }
        }));
    }
    for t in tasks {
        t.await.expect("set-up task");
    }
    let v = std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
    v
}

/// Mints `n` tokens with 64 calls in flight spread over `endpoints` (untimed set-up).
pub async fn mint(endpoints: &[String], key: &AccessKey, n: usize) -> Vec<String> {
    let chans = spread(
        endpoints,
        Some(key),
        4usize.next_multiple_of(endpoints.len()),
    )
    .await;
    fill(chans, n, |ch, _| async move {
        ch.tokens()
            .apply_token(apply_request())
            .await
            .expect("set-up ApplyToken")
            .into_inner()
            .token
    })
    .await
}

/// Tops `pool` up to `need` items with `mint` before a delete cell.
pub async fn top_up<F, Fut>(pool: &Pool, need: usize, mint: F)
where
    F: FnOnce(usize) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let have = pool_len(pool);
    if have < need {
        eprintln!("  (minting {} items for the next delete cell)", need - have);
        let more = mint(need - have).await;
        pool.lock().unwrap_or_else(|p| p.into_inner()).extend(more);
    }
}

/// How many items a delete cell at `ops_per_s` consumes, with a margin, capped.
pub fn need_for(opts: &Opts, ops_per_s: f64) -> usize {
    let secs = (opts.warmup + opts.measure).as_secs_f64();
    ((ops_per_s * secs * 1.3) as usize).clamp(1_000, 40_000)
}
