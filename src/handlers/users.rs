//! The user API: register, own profile, change password, logout everywhere,
//! admin disable. Callers authenticate with a bearer access token, checked by
//! [`crate::access`] as on `/validate` (only self-registration, when enabled,
//! goes without); the admin endpoints also need [`ADMIN_SCOPE`]. Everything
//! that touches PostgreSQL or argon2 runs on the blocking pool. Ending a
//! user's sessions writes the "not before" mark to PostgreSQL (durable) and
//! to Redis (what validation reads) before the endpoint answers.
//!
//! Owns: the user API's JSON bodies and answers, who may do what
//! (self-registration without scopes, the admin scope), and the order of the
//! "not before" writes (PostgreSQL, then Redis).
//!
//! Never imports: `net` or `cores`. It reaches the stores through `state`
//! (`core.pg()`, `core.pool()`, `core.revocations()`), naming `store` only
//! for [`PoolError`]. The `users` queries are `identity`'s, but for the one
//! `UPDATE` of logout everywhere, written here.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::access::check_access_token;
use crate::clock::unix_now;
use crate::handlers::oauth::{self, OAuthError};
use crate::http::{response, Request, ResponseCtx};
use crate::identity::{passwords, users, RuleError, UserError};
use crate::ratelimit::LoginLimits;
use crate::state::Core;
use crate::store::PoolError;

/// The scope that grants the admin API.
pub const ADMIN_SCOPE: &str = "tokend:admin";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Largest JSON body of the user API, bytes.
///
/// What the bodies need: a username (at most 64 characters), a password (at
/// most 1 KiB; 6 KiB if every byte were a `\uXXXX` escape) and a list of
/// scopes; 16 KiB leaves room for hundreds of scopes.
///
/// Why a cap below `limits.max_body_bytes`: with self-registration on,
/// `POST /users` is parsed on the core before anything is authenticated,
/// and a 64 KiB array of one-letter scopes (16,000 strings, each allocated)
/// cost 687 µs of core time in a release build (issue #12, `budget`'s
/// test); at 16 KiB, 169 µs.
pub const MAX_JSON_BODY_BYTES: usize = 16 * 1024;

fn json_body<'de, T: Deserialize<'de>>(req: &'de Request<'_>) -> Result<T, OAuthError> {
    if !req.content_type_is("application/json") {
        return Err(OAuthError::InvalidRequest(
            "Content-Type must be application/json",
        ));
    }
    if req.body.len() > MAX_JSON_BODY_BYTES {
        return Err(OAuthError::BodyTooLarge(
            "the JSON body may be at most 16 KiB",
        ));
    }
    serde_json::from_slice(req.body).map_err(|_| {
        OAuthError::InvalidRequest("body must be a JSON object with the documented fields")
    })
}

fn pool_error(e: PoolError) -> OAuthError {
    match e {
        PoolError::Full => OAuthError::TemporarilyUnavailable("server busy"),
        _ => OAuthError::ServerError,
    }
}

fn db_error(core: &Core, e: UserError) -> OAuthError {
    match e {
        UserError::Invalid(rule) => OAuthError::InvalidRequest(rule.as_str()),
        UserError::Taken => OAuthError::InvalidRequest("username taken"),
        UserError::Db(e) => {
            core.pg().log_failure("user store", &e);
            OAuthError::TemporarilyUnavailable("user store unavailable")
        }
    }
}

/// Why blocking user work failed.
enum DbFail {
    User(UserError),
    Other(String),
}

impl From<UserError> for DbFail {
    fn from(e: UserError) -> Self {
        DbFail::User(e)
    }
}

/// Runs `f` with a pooled PostgreSQL connection on the blocking pool.
async fn with_db<R: Send + 'static>(
    core: &Core,
    f: impl FnOnce(&mut postgres::Client) -> Result<R, DbFail> + Send + 'static,
) -> Result<R, OAuthError> {
    on_db(core, false, f).await
}

/// Like [`with_db`], for a revocation write (logout-all, disable): queued
/// apart from logins and taken first (`BlockingPool::run_urgent`).
async fn with_db_urgent<R: Send + 'static>(
    core: &Core,
    f: impl FnOnce(&mut postgres::Client) -> Result<R, DbFail> + Send + 'static,
) -> Result<R, OAuthError> {
    on_db(core, true, f).await
}

async fn on_db<R: Send + 'static>(
    core: &Core,
    urgent: bool,
    f: impl FnOnce(&mut postgres::Client) -> Result<R, DbFail> + Send + 'static,
) -> Result<R, OAuthError> {
    let pg = core.pg().clone();
    let job = move || -> Result<R, DbFail> {
        let mut conn = pg.get().map_err(|e| DbFail::Other(e.to_string()))?;
        f(&mut conn)
    };
    let pool = core.pool();
    let result = if urgent {
        pool.run_urgent(job).await
    } else {
        pool.run(job).await
    };
    result.map_err(pool_error)?.map_err(|e| match e {
        DbFail::User(u) => db_error(core, u),
        DbFail::Other(msg) => {
            core.pg().log_failure("user store", &msg);
            OAuthError::TemporarilyUnavailable("user store unavailable")
        }
    })
}

