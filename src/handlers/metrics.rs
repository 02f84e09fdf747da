//! `GET /metrics`: every core's counters, summed at scrape time, in the
//! Prometheus text format. Runs on whichever core the scrape lands on and
//! only reads other cores' atomics: no lock, no cross-core message.
//!
//! Thin: collects the figures `metrics` does not own (the blocking pool's,
//! the mirrors' progress, this core's fresh Redis figures) into a
//! [`Snapshot`] and renders it.
//!
//! Owns: which figures go into the scrape's [`Snapshot`] and where each comes
//! from; the page itself (names, HELP, order) is `metrics`'.
//!
//! Never imports: `net`, `cores`, a service or a store: the pool's figures
//! and the mirrors' progress come through `state`'s accessors.

use std::sync::atomic::Ordering;

use crate::http::{response, ResponseCtx};
use crate::metrics::{self, PoolValues, Snapshot};
use crate::state::Core;

/// `GET /metrics`.
pub fn metrics(core: &Core, ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    // This core's Redis figures, fresh; the others publish theirs each second.
    core.counters().redis.publish(&core.redis().stats());
    let pool = core.pool().stats();
    let snapshot = Snapshot {
        cores: core.all_counters(),
        mirror_current_cores: core.mirror_progress().current_cores(),
        pool: PoolValues {
            depth: pool.depth.load(Ordering::Relaxed) as u64,
            rejected: pool.rejected.load(Ordering::Relaxed),
            completed: pool.completed.load(Ordering::Relaxed),
            threads: core.pool().threads(),
        },
        argon2: core.argon2_timing(),
        driver: core.driver().name(),
        uptime: core.uptime(),
    };
    let mut body = Vec::with_capacity(16 * 1024);
    metrics::render(&mut body, &snapshot);
    response::write(
        out,
        ctx,
        200,
        Some(metrics::CONTENT_TYPE),
        b"Cache-Control: no-store\r\n",
        &body,
    );
    200
}
