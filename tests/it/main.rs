//! Integration tests: each drives a real `tokend serve` process over real
//! sockets, with its own PostgreSQL database and Redis key prefix.

// The harness: a tokend process per test, its database and Redis prefix.
// Not every helper is used by every build of the suite.
#[allow(dead_code)]
mod harness;
// The HTTP/1.1 server: pipelining, limits, timeouts, connection cap, shutdown.
mod server;
// Attacks on the running server while a well-behaved client keeps validating.
mod attack;
// The command line: migrate, config check, client add and list.
mod cli;
// Login, discovery, validation, introspection and the user API.
mod tokens;
// Refresh, revocation, logout-everywhere, Redis failures, several nodes.
mod lifecycle;
// Attacks and faults on the connection loop and the drain: clients that
// never read, error answers to clients that send everything first, SIGTERM
// under keep-alive load.
mod robustness_net;
// Operations: the systemd unit, install.sh, the example configuration.
mod ops;
// Issue #12: bounded work before authentication (the quadratic form body),
// readiness through a login storm.
mod robustness_form;
// The one-way rule between top-level modules of src/ (read with syn).
mod layers;
// A PostgreSQL that stops answering: 503s within the bound, then recovery.
mod robustness_pg;
// Issue #13: the token-lifecycle holes (marks that outlive every token).
mod sessions;
mod topology;
// Issue #16, the groundwork: authorization_code refused until codes are
// redeemed, and `oauth.password_grant = false`.
mod grants;
// The README's nginx auth_request snippet, run with a real nginx.
mod nginx;
// Issue #16: GET /authorize, the sign-in page and its form, over raw HTTP,
// and the attacks on them.
mod authorize;
// Issue #16 item 7: the flow run by a real OpenID Connect relying party
// (the `openidconnect` crate).
mod oidc;
// Issue #16 item 7: a user signs in through a real headless Chromium
// (chromedriver, the W3C WebDriver protocol).
mod browser;
// Issue #16 item 5: RP-initiated logout (`/logout`), its confirmation, and
// the attacks on them.
mod logout;