/// What a password change came to.
enum PasswordOutcome {
    NoUser,
    WrongPassword,
    Changed(crate::identity::User),
}

/// Writes the mark to Redis after PostgreSQL: validation reads Redis.
async fn mirror_not_before(core: &Core, sub: &str, mark: i64) -> Result<(), OAuthError> {
    // As long as any token the user holds can live, whichever client it
    // was issued to (a client's own refresh lifetime may be the longest).
    let ttl = core
        .clients()
        .longest_lifetimes(core.tokens_config())
        .longest()
        .as_secs();
    let (_, seq) = core
        .revocations()
        .set_not_before_logged(sub, mark.max(0) as u64, ttl)
        .await
        .map_err(|_| OAuthError::TemporarilyUnavailable("revocation store unavailable"))?;
    core.revocation_applied(seq).await;
    Ok(())
}

fn no_content(out: &mut Vec<u8>, ctx: &ResponseCtx<'_>) -> u16 {
    response::write(out, ctx, 204, None, b"Cache-Control: no-store\r\n", b"");
    204
}

fn finish(out: &mut Vec<u8>, ctx: &ResponseCtx<'_>, r: Result<u16, OAuthError>) -> u16 {
    match r {
        Ok(status) => status,
        Err(e) => oauth::write_error(out, ctx, e),
    }
}

