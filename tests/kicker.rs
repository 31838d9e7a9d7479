//! The kicker's contract with broker management APIs: a real mqtt-tokend, the real
//! `mqtt-tokend kicker` process, and a local HTTP server standing in for EMQX's and rmqtt's
//! APIs that records every call. Checks the method, the path (client id percent-encoded), the
//! `Authorization` header and exactly which client ids are kicked; retries of a failing API;
//! the exit (state unsaved) when a kick keeps failing; resume from the state file after a
//! restart; and the snapshot read on a first start and on OUT_OF_RANGE.
//!
//! Exactness: the kicker handles events in revision order, so once the kick of a later
//! revocation has arrived, every kick of the earlier ones has too; each test ends with such a
//! sentinel before comparing the calls it recorded.

mod broker_kit;
mod common;
mod kicker_kit;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use axum::{extract::State, http::StatusCode, Router};
use broker_kit::{device_login, signature_login, token, token_login, Login, INSTANCE};
use common::{Key, TestServer};
use kicker_kit::{saved_revision, state_file, AuthEndpoint, BrokerApiFlags, Kicker, WAIT};
use mqtt_tokend::proto::{
    revoke_tokens_request::Scope, DeleteAccessKeyRequest, RefreshDeviceCredentialRequest,
    RevokeTokenRequest, RevokeTokensRequest, TokenAction,
};
use tokio::sync::mpsc;

const RW: &[TokenAction] = &[TokenAction::Read, TokenAction::Write];
const HOUR: i64 = 3_600_000;

/// One request the fake broker API received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    method: String,
    /// The path as sent, still percent-encoded.
    path: String,
    authorization: Option<String>,
}

#[derive(Default)]
struct ApiState {
    /// Statuses to answer, in turn, for a path; afterwards (or for other paths) `ok`.
    script: HashMap<String, VecDeque<u16>>,
    ok: u16,
    calls: Vec<Call>,
}

/// A local HTTP server that records every request and answers from a script.
struct FakeApi {
    url: String,
    state: Arc<Mutex<ApiState>>,
    calls: mpsc::UnboundedReceiver<Call>,
}

impl FakeApi {
    /// Answers `ok` (EMQX: 204, rmqtt: 200) unless scripted otherwise.
    async fn start(ok: u16) -> Self {
        let state = Arc::new(Mutex::new(ApiState {
            ok,
            ..ApiState::default()
        }));
        let (tx, calls) = mpsc::unbounded_channel();
        let app = Router::new()
            .fallback(
                |State((state, tx)): State<(Arc<Mutex<ApiState>>, mpsc::UnboundedSender<Call>)>,
                 request: axum::extract::Request| async move {
                    let call = Call {
                        method: request.method().to_string(),
                        path: request.uri().path().to_owned(),
                        authorization: request
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                    };
                    let status = {
                        let mut s = state.lock().unwrap();
                        s.calls.push(call.clone());
                        let ok = s.ok;
                        s.script
                            .get_mut(&call.path)
                            .and_then(VecDeque::pop_front)
                            .unwrap_or(ok)
                    };
                    let _ = tx.send(call);
                    StatusCode::from_u16(status).unwrap()
                },
            )
            .with_state((state.clone(), tx));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state, calls }
    }

    /// Answers `statuses` in turn to the next requests for `path`.
    fn script(&self, path: &str, statuses: &[u16]) {
        self.state
            .lock()
            .unwrap()
            .script
            .insert(path.to_owned(), statuses.iter().copied().collect());
    }

    /// The next request.
    async fn next_call(&mut self) -> Call {
        tokio::time::timeout(WAIT, self.calls.recv())
            .await
            .expect("a broker API call in time")
            .expect("server running")
    }

    /// The paths of the next `n` requests, sorted (kicks of one event run concurrently).
    async fn next_paths(&mut self, n: usize) -> Vec<String> {
        let mut paths = Vec::new();
        for _ in 0..n {
            paths.push(self.next_call().await.path);
        }
        paths.sort();
        paths
    }

    /// Every request so far.
    fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    fn clear(&self) {
        self.state.lock().unwrap().calls.clear();
    }
}

