//! `GET` / `POST /authorize`: the authorization endpoint of the authorization code
//! flow (RFC 6749 §4.1.1, RFC 7636, RFC 9700 §2.1, OpenID Connect Core
//! §3.1.2), issue #16.
//!
//! The checks run in the order RFC 6749 §4.1.2.1 needs: first the client
//! and the redirect URI, whose failures go to an error page (`400`) and
//! never to a URI: a redirect URI is used only when it is registered for
//! the client, compared as an exact string. Every later failure goes back
//! to that URI as `error`, `error_description`, `state` (unchanged) and
//! `iss` (RFC 9207). A request that passes is answered with a code at
//! once when the browser's session ([`crate::sessions`]) may sign the user
//! in (single sign-on; `prompt=login` and `max_age` ask for the password
//! again), else with the sign-in page, whose form carries it, sealed
//! ([`crate::signin`]) and bound to the browser's pre-session cookie, to
//! `POST /login` ([`super::login`]); nothing is stored for the page. Redis
//! or PostgreSQL trouble with a session cookie fails closed:
//! `temporarily_unavailable` at the redirect URI.
//!
//! Decisions where the RFCs leave room (README, "Sign-in for browser
//! apps"): `redirect_uri` is required (OpenID Connect requires it; an exact
//! match needs something to match); PKCE is required for every client with
//! `S256` only (`plain` is refused, RFC 9700 §2.1.1); `prompt` takes `none`
//! and `login`; a request without `scope` asks for every scope the client is
//! registered with, as at the token endpoint.
//!
//! Owns: the authorization request's checks and its error answers. Never
//! imports: `net`, `cores` or a store.

use std::rc::Rc;

use crate::clock::unix_now;
use crate::codes::is_valid_s256_challenge;
use crate::codes::CodeGrant;
use crate::handlers::login::{granted_scope, issue_code};
use crate::handlers::oauth::Form;
use crate::handlers::pages::{self, LoginPage};
use crate::handlers::token::grant_scope;
use crate::http::{Request, ResponseCtx};
use crate::identity::users::{self, User};
use crate::identity::{ClientRecord, GrantType};
use crate::sessions::{self, Lifetimes};
use crate::signin::{
    browser_binding, find_cookie, is_login_cookie_value, login_cookie_name, new_login_cookie,
    page_salt, set_login_cookie, PendingAuthorization, MAX_SEALED_BYTES, PENDING_TTL_SECS,
};
use crate::state::Core;

/// Longest `nonce` taken: it is copied into every id_token of the code.
const MAX_NONCE_CHARS: usize = 512;

/// Longest `state` taken, in bytes. It travels sealed in the sign-in form
/// (at most `signin::MAX_SEALED_BYTES`) and back in the redirect's URL;
/// without a cap a long one made a page whose form could never be opened.
/// Apps put a random value or a short reference here; 4 KiB leaves room
/// for the ones that carry a signed blob.
pub const MAX_STATE_BYTES: usize = 4096;

/// An authorization error sent back to the redirect URI (RFC 6749
/// §4.1.2.1, OpenID Connect Core §3.1.2.6). The description is static text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthzError {
    pub code: &'static str,
    pub description: &'static str,
}

impl AuthzError {
    pub const fn invalid_request(description: &'static str) -> AuthzError {
        AuthzError {
            code: "invalid_request",
            description,
        }
    }
}

/// Writes the `303` carrying `err` back to `redirect_uri`.
pub fn redirect_error(
    core: &Core,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
    redirect_uri: &str,
    state: Option<&str>,
    err: AuthzError,
) -> u16 {
    let location = pages::redirect_location(
        redirect_uri,
        &[
            ("error", Some(err.code)),
            ("error_description", Some(err.description)),
            ("state", state),
            ("iss", Some(core.issuer())),
        ],
    );
    pages::write_redirect(out, ctx, &location, &core.config().oauth.display_name)
}

