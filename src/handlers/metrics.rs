//! `GET /metrics`: every core's counters, summed at scrape time, in the
//! Prometheus text format. Runs on whichever core the scrape lands on and
//! only reads other cores' atomics: no lock, no cross-core message.

use crate::cores::Core;
use crate::http::{response, ResponseCtx};
use crate::metrics::{self, CoreView, Snapshot};

/// `GET /metrics`.
pub fn metrics(core: &Core, ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    // This core's Redis figures, fresh; the others publish theirs each second.
    core.counters.redis.publish(&core.redis.stats());
    let shared = &core.shared;
    let snapshot = Snapshot {
        cores: shared
            .counters
            .iter()
            .map(|c| CoreView {
                counters: c,
                latency: &c.latency,
                redis: &c.redis,
            })
            .collect(),
        pool: shared.pool.stats(),
        pool_threads: shared.pool.threads(),
        argon2: &shared.argon2,
        driver: shared.driver.name(),
        uptime: shared.started.elapsed(),
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
