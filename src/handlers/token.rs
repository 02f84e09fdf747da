//! `POST /oauth/token`: the `password` and `client_credentials` grants
//! (RFC 6749 §4.3, §4.4), answered per §5.1 / §5.2; the `refresh_token` grant
//! is [`super::refresh`]'s, `authorization_code` is
//! [`super::authorization_code`]'s (issue #16). The password grant can be
//! switched off (`oauth.password_grant`).
//!
//! The password grant waits for PostgreSQL and argon2 on the blocking pool,
//! never on the core. Failed logins are counted by
//! [`ratelimit`](crate::ratelimit) and checked before argon2 runs, which also
//! caps the CPU an attacker can make tokend burn.
//!
//! Owns: which grants a client may use, the granted scope (asked ∩ allowed,
//! [`grant_scope`]), access-token issuance ([`issue_access`]) and the token
//! response.
//!
//! Never imports: `net` or `cores`. It reaches the stores through `state`
//! (`core.pg()`, `core.pool()`, `core.redis()` for the rate limits), naming
//! `store` only for [`PoolError`].

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use crate::clock::unix_now;
use crate::handlers::client_auth;
use crate::handlers::oauth::{Form, OAuthError};
use crate::http::{response, Request, ResponseCtx};
use crate::identity::passwords::{parse_scope, MAX_PASSWORD_BYTES, MAX_USERNAME_CHARS};
use crate::identity::{ClientRecord, GrantType, LoginOutcome, User};
use crate::ratelimit::{Admission, LimitError, LoginLimits};
use crate::state::Core;
use crate::store::PoolError;
use crate::tokens::{new_jti, sign_access, AccessClaims};

/// What a successful grant produces.
pub struct Issued {
    pub access_token: String,
    /// The access token's `jti` and `exp`, to revoke it (a reused
    /// authorization code).
    pub jti: String,
    pub expires_at: u64,
    pub expires_in: u64,
    pub scope: String,
    pub refresh_token: Option<String>,
    /// The OpenID Connect ID token (a code exchange with `openid`).
    pub id_token: Option<String>,
}

/// `POST /oauth/token`.
pub async fn token(
    core: &Rc<Core>,
    req: &Request<'_>,
    peer: SocketAddr,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    match grant(core, req, peer).await {
        Ok(issued) => write_success(out, ctx, &issued),
        Err(e) => super::oauth::write_error(out, ctx, e),
    }
}

async fn grant(core: &Rc<Core>, req: &Request<'_>, peer: SocketAddr) -> Result<Issued, OAuthError> {
    let form = client_auth::form_body(req)?;
    let clients = core.clients();
    let (client, _basic) = client_auth::authenticate(core, &clients, req, &form)?;
    let grant_type = match form.get("grant_type") {
        None => return Err(OAuthError::InvalidRequest("grant_type is required")),
        Some(g) => match GrantType::parse(g) {
            None => return Err(unsupported(core)),
            // Switched off for every client, whatever it was registered for.
            Some(GrantType::Password) if !core.config().oauth.password_grant => {
                return Err(OAuthError::UnsupportedGrantType(
                    "the password grant is disabled on this server",
                ))
            }
            Some(g) => g,
        },
    };
    if !client.allows(grant_type) {
        return Err(OAuthError::UnauthorizedClient(
            "this client may not use this grant type",
        ));
    }
    match grant_type {
        GrantType::Password => {
            password_grant(core, client, &form, super::client_ip(core, req, peer)).await
        }
        GrantType::ClientCredentials => client_credentials_grant(core, client, &form),
        GrantType::RefreshToken => super::refresh::refresh_grant(core, client, &form).await,
        GrantType::AuthorizationCode => {
            super::authorization_code::authorization_code_grant(core, client, &form)
                .await
                .map(|(issued, _)| issued)
        }
    }
}

/// RFC 6749 §5.2 `unsupported_grant_type`, naming the grants this server
/// serves.
fn unsupported(core: &Core) -> OAuthError {
    OAuthError::UnsupportedGrantType(if core.config().oauth.password_grant {
        "grant_type must be authorization_code, password, refresh_token or client_credentials"
    } else {
        "grant_type must be authorization_code, refresh_token or client_credentials"
    })
}

