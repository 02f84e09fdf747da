//! `GET` / `POST /logout`: RP-initiated logout (OpenID Connect
//! RP-Initiated Logout 1.0), the `end_session_endpoint` of discovery; issue
//! #16 item 5.
//!
//! An app sends the browser here to end the user's browser session
//! ([`crate::sessions`]), with `id_token_hint` (an ID token tokend issued
//! to it, expired or not: [`crate::tokens::id_hint`]), `client_id`,
//! `post_logout_redirect_uri` and `state` (§2), in the query or in a form.
//! The checks come first and refuse with a `400` page, never a redirect: a
//! hint that is not one of our ID tokens; a `client_id` that names no
//! client, or another client than the hint's; a `post_logout_redirect_uri`
//! that is not registered, character for character, for the client the hint
//! or `client_id` names (§3), or that comes with no client at all. tokend
//! never sends a browser to a URI it does not know.
//!
//! Then the browser's session decides:
//! - no session (none, expired, or a cookie tokend never gave): nothing to
//!   end; the cookie is cleared and the browser goes on;
//! - a hint for the session's user (`sub`): the request is the user's own
//!   app acting for them; the session ends at once (§2: the OP need not
//!   ask when the hint names the signed-in user);
//! - no hint, or a hint for another user: §2 says the OP MUST ask the user.
//!   The confirmation page's form carries the checked request, sealed with
//!   the sign-in form's HMAC key under its own prefix
//!   ([`crate::signin::PendingLogout`]) and bound to the session cookie;
//!   only that form, posted back from that browser within 10 minutes, ends
//!   the session.
//!
//! Ending the session deletes it in Redis and clears its cookie
//! (`Max-Age=0`, the same attributes); the browser then goes `303` to the
//! `post_logout_redirect_uri` with `state` unchanged, or gets "You are
//! signed out". The tokens the apps hold are theirs and stay valid until
//! they expire or are revoked at `/oauth/revoke` (RFC 7009); a logout
//! everywhere (`/users/me/logout-all`) ends those too. Redis trouble fails
//! closed: a `503` page that says the user is still signed in, never a
//! redirect that would tell the app the logout happened.
//!
//! `logout_hint` and `ui_locales` are read and ignored (§2 makes both
//! optional): a session is one user's, and the pages speak English.
//!
//! Owns: the logout request's checks and the sign-out pages' answers.
//! Never imports: `net`, `cores` or a store.

use std::rc::Rc;

use crate::clock::unix_now;
use crate::handlers::authorize::MAX_STATE_BYTES;
use crate::handlers::oauth::Form;
use crate::handlers::pages::{self, LogoutPage, SignedOutPage};
use crate::http::{Method, Request, ResponseCtx};
use crate::identity::ClientRecord;
use crate::sessions::{self, Lifetimes};
use crate::signin::{
    browser_binding, find_cookie, page_salt, OpenError, PendingLogout, PENDING_TTL_SECS,
};
use crate::state::Core;
use crate::tokens::{verify_id_token_hint, HintError, IdTokenHint};

/// What the error pages suggest.
const GO_BACK: &str =
    "Go back to the app and sign out again. If this keeps happening, tell the app's administrator.";

/// `GET /logout` (parameters in the query), `POST /logout` (in a form), or
/// the confirmation form posted back (`logout_request`, `csrf_token`).
pub async fn logout(
    core: &Rc<Core>,
    req: &Request<'_>,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let form = match pages::query_or_form(req) {
        Ok(f) => f,
        Err(why) => {
            return refuse(
                core,
                ctx,
                out,
                &format!("The sign-out request is malformed: {why}."),
            )
        }
    };
    if let Some(sealed) = form.get("logout_request") {
        // The confirmation changes state: only ever a POST (a link cannot
        // carry it).
        if req.method != Method::Post {
            return refuse(
                core,
                ctx,
                out,
                "The sign-out confirmation must be sent by its form.",
            );
        }
        return confirmed(core, req, ctx, out, sealed, form.get("csrf_token")).await;
    }
    request(core, req, ctx, out, &form).await
}

