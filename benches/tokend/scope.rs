//! Revocation by scope at scale (issue 14, `--only scope`): `--scope-tokens` live tokens of one
//! access key (100,000 by default) and a few thousand of another, preloaded in-process, then
//! served by a fresh child process. One RevokeTokens by key revokes all of the first key's
//! tokens with one durable write and one event; the cell times the call and the event's arrival
//! on a watch stream, checks every sampled token flipped (and the other key's did not), measures
//! QueryToken before and after (the tombstone check is in memory), and for scale revokes a few
//! thousand tokens one by one with RevokeToken.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mqtt_tokend::{
    core::{Actions, TokenRequest},
    proto::{
        revoke_tokens_request::Scope, watch_revocations_response::Message, QueryTokenRequest,
        RevokeTokenRequest, RevokeTokensRequest, StartMode, WatchRevocationsRequest,
    },
};

use crate::{
    args::Opts,
    measure::{connect, ok_or, run_cell, Op, Target},
    ops::{op_query, INSTANCE, RESOURCE},
    preload::preload_in_process,
    report::{Peer, Report},
    server::Tokend,
};

/// Tokens of the other key, all kept: checked live after the scope revocation, then revoked
/// one by one for the per-token comparison.
const OTHER_TOKENS: usize = 5_000;
/// Calls in flight for the per-token revocations.
const IN_FLIGHT: usize = 64;
/// Repeated scope revocations (each a fresh tombstone and event) for a latency spread.
const REPEATS: usize = 20;

fn token_request() -> TokenRequest {
    TokenRequest {
        instance_id: INSTANCE.into(),
        actions: Actions {
            read: true,
            write: true,
        },
        resources: vec![RESOURCE.into()],
        expire_time: mqtt_tokend::core::now_ms() + 6 * 3_600_000,
    }
}

/// QueryToken of a token from `sample`, expecting it revoked.
fn op_query_revoked(sample: Arc<Vec<String>>) -> Op {
    Arc::new(move |ch, seq| {
        let mut c = ch.tokens();
        let i = (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as usize % sample.len();
        let req = QueryTokenRequest {
            instance_id: INSTANCE.into(),
            token: sample[i].clone(),
        };
        Box::pin(async move {
            ok_or(c.query_token(req).await, |r| {
                if r.into_inner().token_status {
                    Err("a revoked token is live".into())
                } else {
                    Ok(())
                }
            })
        })
    })
}

/// Waits for the event of `revision` (the only one: a scope is one event); the time since `t0`.
async fn event_after(
    watch: &mut tonic::Streaming<mqtt_tokend::proto::WatchRevocationsResponse>,
    revision: u64,
    t0: Instant,
) -> Duration {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .expect("the event in time")
            .expect("stream")
            .expect("stream open");
        if let Some(Message::Event(e)) = m.message {
            assert_eq!(e.revision, revision, "one event per scope");
            return t0.elapsed();
        }
    }
}

