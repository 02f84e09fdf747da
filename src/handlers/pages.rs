//! The HTML side of sign-in (issue #16): the sign-in page, the sign-out
//! confirmation and the "signed out" page, the error page, and the `303`
//! redirects back to an app, with the headers every one of them carries.
//!
//! The pages are `askama` templates (`templates/*.html`), compiled into the
//! binary and escaped by the template engine: every value that came from a
//! request (a client id, a username typed back into the form) is
//! HTML-escaped, never written raw. No external asset, no JavaScript: the
//! CSS is inline (`style-src 'unsafe-inline'`), everything else is refused
//! by the `Content-Security-Policy`.
//!
//! Owns: the page templates, their security headers and the redirect
//! response. Never imports: `net`, `cores`, a service or a store.

use askama::Template;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::http::{Form, Method, Request, ResponseCtx};

/// `Content-Type` of the pages.
const HTML: &str = "text/html; charset=utf-8";

/// RFC 3986 unreserved characters stay, everything else is percent-encoded:
/// what goes into a redirect's query.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The sign-in page.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub display_name: &'a str,
    pub client_id: &'a str,
    /// The pending request's id (hidden field).
    pub request: &'a str,
    /// The CSRF token (hidden field).
    pub csrf: &'a str,
    /// The username typed before, shown again after a failed attempt.
    pub username: &'a str,
    /// Why the last attempt failed.
    pub error: Option<&'a str>,
}

/// The error page: for what cannot go back to the app (RFC 6749 §4.1.2.1:
/// an unknown client, a redirect URI that is missing or not registered) and
/// for a sign-in form that cannot be used.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub display_name: &'a str,
    pub title: &'a str,
    pub message: &'a str,
    /// What the user can do about it.
    pub hint: &'a str,
}

/// The sign-out confirmation (OpenID Connect RP-Initiated Logout 1.0 §2:
/// the OP asks the user whether to log out when the request does not show
/// it comes from the user's own app).
#[derive(Template)]
#[template(path = "logout.html")]
pub struct LogoutPage<'a> {
    pub display_name: &'a str,
    /// Who is signed in in this browser (the session's username).
    pub username: &'a str,
    /// The app that asked, when the request named one.
    pub client_id: Option<&'a str>,
    /// Whether the app's `id_token_hint` named another user than the
    /// session's.
    pub other_user: bool,
    /// The sealed pending logout (hidden field).
    pub request: &'a str,
    /// The CSRF token (hidden field).
    pub csrf: &'a str,
}

/// "You are signed out": the end of a logout without a post-logout
/// redirect URI.
#[derive(Template)]
#[template(path = "signed_out.html")]
pub struct SignedOutPage<'a> {
    pub display_name: &'a str,
}

/// The headers of every page: no framing (clickjacking), no caching, no
/// script, no external asset, no referrer.
///
/// `form-action` allows the page's own origin and, for the sign-in page,
/// `also`: the origin of the redirect URI the form's answer sends the
/// browser to. Browsers check `form-action` on the redirects that follow a
/// form submission (CSP Level 3 §6.4.1; Chromium enforces it), so with
/// `'self'` alone the `303` back to the app would be blocked.
fn page_headers(out: &mut Vec<u8>, also: Option<&str>) {
    out.extend_from_slice(
        b"Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; \
          base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    );
    if let Some(origin) = also {
        out.push(b' ');
        out.extend_from_slice(origin.as_bytes());
    }
    out.extend_from_slice(
        b"\r\nX-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\n\
          Referrer-Policy: no-referrer\r\nCache-Control: no-store\r\nPragma: no-cache\r\n",
    );
}

/// The source expression of a redirect URI's origin for `form-action`:
/// `https://app.example:8443` or, for a private-use scheme, `com.example.app:`.
/// `None` when it holds anything a CSP source must not (then only `'self'`
/// is allowed, and a browser that enforces it stops at the redirect: it
/// fails closed).
pub fn form_action_source(redirect_uri: &str) -> Option<String> {
    let (scheme, rest) = redirect_uri.split_once(':')?;
    let source = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            let authority = &after[..end];
            // No userinfo in a registered URI; refuse it here too.
            if authority.is_empty() || authority.contains('@') {
                return None;
            }
            format!("{scheme}://{authority}")
        }
        None => format!("{scheme}:"),
    };
    let ok = source.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'.' | b'-' | b'+' | b'[' | b']')
    });
    ok.then_some(source)
}

