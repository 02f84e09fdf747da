//! `GET /validate` (forward auth for nginx `auth_request`, Traefik
//! `forwardAuth`, Envoy `ext_authz`) and the verification path it shares
//! with introspection: verified-token cache → signature and claims →
//! revocation: the core's in-memory mirror when it is on and current, else
//! one Redis round trip.

use std::rc::Rc;

use crate::cores::Core;
use crate::handlers::oauth::{self, OAuthError};
use crate::http::{response, Request, ResponseCtx};
use crate::revocation::RevocationCheck;
use crate::tokens::{self, TokenError, VerifiedToken};

/// Seconds since the Unix epoch.
#[inline]
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verifies `token` on this core: a cache hit costs one hash lookup and one
/// string comparison; a miss runs the signature and claim checks with the
/// core's own keys and caches the success. Revocation is NOT checked here.
pub fn verify_cached(core: &Core, token: &str, now: u64) -> Result<Rc<VerifiedToken>, TokenError> {
    // `keys()` first: a new key set empties the cache before we look.
    let keys = core.keys();
    if let Some(hit) = core.cache.borrow_mut().get(token, now) {
        core.counters.verified_cache_hits.inc();
        return Ok(hit);
    }
    core.counters.verified_cache_misses.inc();
    match tokens::verify(&keys, token, &core.expect, now) {
        Ok(v) => {
            let v = Rc::new(v);
            core.cache.borrow_mut().insert(token, v.clone());
            Ok(v)
        }
        Err(e) => {
            if e == TokenError::UnknownKid {
                core.request_key_reload();
            }
            Err(e)
        }
    }
}

/// Verification plus the revocation check: what both `/validate` and
/// introspection need. Redis trouble is `TemporarilyUnavailable` (fail
/// closed: never "valid", never a `401` that would log a user out).
pub async fn check_access_token(core: &Core, token: &str) -> Result<Rc<VerifiedToken>, OAuthError> {
    let now = unix_now();
    let v =
        verify_cached(core, token, now).map_err(|e| OAuthError::InvalidToken(e.description()))?;
    let revoked = match core
        .mirror
        .as_ref()
        .and_then(|m| m.verdict(&v.jti, &v.sub, v.iat, v.exp))
    {
        Some(revoked) => {
            core.counters.mirror_answers.inc();
            Ok(revoked)
        }
        None => {
            if core.mirror.is_some() {
                core.counters.mirror_fallbacks.inc();
            }
            core.revocations.is_revoked(&v.jti, &v.sub, v.iat).await
        }
    };
    match revoked {
        Ok(false) => Ok(v),
        Ok(true) => Err(OAuthError::InvalidToken("token revoked")),
        Err(_) => Err(OAuthError::TemporarilyUnavailable(
            "revocation store unavailable",
        )),
    }
}

/// `GET /validate[?scope=a%20b]`.
pub async fn validate(
    core: &Core,
    req: &Request<'_>,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let token = match oauth::bearer_token(req.authorization, req.authorization_count) {
        Ok(t) => t,
        Err(e) => return oauth::write_error(out, ctx, e),
    };
    let v = match check_access_token(core, token).await {
        Ok(v) => v,
        Err(e) => return oauth::write_error(out, ctx, e),
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
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name != "scope" {
            continue;
        }
        for wanted in value.split(' ').filter(|s| !s.is_empty()) {
            if !granted.split(' ').any(|g| g == wanted) {
                return Err(OAuthError::InsufficientScope(
                    "the token lacks a required scope",
                ));
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
}
