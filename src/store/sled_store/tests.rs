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
