//! `POST /oauth/revoke` (RFC 7009). An access token's `jti` is revoked for
//! the rest of its lifetime; a refresh token revokes its whole family. Each
//! revocation is written to PostgreSQL (durable, re-seeded into Redis after
//! data loss) and to Redis (what validation reads) before the answer; with
//! the revocation mirror on, the answer also waits until every core of this
//! node has applied it.
//!
//! Owns: who may revoke what (a client only its own tokens; an unknown,
//! invalid or foreign token is answered `200`, RFC 7009 §2.1, §2.2) and the
//! order of an access token's writes (PostgreSQL, then Redis).
//!
//! Never imports: `net`, `cores` or a store: Redis is reached through `state`
//! (`core.revocations()`, `core.refresh_tokens()`), PostgreSQL through
//! `core.pg()` on the blocking pool.

use crate::clock::unix_now;
use crate::handlers::client_auth;
use crate::handlers::oauth::{self, OAuthError};
use crate::handlers::refresh::{record_family, REFRESH_PREFIX};
use crate::http::{response, Request, ResponseCtx};
use crate::state::Core;
use crate::tokens;

/// `POST /oauth/revoke`.
pub async fn revoke(
    core: &Core,
    req: &Request<'_>,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    match run(core, req).await {
        Ok(()) => {
            // RFC 7009 §2.2: 200 whether or not the token was valid.
            response::write(out, ctx, 200, None, b"Cache-Control: no-store\r\n", b"");
            200
        }
        Err(e) => oauth::write_error(out, ctx, e),
    }
}

async fn run(core: &Core, req: &Request<'_>) -> Result<(), OAuthError> {
    let form = client_auth::form_body(req)?;
    let clients = core.clients();
    let (client, _) = client_auth::authenticate(core, &clients, req, &form)?;
    let Some(token) = form.get("token") else {
        return Err(OAuthError::InvalidRequest("token is required"));
    };
    // The hint is only an optimisation (§2.1); refresh tokens carry a prefix.
    if token.starts_with(REFRESH_PREFIX) {
        let info = core
            .refresh_tokens()
            .revoke_family_of(token, Some(&client.client_id))
            .await
            .map_err(|_| OAuthError::TemporarilyUnavailable("refresh-token store unavailable"))?;
        if let Some(info) = info {
            if !record_family(core, info).await {
                return Err(OAuthError::TemporarilyUnavailable(
                    "revocation store unavailable",
                ));
            }
        }
        return Ok(());
    }
    let now = unix_now();
    let keys = core.keys();
    // Unknown, expired or garbage tokens need no revocation (§2.2); a token
    // issued to another client is not this client's to revoke (§2.1).
    let Ok(v) = tokens::verify(&keys, token, core.expectations(), now) else {
        return Ok(());
    };
    if v.client_id != client.client_id {
        return Ok(());
    }
    let pg = core.pg().clone();
    let (jti, exp) = (v.jti.clone(), v.exp + core.expectations().leeway());
    // A revocation write: queued apart from logins, taken first.
    let durable = core
        .pool()
        .run_urgent(move || -> Result<bool, String> {
            let mut c = pg.get().map_err(|e| e.to_string())?;
            crate::revocation::durable::record_access_revocation(&mut *c, &jti, exp)
                .map_err(|e| e.to_string())
        })
        .await;
    match durable {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            core.pg()
                .log_failure("cannot record a revocation in PostgreSQL", &e);
            return Err(OAuthError::TemporarilyUnavailable(
                "revocation store unavailable",
            ));
        }
        Err(_) => return Err(OAuthError::TemporarilyUnavailable("server busy")),
    }
    let seq = core
        .revocations()
        // Until the token would be refused anyway: its exp plus the leeway.
        .revoke_access_logged(
            &v.jti,
            (v.exp + core.expectations().leeway())
                .saturating_sub(now)
                .max(1),
        )
        .await
        .map_err(|_| OAuthError::TemporarilyUnavailable("revocation store unavailable"))?;
    core.revocation_applied(seq).await;
    Ok(())
}
