//! `POST /login`: the sign-in page's form (issue #16). Checks the CSRF
//! token against the pending authorization request before anything else,
//! and that the browser sent back the pre-session cookie the request is
//! bound to (login CSRF, [`crate::signin`]), then the username and
//! password exactly as the password grant does (the same brute-force
//! limits, the same argon2 cost on the blocking pool, one answer for
//! unknown users and wrong passwords), then issues an
//! authorization code ([`crate::codes`]), starts a browser session
//! ([`crate::sessions`], replacing the browser's old one) and sends the
//! browser back to the app with `303` (RFC 6749 §4.1.2, RFC 9207 `iss`)
//! and the session's cookie.
//!
//! Owns: the form's checks and the sign-in page shown again after a failed
//! attempt. Never imports: `net`, `cores` or a store.

use std::net::SocketAddr;
use std::rc::Rc;

use crate::clock::unix_now;
use crate::codes::CodeGrant;
use crate::handlers::authorize::{redirect_error, refuse_page, AuthzError};
use crate::handlers::client_auth::form_body;
use crate::handlers::oauth::OAuthError;
use crate::handlers::pages::{self, LoginPage};
use crate::handlers::token::check_password;
use crate::http::{Request, ResponseCtx};
use crate::identity::passwords::{MAX_PASSWORD_BYTES, MAX_USERNAME_CHARS};
use crate::identity::ClientRecord;
use crate::sessions::{set_cookie, Lifetimes, Session};
use crate::signin::{find_cookie, login_cookie_name, OpenError, PendingAuthorization};
use crate::state::Core;

/// The scopes of OpenID Connect itself: granted to every user of a client
/// registered with them (a user's own scopes are what it may do at
/// resource servers; `openid` only asks for an id_token).
pub const OIDC_SCOPES: &[&str] = &["openid"];

/// The one answer to an unknown user, a disabled one and a wrong password.
const INVALID_CREDENTIALS: &str = "Incorrect username or password.";

/// `POST /login`.
pub async fn login(
    core: &Rc<Core>,
    req: &Request<'_>,
    peer: SocketAddr,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let form = match form_body(req) {
        Ok(f) => f,
        Err(e) => return refuse_page(core, ctx, out, 400, e.description()),
    };
    let Some(sealed) = form.get("request") else {
        return refuse_page(
            core,
            ctx,
            out,
            400,
            "The sign-in form is incomplete (no request).",
        );
    };
    let csrf = form.get("csrf_token");
    // Before any password is looked at (and counted against the limits).
    let pending = match core.signin_mac().open(sealed, csrf, unix_now()) {
        Ok(p) => p,
        Err(OpenError::Expired) => return expired(core, ctx, out),
        Err(OpenError::Forged) => {
            return refuse_page(
                core,
                ctx,
                out,
                400,
                "The sign-in form was not sent by this sign-in page (its CSRF token is missing or wrong); \
                 nobody was signed in.",
            )
        }
    };
    // Login CSRF (`crate::signin`): the form must come back from the
    // browser it was shown to, with its pre-session cookie.
    let https = core.https();
    let browser = req
        .cookie
        .and_then(|h| find_cookie(h, login_cookie_name(https)));
    if !pending.is_for_browser(browser) {
        return refuse_page(
            core,
            ctx,
            out,
            400,
            "This sign-in form was not opened in this browser, or the browser did not send \
             back its sign-in cookie (cookies blocked, or the form sent from another site); \
             nobody was signed in.",
        );
    }
    let clients = core.clients();
    // Checked again: the client may have changed, and Redis is not trusted
    // to say where a code goes.
    let Some(client) = clients
        .get(&pending.client_id)
        .filter(|c| c.redirect_uri_registered(&pending.redirect_uri))
    else {
        return refuse_page(
            core,
            ctx,
            out,
            400,
            "The app of this sign-in request is no longer registered with this redirect URI.",
        );
    };
    let username = form.get("username").unwrap_or("");
    let password = form.get("password").unwrap_or("");
    let again = |out: &mut Vec<u8>, status: u16, error: &str| {
        let page = LoginPage {
            display_name: &core.config().oauth.display_name,
            client_id: &client.client_id,
            request: sealed,
            csrf: csrf.unwrap_or_default(),
            username: if username.chars().count() <= MAX_USERNAME_CHARS {
                username
            } else {
                ""
            },
            error: Some(error),
        };
        pages::write_login(out, ctx, status, &page, &pending.redirect_uri)
    };
    if username.is_empty() || password.is_empty() {
        return again(out, 400, "Enter your username and password.");
    }
    if username.chars().count() > MAX_USERNAME_CHARS || password.len() > MAX_PASSWORD_BYTES {
        // No account has such a name or password: the same answer, without
        // argon2 work.
        return again(out, 200, INVALID_CREDENTIALS);
    }
    let user =
        match check_password(core, username, password, super::client_ip(core, req, peer)).await {
            Ok(user) => user,
            Err(OAuthError::InvalidGrant(_)) => return again(out, 200, INVALID_CREDENTIALS),
            Err(OAuthError::TooManyRequests { retry_after }) => {
                let wait = if retry_after > 90 {
                    format!(
                        "Too many failed sign-ins. Try again in {} minutes.",
                        retry_after.div_ceil(60)
                    )
                } else {
                    format!(
                        "Too many failed sign-ins. Try again in {} seconds.",
                        retry_after.max(1)
                    )
                };
                return again(out, 429, &wait);
            }
            Err(OAuthError::TemporarilyUnavailable(_)) => return unavailable(core, ctx, out),
            Err(_) => {
                return pages::write_error_page(
                    out,
                    ctx,
                    500,
                    &core.config().oauth.display_name,
                    "Something went wrong on our side.",
                    "Try again in a moment.",
                )
            }
        };
    let scope = granted_scope(client, &pending.scope, &user.scopes);
    let now = unix_now();
    let grant = CodeGrant {
        client_id: client.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge.clone(),
        scope,
        nonce: pending.nonce.clone(),
        sub: user.id,
        username: user.username,
        auth_time: now,
        session: None,
    };
    // The browser session (single sign-on): a new one replaces the
    // browser's old one, whoever it was for.
    let sessions = core.sessions();
    let old = req
        .cookie
        .and_then(|h| find_cookie(h, crate::sessions::cookie_name(https)));
    let (idle, absolute) = core.config().session_lifetimes();
    let session = Session {
        sub: grant.sub.clone(),
        username: grant.username.clone(),
        auth_time: now,
    };
    let created = match old {
        Some(old) => sessions.end(old).await,
        None => Ok(()),
    };
    let created = match created {
        Ok(()) => sessions
            .create(&session, Lifetimes { idle, absolute }, now)
            .await
            .ok(),
        Err(_) => None,
    };
    let Some(id) = created else {
        // Fails closed, as for the code: Redis holds both.
        return redirect_error(
            core,
            ctx,
            out,
            &pending.redirect_uri,
            pending.state.as_deref(),
            AuthzError {
                code: "temporarily_unavailable",
                description: "the session store is unavailable",
            },
        );
    };
    // The cookie lives as long as the session can: the absolute lifetime
    // (Redis ends it sooner when it is idle).
    let cookie = set_cookie(&id, https, absolute);
    issue_code(core, ctx, out, &pending, &grant, &cookie).await
}

