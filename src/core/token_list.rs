//! ListTokens: the tokens of an instance, optionally only one access key's, by handle and in
//! pages, with what each grants and whether it is live. Never the token itself: a listing
//! can be logged, shown and stored.
//!
//! Pages follow a store index ordered by (instance, minting key, token id), so a cursor
//! (`next_token`: the last key and id of the page) keeps every page as cheap as the first.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use super::{
    access_key::check_instance_id, now_ms, token::handle, Actions, Caller, Core, Error, Field,
    Operation, Result,
};
use crate::store::TokenId;

/// Tokens per page when the caller names no size.
pub const DEFAULT_TOKEN_PAGE: usize = 100;
/// Most tokens one page may hold.
pub const MAX_TOKEN_PAGE: usize = 1000;

/// Where a token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    /// Valid: QueryToken says true.
    Live,
    /// Revoked on its own, by a scope, or by the deletion of its minting key.
    Revoked,
    /// Past its expiry, not swept yet.
    Expired,
}

/// One listed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Its handle.
    pub handle: String,
    /// What it grants.
    pub actions: Actions,
    /// Its topic filters, sorted.
    pub resources: Vec<String>,
    /// Expiry, ms since the Unix epoch.
    pub expire_ms: i64,
    /// When it was minted, ms since the Unix epoch.
    pub create_ms: i64,
    /// The access key that minted it.
    pub creator: String,
    /// Live, revoked or expired.
    pub status: TokenStatus,
    /// When it was revoked, if it was; `Some(0)` when revoked by its key's deletion, whose
    /// time is not kept.
    pub revoke_ms: Option<i64>,
    /// The revocation log's revision when it was minted.
    pub minted_revision: u64,
}

/// One page of tokens.
#[derive(Debug, Clone, Default)]
pub struct TokenPage {
    /// The tokens.
    pub tokens: Vec<TokenInfo>,
    /// Where the next page starts; empty on the last page.
    pub next_token: String,
}

/// The cursor after a token: its minting key and id.
fn encode_cursor(creator: &str, id: &TokenId) -> String {
    URL_SAFE_NO_PAD.encode([creator.as_bytes(), id].concat())
}

fn decode_cursor(next_token: &str) -> Result<(String, TokenId)> {
    let bad = || Error::invalid(Field::NextToken, "not a next_token of ListTokens");
    if next_token.len() > 256 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(next_token).map_err(|_| bad())?;
    if bytes.len() <= 16 {
        return Err(bad());
    }
    let (creator, id) = bytes.split_at(bytes.len() - 16);
    let creator = String::from_utf8(creator.to_vec()).map_err(|_| bad())?;
    let id: TokenId = id.try_into().map_err(|_| bad())?;
    Ok((creator, id))
}

impl Core {
    /// ListTokens: one page of the tokens of `instance_id` (only those `access_key_id`
    /// minted, unless it is empty), ordered by minting key, then id. Any key allowed on the
    /// instance may list its tokens, as it may query and revoke them.
    ///
    /// # Errors
    /// `InvalidParameter.InstanceId|AccessKeyId|PageSize|NextToken`,
    /// `InstancePermissionCheckFailed`, `QueryTokenOverFlow` (listing counts as querying),
    /// `InternalError`.
    pub fn list_tokens(
        &self,
        caller: &Caller,
        instance_id: &str,
        access_key_id: &str,
        next_token: &str,
        page_size: usize,
    ) -> Result<TokenPage> {
        check_instance_id(instance_id)?;
        caller.check_instance(instance_id)?;
        self.limiter
            .check(caller.access_key_id(), Operation::QueryToken)?;
        let limit = match page_size {
            0 => DEFAULT_TOKEN_PAGE,
            n if n > MAX_TOKEN_PAGE => {
                return Err(Error::invalid(
                    Field::PageSize,
                    format!("at most {MAX_TOKEN_PAGE}"),
                ))
            }
            n => n,
        };
        if access_key_id.len() > 64 {
            return Err(Error::invalid(Field::AccessKeyId, "at most 64 characters"));
        }
        let creator = (!access_key_id.is_empty()).then_some(access_key_id);
        let after = if next_token.is_empty() {
            None
        } else {
            Some(decode_cursor(next_token)?)
        };
        // One more than the page, so the last page says it is the last.
        let mut records = self.store.instance_tokens(
            instance_id,
            creator,
            after.as_ref().map(|(c, id)| (c.as_str(), id)),
            limit + 1,
        )?;
        let more = records.len() > limit;
        records.truncate(limit);
        let next_token = match records.last() {
            Some((id, last)) if more => encode_cursor(&last.creator, id),
            _ => String::new(),
        };
        let now = now_ms();
        let tokens = records
            .into_iter()
            .map(|(id, record)| {
                let revoke_ms = self.revocation_time(&record);
                let status = match revoke_ms {
                    Some(_) => TokenStatus::Revoked,
                    None if record.expire_ms <= now => TokenStatus::Expired,
                    None => TokenStatus::Live,
                };
                TokenInfo {
                    handle: handle(&id),
                    actions: record.actions,
                    resources: record.resources,
                    expire_ms: record.expire_ms,
                    create_ms: record.create_ms,
                    creator: record.creator,
                    status,
                    revoke_ms,
                    minted_revision: record.minted_revision,
                }
            })
            .collect();
        Ok(TokenPage { tokens, next_token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = [7u8; 16];
        let cursor = encode_cursor("MTAKabc", &id);
        assert_eq!(
            decode_cursor(&cursor).ok(),
            Some(("MTAKabc".to_owned(), id))
        );
        for bad in ["", "!!", &URL_SAFE_NO_PAD.encode([1u8; 16])] {
            let err = decode_cursor(bad).err().map(|e| e.code());
            assert_eq!(
                err.as_deref(),
                Some("InvalidParameter.NextToken"),
                "{bad:?}"
            );
        }
    }
}