/// Writes a rendered page with its headers and `cookies` (header lines
/// made by tokend: `Set-Cookie`, `Retry-After`). Returns `status`.
fn write_page(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    status: u16,
    body: &str,
    also: Option<&str>,
    cookies: &str,
) -> u16 {
    let mut headers = Vec::with_capacity(512);
    page_headers(&mut headers, also);
    headers.extend_from_slice(cookies.as_bytes());
    crate::http::response::write(out, ctx, status, Some(HTML), &headers, body.as_bytes());
    status
}

/// Renders and writes the sign-in page (`200`, or the status of a failed
/// attempt). `redirect_uri` widens `form-action` to its origin.
pub fn write_login(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    status: u16,
    page: &LoginPage<'_>,
    redirect_uri: &str,
) -> u16 {
    write_login_with_cookies(out, ctx, status, page, redirect_uri, "")
}

/// [`write_login`] with `cookies`: `Set-Cookie` header lines, each ending
/// in CRLF (made by tokend, never of the request).
pub fn write_login_with_cookies(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    status: u16,
    page: &LoginPage<'_>,
    redirect_uri: &str,
    cookies: &str,
) -> u16 {
    let also = form_action_source(redirect_uri);
    render_and_write(out, ctx, status, page, also.as_deref(), cookies)
}

/// Renders and writes the error page of sign-in with `status`.
#[cold]
pub fn write_error_page(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    status: u16,
    display_name: &str,
    message: &str,
    hint: &str,
) -> u16 {
    let title = match status {
        429 => "Too many attempts",
        500 | 503 => "Sign-in is unavailable",
        _ => "Sign-in request refused",
    };
    let page = ErrorPage {
        display_name,
        title,
        message,
        hint,
    };
    render_and_write(out, ctx, status, &page, None, "")
}

/// The error page of sign-out with `status`; a `503` says when to try
/// again (`Retry-After`).
#[cold]
pub fn write_logout_error_page(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    status: u16,
    display_name: &str,
    message: &str,
    hint: &str,
) -> u16 {
    let (title, headers) = match status {
        500 | 503 => ("Sign-out is unavailable", "Retry-After: 5\r\n"),
        _ => ("Sign-out request refused", ""),
    };
    let page = ErrorPage {
        display_name,
        title,
        message,
        hint,
    };
    render_and_write(out, ctx, status, &page, None, headers)
}

/// Renders and writes the sign-out confirmation (`200`). Its form's answer
/// may be a redirect to `post_logout_redirect_uri`, which widens
/// `form-action` to that URI's origin (see [`page_headers`]).
pub fn write_logout_confirmation(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    page: &LogoutPage<'_>,
    post_logout_redirect_uri: Option<&str>,
) -> u16 {
    let also = post_logout_redirect_uri.and_then(form_action_source);
    render_and_write(out, ctx, 200, page, also.as_deref(), "")
}

/// Renders and writes "You are signed out" (`200`) with `cookies`
/// (`Set-Cookie` lines, made by tokend).
pub fn write_signed_out(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    page: &SignedOutPage<'_>,
    cookies: &str,
) -> u16 {
    render_and_write(out, ctx, 200, page, None, cookies)
}

/// Renders `page` and writes it with the pages' headers and `extra`
/// header lines (each ending in CRLF, made by tokend).
fn render_and_write(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    status: u16,
    page: &impl Template,
    also: Option<&str>,
    extra: &str,
) -> u16 {
    match page.render() {
        Ok(body) => write_page(out, ctx, status, &body, also, extra),
        Err(e) => {
            tracing::error!("cannot render a page: {e}");
            write_plain_500(out, ctx)
        }
    }
}