/// Intersects what was asked with what is allowed: a requested scope that is
/// not allowed is an error; no request means everything allowed.
pub fn grant_scope(requested: Option<&str>, allowed: &[String]) -> Result<Vec<String>, OAuthError> {
    match requested {
        None => Ok(allowed.to_vec()),
        Some(raw) => {
            let wanted =
                parse_scope(raw).map_err(|_| OAuthError::InvalidScope("malformed scope"))?;
            if wanted.iter().all(|w| allowed.contains(w)) {
                Ok(wanted)
            } else {
                Err(OAuthError::InvalidScope("a requested scope is not allowed"))
            }
        }
    }
}

/// Admits a password attempt under the brute-force limits (counting it),
/// or answers why not: `429` with `Retry-After` at a limit, `503` when Redis
/// cannot answer (fail closed).
pub(super) async fn admit(limits: &LoginLimits<'_>) -> Result<(), OAuthError> {
    match limits.admit().await {
        Ok(Admission::Allowed) => Ok(()),
        Ok(Admission::Blocked { retry_after }) => Err(OAuthError::TooManyRequests { retry_after }),
        Err(LimitError::Store(_)) => Err(OAuthError::TemporarilyUnavailable(
            "rate-limit store unavailable",
        )),
        Err(LimitError::UnexpectedReply) => Err(OAuthError::ServerError),
    }
}

