//! `GET /healthz` (liveness) and `GET /readyz` (readiness).
//!
//! Owns: what "ready" means — PostgreSQL answers `SELECT 1` (on the blocking
//! pool) and Redis answers `PING` (on the core's own connection) — and the
//! `503` that names each store that failed.
//!
//! Never imports: `net` or `cores`. It reaches the stores through `state`'s
//! accessors (`core.pg()`, `core.pool()`, `core.redis()`), naming `store`
//! only for its check (`store::pg::ping`).

use std::time::Duration;

use crate::http::{response, ResponseCtx};
use crate::state::Core;

/// Liveness: touches no store and allocates nothing. It is the baseline every
/// benchmark compares against.
#[inline]
pub fn healthz(ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    response::write(out, ctx, 200, Some(response::TEXT), b"", b"ok\n");
    200
}

/// How long the PostgreSQL check may wait for a connection.
const PG_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness: `200` when PostgreSQL answers `SELECT 1` (run on the blocking
/// pool) and Redis answers `PING` (on the core's own connection); `503`
/// naming each store that failed otherwise. Neither check blocks the core.
pub async fn readyz(core: &Core, ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    let pg = core.pg().clone();
    let pg_result = core
        .pool()
        .run(move || crate::store::pg::ping(&pg, PG_CHECK_TIMEOUT))
        .await;
    let pg_ok = match pg_result {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            // Rate-limited: a balancer asks every few seconds, and an
            // outage is logged once by the pool.
            core.pg().log_failure("readiness", &e);
            false
        }
        Err(e) => {
            tracing::warn!("readiness: PostgreSQL check not run: {e}");
            false
        }
    };
    let redis_ok = match core.redis().ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("readiness: redis: {e}");
            false
        }
    };
    let (status, body): (u16, &[u8]) = match (pg_ok, redis_ok) {
        (true, true) => (200, b"ready\n"),
        (false, true) => (503, b"not ready: postgresql unreachable\n"),
        (true, false) => (503, b"not ready: redis unreachable\n"),
        (false, false) => (
            503,
            b"not ready: postgresql unreachable, redis unreachable\n",
        ),
    };
    let extra: &[u8] = if status == 503 {
        b"Retry-After: 1\r\n"
    } else {
        b""
    };
    response::write(out, ctx, status, Some(response::TEXT), extra, body);
    status
}
