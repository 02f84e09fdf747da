//! tokend: a thread-per-core OAuth 2.0 token service.
//!
//! The modules, from the top of the layering down, and what each owns:
//!
//! - [`cores`]: the composition root: start-up (check the configuration,
//!   reach the stores, bind, seed Redis), one pinned thread per core running
//!   a monoio event loop with its accept loop, drain and ticker, the control
//!   thread (signals, sd_notify, the watchdog, reloads, re-seeding, pruning)
//!   and graceful shutdown.
//! - [`net`]: the sockets: the per-core SO_REUSEPORT listeners and the
//!   per-connection read → parse → handle → write loop, its buffers and
//!   timeouts.
//! - [`handlers`]: the endpoints, one file per family, and the dispatcher:
//!   what each reads from a request, which service it calls, what it answers
//!   (every OAuth error in one place).
//! - [`access`]: the access-token check `/validate`, introspection and the
//!   user API share: verified-token cache, signature and claims, revocation.
//! - [`state`]: one core's context ([`state::Core`], owned by its thread) and
//!   what the cores share ([`state::Shared`]: configuration, pools, published
//!   keys and clients), reached through methods.
//! - services:
//!   - [`tokens`]: access tokens: signing keys (sealed in PostgreSQL),
//!     claims, signing, verification, the per-core verified-token cache.
//!   - [`revocation`]: revocations in Redis and PostgreSQL: the check (the
//!     in-memory mirror, else one Redis round trip), the writes, the mirror,
//!     and the re-seed of a Redis that lost its data.
//!   - [`refresh`]: refresh-token families in Redis: issue, rotation with
//!     reuse detection, revocation.
//!   - [`ratelimit`]: failed-login counters in Redis, checked before argon2.
//!   - [`codes`]: authorization codes in Redis: single use, bound to the
//!     client, redirect URI, PKCE challenge and user; reuse revokes what
//!     the code gave.
//!   - [`signin`]: the browser side of sign-in: the authorization request
//!     the sign-in page carries, sealed with an HMAC that is its CSRF
//!     token.
//!   - [`sessions`]: browser sessions in Redis (single sign-on), with idle
//!     and absolute lifetimes, ended by the user's not-before mark; not
//!     wired to the endpoints yet (they need the `Cookie` header).
//!   - [`identity`]: users, OAuth clients and passwords: PostgreSQL and
//!     argon2 on the blocking pool, the in-memory client table.
//! - stores:
//!   - [`redis`]: connections to Redis: the per-core pipelined one, a
//!     blocking one, Lua scripts by SHA1.
//!   - [`store`]: the blocking pool, the PostgreSQL pool, the schema and its
//!     migrations runner.
//! - [`metrics`]: the per-core counters and histograms everyone writes, and
//!   their Prometheus text page.
//! - [`router`]: (method, path) → route, no I/O; its route table numbers the
//!   metrics slots.
//! - [`http`]: `&[u8]` → request (never a socket), form and `Authorization`
//!   decoding, and responses written into the connection's reused output
//!   buffer.
//! - [`config`]: TOML file + `TOKEND_*` environment → one checked `Config`.
//! - [`clock`]: the one clock: whole seconds since the Unix epoch.
//! - `testing` (tests and the `test-support` feature only): the PostgreSQL
//!   fixture and the `TOKEND_TEST_*` settings.
//!
//! Imports point one way, down this list: a module uses only modules below it
//! (among the services, `revocation` may use `refresh` and `tokens`, and
//! `refresh` may use `tokens`; `testing` stands apart, on `store` and
//! `config`), and nothing imports `cores` but `main.rs`. `tests/it/layers.rs`
//! checks the rule: it reads every `crate::` path of the non-test code and
//! fails on an import its table (`ALLOWED`, this list as data) does not
//! allow, on a cycle, and on a top-level module the table does not know.
//! `scripts/test.sh` runs it as a step of its own.

pub mod access;
pub mod clock;
pub mod codes;
pub mod config;
pub mod cores;
pub mod handlers;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod net;
pub mod ratelimit;
pub mod redis;
pub mod refresh;
pub mod revocation;
pub mod router;
pub mod sessions;
pub mod signin;
pub mod state;
pub mod store;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod tokens;
