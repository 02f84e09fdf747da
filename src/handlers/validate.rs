//! `GET /validate` (forward auth for nginx `auth_request`, Traefik
//! `forwardAuth`, Envoy `ext_authz`): the bearer token through the check it
//! shares with introspection ([`crate::access`]), then the `?scope=`
//! requirement.
//!
//! Owns: the forward-auth answer (`200` with the token's pre-rendered
//! headers, or the RFC 6750 error) and the `?scope=` rule: every listed scope
//! must be granted.
//!
//! Never imports: `net`, `cores`, `tokens`, `revocation` or a store: the
//! token check is `access`'s, never re-done here.

use crate::access::{check_bearer, BearerFailure};
use crate::handlers::oauth::{self, OAuthError};
use crate::http::{self, response, Request, ResponseCtx};
use crate::state::Core;

/// `GET /validate[?scope=a%20b]`.
pub async fn validate(
    core: &Core,
    req: &Request<'_>,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let raw = match http::auth::bearer_credentials(req.authorization, req.authorization_count) {
        Ok(raw) => raw,
        Err(e) => {
            return oauth::write_error(out, ctx, OAuthError::BearerInvalidRequest(e.as_str()))
        }
    };
    // The value's characters are checked only when the cache misses
    // (`check_bearer`): same answers, without a scan per cached request.
    let v = match check_bearer(core, raw, http::auth::token68).await {
        Ok(v) => v,
        Err(BearerFailure::Form(e)) => {
            return oauth::write_error(out, ctx, OAuthError::BearerInvalidRequest(e.as_str()))
        }
        Err(BearerFailure::Access(e)) => return oauth::write_error(out, ctx, e.into()),
    };
    if !req.query.is_empty() {
        if let Err(e) = require_scopes(req.query, &v.scope) {
            return oauth::write_error(out, ctx, e);
        }
    }
    response::write(out, ctx, 200, None, v.forward_auth_headers(), b"");
    200
}

/// Checks `?scope=a%20b`: every listed scope must be granted to the token.
#[cold]
fn require_scopes(query: &str, granted: &str) -> Result<(), OAuthError> {
    const LACKS: OAuthError = OAuthError::InsufficientScope("the token lacks a required scope");
    for value in http::form::query_values(query.as_bytes(), "scope") {
        // A scope that is not UTF-8 is granted to no token (it was replaced
        // by U+FFFD before, which no scope rule admits): the same 403.
        let value = value.map_err(|_| LACKS)?;
        for wanted in value.split(' ').filter(|s| !s.is_empty()) {
            if !granted.split(' ').any(|g| g == wanted) {
                return Err(LACKS);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_requirements() {
        assert!(require_scopes("scope=a%20b", "a b c").is_ok());
        assert!(require_scopes("scope=a+b", "b a").is_ok());
        assert!(require_scopes("scope=d", "a b c").is_err());
        assert!(require_scopes("other=x", "").is_ok());
        assert!(require_scopes("scope=ab", "a b").is_err());
    }

    /// A failed access check reaches the wire as before it had its own
    /// error type: 401 `invalid_token` for an invalid or revoked token, 503
    /// `temporarily_unavailable` when revocation cannot be checked.
    #[test]
    fn access_errors_map_to_the_same_oauth_errors() {
        use crate::access::AccessError;
        let cases = [
            (
                AccessError::Invalid("token expired"),
                OAuthError::InvalidToken("token expired"),
            ),
            (
                AccessError::Revoked,
                OAuthError::InvalidToken("token revoked"),
            ),
            (
                AccessError::Unavailable,
                OAuthError::TemporarilyUnavailable("revocation store unavailable"),
            ),
        ];
        for (access, oauth) in cases {
            assert_eq!(OAuthError::from(access), oauth);
        }
        assert_eq!(OAuthError::from(AccessError::Revoked).status(), 401);
        assert_eq!(OAuthError::from(AccessError::Unavailable).status(), 503);
    }
}
