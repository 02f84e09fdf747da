//! `grant_type=authorization_code` at `/oauth/token` (RFC 6749 §4.1.3,
//! RFC 7636 §4.5–4.6), issue #16: redeems a code of `POST /login` once and
//! issues what the password grant issues, bound to the user who signed in.
//!
//! The code is redeemed first (one Lua script: of two racing redemptions
//! one wins), then checked against the request: the client it was issued
//! to, the exact `redirect_uri` of the authorization request, and the PKCE
//! `code_verifier` (S256, compared in constant time). A failed check has
//! used the code up: a client retries from `/authorize`. A code presented
//! again revokes what was issued from it (§4.1.2): the refresh family in
//! the redemption script, the access token here, both recorded in
//! PostgreSQL like any revocation.
//!
//! Owns: the code exchange's checks and answers. Never imports: `net`,
//! `cores` or a store.

use std::rc::Rc;

use crate::clock::unix_now;
use crate::codes::{pkce_s256_matches, Bound, CodeError, CodeGrant};
use crate::handlers::oauth::{Form, OAuthError};
use crate::handlers::token::{issue_access, Issued};
use crate::identity::{ClientRecord, GrantType};
use crate::refresh::{FamilyId, FamilyInfo};
use crate::state::Core;
use crate::tokens::{sign_id_token, IdTokenClaims};

/// The one description of an unknown, expired or tampered code.
const INVALID_CODE: &str = "invalid or expired authorization code";
/// The description of a code presented again.
const REUSED_CODE: &str =
    "the authorization code was already used; the tokens issued from it are revoked";

/// `grant_type=authorization_code`, for an authenticated (or public, by
/// `client_id`) client registered for the grant.
pub async fn authorization_code_grant(
    core: &Rc<Core>,
    client: &ClientRecord,
    form: &Form<'_>,
) -> Result<(Issued, CodeGrant), OAuthError> {
    let Some(code) = form.get("code") else {
        return Err(OAuthError::InvalidRequest("code is required"));
    };
    let now = unix_now();
    let grant = match core.codes().redeem(code, marker_ttl(core), now).await {
        Ok(grant) => grant,
        Err(CodeError::Invalid) | Err(CodeError::Tampered) => {
            return Err(OAuthError::InvalidGrant(INVALID_CODE))
        }
        Err(CodeError::Reused {
            jti,
            access_exp,
            family,
        }) => {
            tracing::warn!(
                client = client.client_id,
                "an authorization code was presented again: the tokens issued from it are revoked \
                 (RFC 6749 §4.1.2; a stolen code?)"
            );
            revoke_issued(core, jti, access_exp, family, now).await;
            return Err(OAuthError::InvalidGrant(REUSED_CODE));
        }
        Err(CodeError::Redis(_)) => {
            return Err(OAuthError::TemporarilyUnavailable(
                "authorization code store unavailable",
            ))
        }
    };
    if grant.client_id != client.client_id {
        return Err(OAuthError::InvalidGrant(
            "the authorization code was issued to another client",
        ));
    }
    // RFC 6749 §4.1.3: identical to the authorization request's.
    if form.get("redirect_uri") != Some(grant.redirect_uri.as_str()) {
        return Err(OAuthError::InvalidGrant(
            "redirect_uri does not match the authorization request",
        ));
    }
    let Some(verifier) = form.get("code_verifier") else {
        return Err(OAuthError::InvalidGrant("code_verifier is required (PKCE)"));
    };
    // RFC 7636 §4.6; a verifier of the wrong shape never matches.
    if !pkce_s256_matches(verifier, &grant.code_challenge) {
        return Err(OAuthError::InvalidGrant(
            "code_verifier does not match the code_challenge",
        ));
    }
    // A logout everywhere, password change or disable since the sign-in
    // voids the code, as it voids every token of that time.
    match core.revocations().not_before(&grant.sub).await {
        Ok(Some(mark)) if mark >= grant.auth_time => {
            return Err(OAuthError::InvalidGrant(INVALID_CODE))
        }
        Ok(_) => {}
        Err(_) => {
            return Err(OAuthError::TemporarilyUnavailable(
                "revocation store unavailable",
            ))
        }
    }
    let mut issued = issue_access(
        core,
        client,
        &grant.sub,
        Some(&grant.username),
        &grant.scope,
        now,
    )?;
    let mut family = None;
    if client.allows(GrantType::RefreshToken) {
        let (token, fam) = super::refresh::issue_refresh_family(
            core,
            client,
            &grant.sub,
            Some(&grant.username),
            &grant.scope,
            now,
        )
        .await?;
        issued.refresh_token = Some(token);
        family = Some(fam.to_hex());
    }
    match core
        .codes()
        .bind_issued(code, &issued.jti, issued.expires_at, family.as_deref(), now)
        .await
    {
        Ok(Bound::Ok) => {
            if grant.scope.split(' ').any(|s| s == "openid") {
                issued.id_token = Some(id_token(core, client, &grant, &issued, now)?);
            }
            Ok((issued, grant))
        }
        // Presented again meanwhile: the family is revoked, and what was
        // issued here never leaves the server.
        Ok(Bound::Revoked) => Err(OAuthError::InvalidGrant(REUSED_CODE)),
        // Without the binding a second redemption could not revoke these
        // tokens: they are not handed out.
        Err(_) => Err(OAuthError::TemporarilyUnavailable(
            "authorization code store unavailable",
        )),
    }
}