#[cold]
fn write_plain_500(out: &mut Vec<u8>, ctx: &ResponseCtx<'_>) -> u16 {
    crate::http::response::write(
        out,
        ctx,
        500,
        Some(crate::http::response::TEXT),
        b"Cache-Control: no-store\r\n",
        b"internal error\n",
    );
    500
}

/// The parameters of a browser request that may come either way (OpenID
/// Connect Core §3.1.2.1 for `/authorize`, RP-Initiated Logout 1.0 §2 for
/// `/logout`): the query of a `GET`, the form of a `POST`. `Err` is why the
/// request is malformed, for "The … request is malformed: {why}."
pub fn query_or_form<'r>(req: &Request<'r>) -> Result<Form<'r>, &'static str> {
    let params = if req.method == Method::Post {
        if !req.content_type_is("application/x-www-form-urlencoded") {
            return Err("a POST must be a form (application/x-www-form-urlencoded)");
        }
        req.body
    } else {
        req.query.as_bytes()
    };
    // RFC 6749 §3.1: no parameter may be repeated; the query is decoded like
    // a form.
    Form::parse(params).map_err(|e| e.as_str())
}

/// `redirect_uri` with `params` added to its query (RFC 6749 §4.1.2: the
/// URI's own query is kept), each value percent-encoded. Parameters whose
/// value is `None` are left out.
pub fn redirect_location(redirect_uri: &str, params: &[(&str, Option<&str>)]) -> String {
    let mut s = String::with_capacity(redirect_uri.len() + 128);
    s.push_str(redirect_uri);
    let mut sep = match redirect_uri.find('?') {
        None => '?',
        Some(i) if i + 1 == redirect_uri.len() || redirect_uri.ends_with('&') => '\0',
        Some(_) => '&',
    };
    for (name, value) in params {
        let Some(value) = value else { continue };
        if sep != '\0' {
            s.push(sep);
        }
        sep = '&';
        s.push_str(name);
        s.push('=');
        s.extend(utf8_percent_encode(value, QUERY_VALUE));
    }
    s
}

/// Writes `303 See Other` to `location` (RFC 9700 §4.12: 303, so that a
/// browser never re-sends the sign-in form's body to the app). The status
/// line is written here, not by `http::response`, whose table of statuses
/// the validation path walks. Returns 303, or the error page when
/// `location` holds a byte a header must not (never, for a registered URI
/// and percent-encoded values).
pub fn write_redirect(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    location: &str,
    display_name: &str,
) -> u16 {
    write_redirect_with_cookies(out, ctx, location, display_name, "")
}

