//! The `refresh_token` grant (RFC 6749 §6) with rotation and reuse
//! detection (RFC 9700 §4.14), refresh-token issuance at login, and
//! refresh-token introspection. Refresh never touches PostgreSQL, except to
//! record durably a family revoked because a used token came back.
//!
//! Owns: the OAuth side of refresh tokens: each [`RefreshError`] as an
//! answer, the per-client refresh lifetime, who may introspect a refresh
//! token (the client it was issued to), and the durable record of a revoked
//! family ([`record_family`], which `/oauth/revoke` uses too). The records
//! and families themselves are [`crate::refresh`]'s.
//!
//! Never imports: `net`, `cores` or a store: Redis is reached through `state`
//! (`core.refresh_tokens()`), PostgreSQL through `core.pg()` on the blocking
//! pool.

use crate::clock::unix_now;
use crate::handlers::oauth::{Form, OAuthError};
use crate::handlers::token::{issue_access, Issued};
use crate::identity::passwords::parse_scope;
use crate::identity::ClientRecord;
use crate::refresh::{FamilyId, FamilyInfo, RefreshError};
use crate::state::Core;

/// Prefix of every refresh token, so secret scanners can spot leaked ones.
pub const REFRESH_PREFIX: &str = crate::refresh::REFRESH_TOKEN_PREFIX;

fn refresh_ttl(core: &Core, client: &ClientRecord) -> u64 {
    client
        .refresh_ttl
        .unwrap_or(core.tokens_config().refresh_ttl.as_secs())
}

/// The absolute lifetime of the client's refresh-token families, seconds
/// from the login (0: none).
fn refresh_max_lifetime(core: &Core, client: &ClientRecord) -> u64 {
    client
        .refresh_max_lifetime
        .unwrap_or(core.tokens_config().refresh_max_lifetime.as_secs())
}

/// Issues a refresh token (a new family) after a successful login.
pub async fn issue_refresh(
    core: &Core,
    client: &ClientRecord,
    sub: &str,
    username: Option<&str>,
    scope: &str,
    now: u64,
) -> Result<Option<String>, OAuthError> {
    issue_refresh_family(core, client, sub, username, scope, now)
        .await
        .map(|(token, _)| Some(token))
}

/// [`issue_refresh`], also naming the new family (an authorization code
/// binds it, to revoke it if the code comes back).
pub async fn issue_refresh_family(
    core: &Core,
    client: &ClientRecord,
    sub: &str,
    username: Option<&str>,
    scope: &str,
    now: u64,
) -> Result<(String, FamilyId), OAuthError> {
    // The first token of a family, like every later one, ends with the
    // family's absolute lifetime at the latest.
    let max = refresh_max_lifetime(core, client);
    let ttl = match refresh_ttl(core, client) {
        ttl if max > 0 => ttl.min(max),
        ttl => ttl,
    };
    match core
        .refresh_tokens()
        .issue(sub, username, &client.client_id, scope, ttl, now)
        .await
    {
        Ok((token, record)) => Ok((token, record.family)),
        Err(_) => Err(OAuthError::TemporarilyUnavailable(
            "refresh-token store unavailable",
        )),
    }
}

/// `grant_type=refresh_token`: rotates the presented token atomically (one
/// Lua script) and issues a new access token.
pub async fn refresh_grant(
    core: &Core,
    client: &ClientRecord,
    form: &Form<'_>,
) -> Result<Issued, OAuthError> {
    let Some(token) = form.get("refresh_token") else {
        return Err(OAuthError::InvalidRequest("refresh_token is required"));
    };
    let requested = match form.get("scope") {
        Some(s) => Some(parse_scope(s).map_err(|_| OAuthError::InvalidScope("malformed scope"))?),
        None => None,
    };
    let now = unix_now();
    let grace = core.tokens_config().refresh_reuse_grace.as_secs();
    let rotated = match core
        .refresh_tokens()
        .rotate(
            token,
            &client.client_id,
            requested.as_deref(),
            grace,
            crate::refresh::Lifetime {
                ttl_secs: refresh_ttl(core, client),
                family_max_secs: refresh_max_lifetime(core, client),
            },
            now,
        )
        .await
    {
        Ok(r) => r,
        Err(RefreshError::Invalid) => {
            return Err(OAuthError::InvalidGrant(
                "invalid, expired or revoked refresh token",
            ))
        }
        Err(RefreshError::InvalidScope) => {
            return Err(OAuthError::InvalidScope(
                "the requested scope exceeds the refresh token's",
            ))
        }
        Err(RefreshError::Reused(info)) => {
            tracing::warn!(
                client = client.client_id,
                "a used refresh token was presented again: its whole family is revoked (possible theft)"
            );
            record_family(core, info).await;
            return Err(OAuthError::InvalidGrant(
                "invalid, expired or revoked refresh token",
            ));
        }
        Err(RefreshError::Tampered(info)) => {
            // Logged by the store, with the family; the revocation is
            // recorded durably like a reuse's.
            record_family(core, info).await;
            return Err(OAuthError::InvalidGrant(
                "invalid, expired or revoked refresh token",
            ));
        }
        Err(RefreshError::Redis(_)) => {
            return Err(OAuthError::TemporarilyUnavailable(
                "refresh-token store unavailable",
            ))
        }
    };
    let rec = &rotated.record;
    let mut issued = issue_access(
        core,
        client,
        &rec.sub,
        rec.username.as_deref(),
        &rotated.granted_scope,
        now,
    )?;
    issued.refresh_token = Some(rotated.token);
    Ok(issued)
}

/// Writes a family revocation to PostgreSQL (durable, for re-seeding).
/// Returns false when it could not be written.
pub async fn record_family(core: &Core, info: FamilyInfo) -> bool {
    let pg = core.pg().clone();
    let family = info.family.to_hex();
    // A revocation write: queued apart from logins, taken first.
    let r = core
        .pool()
        .run_urgent(move || -> Result<bool, String> {
            let mut c = pg.get().map_err(|e| e.to_string())?;
            crate::revocation::durable::record_family_revocation(&mut *c, &family, info.expires_at)
                .map_err(|e| e.to_string())
        })
        .await;
    match r {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            core.pg()
                .log_failure("cannot record a family revocation in PostgreSQL", &e);
            false
        }
        Err(e) => {
            tracing::error!("cannot record a family revocation in PostgreSQL: {e}");
            false
        }
    }
}

/// Introspection of a refresh token (RFC 7662): only the client it was
/// issued to may see it. `Some(body)` when active.
pub async fn introspect_refresh(
    core: &Core,
    client: &ClientRecord,
    token: &str,
) -> Result<Option<serde_json::Value>, OAuthError> {
    let rec = match core.refresh_tokens().lookup(token).await {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(_) => {
            return Err(OAuthError::TemporarilyUnavailable(
                "refresh-token store unavailable",
            ))
        }
    };
    if rec.client_id != client.client_id {
        return Ok(None);
    }
    let mut body = serde_json::json!({
        "active": true,
        "scope": rec.scope,
        "client_id": rec.client_id,
        "token_type": "refresh_token",
        "exp": rec.expires_at,
        "iat": rec.issued_at,
        "sub": rec.sub,
        "iss": core.issuer(),
    });
    if let Some(u) = rec.username {
        body["username"] = serde_json::Value::String(u);
    }
    Ok(Some(body))
}
