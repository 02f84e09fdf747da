//! `GET /metrics`: every core's counters, summed at scrape time, in the
//! Prometheus text format. Runs on whichever core the scrape lands on and
//! only reads other cores' atomics: no lock, no cross-core message.

use crate::http::{response, ResponseCtx};
use crate::metrics::{self, CoreView, Snapshot};
use crate::state::Core;

/// `GET /metrics`.
pub fn metrics(core: &Core, ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    // This core's Redis figures, fresh; the others publish theirs each second.
    core.counters().redis.publish(&core.redis().stats());
    let snapshot = Snapshot {
        cores: core
            .all_counters()
            .iter()
            .map(|c| CoreView {
                counters: c,
                latency: &c.latency,
                redis: &c.redis,
            })
            .collect(),
        pool: core.pool().stats(),
        pool_threads: core.pool().threads(),
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
