//! Broker sessions on etcd: each swap is one transaction comparing the session's key with the
//! expected record (or its absence), so CONNECTs on several replicas never lose an update.
//! Sessions are not part of the write version: they race only on their own key.

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use prost::Message;

use super::{keys, EtcdStore};
use crate::store::{BrokerSessionRecord, BrokerSessionStore, StoreError, StoreFuture, StoreResult};

impl BrokerSessionStore for EtcdStore {
    fn broker_session(
        &self,
        namespace: &str,
        client_id: &str,
    ) -> StoreResult<Option<BrokerSessionRecord>> {
        self.inner.mirror().broker_session(namespace, client_id)
    }

    fn swap_broker_session<'a>(
        &'a self,
        namespace: &'a str,
        client_id: &'a str,
        expected: Option<&'a BrokerSessionRecord>,
        new: Option<&'a BrokerSessionRecord>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            if new.is_some_and(|n| n.namespace != namespace || n.client_id != client_id) {
                return Err(StoreError::Backend(
                    "a broker session may only replace the session of its own client id".into(),
                ));
            }
            let inner = &self.inner;
            let key = inner.key(&keys::session_key(namespace, client_id));
            let compare = match expected {
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                Some(rec) => Compare::value(key.clone(), CompareOp::Equal, rec.encode_to_vec()),
            };
            let op = match new {
                Some(rec) => TxnOp::put(key, rec.encode_to_vec(), None),
                None => TxnOp::delete(key, None),
            };
            // `w` too: a replica's read barrier then covers sessions (CheckAcl on another
            // replica right after the CONNECT finds the session).
            let touch = TxnOp::put(
                inner.key(keys::TOUCH),
                inner.replica.as_bytes().to_vec(),
                None,
            );
            let resp = inner
                .client
                .kv_client()
                .txn(Txn::new().when(vec![compare]).and_then(vec![op, touch]))
                .await
                .map_err(super::etcd_err)?;
            if !resp.succeeded() {
                return Ok(false);
            }
            // Visible here at once; the watch brings the same value again.
            let mirror = inner.mirror();
            let current = mirror.broker_session(namespace, client_id)?;
            mirror.swap_session_now(namespace, client_id, current.as_ref(), new)?;
            Ok(true)
        })
    }

    fn broker_sessions_by_credential(
        &self,
        namespace: &str,
        credential: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<BrokerSessionRecord>> {
        self.inner
            .mirror()
            .broker_sessions_by_credential(namespace, credential, after, limit)
    }

    fn expired_broker_sessions(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<BrokerSessionRecord>> {
        self.inner.mirror().expired_broker_sessions(now_ms, limit)
    }
}