/// An app's logout request (§2).
async fn request(
    core: &Rc<Core>,
    req: &Request<'_>,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
    form: &Form<'_>,
) -> u16 {
    let hint = match form.get("id_token_hint").map(|raw| check_hint(core, raw)) {
        None => None,
        Some(Ok(hint)) => Some(hint),
        Some(Err(e)) => {
            return refuse(
                core,
                ctx,
                out,
                &format!(
                    "The sign-out request is refused (invalid_request): its id_token_hint {}; \
                     nobody was signed out.",
                    e.description()
                ),
            )
        }
    };
    let clients = core.clients();
    // The client: `client_id` when given (it must be the hint's), else the
    // hint's audience.
    let (client_id, client) = match (form.get("client_id"), &hint) {
        (Some(id), Some(h)) if !h.names_client(id) => {
            return refuse(
                core,
                ctx,
                out,
                "The sign-out request is refused (invalid_request): its client_id is not the app \
                 its id_token_hint was issued to; nobody was signed out.",
            )
        }
        (Some(id), _) => match clients.get(id) {
            Some(c) => (Some(id), Some(c)),
            None => {
                return refuse(
                    core,
                    ctx,
                    out,
                    "The app that sent you here is not registered with this server (unknown client_id).",
                )
            }
        },
        (None, Some(h)) => (Some(h.aud.as_str()), clients.get(&h.aud)),
        (None, None) => (None, None),
    };
    let redirect = match check_redirect(form.get("post_logout_redirect_uri"), client_id, client) {
        Ok(r) => r,
        Err(message) => return refuse(core, ctx, out, message),
    };
    let state = form.get("state");
    if state.is_some_and(|s| s.len() > MAX_STATE_BYTES) {
        // As at /authorize: it could not travel in the confirmation's
        // sealed form, nor belongs in a URL.
        return refuse(
            core,
            ctx,
            out,
            "The sign-out request is refused (invalid_request): its state is longer than 4096 \
             bytes; nobody was signed out.",
        );
    }

    let https = core.https();
    let cookie = req
        .cookie
        .and_then(|h| find_cookie(h, sessions::cookie_name(https)));
    let session = match cookie {
        None => None,
        Some(id) => {
            let (idle, absolute) = core.config().session_lifetimes();
            match core
                .sessions()
                .touch(id, Lifetimes { idle, absolute }, unix_now())
                .await
            {
                Ok(s) => s,
                Err(_) => return unavailable(core, ctx, out),
            }
        }
    };
    match (session, cookie) {
        // Nothing to end: a cookie that names no session is cleared.
        (None, _) | (_, None) => {
            finish(core, ctx, out, None, cookie.is_some(), redirect, state).await
        }
        // The user's own app, for the user signed in here.
        (Some(s), Some(id)) if hint.as_ref().is_some_and(|h| h.sub == s.sub) => {
            finish(core, ctx, out, Some(id), true, redirect, state).await
        }
        // §2: ask the user.
        (Some(s), Some(id)) => {
            let pending = PendingLogout {
                client_id: client.map(|c| c.client_id.clone()),
                post_logout_redirect_uri: redirect.map(str::to_owned),
                state: state.map(str::to_owned),
                expires: unix_now() + PENDING_TTL_SECS,
                salt: page_salt(),
                session: browser_binding(id),
            };
            let (sealed, csrf) = core.signin_mac().seal_logout(&pending);
            let page = LogoutPage {
                display_name: &core.config().oauth.display_name,
                username: &s.username,
                client_id: client.map(|c| c.client_id.as_str()),
                other_user: hint.is_some(),
                request: &sealed,
                csrf: &csrf,
            };
            pages::write_logout_confirmation(out, ctx, &page, redirect)
        }
    }
}

/// The request's post-logout redirect URI, when it names one: it must be
/// registered, character for character, for the client the request names
/// (`client_id` as the request gave it or the hint's audience; `client` the
/// registered client of that id). `Err` with what the page says: no
/// redirect to it, ever (§3, §4; RFC 9700 §4.1).
fn check_redirect<'f>(
    uri: Option<&'f str>,
    client_id: Option<&str>,
    client: Option<&ClientRecord>,
) -> Result<Option<&'f str>, &'static str> {
    let Some(uri) = uri else {
        return Ok(None);
    };
    match (client_id, client) {
        (None, _) => Err(
            "The sign-out request names a post_logout_redirect_uri but no app (neither \
             id_token_hint nor client_id); for your safety you are not sent there.",
        ),
        (Some(_), None) => Err(
            "The app of this sign-out request is no longer registered with this server; \
             for your safety you are not sent to its post_logout_redirect_uri.",
        ),
        (Some(_), Some(c)) if !c.post_logout_redirect_uri_registered(uri) => Err(
            "The post_logout_redirect_uri of the sign-out request is not registered for \
             this app; for your safety you are not sent there.",
        ),
        (Some(_), Some(_)) => Ok(Some(uri)),
    }
}