/// What the user gets of what the client asked: the client's scopes
/// (checked at `/authorize`) that the user holds, and the OpenID Connect
/// scopes. A scope the user lacks is left out rather than refused (RFC 6749
/// §3.3); the token response says what was granted.
pub fn granted_scope(client: &ClientRecord, asked: &str, user_scopes: &[String]) -> String {
    asked
        .split(' ')
        .filter(|s| !s.is_empty())
        .filter(|s| client.scopes.iter().any(|c| c == s))
        .filter(|s| OIDC_SCOPES.contains(s) || user_scopes.iter().any(|u| u == s))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Stores the code and sends the browser back to the app with it, and
/// with `cookies` (`Set-Cookie` lines).
pub(super) async fn issue_code(
    core: &Core,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
    pending: &PendingAuthorization,
    grant: &CodeGrant,
    cookies: &str,
) -> u16 {
    let ttl = core.config().oauth.code_ttl.as_secs();
    let code = match core.codes().issue(grant, ttl).await {
        Ok(code) => code,
        Err(_) => {
            return redirect_error(
                core,
                ctx,
                out,
                &pending.redirect_uri,
                pending.state.as_deref(),
                AuthzError {
                    code: "temporarily_unavailable",
                    description: "the authorization code store is unavailable",
                },
            )
        }
    };
    let location = pages::redirect_location(
        &pending.redirect_uri,
        &[
            ("code", Some(&code)),
            ("state", pending.state.as_deref()),
            ("iss", Some(core.issuer())),
        ],
    );
    pages::write_redirect_with_cookies(
        out,
        ctx,
        &location,
        &core.config().oauth.display_name,
        cookies,
    )
}

#[cold]
fn expired(core: &Core, ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    refuse_page(core, ctx, out, 400, "This sign-in page has expired.")
}

#[cold]
fn unavailable(core: &Core, ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    pages::write_error_page(
        out,
        ctx,
        503,
        &core.config().oauth.display_name,
        "Sign-in is unavailable for a moment.",
        "Try again in a few seconds.",
    )
}