/// The error page for what cannot go back to the app.
#[cold]
pub fn refuse_page(
    core: &Core,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
    status: u16,
    message: &str,
) -> u16 {
    pages::write_error_page(
        out,
        ctx,
        status,
        &core.config().oauth.display_name,
        message,
        "Go back to the app and try again. If this keeps happening, tell the app's administrator.",
    )
}

/// `GET /authorize` (parameters in the query) or `POST /authorize`
/// (parameters in a form body; OpenID Connect Core §3.1.2.1).
pub async fn authorize(
    core: &Rc<Core>,
    req: &Request<'_>,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let form = match pages::query_or_form(req) {
        Ok(f) => f,
        Err(why) => {
            return refuse_page(
                core,
                ctx,
                out,
                400,
                &format!("The sign-in request is malformed: {why}."),
            )
        }
    };
    let clients = core.clients();
    let Some(client_id) = form.get("client_id") else {
        return refuse_page(
            core,
            ctx,
            out,
            400,
            "The sign-in request names no app (client_id is missing).",
        );
    };
    let Some(client) = clients.get(client_id) else {
        return refuse_page(
            core,
            ctx,
            out,
            400,
            "The app that sent you here is not registered with this server (unknown client_id).",
        );
    };
    let Some(redirect_uri) = form.get("redirect_uri") else {
        return refuse_page(core, ctx, out, 400, "The sign-in request has no redirect_uri: the app must name the exact redirect URI registered for it.");
    };
    if !client.redirect_uri_registered(redirect_uri) {
        // Never a redirect to it (RFC 6749 §4.1.2.1, RFC 9700 §4.1).
        return refuse_page(core, ctx, out, 400, "The redirect_uri of the sign-in request is not registered for this app; for your safety you are not sent there.");
    }
    let state = form.get("state");
    if state.is_some_and(|s| s.len() > MAX_STATE_BYTES) {
        // Not echoed: a value this long does not belong in a URL.
        return redirect_error(
            core,
            ctx,
            out,
            redirect_uri,
            None,
            AuthzError::invalid_request("state is longer than 4096 bytes"),
        );
    }
    match check(client, &form) {
        Ok((pending, prompt, max_age)) => {
            answer(core, req, ctx, out, client, pending, prompt, max_age).await
        }
        Err(err) => redirect_error(core, ctx, out, redirect_uri, state, err),
    }
}

/// A checked request: a code at once when the browser's session may sign
/// the user in (single sign-on), else the sign-in page, or `login_required`
/// for `prompt=none`.
#[allow(clippy::too_many_arguments)]
async fn answer(
    core: &Rc<Core>,
    req: &Request<'_>,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
    client: &ClientRecord,
    mut pending: PendingAuthorization,
    prompt: Prompt,
    max_age: Option<u64>,
) -> u16 {
    let https = core.https();
    let now = unix_now();
    // `prompt=login` asks for the password whatever the session.
    let session_id = match prompt {
        Prompt::Login => None,
        _ => req
            .cookie
            .and_then(|h| find_cookie(h, sessions::cookie_name(https))),
    };
    if let Some(id) = session_id {
        match sso(core, client, &pending, id, max_age, now).await {
            Ok(Some(grant)) => return issue_code(core, ctx, out, &pending, &grant, "").await,
            Ok(None) => {}
            // Fails closed: no sign-in without the session's checks, and
            // no page either (it would ask for a password the user need
            // not type once the store is back).
            Err(description) => {
                return redirect_error(
                    core,
                    ctx,
                    out,
                    &pending.redirect_uri,
                    pending.state.as_deref(),
                    AuthzError {
                        code: "temporarily_unavailable",
                        description,
                    },
                )
            }
        }
    }
    if prompt == Prompt::None {
        // OpenID Connect Core §3.1.2.6: no page may be shown.
        return redirect_error(
            core,
            ctx,
            out,
            &pending.redirect_uri,
            pending.state.as_deref(),
            AuthzError {
                code: "login_required",
                description: "the user is not signed in",
            },
        );
    }
    // The pre-session cookie the form is bound to (login CSRF,
    // `crate::signin`): the browser's own when it has one, else a new one.
    let browser = req
        .cookie
        .and_then(|h| find_cookie(h, login_cookie_name(https)))
        .filter(|v| is_login_cookie_value(v))
        .map_or_else(new_login_cookie, str::to_owned);
    pending.browser = browser_binding(&browser);
    sign_in_page(
        core,
        ctx,
        out,
        client,
        &pending,
        &set_login_cookie(&browser, https),
    )
}

