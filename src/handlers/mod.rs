//! Request handlers, one file per endpoint family, and the one dispatcher
//! ([`handle`]) that routes a parsed request to them and counts the result.
//!
//! Every handler writes its whole response into the connection's output
//! buffer and returns the status it sent.
//!
//! Owns: the endpoints — what each reads from a request, which service it
//! calls and what it answers (the OAuth errors in [`oauth`]) — and, here, the
//! request counters, the latency histograms' observations and the access log.
//!
//! ## Work before authentication
//!
//! Anyone can make a core do what a request costs before its client or
//! bearer token is checked, and every other request on that core waits
//! meanwhile; so each step is bounded by a limit, and linear in it
//! (issue #12):
//!
//! - the head (`http::parse`): `httparse` over at most
//!   `limits.max_head_bytes` (8 KiB) and `limits.max_headers` (64), then one
//!   look at each header — per parse: the connection loop (`net`) parses a
//!   request again each time more of it arrives, so a body sent a byte per
//!   TCP segment costs a head parse per byte (measured, issue #12: 60 ms of
//!   core time for a 20 KB body after an 8 KiB head), which `net` must
//!   bound;
//! - a form body (`/oauth/token`, `/oauth/introspect`, `/oauth/revoke`):
//!   at most `limits.max_body_bytes` (64 KiB) in at most
//!   [`MAX_FORM_PARAMS`](crate::http::form::MAX_FORM_PARAMS) (64) parts,
//!   each byte decoded once, the duplicate scan bounded by the cap;
//! - client authentication: Basic credentials of at most 4 KiB
//!   ([`MAX_BASIC_HEADER_BYTES`](crate::http::auth::MAX_BASIC_HEADER_BYTES)),
//!   a hash lookup, and one SHA-256 of the presented secret (at most the
//!   body);
//! - a bearer token: the token68 check (at most the head), then at most
//!   `MAX_TOKEN_LEN` (8 KiB) decoded and one signature verified;
//! - the user API's JSON (`POST /users` with self-registration on): at most
//!   the body, parsed once by `serde_json` (nesting stops at 128 levels);
//! - sign-in (issue #16): `GET /authorize` decodes its query like a form
//!   (at most the head), renders the page and computes one HMAC, and
//!   writes nothing to any store; `POST /login` decodes its form and
//!   checks one HMAC (over at most 16 KiB) before the login limits and
//!   argon2. Not yet in `budget`'s measurements;
//! - RP-initiated logout (`GET`/`POST /logout`): the query or form decoded
//!   as above, then an `id_token_hint` checked as a bearer token is (at
//!   most `MAX_TOKEN_LEN`, one signature), or the confirmation form's one
//!   HMAC (over at most 16 KiB); Redis only for a browser with a session
//!   cookie. In `budget` (the 7.8 KB hint, the forged hint, the 16 KiB
//!   confirmation, a 64 KiB form).
//!
//! The worst case, measured in an optimised build (`budget`'s test: the
//! slowest requests we could construct for each step, parse + handle, median
//! of 15 runs of the core thread's CPU time; `cargo test --release --lib
//! budget -- --nocapture`): 16 KiB of JSON scopes 169 µs; a 64 KiB form
//! within the cap (64 alike 1 KB names, all-escape or all-`+` values, a
//! 64 KiB `client_secret`) 92–101 µs; a forged signature 40 µs; the
//! 8,014-parameter body of issue #12 8 µs (it cost 71 ms before the cap);
//! everything else under 15 µs. Each step is linear in its limit, so the
//! figures scale with the `[limits]` sizes; at their defaults no anonymous
//! request costs a core a fifth of a millisecond. What runs after
//! authentication (argon2, PostgreSQL) runs on the blocking pool.
//!
//! Never imports: `net` or `cores` (the connection loop calls in, never the
//! other way). Handlers reach the stores through `state`'s accessors
//! (`core.pg()`, `core.pool()`, `core.redis()`), naming `store` only for a
//! function or an error type (`store::pg::ping`, `store::PoolError`).

