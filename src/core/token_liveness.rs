//! What QueryToken needs to know of a stored token: who minted it, when it expires, and
//! whether it was revoked on its own. Not its grant: a store can keep this for every token in
//! memory and answer without reading the record (see `Store::token_liveness`).

use std::sync::Arc;

use super::token::IssuedToken;

/// The instance a token was minted for and the access key that minted it: what a scope
/// revocation or a key's deletion is matched against. Shared by every token of the pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenOwner {
    /// The instance.
    pub instance_id: Arc<str>,
    /// The minting access key's id.
    pub creator: Arc<str>,
}

/// A stored token's liveness facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLiveness {
    /// Who minted it, for what instance.
    pub owner: Arc<TokenOwner>,
    /// Expiry, ms since the Unix epoch.
    pub expire_ms: i64,
    /// The revocation log's last revision when it was minted (see [`IssuedToken`]).
    pub minted_revision: u64,
    /// Revoked on its own (RevokeToken, RevokeTokens by handle). Scope revocations and key
    /// deletions are not stored with the token; the core checks those.
    pub revoked: bool,
}

impl From<&IssuedToken> for TokenLiveness {
    fn from(t: &IssuedToken) -> Self {
        Self {
            owner: Arc::new(TokenOwner {
                instance_id: t.instance_id.as_str().into(),
                creator: t.creator.as_str().into(),
            }),
            expire_ms: t.expire_ms,
            minted_revision: t.minted_revision,
            revoked: t.revoked_ms.is_some(),
        }
    }
}