/// The code grant of the browser session `id` when it signs the user in
/// for `pending`: the session is valid (its idle lifetime restarted), its
/// sign-in meets `max_age`, and its user is still enabled. `Err` with a
/// description when Redis or PostgreSQL fails.
async fn sso(
    core: &Rc<Core>,
    client: &ClientRecord,
    pending: &PendingAuthorization,
    id: &str,
    max_age: Option<u64>,
    now: u64,
) -> Result<Option<CodeGrant>, &'static str> {
    let (idle, absolute) = core.config().session_lifetimes();
    let session = core
        .sessions()
        .touch(id, Lifetimes { idle, absolute }, now)
        .await
        .map_err(|_| "the session store is unavailable")?;
    let Some(session) = session else {
        return Ok(None);
    };
    // OpenID Connect Core §3.1.2.1: past max_age the user types the
    // password again; max_age=0 always.
    if max_age.is_some_and(|max| max == 0 || now.saturating_sub(session.auth_time) > max) {
        return Ok(None);
    }
    // The user as it is now: its scopes, and not disabled (a disable also
    // sets the mark that ended the session above; this holds without it).
    let pg = core.pg().clone();
    let sub = session.sub.clone();
    let user = core
        .pool()
        .run(move || -> Result<Option<User>, String> {
            let mut conn = pg.get().map_err(|e| e.to_string())?;
            users::find_by_id(&mut *conn, &sub).map_err(|e| e.to_string())
        })
        .await;
    let user = match user {
        Ok(Ok(user)) => user,
        Ok(Err(e)) => {
            core.pg()
                .log_failure("browser session: user lookup failed", &e);
            return Err("the user store is unavailable");
        }
        Err(_) => return Err("the user store is busy"),
    };
    let Some(user) = user.filter(|u| {
        !u.disabled
            && u.not_before
                .is_none_or(|nbf| i64::try_from(session.auth_time).is_ok_and(|at| at > nbf))
    }) else {
        return Ok(None);
    };
    Ok(Some(CodeGrant {
        client_id: client.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge.clone(),
        scope: granted_scope(client, &pending.scope, &user.scopes),
        nonce: pending.nonce.clone(),
        sub: user.id,
        username: user.username,
        auth_time: session.auth_time,
        session: None,
    }))
}