pub mod authorization_code;
pub mod authorize;
#[cfg(test)]
mod budget;
pub mod client_auth;
pub mod health;
pub mod introspect;
pub mod login;
pub mod logout;
pub mod metrics;
pub mod oauth;
pub mod pages;
pub mod refresh;
pub mod revoke;
pub mod token;
pub mod userinfo;
pub mod users;
pub mod validate;
pub mod wellknown;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::http::{response, Method, Request, ResponseCtx};
use crate::metrics::RequestLatency;
use crate::router::{self, Route, Routed, OTHER_SLOT};
use crate::state::Core;

/// The clock of a burst of pipelined requests, for the latency histograms:
/// a timed request starts where the timed one answered just before it in
/// the same burst ended, without a clock read of its own.
///
/// Each timed request read the monotonic clock twice; pipelined, the clock
/// reads of a `/validate` were ~10% of its time (perf, issue #15). A
/// connection makes one per burst (see `serve_connection`), and breaks it
/// wherever it waits for the socket between requests; a request that is
/// not timed breaks it too. So a timed request's time runs from the end
/// of its parse or, within a burst, from the answer before it (its parse
/// included: a fraction of a microsecond).
#[derive(Debug, Default)]
pub struct BurstClock(Option<u64>);

impl BurstClock {
    /// The start of a timed request.
    #[inline]
    fn start(&mut self) -> u64 {
        self.0.take().unwrap_or_else(crate::clock::monotonic_nanos)
    }

    /// The end of a timed request, which the next one in the burst starts
    /// from.
    #[inline]
    fn end(&mut self) -> u64 {
        let now = crate::clock::monotonic_nanos();
        self.0 = Some(now);
        now
    }

    /// The burst is over: the next timed request reads the clock.
    #[inline]
    pub fn break_burst(&mut self) {
        self.0 = None;
    }
}

/// Answers one request into `out`. Returns whether the connection stays open.
pub async fn handle(
    core: &Rc<Core>,
    req: &Request<'_>,
    peer: SocketAddr,
    out: &mut Vec<u8>,
    burst: &mut BurstClock,
) -> bool {
    let keep_alive = req.keep_alive && !core.is_shutting_down();
    let date = core.date().get();
    let ctx = ResponseCtx {
        date: &date,
        keep_alive,
        head: req.method == Method::Head,
        closing: Some(core.shutdown_flag()),
    };
    let (slot, status) = match router::route(req.method, req.path) {
        Routed::Found(route, param) => {
            let start = if RequestLatency::records(route) {
                Some(burst.start())
            } else {
                burst.break_burst();
                None
            };
            let status = match route {
                Route::Healthz => health::healthz(&ctx, out),
                Route::Metrics => metrics::metrics(core, &ctx, out),
                Route::Readyz => health::readyz(core, &ctx, out).await,
                Route::Validate => validate::validate(core, req, &ctx, out).await,
                Route::Token => token::token(core, req, peer, &ctx, out).await,
                Route::Introspect => introspect::introspect(core, req, &ctx, out).await,
                Route::Revoke => revoke::revoke(core, req, &ctx, out).await,
                Route::Jwks => wellknown::jwks(core, &ctx, out),
                Route::Metadata => wellknown::metadata(core, &ctx, out),
                Route::Users => users::register(core, req, &ctx, out).await,
                Route::UsersMe => users::get_me(core, req, &ctx, out).await,
                Route::UsersMePassword => users::change_password(core, req, peer, &ctx, out).await,
                Route::UsersMeLogoutAll => users::logout_all(core, req, &ctx, out).await,
                Route::UserDisable => users::disable(core, req, param, &ctx, out).await,
                // One await point, its future boxed behind `dyn`: the
                // dispatcher's own state (and its drop, which every request
                // pays) stays what it was before these routes (issue #16).
                Route::Authorize | Route::Login | Route::UserInfo | Route::Logout => {
                    sign_in(core, route, req, peer, &ctx, out).await
                }
                Route::OpenIdConfiguration => wellknown::openid_configuration(core, &ctx, out),
            };
            if let Some(start) = start {
                let end = burst.end();
                core.counters()
                    .latency
                    .observe(route, Duration::from_nanos(end.saturating_sub(start)));
            }
            (route.slot(), status)
        }
        Routed::MethodNotAllowed(allow) => {
            burst.break_burst();
            (OTHER_SLOT, method_not_allowed(&ctx, allow, out))
        }
        Routed::NotFound => {
            burst.break_burst();
            (OTHER_SLOT, not_found(&ctx, out))
        }
    };
    core.counters().count(slot, status);
    if core.config().server.access_log {
        access_log(core, req, peer, status);
    }
    keep_alive && !core.is_shutting_down()
}

