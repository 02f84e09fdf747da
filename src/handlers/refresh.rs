//! The `refresh_token` grant and refresh-token issuance (being wired to the
//! Redis refresh store).

use crate::cores::Core;
use crate::handlers::oauth::{Form, OAuthError};
use crate::handlers::token::Issued;
use crate::identity::ClientRecord;

/// Issues a refresh token for a new login, when refresh is available.
pub async fn issue_refresh(
    _core: &Core,
    _client: &ClientRecord,
    _sub: &str,
    _username: Option<&str>,
    _scope: &str,
    _now: u64,
) -> Result<Option<String>, OAuthError> {
    Ok(None)
}

/// `grant_type=refresh_token`.
pub async fn refresh_grant(
    _core: &Core,
    _client: &ClientRecord,
    _form: &Form,
) -> Result<Issued, OAuthError> {
    Err(OAuthError::UnsupportedGrantType)
}

/// Prefix of every refresh token, so secret scanners can spot leaked ones.
pub const REFRESH_PREFIX: &str = "tokend_rt_";

/// Introspection of a refresh token: `Some(body)` when active.
pub async fn introspect_refresh(
    _core: &Core,
    _token: &str,
) -> Result<Option<serde_json::Value>, OAuthError> {
    Ok(None)
}