/// [`write_redirect`] with `cookies`: `Set-Cookie` header lines, each
/// ending in CRLF (made by tokend, never of the request).
pub fn write_redirect_with_cookies(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    location: &str,
    display_name: &str,
    cookies: &str,
) -> u16 {
    if location.bytes().any(|b| b < 0x21 || b == 0x7f) {
        return write_error_page(
            out,
            ctx,
            500,
            display_name,
            "The app's redirect URI cannot be used.",
            "Tell the app's administrator.",
        );
    }
    out.extend_from_slice(b"HTTP/1.1 303 See Other\r\nDate: ");
    out.extend_from_slice(ctx.date);
    out.extend_from_slice(b"\r\nContent-Length: 0\r\n");
    if !ctx.keep_alive || ctx.closing.is_some_and(std::cell::Cell::get) {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(cookies.as_bytes());
    out.extend_from_slice(b"Location: ");
    out.extend_from_slice(location.as_bytes());
    out.extend_from_slice(
        b"\r\nCache-Control: no-store\r\nPragma: no-cache\r\nReferrer-Policy: no-referrer\r\n\r\n",
    );
    303
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_keep_the_uri_and_encode_values() {
        assert_eq!(
            redirect_location(
                "https://app.example/cb",
                &[
                    ("code", Some("abc")),
                    ("state", Some("a b&c=d/é")),
                    ("x", None)
                ]
            ),
            "https://app.example/cb?code=abc&state=a%20b%26c%3Dd%2F%C3%A9"
        );
        assert_eq!(
            redirect_location("https://app.example/cb?tenant=1", &[("code", Some("c"))]),
            "https://app.example/cb?tenant=1&code=c"
        );
        assert_eq!(
            redirect_location("https://app.example/cb?", &[("code", Some("c"))]),
            "https://app.example/cb?code=c"
        );
    }

    #[test]
    fn form_action_sources() {
        assert_eq!(
            form_action_source("https://app.example:8443/cb?x=1").as_deref(),
            Some("https://app.example:8443")
        );
        assert_eq!(
            form_action_source("http://127.0.0.1:4180/oauth2/callback").as_deref(),
            Some("http://127.0.0.1:4180")
        );
        assert_eq!(
            form_action_source("com.example.app:/oauth2redirect").as_deref(),
            Some("com.example.app:")
        );
        assert_eq!(form_action_source("https://a.example;x/cb"), None);
        assert_eq!(form_action_source("https://u@a.example/cb"), None);
        assert_eq!(form_action_source("nocolon"), None);
    }

    /// Nothing from a request reaches the page unescaped.
    #[test]
    fn pages_escape_what_they_show() {
        let page = LoginPage {
            display_name: "Example <Corp>",
            client_id: "<script>alert(1)</script>",
            request: "r",
            csrf: "c",
            username: "\"><img src=x onerror=alert(1)>",
            error: Some("Incorrect username or password."),
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("Example &#60;Corp&#62;") || html.contains("Example &lt;Corp&gt;"));
        assert!(html.contains(r#"<label for="password">Password</label>"#));
        assert!(!html.contains("<script"));
        let page = ErrorPage {
            display_name: "x",
            title: "t",
            message: "<b>m</b>",
            hint: "h",
        };
        assert!(!page.render().unwrap().contains("<b>"));
        for other_user in [false, true] {
            let page = LogoutPage {
                display_name: "Example <Corp>",
                username: "<script>alert(1)</script>",
                client_id: Some("\"><img src=x onerror=alert(1)>"),
                other_user,
                request: "\"><i>",
                csrf: "c",
            };
            let html = page.render().unwrap();
            assert!(!html.contains("<script"), "{html}");
            assert!(!html.contains("<img"), "{html}");
            assert!(!html.contains("<i>"), "{html}");
            assert!(html.contains(r#"<form method="post" action="/logout">"#));
            assert!(
                html.contains("Sign out of Example &#60;Corp&#62;?")
                    || html.contains("Sign out of Example &lt;Corp&gt;?"),
                "{html}"
            );
            assert_eq!(html.contains("another account"), other_user, "{html}");
        }
        let html = SignedOutPage {
            display_name: "<b>x</b>",
        }
        .render()
        .unwrap();
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("You are signed out"), "{html}");
    }

    #[test]
    fn redirects_carry_no_store_and_refuse_header_injection() {
        let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
        let ctx = ResponseCtx {
            date: &date,
            keep_alive: true,
            head: false,
            closing: None,
        };
        let mut out = Vec::new();
        assert_eq!(
            write_redirect(&mut out, &ctx, "https://app.example/cb?code=1", "x"),
            303
        );
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 303 See Other\r\n"));
        assert!(s.contains("\r\nLocation: https://app.example/cb?code=1\r\n"));
        assert!(s.contains("Cache-Control: no-store"));
        assert!(s.ends_with("\r\n\r\n"));
        let mut out = Vec::new();
        assert_eq!(
            write_redirect(&mut out, &ctx, "https://a/\r\nSet-Cookie: x", "x"),
            500
        );
    }
}