/// `POST /users`.
pub async fn register(
    core: &Core,
    req: &Request<'_>,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let r = async {
        let admin = if req.authorization.is_some() {
            require_admin(core, req).await?;
            true
        } else if core.config().users.self_registration {
            false
        } else {
            return Err(OAuthError::BearerInvalidRequest(
                "an admin bearer token is required",
            ));
        };
        let body: NewUser = json_body(req)?;
        let scopes = body.scopes.unwrap_or_default();
        if !admin && !scopes.is_empty() {
            return Err(OAuthError::Forbidden("self-registered users get no scopes"));
        }
        passwords::check_username(&body.username)
            .map_err(|e: RuleError| OAuthError::InvalidRequest(e.as_str()))?;
        passwords::check_password(&body.password)
            .map_err(|e| OAuthError::InvalidRequest(e.as_str()))?;
        for s in &scopes {
            passwords::check_scope_token(s).map_err(|e| OAuthError::InvalidRequest(e.as_str()))?;
        }
        let hasher = core.hasher().clone();
        let created = with_db(core, move |db| -> Result<_, DbFail> {
            let phc = hasher
                .hash(&body.password)
                .map_err(|e| DbFail::Other(e.to_string()))?;
            match users::create(db, &body.username, &phc, &scopes) {
                Ok(u) => Ok(Some(u)),
                Err(UserError::Taken) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
        let Some(user) = created else {
            let body =
                br#"{"error":"username_taken","error_description":"this username is taken"}"#;
            response::write(out, ctx, 409, Some(response::JSON), b"", body);
            return Ok(409);
        };
        let body = serde_json::json!({ "id": user.id, "username": user.username });
        response::write_json_with(out, ctx, 201, b"", |o| {
            let _ = serde_json::to_writer(o, &body);
        });
        Ok(201)
    }
    .await;
    finish(out, ctx, r)
}

/// The authenticated user of a bearer-token request (not a client): its id.
async fn me(core: &Core, req: &Request<'_>) -> Result<String, OAuthError> {
    Ok(me_named(core, req).await?.0)
}

/// The user id and the username of the request's bearer token, which must
/// be a valid user's token.
async fn me_named(core: &Core, req: &Request<'_>) -> Result<(String, String), OAuthError> {
    let token = oauth::bearer_token(req.authorization, req.authorization_count)?;
    let v = check_access_token(core, token).await?;
    match &v.username {
        Some(name) => Ok((v.sub.clone(), name.clone())),
        None => Err(OAuthError::Forbidden("this endpoint needs a user's token")),
    }
}

/// Checks that the request's bearer token is valid and carries `tokend:admin`.
async fn require_admin(core: &Core, req: &Request<'_>) -> Result<(), OAuthError> {
    let token = oauth::bearer_token(req.authorization, req.authorization_count)?;
    let v = check_access_token(core, token).await?;
    if v.scope.split(' ').any(|s| s == ADMIN_SCOPE) {
        Ok(())
    } else {
        Err(OAuthError::InsufficientScope(
            "the tokend:admin scope is required",
        ))
    }
}

/// `GET /users/me`.
pub async fn get_me(
    core: &Core,
    req: &Request<'_>,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let r = async {
        let sub = me(core, req).await?;
        let user = with_db(core, move |db| Ok(users::find_by_id(db, &sub)?))
            .await?
            .ok_or(OAuthError::InvalidToken("no such user"))?;
        let body =
            serde_json::json!({ "sub": user.id, "username": user.username, "scopes": user.scopes });
        response::write_json_with(out, ctx, 200, b"Cache-Control: no-store\r\n", |o| {
            let _ = serde_json::to_writer(o, &body);
        });
        Ok(200)
    }
    .await;
    finish(out, ctx, r)
}

/// `POST /users/me/password`: changes the password and ends every session
/// (tokens issued up to now stop working).
///
/// `current_password` is a guess like a login's: it is admitted under the
/// same brute-force limits (the user's counter and the client address's,
/// counted before argon2 runs), so a stolen access token does not give
/// unlimited guesses at the password.
pub async fn change_password(
    core: &Core,
    req: &Request<'_>,
    peer: SocketAddr,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let r = async {
        let (sub, username) = me_named(core, req).await?;
        let body: PasswordChange = json_body(req)?;
        passwords::check_password(&body.new_password)
            .map_err(|e| OAuthError::InvalidRequest(e.as_str()))?;
        let limits = LoginLimits::new(
            core.redis(),
            &core.config().redis.prefix,
            &core.config().limits,
            &username,
            super::client_ip(core, req, peer),
        );
        super::token::admit(&limits).await?;
        let hasher = core.hasher().clone();
        let now = unix_now() as i64;
        let id = sub.clone();
        let outcome = with_db(core, move |db| {
            let Some(user) = users::find_by_id(db, &id)? else {
                return Ok(PasswordOutcome::NoUser);
            };
            match users::login(db, &hasher, &user.username, &body.current_password)? {
                users::LoginOutcome::Ok(_) => {}
                users::LoginOutcome::Invalid => return Ok(PasswordOutcome::WrongPassword),
            }
            let phc = hasher
                .hash(&body.new_password)
                .map_err(|e| DbFail::Other(e.to_string()))?;
            Ok(match users::set_password(db, &id, &phc, now)? {
                Some(u) => PasswordOutcome::Changed(u),
                None => PasswordOutcome::NoUser,
            })
        })
        .await;
        let user = match outcome {
            // Counted when admitted: a wrong guess stays counted.
            Ok(PasswordOutcome::WrongPassword) => {
                return Err(OAuthError::Forbidden("current password is wrong"))
            }
            Ok(PasswordOutcome::Changed(u)) => {
                let _ = limits.succeeded().await;
                u
            }
            // No guess was verified: taken back.
            Ok(PasswordOutcome::NoUser) => {
                let _ = limits.not_attempted().await;
                return Err(OAuthError::InvalidToken("no such user"));
            }
            Err(e) => {
                let _ = limits.not_attempted().await;
                return Err(e);
            }
        };
        mirror_not_before(core, &sub, user.not_before.unwrap_or(now)).await?;
        Ok(no_content(out, ctx))
    }
    .await;
    finish(out, ctx, r)
}

/// `POST /users/me/logout-all`: every token of the user issued up to now
/// stops working, on every node.
pub async fn logout_all(
    core: &Core,
    req: &Request<'_>,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let r = async {
        let sub = me(core, req).await?;
        let now = unix_now() as i64;
        let id = sub.clone();
        let mark = with_db_urgent(core, move |db| {
            let row = db
                .query_opt(
                    "UPDATE users SET not_before = greatest(coalesce(not_before, to_timestamp(0)), to_timestamp($2)), \
                     updated_at = now() WHERE id = $1::text::uuid \
                     RETURNING floor(extract(epoch FROM not_before))::int8",
                    &[&id, &(now as f64)],
                )
                .map_err(|e| DbFail::User(UserError::Db(e)))?;
            Ok(row.map(|r| r.get::<_, i64>(0)))
        })
        .await?
        .ok_or(OAuthError::InvalidToken("no such user"))?;
        mirror_not_before(core, &sub, mark).await?;
        Ok(no_content(out, ctx))
    }
    .await;
    finish(out, ctx, r)
}

/// `POST /users/{username}/disable` (admin).
pub async fn disable(
    core: &Core,
    req: &Request<'_>,
    username: &str,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let r = async {
        require_admin(core, req).await?;
        let now = unix_now() as i64;
        let name = username.to_owned();
        let user = with_db_urgent(core, move |db| Ok(users::disable(db, &name, now)?)).await?;
        let Some(user) = user else {
            response::write(out, ctx, 404, Some(response::TEXT), b"", b"no such user\n");
            return Ok(404);
        };
        mirror_not_before(core, &user.id, user.not_before.unwrap_or(now)).await?;
        Ok(no_content(out, ctx))
    }
    .await;
    finish(out, ctx, r)
}
