//! `GET /healthz` (liveness) and `GET /readyz` (readiness).
//!
//! Owns: what "ready" means — PostgreSQL answers `SELECT 1` (the readiness
//! probe's latest check, on its own thread and connection,
//! [`crate::store::PgProbe`]: never queued behind logins, so a full blocking
//! pool is not an unreachable database) and Redis answers `PING` (on the
//! core's own connection) — and the `503` that names each store that
//! failed.
//!
//! Never imports: `net` or `cores`. It reaches the stores through `state`'s
//! accessors (`core.pg_probe()`, `core.redis()`), naming `store` only for
//! the probe's answer types.

use std::time::Duration;

use crate::http::{response, ResponseCtx};
use crate::state::Core;
use crate::store::{PgHealth, Probe};

/// Liveness: touches no store and allocates nothing. It is the baseline every
/// benchmark compares against.
#[inline]
pub fn healthz(ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    response::write(out, ctx, 200, Some(response::TEXT), b"", b"ok\n");
    200
}

/// How long `/readyz` waits for the first PostgreSQL result, before the
/// probe has one (afterwards it answers at once from the latest).
const PG_FIRST_RESULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness: `200` when PostgreSQL answers `SELECT 1` (the readiness
/// probe's latest check, on its own thread and connection, see
/// [`crate::store::probe`]) and Redis answers `PING` (on the core's own
/// connection); `503` naming each store that failed otherwise. Neither
/// check blocks the core, and neither waits for the blocking pool: its
/// queue being full says nothing about the stores.
pub async fn readyz(core: &Core, ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    // The pool declares an outage as soon as a request meets one (a cut
    // connection, a failed checkout): that is news the probe's latest
    // result may not have yet (its check in flight is given 5 s).
    let pg = match core.pg_probe().check() {
        _ if core.pg().is_down() => {
            PgHealth::Unreachable("the connection pool is in an outage".into())
        }
        Probe::Now(health) => health,
        Probe::Later(first) => match monoio::time::timeout(PG_FIRST_RESULT_TIMEOUT, first).await {
            Ok(Ok(health)) => health,
            Ok(Err(_)) => PgHealth::Unreachable("the readiness probe stopped".into()),
            Err(_) => PgHealth::Unreachable(format!(
                "no answer to SELECT 1 within {} s",
                PG_FIRST_RESULT_TIMEOUT.as_secs()
            )),
        },
    };
    let pg_ok = match pg {
        PgHealth::Reachable => true,
        PgHealth::Unreachable(why) => {
            // Rate-limited: a balancer asks every few seconds, and an
            // outage is logged once by the pool.
            core.pg().log_failure("readiness: postgresql", &why);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::state::shared_for_tests;

    /// Issue #12: a full blocking pool (a login storm) is not an unreachable
    /// PostgreSQL. The pool's one thread is held at a gate and its queue
    /// (16) is full, so a job queued now is refused; `/readyz` still answers
    /// `200` while PostgreSQL and Redis are up.
    #[test]
    fn readyz_is_ready_while_the_blocking_pool_is_full() {
        let shared = Arc::new(shared_for_tests(Config::default(), 1));
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(async move {
                let core = Core::new(0, shared.clone()).unwrap();
                assert!(
                    core.redis().wait_connected(Duration::from_secs(5)).await,
                    "Redis at TOKEND_TEST_REDIS_URL must answer"
                );
                // The gate opens when the test ends (or after 30 s, so that
                // a failed test cannot hang).
                let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
                let mut held = Vec::new();
                let stats = core.pool().stats();
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                // One job running on the one thread (it says so), then 16
                // in the queue.
                let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
                for wanted in 1..=17 {
                    let (pool, gate) = (core.pool().clone(), gate_rx.clone());
                    let started = started_tx.clone();
                    held.push(monoio::spawn(async move {
                        let _ = pool
                            .run(move || {
                                let _ = started.send(());
                                gate.recv_timeout(Duration::from_secs(30))
                            })
                            .await;
                    }));
                    while stats.depth.load(Ordering::Relaxed) < wanted
                        || (wanted == 1 && started_rx.try_recv().is_err())
                    {
                        assert!(std::time::Instant::now() < deadline, "pool never filled");
                        monoio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                assert_eq!(
                    core.pool().run(|| ()).await,
                    Err(crate::store::PoolError::Full),
                    "the queue is full"
                );

                let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
                let ctx = ResponseCtx {
                    date: &date,
                    keep_alive: true,
                    head: false,
                    closing: None,
                };
                for _ in 0..3 {
                    let mut out = Vec::new();
                    let status = readyz(&core, &ctx, &mut out).await;
                    let text = String::from_utf8_lossy(&out).into_owned();
                    assert_eq!(status, 200, "{text}");
                    assert!(text.ends_with("ready\n"), "{text}");
                }
                assert_eq!(stats.rejected.load(Ordering::Relaxed), 1);
                drop(gate_tx);
                for h in held {
                    h.await;
                }
            });
    }
}
