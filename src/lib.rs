//! tokend: a thread-per-core OAuth 2.0 token service.
//!
//! The modules follow the path of a request:
//!
//! - [`config`]: TOML file + `TOKEND_*` environment → one checked `Config`.
//! - [`cores`]: the composition root: one pinned thread per core, each
//!   running a monoio event loop; start-up, the accept loop and drain, the
//!   control thread (signals, sd_notify, reloads) and graceful shutdown.
//! - [`net`]: the per-core SO_REUSEPORT listener and the per-connection
//!   read → parse → handle → write loop, with timeouts and the connection cap.
//! - [`http`]: `&[u8]` → request (never a socket), and responses written into
//!   the connection's reused output buffer.
//! - [`router`]: (method, path) → route, no I/O; its route table numbers the
//!   metrics slots.
//! - [`handlers`]: one file per endpoint family.
//! - [`access`]: the access-token check `/validate`, introspection and the
//!   user API share: verified-token cache, signature and claims, revocation.
//! - [`state`]: one core's context ([`state::Core`], owned by its thread) and
//!   what the cores share ([`state::Shared`]), reached through methods.
//! - [`tokens`]: claims, signing keys, verification, the verified-token cache.
//! - [`revocation`]: the revocation check (the in-memory mirror, then one
//!   Redis round trip), the mirror, durable revocations and the re-seed.
//! - [`refresh`]: refresh-token families in Redis: issue, rotation with
//!   reuse detection, revocation.
//! - [`ratelimit`]: failed-login counters in Redis, checked before argon2.
//! - [`identity`]: users, clients and passwords; PostgreSQL and argon2, run on
//!   the blocking pool only.
//! - [`metrics`]: the per-core counters and histograms, and their Prometheus
//!   text page.
//! - [`redis`]: the Redis client: the per-core pipelined connection and a
//!   blocking one.
//! - [`store`]: the blocking pool, the PostgreSQL pool, the migrations runner.

pub mod access;
pub mod clock;
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
pub mod state;
pub mod store;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod tokens;
