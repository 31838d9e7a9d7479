//! The sled store's keys (the layout is in the parent's documentation) and the codecs of the
//! values stored under them.

use prost::Message;

use crate::{
    core::{crypto::hex, revocation::RevocationEvent},
    store::{records::RevocationRecord, StoreError, StoreResult, TokenId},
};

/// The last revision of the revocation log.
pub(super) const LAST_REV: &[u8] = b"m/last_rev";
/// The oldest retained revision.
pub(super) const OLDEST_REV: &[u8] = b"m/oldest_rev";
/// Device credentials, across every instance.
pub(super) const N_DEVICES: &[u8] = b"m/n_devices";

pub(super) fn decode<M: Message + Default>(key: &[u8], bytes: &[u8]) -> StoreResult<M> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt {
        key: hex(key),
        reason: e.to_string(),
    })
}

/// Decodes a record and converts it to the core's type.
pub(super) fn decode_into<M: Message + Default, T: From<M>>(
    key: &[u8],
    bytes: &[u8],
) -> StoreResult<T> {
    decode::<M>(key, bytes).map(T::from)
}

pub(super) fn decode_revocation(key: &[u8], bytes: &[u8]) -> StoreResult<RevocationEvent> {
    RevocationEvent::try_from(decode::<RevocationRecord>(key, bytes)?).map_err(|reason| {
        StoreError::Corrupt {
            key: hex(key),
            reason,
        }
    })
}

pub(super) fn read_u64(key: &[u8], bytes: &[u8]) -> StoreResult<u64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        key: hex(key),
        reason: format!("expected 8 bytes, found {}", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}

pub(super) fn token_key(id: &TokenId) -> Vec<u8> {
    [b"t/".as_slice(), id].concat()
}

pub(super) fn device_key(instance_id: &str, client_id: &str) -> Vec<u8> {
    [b"d/", instance_id.as_bytes(), b"\0", client_id.as_bytes()].concat()
}

pub(super) fn group_prefix(instance_id: &str, group_id: &str) -> Vec<u8> {
    // Client ids are `<group>@@@<device>`, so a group's credentials share this prefix.
    [
        b"d/",
        instance_id.as_bytes(),
        b"\0",
        group_id.as_bytes(),
        b"@@@",
    ]
    .concat()
}

pub(super) fn device_index_key(device_key_id: &str) -> Vec<u8> {
    [b"k/", device_key_id.as_bytes()].concat()
}

pub(super) fn instance_count_key(instance_id: &str) -> Vec<u8> {
    [b"c/", instance_id.as_bytes()].concat()
}

pub(super) fn group_count_key(instance_id: &str, group_id: &str) -> Vec<u8> {
    [b"g/", instance_id.as_bytes(), b"\0", group_id.as_bytes()].concat()
}

pub(super) fn group_of(client_id: &str) -> &str {
    client_id.split("@@@").next().unwrap_or(client_id)
}

pub(super) fn meta_key(name: &str) -> Vec<u8> {
    [b"m/x/", name.as_bytes()].concat()
}

pub(super) fn revision_key(revision: u64) -> Vec<u8> {
    [b"r/".as_slice(), &revision.to_be_bytes()].concat()
}