async fn password_grant(
    core: &Rc<Core>,
    client: &ClientRecord,
    form: &Form<'_>,
    client_ip: IpAddr,
) -> Result<Issued, OAuthError> {
    let (Some(username), Some(password)) = (form.get("username"), form.get("password")) else {
        return Err(OAuthError::InvalidRequest(
            "username and password are required",
        ));
    };
    if username.chars().count() > MAX_USERNAME_CHARS {
        return Err(OAuthError::InvalidRequest(
            "username is longer than 64 characters",
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(OAuthError::InvalidRequest(
            "password is longer than 1024 bytes",
        ));
    }
    if let Some(s) = form.get("scope") {
        // Malformed scope is refused before any argon2 work.
        parse_scope(s).map_err(|_| OAuthError::InvalidScope("malformed scope"))?;
    }

    let user = check_password(core, username, password, client_ip).await?;

    let allowed: Vec<String> = user
        .scopes
        .iter()
        .filter(|s| client.scopes.contains(s))
        .cloned()
        .collect();
    let scope = grant_scope(form.get("scope"), &allowed)?.join(" ");
    let now = unix_now();
    let mut issued = issue_access(core, client, &user.id, Some(&user.username), &scope, now)?;
    if client.allows(GrantType::RefreshToken) {
        issued.refresh_token = super::refresh::issue_refresh(
            core,
            client,
            &user.id,
            Some(&user.username),
            &scope,
            now,
        )
        .await?;
    }
    Ok(issued)
}

/// Checks a username and password under the brute-force limits, on the
/// blocking pool: what the password grant and the sign-in page
/// (`POST /login`) share, so both cost the same argon2 time, for unknown
/// users too (the dummy verify), and count against the same limits.
/// Refusals: `InvalidGrant` for a wrong password or an unknown or disabled
/// user (one answer for all three), `TooManyRequests` at a limit,
/// `TemporarilyUnavailable` when Redis, PostgreSQL or the pool cannot
/// answer.
pub(super) async fn check_password(
    core: &Rc<Core>,
    username: &str,
    password: &str,
    client_ip: IpAddr,
) -> Result<User, OAuthError> {
    // Brute-force limits: the attempt is admitted and counted before argon2
    // runs. Redis trouble fails closed.
    let limits = LoginLimits::new(
        core.redis(),
        &core.config().redis.prefix,
        &core.config().limits,
        username,
        client_ip,
    );
    admit(&limits).await?;

    // The blocking part: PostgreSQL lookup + argon2id verify (or the dummy
    // verify for unknown and disabled users), on the pool.
    let pg = core.pg().clone();
    let hasher = core.hasher().clone();
    let (u, p) = (username.to_owned(), password.to_owned());
    let argon2 = core.argon2_timing().clone();
    let outcome = core
        .pool()
        .run(move || -> Result<LoginOutcome, String> {
            let mut conn = pg.get().map_err(|e| e.to_string())?;
            let start = std::time::Instant::now();
            let r = crate::identity::users::login(&mut *conn, &hasher, &u, &p)
                .map_err(|e| e.to_string());
            argon2.observe(start.elapsed());
            r
        })
        .await;
    let user = match outcome {
        Ok(Ok(LoginOutcome::Ok(user))) => user,
        // Counted when admitted: a wrong guess stays counted.
        Ok(Ok(LoginOutcome::Invalid)) => {
            return Err(OAuthError::InvalidGrant("invalid username or password"))
        }
        // The password was never verified: no guess, taken back (when Redis
        // fails here, the attempt stays counted; the login is refused anyway).
        Ok(Err(e)) => {
            let _ = limits.not_attempted().await;
            core.pg().log_failure("login failed on the database", &e);
            return Err(OAuthError::TemporarilyUnavailable("user store unavailable"));
        }
        Err(PoolError::Full) => {
            let _ = limits.not_attempted().await;
            return Err(OAuthError::TemporarilyUnavailable(
                "too many logins in progress",
            ));
        }
        Err(e) => {
            let _ = limits.not_attempted().await;
            tracing::error!("login job failed: {e}");
            return Err(OAuthError::ServerError);
        }
    };
    // A success clears the user's counter and takes the attempt back from
    // the address's.
    let _ = limits.succeeded().await;

    Ok(user)
}

fn client_credentials_grant(
    core: &Core,
    client: &ClientRecord,
    form: &Form<'_>,
) -> Result<Issued, OAuthError> {
    if client.is_public() {
        return Err(OAuthError::UnauthorizedClient(
            "public clients may not use client_credentials",
        ));
    }
    let scope = grant_scope(form.get("scope"), &client.scopes)?.join(" ");
    // RFC 6749 §4.4.3: no refresh token for client credentials.
    issue_access(core, client, &client.client_id, None, &scope, unix_now())
}

/// Signs an access token (RFC 9068) with the core's current signing key.
pub fn issue_access(
    core: &Core,
    client: &ClientRecord,
    sub: &str,
    username: Option<&str>,
    scope: &str,
    now: u64,
) -> Result<Issued, OAuthError> {
    let ttl = client
        .access_ttl
        .unwrap_or(core.tokens_config().access_ttl.as_secs());
    let claims = AccessClaims {
        iss: core.issuer().to_owned(),
        sub: sub.to_owned(),
        aud: core.tokens_config().audience.clone(),
        exp: now + ttl,
        iat: now,
        jti: new_jti(),
        client_id: client.client_id.clone(),
        scope: scope.to_owned(),
        username: username.map(str::to_owned),
    };
    let keys = core.keys();
    let access_token = sign_access(&keys, &claims, now).map_err(|e| {
        tracing::error!("cannot sign an access token: {e}");
        OAuthError::ServerError
    })?;
    Ok(Issued {
        access_token,
        jti: claims.jti,
        expires_at: claims.exp,
        expires_in: ttl,
        scope: scope.to_owned(),
        refresh_token: None,
        id_token: None,
    })
}

fn write_success(out: &mut Vec<u8>, ctx: &ResponseCtx<'_>, issued: &Issued) -> u16 {
    let mut body = serde_json::json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    });
    if let Some(rt) = &issued.refresh_token {
        body["refresh_token"] = serde_json::Value::String(rt.clone());
    }
    if let Some(id) = &issued.id_token {
        body["id_token"] = serde_json::Value::String(id.clone());
    }
    response::write_json_with(
        out,
        ctx,
        200,
        b"Cache-Control: no-store\r\nPragma: no-cache\r\n",
        |o| {
            let _ = serde_json::to_writer(o, &body);
        },
    );
    200
}