/// The checks after the client and the redirect URI: on success the
/// pending request.
fn check(
    client: &ClientRecord,
    form: &Form<'_>,
) -> Result<(PendingAuthorization, Prompt, Option<u64>), AuthzError> {
    if !client.allows(GrantType::AuthorizationCode) {
        return Err(AuthzError {
            code: "unauthorized_client",
            description: "this client may not use the authorization code flow",
        });
    }
    // OpenID Connect Core §6: request objects are not supported.
    if form.get("request").is_some() {
        return Err(AuthzError {
            code: "request_not_supported",
            description: "request objects are not supported",
        });
    }
    if form.get("request_uri").is_some() {
        return Err(AuthzError {
            code: "request_uri_not_supported",
            description: "request_uri is not supported",
        });
    }
    match form.get("response_type") {
        None => return Err(AuthzError::invalid_request("response_type is required")),
        Some("code") => {}
        Some(_) => {
            return Err(AuthzError {
                code: "unsupported_response_type",
                description: "response_type must be code",
            })
        }
    }
    if form.get("response_mode").is_some_and(|m| m != "query") {
        return Err(AuthzError::invalid_request("response_mode must be query"));
    }
    let Some(challenge) = form.get("code_challenge") else {
        return Err(AuthzError::invalid_request(
            "code_challenge is required (PKCE with S256)",
        ));
    };
    // RFC 7636 §4.3: an absent method means `plain`, which is refused.
    if form.get("code_challenge_method") != Some("S256") {
        return Err(AuthzError::invalid_request(
            "code_challenge_method must be S256",
        ));
    }
    if !is_valid_s256_challenge(challenge) {
        return Err(AuthzError::invalid_request(
            "code_challenge must be 43 characters of base64url (S256)",
        ));
    }
    let scope = grant_scope(form.get("scope"), &client.scopes).map_err(|e| AuthzError {
        code: "invalid_scope",
        description: e.description(),
    })?;
    let prompt = parse_prompt(form.get("prompt"))?;
    let max_age = match form.get("max_age") {
        None => None,
        Some(m) => Some(
            m.parse::<u64>()
                .map_err(|_| AuthzError::invalid_request("max_age must be a number of seconds"))?,
        ),
    };
    let nonce = form.get("nonce");
    if nonce.is_some_and(|n| n.chars().count() > MAX_NONCE_CHARS) {
        return Err(AuthzError::invalid_request(
            "nonce is longer than 512 characters",
        ));
    }
    let pending = PendingAuthorization {
        client_id: client.client_id.clone(),
        redirect_uri: form.get("redirect_uri").unwrap_or_default().to_owned(),
        code_challenge: challenge.to_owned(),
        scope: scope.join(" "),
        state: form.get("state").map(str::to_owned),
        nonce: nonce.map(str::to_owned),
        expires: unix_now() + PENDING_TTL_SECS,
        salt: page_salt(),
        // Set with the page (`answer`).
        browser: String::new(),
    };
    Ok((pending, prompt, max_age))
}

/// What `prompt` asks (OpenID Connect Core §3.1.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prompt {
    /// Absent: sign in if needed.
    Default,
    /// Never show a page: answer at once or `login_required`.
    None,
    /// Ask for the password even when signed in.
    Login,
}

fn parse_prompt(raw: Option<&str>) -> Result<Prompt, AuthzError> {
    let Some(raw) = raw else {
        return Ok(Prompt::Default);
    };
    let mut prompt = Prompt::Default;
    for value in raw.split(' ').filter(|v| !v.is_empty()) {
        prompt = match (prompt, value) {
            (Prompt::Default | Prompt::Login, "login") => Prompt::Login,
            (Prompt::Default | Prompt::None, "none") => Prompt::None,
            (_, "none" | "login") => {
                return Err(AuthzError::invalid_request(
                    "prompt=none cannot be combined with another value",
                ))
            }
            _ => return Err(AuthzError::invalid_request("prompt must be none or login")),
        };
    }
    Ok(prompt)
}

/// The sign-in page, carrying the sealed request.
fn sign_in_page(
    core: &Core,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
    client: &ClientRecord,
    pending: &PendingAuthorization,
    cookies: &str,
) -> u16 {
    let (request, csrf) = core.signin_mac().seal(pending);
    if request.len() > MAX_SEALED_BYTES {
        // The form could not be opened again (many long scopes on top of a
        // long state and nonce): refused now rather than after the password.
        return redirect_error(
            core,
            ctx,
            out,
            &pending.redirect_uri,
            pending.state.as_deref(),
            AuthzError::invalid_request("the authorization request is too large"),
        );
    }
    let page = LoginPage {
        display_name: &core.config().oauth.display_name,
        client_id: &client.client_id,
        request: &request,
        csrf: &csrf,
        username: "",
        error: None,
    };
    pages::write_login_with_cookies(out, ctx, 200, &page, &pending.redirect_uri, cookies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts() {
        assert_eq!(parse_prompt(None), Ok(Prompt::Default));
        assert_eq!(parse_prompt(Some("login")), Ok(Prompt::Login));
        assert_eq!(parse_prompt(Some("none")), Ok(Prompt::None));
        assert_eq!(parse_prompt(Some("login login")), Ok(Prompt::Login));
        assert!(parse_prompt(Some("none login")).is_err());
        assert!(parse_prompt(Some("login none")).is_err());
        assert!(parse_prompt(Some("consent")).is_err());
    }
}