/// The sign-in endpoints (issue #16), each future boxed: see `handle`.
#[cold]
#[inline(never)]
fn sign_in<'a>(
    core: &'a Rc<Core>,
    route: Route,
    req: &'a Request<'_>,
    peer: SocketAddr,
    ctx: &'a ResponseCtx<'a>,
    out: &'a mut Vec<u8>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = u16> + 'a>> {
    match route {
        Route::Authorize => Box::pin(authorize::authorize(core, req, ctx, out)),
        Route::Login => Box::pin(login::login(core, req, peer, ctx, out)),
        Route::Logout => Box::pin(logout::logout(core, req, ctx, out)),
        _ => Box::pin(userinfo::userinfo(core, req, ctx, out)),
    }
}

#[cold]
/// The client's address: the TCP peer's, or, when the peer is one of
/// `server.trusted_proxies`, the one its forwarded header names
/// ([`crate::http::client_ip`]). Counted by the login limits.
fn client_ip(core: &Core, req: &Request<'_>, peer: SocketAddr) -> std::net::IpAddr {
    let server = &core.config().server;
    let header = match server.forwarded_header {
        crate::config::ForwardedHeader::XForwardedFor => req.forwarded_for,
        crate::config::ForwardedHeader::Forwarded => req.forwarded,
    };
    crate::http::client_ip(
        peer.ip(),
        header,
        server.forwarded_header,
        &server.trusted_proxies,
    )
}

fn access_log(core: &Core, req: &Request<'_>, peer: SocketAddr, status: u16) {
    // The query string may carry scopes but never tokens; the path is logged
    // without it anyway, and no header value is logged.
    tracing::info!(core = core.id(), peer = %peer, method = ?req.method, path = req.path, status, "request");
}

#[cold]
fn not_found(ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    response::write(out, ctx, 404, Some(response::TEXT), b"", b"not found\n");
    404
}

#[cold]
fn method_not_allowed(ctx: &ResponseCtx<'_>, allow: &str, out: &mut Vec<u8>) -> u16 {
    let mut headers = Vec::with_capacity(32);
    headers.extend_from_slice(b"Allow: ");
    headers.extend_from_slice(allow.as_bytes());
    headers.extend_from_slice(b"\r\n");
    response::write(
        out,
        ctx,
        405,
        Some(response::TEXT),
        &headers,
        b"method not allowed\n",
    );
    405
}

#[cfg(test)]
mod burst_clock_tests {
    use super::BurstClock;

    /// Within a burst a timed request starts where the one before it
    /// ended; after a break it reads the clock again.
    #[test]
    fn a_burst_times_each_request_from_the_answer_before_it() {
        let mut burst = BurstClock::default();
        let first_start = burst.start();
        let first_end = burst.end();
        assert!(first_end >= first_start);
        assert_eq!(burst.start(), first_end);
        let second_end = burst.end();
        burst.break_burst();
        assert_eq!(burst.0, None);
        let third_start = burst.start();
        assert!(third_start >= second_end);
        // A start takes the reading: two starts without an end read twice.
        assert_eq!(burst.0, None);
    }
}
