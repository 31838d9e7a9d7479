//! Token handles, ListTokens and RevokeTokens through a real server: paging by cursor, handles
//! that cannot pass as tokens or passwords, revocation by handle, minting key and instance
//! flipping exactly their scope (across a restart), key deletion revoking its tokens, the
//! exact boundary against concurrent ApplyToken calls, and the one event per scope that
//! brokers match against their grants.
//!
//! One test binary: this file mints, lists and revokes through the API; the tests are in
//! `token_scope/` by concern: `listing` (ListTokens paging, handles, the `token` CLI),
//! `revoking` (each scope flips exactly its tokens, refusals, key deletion), `boundary` (the
//! exact cut-off under concurrent ApplyToken, the event a resuming broker matches).

mod common;

#[path = "token_scope/boundary.rs"]
mod boundary;
#[path = "token_scope/listing.rs"]
mod listing;
#[path = "token_scope/revoking.rs"]
mod revoking;

use std::{collections::HashMap, time::Duration};

use common::{now_ms, Key, TestServer};
use mqtt_tokend::proto::{
    revoke_tokens_request::Scope, token_service_client::TokenServiceClient,
    watch_revocations_response::Message, ApplyTokenRequest, ListTokensRequest, QueryTokenRequest,
    RevokeTokensRequest, TokenAction, TokenInfo, WatchRevocationsResponse,
};
use mqtt_tokend_client::AuthChannel;
use tonic::Streaming;

const I1: &str = "post-cn-one";
const I2: &str = "post-cn-two";
const HOUR: i64 = 3_600_000;
const WAIT: Duration = Duration::from_secs(20);

/// A minted token: the secret and its handle.
#[derive(Debug, Clone)]
struct Minted {
    token: String,
    handle: String,
}

async fn mint(ts: &TestServer, key: &Key, instance: &str) -> Minted {
    mint_with(&mut ts.tokens(key), instance).await
}

async fn mint_with(tokens: &mut TokenServiceClient<AuthChannel>, instance: &str) -> Minted {
    let r = tokens
        .apply_token(ApplyTokenRequest {
            instance_id: instance.into(),
            actions: vec![TokenAction::Read as i32, TokenAction::Write as i32],
            resources: vec!["devices/+/up".into()],
            expire_time: now_ms() + HOUR,
        })
        .await
        .expect("ApplyToken")
        .into_inner();
    Minted {
        token: r.token,
        handle: r.token_handle,
    }
}

/// `n` tokens of `key` on `instance`, minted by 16 tasks.
async fn mint_many(ts: &TestServer, key: &Key, instance: &str, n: usize) -> Vec<Minted> {
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let mut tokens = ts.tokens(key);
            let instance = instance.to_owned();
            let share = n / 16 + usize::from(t < n % 16);
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(share);
                for _ in 0..share {
                    out.push(mint_with(&mut tokens, &instance).await);
                }
                out
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.extend(t.await.expect("minting task"));
    }
    out
}

/// The next revocation event on a stream, skipping heartbeats.
async fn next_event(
    s: &mut Streaming<WatchRevocationsResponse>,
) -> mqtt_tokend::proto::RevocationEvent {
    loop {
        let m = tokio::time::timeout(WAIT, s.message())
            .await
            .expect("an event in time")
            .expect("stream ok")
            .expect("stream open");
        if let Some(Message::Event(e)) = m.message {
            return e;
        }
    }
}

async fn live(ts: &TestServer, instance: &str, token: &str) -> bool {
    ts.tokens(&ts.root)
        .query_token(QueryTokenRequest {
            instance_id: instance.into(),
            token: token.into(),
        })
        .await
        .expect("QueryToken")
        .into_inner()
        .token_status
}

async fn revoke(ts: &TestServer, key: &Key, instance: &str, scope: Scope) -> u64 {
    ts.tokens(key)
        .revoke_tokens(RevokeTokensRequest {
            instance_id: instance.into(),
            scope: Some(scope),
        })
        .await
        .expect("RevokeTokens")
        .into_inner()
        .revision
}

/// Every token of `instance` (of `key_id`, if not empty), page by page; returns the pages.
async fn list_pages(
    ts: &TestServer,
    instance: &str,
    key_id: &str,
    page_size: u32,
) -> Vec<Vec<TokenInfo>> {
    let mut pages = Vec::new();
    let mut next_token = String::new();
    loop {
        let page = ts
            .tokens(&ts.root)
            .list_tokens(ListTokensRequest {
                instance_id: instance.into(),
                access_key_id: key_id.into(),
                page_size,
                next_token,
            })
            .await
            .expect("ListTokens")
            .into_inner();
        pages.push(page.tokens);
        if page.next_token.is_empty() {
            return pages;
        }
        next_token = page.next_token;
    }
}

async fn states(ts: &TestServer, instance: &str) -> HashMap<String, TokenInfo> {
    list_pages(ts, instance, "", 1000)
        .await
        .into_iter()
        .flatten()
        .map(|t| (t.token_handle.clone(), t))
        .collect()
}

/// Whether each token is live, checked through QueryToken.
async fn liveness(ts: &TestServer, instance: &str, tokens: &[Minted]) -> Vec<bool> {
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        out.push(live(ts, instance, &t.token).await);
    }
    out
}
