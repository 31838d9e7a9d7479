//! Unit tests of the sled store that need its insides: stored bytes a client cannot write.
use prost::Message;

use super::*;
use crate::store::records::RevocationRecord;

#[test]
fn an_unknown_stored_revocation_kind_is_a_corrupt_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path()).expect("open");
    let record = RevocationRecord {
        revision: 1,
        kind: 99,
        ..RevocationRecord::default()
    };
    store
        .db
        .insert(revision_key(1), record.encode_to_vec())
        .expect("insert");
    match store.revocations(1, 10) {
        Err(StoreError::Corrupt { key, reason }) => {
            assert_eq!(key, hex(&revision_key(1)));
            assert!(reason.contains("unknown revocation kind 99"), "{reason}");
        }
        other => panic!("expected a corrupt record, got {other:?}"),
    }
}

#[test]
fn a_database_with_the_old_on_disk_token_indexes_loses_them_and_keeps_its_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id: TokenId = [7; 16];
    let record = TokenRecord {
        instance_id: "i1".into(),
        creator: "k1".into(),
        expire_ms: 5_000,
        read: true,
        ..TokenRecord::default()
    };
    {
        // What an earlier version left: the record, its two index entries and counters.
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("sled opens");
        db.insert(token_key(&id), record.encode_to_vec())
            .expect("insert");
        db.insert(
            [b"x/".as_slice(), &5_000u64.to_be_bytes(), &id].concat(),
            b"",
        )
        .expect("insert");
        db.insert([b"l/i1\0k1\0".as_slice(), &id].concat(), b"")
            .expect("insert");
        for key in ["m/token_index", "m/n_tokens", "m/n_revoked"] {
            db.insert(key, &1u64.to_be_bytes()).expect("insert");
        }
        db.flush().expect("flush");
    }
    let store = SledStore::open(dir.path()).expect("open");
    assert_eq!(
        store.expired_tokens(i64::MAX, 10).unwrap(),
        vec![(id, 5_000)]
    );
    assert_eq!(
        store.instance_tokens("i1", None, None, 10).unwrap().len(),
        1
    );
    assert_eq!(store.counts().unwrap().tokens, 1);
    for prefix in [b"x/".as_slice(), b"l/".as_slice()] {
        assert_eq!(
            store.db.scan_prefix(prefix).count(),
            0,
            "old index entries are gone"
        );
    }
    assert!(store.db.get("m/n_tokens").expect("read").is_none());
}

#[test]
fn a_clean_close_leaves_no_log_to_replay_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SledStore::open(dir.path()).expect("open");
        store
            .write_keys(vec![(b"z/close".to_vec(), Some(b"kept".to_vec()))])
            .expect("write");
    }
    let left = wal_record::files(&dir.path().join("wal")).expect("list");
    assert!(
        left.is_empty(),
        "log files left after a clean close: {left:?}"
    );
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(
        store.get(b"z/close").expect("read").as_deref(),
        Some(b"kept".as_slice())
    );
}

/// A token and the batch the core writes to revoke it: the revoked record and its event.
fn revoke_as_the_core_does(id: TokenId, revision: u64, at: i64) -> Vec<Op> {
    let token = IssuedToken {
        revoked_ms: Some(at),
        ..stored_token()
    };
    let event = RevocationEvent {
        revision,
        kind: crate::core::revocation::RevocationKind::TokenRevoked,
        instance_id: Some(token.instance_id.clone()),
        token_fingerprint: "fp".into(),
        client_id: String::new(),
        key_id: String::new(),
        reason: "RevokeToken".into(),
        expire_ms: Some(token.expire_ms),
        revoke_ms: at,
        token_handle: crate::core::token::handle(&id),
    };
    vec![Op::RevokeToken(id, token), Op::AppendRevocation(event)]
}

fn stored_token() -> IssuedToken {
    IssuedToken {
        instance_id: "i1".into(),
        actions: crate::core::token::Actions {
            read: true,
            write: false,
        },
        resources: vec!["a/#".into()],
        expire_ms: 9_000_000_000_000,
        creator: "k1".into(),
        create_ms: 1,
        revoked_ms: None,
        minted_revision: 0,
        keyring_id: 1,
    }
}

/// The record as stored, without what the store lays over it.
fn raw_record(store: &SledStore, id: &TokenId) -> Option<TokenRecord> {
    let key = token_key(id);
    store
        .get(&key)
        .expect("read")
        .map(|v| TokenRecord::decode(v.as_ref()).expect("a token record"))
}

#[test]
fn a_revocation_with_its_event_leaves_the_record_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path()).expect("open");
    let (a, b): (TokenId, TokenId) = ([1; 16], [2; 16]);
    store
        .apply_now(vec![
            Op::InsertToken(a, stored_token()),
            Op::InsertToken(b, stored_token()),
        ])
        .expect("mint");
    store
        .apply_now(revoke_as_the_core_does(a, 1, 77))
        .expect("revoke");
    // Only the event was written; reads see the revocation all the same.
    assert_eq!(raw_record(&store, &a).map(|r| r.revoke_ms), Some(0));
    assert_eq!(
        store.token(&a).expect("read").and_then(|t| t.revoked_ms),
        Some(77)
    );
    // Without its event in the batch, the record is written as before.
    let revoked = IssuedToken {
        revoked_ms: Some(88),
        ..stored_token()
    };
    store
        .apply_now(vec![Op::RevokeToken(b, revoked)])
        .expect("revoke without an event");
    assert_eq!(raw_record(&store, &b).map(|r| r.revoke_ms), Some(88));
    // A token minted, revoked and then written whole again in one batch is as the last
    // write says; one minted and revoked in one batch stays revoked.
    let (c, d): (TokenId, TokenId) = ([3; 16], [4; 16]);
    let mut ops = vec![Op::InsertToken(c, stored_token())];
    ops.extend(revoke_as_the_core_does(c, 2, 90));
    ops.push(Op::PutToken(c, stored_token()));
    ops.push(Op::InsertToken(d, stored_token()));
    ops.extend(revoke_as_the_core_does(d, 3, 91));
    store.apply_now(ops).expect("one batch");
    assert_eq!(
        store.token(&c).expect("read").and_then(|t| t.revoked_ms),
        None
    );
    assert_eq!(
        store.token(&d).expect("read").and_then(|t| t.revoked_ms),
        Some(91)
    );
    assert_eq!(store.counts().expect("counts").revoked_tokens, 3);
}