/// The ID token of a code exchange with `openid` (OpenID Connect Core
/// §3.1.3.3): signed with the key that signed the access token, living as
/// long as it.
fn id_token(
    core: &Core,
    client: &ClientRecord,
    grant: &CodeGrant,
    issued: &Issued,
    now: u64,
) -> Result<String, OAuthError> {
    let claims = IdTokenClaims {
        iss: core.issuer().to_owned(),
        sub: grant.sub.clone(),
        aud: client.client_id.clone(),
        exp: now + issued.expires_in,
        iat: now,
        auth_time: grant.auth_time,
        nonce: grant.nonce.clone(),
        at_hash: String::new(),
        azp: client.client_id.clone(),
        preferred_username: Some(grant.username.clone()),
    };
    sign_id_token(&core.keys(), &claims, &issued.access_token, now).map_err(|e| {
        tracing::error!("cannot sign an ID token: {e}");
        OAuthError::ServerError
    })
}

/// How long a redeemed code's marker is kept: as long as an access token
/// issued from it can live (the longest of any client, plus the leeway),
/// and at least the code's own lifetime.
fn marker_ttl(core: &Core) -> u64 {
    let longest = core
        .clients()
        .longest_lifetimes(core.tokens_config())
        .access
        .as_secs();
    (longest + core.expectations().leeway()).max(core.config().oauth.code_ttl.as_secs())
}

/// Revokes the access token and records the refresh family (already
/// revoked in Redis by the redemption script) issued from a reused code.
/// Failures are logged: the request is refused either way.
async fn revoke_issued(
    core: &Core,
    jti: Option<String>,
    access_exp: Option<u64>,
    family: Option<String>,
    now: u64,
) {
    if let Some(family) = family.as_deref().and_then(FamilyId::parse_hex) {
        let refresh = core
            .clients()
            .longest_lifetimes(core.tokens_config())
            .refresh
            .as_secs();
        super::refresh::record_family(
            core,
            FamilyInfo {
                family,
                expires_at: now.saturating_add(refresh),
            },
        )
        .await;
    }
    let (Some(jti), Some(exp)) = (jti, access_exp) else {
        return;
    };
    let exp = exp + core.expectations().leeway();
    if exp <= now {
        return;
    }
    let pg = core.pg().clone();
    let durable_jti = jti.clone();
    let durable = core
        .pool()
        .run_urgent(move || -> Result<bool, String> {
            let mut c = pg.get().map_err(|e| e.to_string())?;
            crate::revocation::durable::record_access_revocation(&mut *c, &durable_jti, exp)
                .map_err(|e| e.to_string())
        })
        .await;
    match durable {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => core
            .pg()
            .log_failure("cannot record a revocation in PostgreSQL", &e),
        Err(e) => tracing::error!("cannot record a revocation in PostgreSQL: {e}"),
    }
    match core
        .revocations()
        .revoke_access_logged(&jti, exp.saturating_sub(now).max(1))
        .await
    {
        Ok(seq) => core.revocation_applied(seq).await,
        Err(e) => tracing::error!(
            "cannot revoke the access token of a reused authorization code in Redis: {e}"
        ),
    }
}