/// The hint, verified against the core's keys and issuer. An unknown key
/// asks the control thread for a (rate-limited) key-set reload, as an
/// access token's does: a key published by another node a moment ago.
fn check_hint(core: &Core, raw: &str) -> Result<IdTokenHint, HintError> {
    let r = verify_id_token_hint(&core.keys(), raw, core.issuer());
    if r == Err(HintError::UnknownKid) {
        core.request_key_reload();
    }
    r
}

/// The confirmation form, posted back: its seal (CSRF token), its session
/// binding, then the end of the session.
async fn confirmed(
    core: &Rc<Core>,
    req: &Request<'_>,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
    sealed: &str,
    csrf: Option<&str>,
) -> u16 {
    let pending =
        match core.signin_mac().open_logout(sealed, csrf, unix_now()) {
            Ok(p) => p,
            Err(OpenError::Expired) => {
                return refuse(
                    core,
                    ctx,
                    out,
                    "This sign-out page has expired; you are still signed in.",
                )
            }
            Err(OpenError::Forged) => return refuse(
                core,
                ctx,
                out,
                "The sign-out form was not sent by this server's sign-out page (its CSRF token \
                 is missing or wrong); nobody was signed out.",
            ),
        };
    let https = core.https();
    let cookie = req
        .cookie
        .and_then(|h| find_cookie(h, sessions::cookie_name(https)));
    if !pending.is_for_session(cookie) {
        return refuse(
            core,
            ctx,
            out,
            "This sign-out form was not opened in this browser, or the browser did not send back \
             its session cookie (the form sent from another site); nobody was signed out.",
        );
    }
    // Checked again: the client may have changed since the page.
    let clients = core.clients();
    if let Some(uri) = &pending.post_logout_redirect_uri {
        let registered = pending
            .client_id
            .as_deref()
            .and_then(|id| clients.get(id))
            .is_some_and(|c| c.post_logout_redirect_uri_registered(uri));
        if !registered {
            return refuse(
                core,
                ctx,
                out,
                "The post_logout_redirect_uri of this sign-out request is no longer registered \
                 for its app; nobody was signed out.",
            );
        }
    }
    finish(
        core,
        ctx,
        out,
        cookie,
        true,
        pending.post_logout_redirect_uri.as_deref(),
        pending.state.as_deref(),
    )
    .await
}

/// Ends the session `end` (when there is one), clears the cookie (when
/// `clear`), then sends the browser to `redirect` with `state`, or shows
/// "You are signed out". When Redis cannot end the session: the `503`
/// page, the cookie kept, no redirect.
async fn finish(
    core: &Core,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
    end: Option<&str>,
    clear: bool,
    redirect: Option<&str>,
    state: Option<&str>,
) -> u16 {
    if let Some(id) = end {
        if core.sessions().end(id).await.is_err() {
            return unavailable(core, ctx, out);
        }
    }
    let https = core.https();
    // The same name and attributes as the cookie that was set, with no
    // value and Max-Age=0: browsers drop it (RFC 6265 §5.2.2, §5.3).
    let cookies = if clear {
        sessions::set_cookie("", https, 0)
    } else {
        String::new()
    };
    let display_name = &core.config().oauth.display_name;
    match redirect {
        // §3: `state` unchanged; nothing else is added.
        Some(uri) => {
            let location = pages::redirect_location(uri, &[("state", state)]);
            pages::write_redirect_with_cookies(out, ctx, &location, display_name, &cookies)
        }
        None => pages::write_signed_out(out, ctx, &SignedOutPage { display_name }, &cookies),
    }
}

/// The `400` page for a request that cannot be answered with a redirect.
#[cold]
fn refuse(core: &Core, ctx: &ResponseCtx<'_>, out: &mut Vec<u8>, message: &str) -> u16 {
    pages::write_logout_error_page(
        out,
        ctx,
        400,
        &core.config().oauth.display_name,
        message,
        GO_BACK,
    )
}

/// The `503` page when the session store cannot answer: the session could
/// not be ended, and the user is told so.
#[cold]
fn unavailable(core: &Core, ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    pages::write_logout_error_page(
        out,
        ctx,
        503,
        &core.config().oauth.display_name,
        "Signing out is unavailable for a moment: you are still signed in.",
        "Try again in a few seconds.",
    )
}