/// The service and the broker key, with helpers to connect clients and revoke.
struct Setup {
    ts: TestServer,
    broker_key: Key,
    auth: AuthEndpoint,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Self {
        let ts = TestServer::start().await;
        let broker_key = ts.create_key(&[INSTANCE]).await;
        let auth = AuthEndpoint::new(&ts, &broker_key);
        Self {
            ts,
            broker_key,
            auth,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn service(&self) -> String {
        format!("http://{}", self.ts.server().grpc_addr())
    }

    fn kicker(&self, api: &BrokerApiFlags) -> Kicker {
        Kicker::start(
            &self.service(),
            &self.broker_key,
            api,
            &state_file(&self.dir),
        )
    }

    /// A client on a new token (username with the root key); returns the token.
    async fn token_client(&self, client_id: &str) -> String {
        let (t, _) = token(&self.ts, RW, &["a/#"], HOUR).await;
        self.auth
            .connect(client_id, &token_login(&self.ts, &format!("RW|{t}")))
            .await;
        t
    }

    /// Revokes `token`; returns the revision.
    async fn revoke(&self, token: &str) -> u64 {
        self.ts
            .tokens(&self.ts.root)
            .revoke_token(RevokeTokenRequest {
                instance_id: INSTANCE.into(),
                token: token.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .revision
    }
}

fn emqx(api: &FakeApi) -> BrokerApiFlags {
    BrokerApiFlags {
        broker: "emqx",
        url: api.url.clone(),
        extra: vec!["--kick-backoff-min".into(), "20ms".into()],
        env: vec![
            ("MQTT_TOKEND_KICKER_BROKER_API_KEY".into(), "ek_4f2a".into()),
            (
                "MQTT_TOKEND_KICKER_BROKER_API_SECRET".into(),
                "s3cr:et".into(),
            ),
        ],
    }
}

fn rmqtt(api: &FakeApi) -> BrokerApiFlags {
    BrokerApiFlags {
        broker: "rmqtt",
        url: api.url.clone(),
        extra: vec!["--kick-backoff-min".into(), "20ms".into()],
        env: vec![(
            "MQTT_TOKEND_KICKER_BROKER_API_TOKEN".into(),
            "rmqtt-t0ken".into(),
        )],
    }
}

fn emqx_path(client_id_encoded: &str) -> String {
    format!("/api/v5/clients/{client_id_encoded}")
}

fn rmqtt_path(client_id_encoded: &str) -> String {
    format!("/api/v1/clients/{client_id_encoded}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emqx_kicks_exactly_the_clients_of_each_revoked_credential() {
    let s = Setup::start().await;
    let mut api = FakeApi::start(204).await;

    // Sessions in every mode, recorded by /mqtt/auth under the broker's key.
    let t_a = s.token_client("GID_kick@@@a").await;
    let t_b = s.token_client("GID_kick@@@b").await;
    let (d1, _) = device_login(&s.ts, "GID_kick@@@d1").await;
    s.auth.connect("GID_kick@@@d1", &d1).await;
    let (d2, _) = device_login(&s.ts, "GID_kick@@@d2").await;
    s.auth.connect("GID_kick@@@d2", &d2).await;
    let app = s.ts.create_key(&[INSTANCE]).await;
    s.auth
        .connect("GID_kick@@@sig", &signature_login(&app, "GID_kick@@@sig"))
        .await;
    // Token mode with the app key in the username: rests on that key too.
    let (t_k, _) = token(&s.ts, RW, &["a/#"], HOUR).await;
    s.auth
        .connect(
            "GID_kick@@@tk",
            &Login {
                username: format!("Token|{}|{INSTANCE}", app.id),
                password: format!("RW|{t_k}"),
            },
        )
        .await;

    let mut kicker = s.kicker(&emqx(&api));
    kicker.wait_log(&["snapshot complete"]).await;

    // RevokeToken: exactly the client on that token; method, path and Basic auth as EMQX's.
    s.revoke(&t_a).await;
    let call = api.next_call().await;
    assert_eq!(
        call,
        Call {
            method: "DELETE".into(),
            path: emqx_path("GID_kick%40%40%40a"),
            // base64("ek_4f2a:s3cr:et")
            authorization: Some("Basic ZWtfNGYyYTpzM2NyOmV0".into()),
        }
    );

    // RefreshDeviceCredential: exactly that device.
    s.ts.devices(&s.ts.root)
        .refresh_device_credential(RefreshDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: "GID_kick@@@d1".into(),
        })
        .await
        .unwrap();
    assert_eq!(api.next_paths(1).await, [emqx_path("GID_kick%40%40%40d1")]);

    // Deleting an access key: every Signature and Token session naming it.
    s.ts.access_keys(&s.ts.root)
        .delete_access_key(DeleteAccessKeyRequest {
            access_key_id: app.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        api.next_paths(2).await,
        [
            emqx_path("GID_kick%40%40%40sig"),
            emqx_path("GID_kick%40%40%40tk")
        ]
    );

    // Sentinel: b's kick comes after every kick of the earlier events.
    s.revoke(&t_b).await;
    assert_eq!(api.next_paths(1).await, [emqx_path("GID_kick%40%40%40b")]);
    let calls = api.calls();
    assert_eq!(calls.len(), 5, "{calls:#?}");
    assert!(calls.iter().all(|c| c.method == "DELETE"
        && c.authorization.as_deref() == Some("Basic ZWtfNGYyYTpzM2NyOmV0")));
    assert!(
        !calls.iter().any(|c| c.path.contains("d2")),
        "d2 was never revoked"
    );
    assert!(kicker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scope_event_kicks_every_client_of_the_scope_and_no_other() {
    let s = Setup::start().await;
    let mut api = FakeApi::start(204).await;
    // Tokens minted by the root key on the instance, and a device that rests on no token.
    s.token_client("GID_scope@@@a").await;
    s.token_client("GID_scope@@@b").await;
    let (d, _) = device_login(&s.ts, "GID_scope@@@d").await;
    s.auth.connect("GID_scope@@@d", &d).await;
    let mut kicker = s.kicker(&emqx(&api));
    kicker.wait_log(&["snapshot complete"]).await;

    // RevokeTokens by minting key: one event, both token clients kicked.
    s.ts.tokens(&s.ts.root)
        .revoke_tokens(RevokeTokensRequest {
            instance_id: INSTANCE.into(),
            scope: Some(Scope::AccessKeyId(s.ts.root.id.clone())),
        })
        .await
        .unwrap();
    let mut kicked = api.next_paths(2).await;
    kicked.sort();
    assert_eq!(
        kicked,
        [
            emqx_path("GID_scope%40%40%40a"),
            emqx_path("GID_scope%40%40%40b")
        ]
    );
    // A new token client after the cut-off, then the whole instance: every Token session of
    // the instance is listed, so c is kicked and a, b (still recorded: a real broker answers
    // 404 for them) once more; the device is not.
    s.token_client("GID_scope@@@c").await;
    s.ts.tokens(&s.ts.root)
        .revoke_tokens(RevokeTokensRequest {
            instance_id: INSTANCE.into(),
            scope: Some(Scope::AllTokens(true)),
        })
        .await
        .unwrap();
    let mut kicked = api.next_paths(3).await;
    kicked.sort();
    assert_eq!(
        kicked,
        [
            emqx_path("GID_scope%40%40%40a"),
            emqx_path("GID_scope%40%40%40b"),
            emqx_path("GID_scope%40%40%40c")
        ]
    );

    // Sentinel: the device's own revocation; it was never kicked before.
    s.ts.devices(&s.ts.root)
        .refresh_device_credential(RefreshDeviceCredentialRequest {
            instance_id: INSTANCE.into(),
            client_id: "GID_scope@@@d".into(),
        })
        .await
        .unwrap();
    assert_eq!(api.next_paths(1).await, [emqx_path("GID_scope%40%40%40d")]);
    assert_eq!(api.calls().len(), 6, "{:#?}", api.calls());
    assert!(kicker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmqtt_kicks_with_its_bearer_token_retries_failures_and_accepts_404() {
    let s = Setup::start().await;
    let mut api = FakeApi::start(200).await;
    let t_a = s.token_client("GID_rmqt@@@a").await;
    let t_b = s.token_client("GID_rmqt@@@b").await;
    let t_c = s.token_client("GID_rmqt@@@c").await;
    let mut kicker = s.kicker(&rmqtt(&api));
    kicker.wait_log(&["snapshot complete"]).await;

    // The API fails twice, then succeeds: three calls, the kick done, the revision saved.
    let path_a = rmqtt_path("GID_rmqt%40%40%40a");
    api.script(&path_a, &[503, 500]);
    let rev_a = s.revoke(&t_a).await;
    for _ in 0..3 {
        let call = api.next_call().await;
        assert_eq!(
            call,
            Call {
                method: "DELETE".into(),
                path: path_a.clone(),
                authorization: Some("Bearer rmqtt-t0ken".into()),
            }
        );
    }
    kicker.wait_saved(rev_a).await;

    // 404: the client is already gone, which is success.
    let path_b = rmqtt_path("GID_rmqt%40%40%40b");
    api.script(&path_b, &[404]);
    let rev_b = s.revoke(&t_b).await;
    assert_eq!(api.next_paths(1).await, std::slice::from_ref(&path_b));
    kicker.wait_saved(rev_b).await;

    s.revoke(&t_c).await;
    assert_eq!(api.next_paths(1).await, [rmqtt_path("GID_rmqt%40%40%40c")]);
    let paths: Vec<_> = api.calls().into_iter().map(|c| c.path).collect();
    assert_eq!(
        paths,
        [
            path_a.clone(),
            path_a.clone(),
            path_a,
            path_b,
            rmqtt_path("GID_rmqt%40%40%40c")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_that_keeps_failing_stops_the_kicker_and_its_restart_retries() {
    let s = Setup::start().await;
    let mut api = FakeApi::start(204).await;
    let t_a = s.token_client("GID_fail@@@a").await;
    let t_b = s.token_client("GID_fail@@@b").await;
    let mut flags = emqx(&api);
    flags.extra.extend(["--kick-attempts".into(), "3".into()]);
    let mut kicker = s.kicker(&flags);
    kicker.wait_log(&["snapshot complete"]).await;
    let rev_a = s.revoke(&t_a).await;
    kicker.wait_saved(rev_a).await;
    api.next_call().await;

    let path_b = emqx_path("GID_fail%40%40%40b");
    api.script(&path_b, &[503, 503, 503]);
    let rev_b = s.revoke(&t_b).await;
    for _ in 0..3 {
        assert_eq!(api.next_call().await.path, path_b);
    }
    let status = kicker.wait_exit().await;
    assert!(!status.success(), "the kicker must fail loudly");
    assert!(kicker.dump_log().contains("kick failed"));
    assert_eq!(
        saved_revision(&state_file(&s.dir)),
        Some(rev_a),
        "the failed event is not saved"
    );

    // The restart handles the unsaved event again; the API works now.
    let mut kicker = s.kicker(&flags);
    assert_eq!(api.next_call().await.path, path_b);
    kicker.wait_saved(rev_b).await;
    assert_eq!(api.calls().len(), 1 + 3 + 1);

    // A key the service refuses stops the kicker at once, with the service's reason.
    let mut wrong = s.broker_key.clone();
    wrong.secret.push('x');
    let mut refused = Kicker::start(&s.service(), &wrong, &flags, &s.dir.path().join("other"));
    assert!(!refused.wait_exit().await.success());
    assert!(
        refused.dump_log().contains("InvalidAccessKeySecret"),
        "{}",
        refused.dump_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_state_file_and_a_snapshot_kicks_what_it_missed() {
    let s = Setup::start().await;
    let mut api = FakeApi::start(204).await;
    let t_a = s.token_client("GID_snap@@@a").await;
    let t_b = s.token_client("GID_snap@@@b").await;
    let t_c = s.token_client("GID_snap@@@c").await;
    let t_d = s.token_client("GID_snap@@@d").await;

    // First start, no state file: a revocation made before it is in the snapshot.
    s.revoke(&t_a).await;
    let mut kicker = s.kicker(&emqx(&api));
    assert_eq!(api.next_paths(1).await, [emqx_path("GID_snap%40%40%40a")]);
    let snapshot_end: u64 = kicker
        .wait_log(&["snapshot complete"])
        .await
        .split("revision=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .expect("the snapshot's revision in the log");
    kicker.wait_saved(snapshot_end).await;
    let rev_b = s.revoke(&t_b).await;
    assert_eq!(api.next_paths(1).await, [emqx_path("GID_snap%40%40%40b")]);
    kicker.wait_saved(rev_b).await;
    assert!(
        kicker.terminate().await.success(),
        "SIGTERM is a clean stop"
    );
    assert_eq!(saved_revision(&state_file(&s.dir)), Some(rev_b));

    // While it is down: c is revoked. The restart kicks c and nothing it handled before; its
    // first service endpoint is down, so it moves on to the second.
    api.clear();
    let rev_c = s.revoke(&t_c).await;
    let services = format!("http://{},{}", common::free_addr(), s.service());
    let mut kicker = Kicker::start(&services, &s.broker_key, &emqx(&api), &state_file(&s.dir));
    kicker
        .wait_log(&["switching to the next service endpoint"])
        .await;
    assert_eq!(api.next_paths(1).await, [emqx_path("GID_snap%40%40%40c")]);
    kicker.wait_saved(rev_c).await;
    assert_eq!(api.calls().len(), 1, "{:#?}", api.calls());
    drop(kicker);

    // A state file ahead of the service's log (a service whose data was replaced):
    // OUT_OF_RANGE, then a snapshot, which kicks every session on a revoked credential that
    // is still listed (a, b, c: their sessions last until their tokens expire) and d's.
    api.clear();
    std::fs::write(state_file(&s.dir), "1000\n").unwrap();
    let mut kicker = s.kicker(&emqx(&api));
    let line = kicker.wait_log(&["reading a snapshot"]).await;
    assert!(line.contains("OutOfRange"), "{line}");
    let rev_d = s.revoke(&t_d).await;
    let mut paths = api.next_paths(4).await;
    paths.sort();
    assert_eq!(
        paths,
        ["a", "b", "c", "d"].map(|c| emqx_path(&format!("GID_snap%40%40%40{c}")))
    );
    kicker.wait_saved(rev_d).await;
    assert_eq!(saved_revision(&state_file(&s.dir)), Some(rev_d));
}