/// `n` with thousands separators, as the docs write numbers.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The section: preload, revoke by key, measure.
pub async fn section(opts: &Opts, report: &mut Report) {
    let n = opts.scope_tokens;
    eprintln!("  preloading {n} tokens of one key and {OTHER_TOKENS} of another in-process ...");
    let tmp = tempfile::tempdir().expect("tempdir");
    // The key whose tokens the cell revokes; the root key mints the others.
    let app = Arc::new(Mutex::new(None));
    let keep = app.clone();
    preload_in_process(
        tmp.path(),
        1,
        "key",
        |_| {},
        move |core, root, _| {
            let keep = keep.clone();
            async move {
                let key = core
                    .create_access_key(&root, vec![INSTANCE.into()], "scope bench".into())
                    .await
                    .expect("create the key");
                *keep.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
            }
        },
    )
    .await;
    let app = app
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .expect("the key was created");
    let sample = Arc::new(Mutex::new(Vec::with_capacity(n / 100 + 1)));
    let keep = sample.clone();
    let (id, secret) = (app.access_key_id.clone(), app.access_key_secret.clone());
    let took = preload_in_process(
        tmp.path(),
        n,
        "key tokens",
        |_| {},
        move |core, _, i| {
            let (keep, id, secret) = (keep.clone(), id.clone(), secret.clone());
            async move {
                let caller = core
                    .authenticate(&id, &secret)
                    .expect("the key authenticates");
                let applied = core
                    .apply_token(&caller, token_request())
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
    let others = Arc::new(Mutex::new(Vec::with_capacity(OTHER_TOKENS)));
    let keep = others.clone();
    preload_in_process(
        tmp.path(),
        OTHER_TOKENS,
        "other tokens",
        |_| {},
        move |core, root, _| {
            let keep = keep.clone();
            async move {
                let applied = core
                    .apply_token(&root, token_request())
                    .await
                    .expect("preload apply_token");
                keep.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(applied.token);
            }
        },
    )
    .await;
    let sample = Arc::new(std::mem::take(
        &mut *sample.lock().unwrap_or_else(|p| p.into_inner()),
    ));
    let others = std::mem::take(&mut *others.lock().unwrap_or_else(|p| p.into_inner()));

    let (server, _) = Tokend::start(tmp.path()).await;
    let target: Target = server.target();
    let client = connect(&server.endpoint, Some(&server.key())).await;
    let live_cell = run_cell(opts, &target, 64, op_query(sample.clone())).await;
    let mut watch = client
        .revocations()
        .watch_revocations(WatchRevocationsRequest {
            start_mode: StartMode::Now as i32,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let revoke = |scope| {
        let mut tokens = client.tokens();
        async move {
            let t0 = Instant::now();
            let revision = tokens
                .revoke_tokens(RevokeTokensRequest {
                    instance_id: INSTANCE.into(),
                    scope: Some(scope),
                })
                .await
                .expect("RevokeTokens")
                .into_inner()
                .revision;
            (revision, t0)
        }
    };

    // The call the incident procedure makes.
    let (revision, t0) = revoke(Scope::AccessKeyId(app.access_key_id.clone())).await;
    let call = t0.elapsed();
    let event = event_after(&mut watch, revision, t0).await;

    // Every sampled token of the key is revoked, every token of the other key is live.
    let tokens = client.tokens();
    let query = |token: String| {
        let mut tokens = tokens.clone();
        async move {
            tokens
                .query_token(QueryTokenRequest {
                    instance_id: INSTANCE.into(),
                    token,
                })
                .await
                .expect("QueryToken")
                .into_inner()
                .token_status
        }
    };
    for t in sample.iter() {
        assert!(
            !query(t.clone()).await,
            "a token of the revoked key is live"
        );
    }
    for t in &others {
        assert!(query(t.clone()).await, "a token of another key was revoked");
    }
    let revoked_cell = run_cell(opts, &target, 64, op_query_revoked(sample.clone())).await;

    // The same call again (a later cut-off each time): its spread.
    let mut repeats = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        let (_, t0) = revoke(Scope::AccessKeyId(app.access_key_id.clone())).await;
        repeats.push(ms(t0.elapsed()));
    }
    repeats.sort_by(f64::total_cmp);

    // For scale: the other key's tokens revoked one by one, IN_FLIGHT at a time.
    let t0 = Instant::now();
    let queue = Arc::new(Mutex::new(others));
    let mut workers = Vec::with_capacity(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        let queue = queue.clone();
        let mut tokens = client.tokens();
        workers.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some(token) = next else { return };
                tokens
                    .revoke_token(RevokeTokenRequest {
                        instance_id: INSTANCE.into(),
                        token,
                    })
                    .await
                    .expect("RevokeToken");
            }
        }));
    }
    for w in workers {
        w.await.expect("revoke worker");
    }
    let one_by_one = t0.elapsed();
    server.stop();

    report.add(
        "Revocation by scope",
        "QueryToken (live token), before",
        64,
        live_cell,
        Peer::Range,
    );
    report.add(
        "Revocation by scope",
        "QueryToken (token of the revoked key), after",
        64,
        revoked_cell,
        Peer::Range,
    );
    let per_token_rate = OTHER_TOKENS as f64 / one_by_one.as_secs_f64();
    let n = thousands(n);
    report.extra.push(format!(
        "\n### Revoking {n} live tokens of one key (RevokeTokens by access key)\n\n\
         | | figure |\n|---|---:|\n\
         | RevokeTokens call (durable, one tombstone, one event) | {:.1} ms |\n\
         | event on a watch stream (from the call) | {:.1} ms |\n\
         | the same call repeated {REPEATS}×: p50 / max | {:.1} / {:.1} ms |\n\
         | for comparison: RevokeToken one by one, {IN_FLIGHT} in flight | {per_token_rate:.0} tokens/s ({:.1} s for {n}) |\n\n\
         Preload: {n} tokens in {:.1} s in-process. After the call all {} sampled tokens of the key \
         answer QueryToken false and all {OTHER_TOKENS} tokens of another key true.",
        ms(call),
        ms(event),
        repeats[REPEATS / 2],
        repeats[REPEATS - 1],
        opts.scope_tokens as f64 / per_token_rate,
        took.as_secs_f64(),
        sample.len(),
    ));
}
