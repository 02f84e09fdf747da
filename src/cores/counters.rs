//! Per-core counters. Each core writes only its own set (a relaxed load and
//! store: no read-modify-write, no contention); the metrics scrape reads
//! every core's set and sums them.

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter or gauge written by one thread and read by any.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one. Only the owning core calls this, so load + store is exact.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Sets a gauge.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Reads the value (from any thread).
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub use crate::router::ROUTE_SLOTS;
/// Status classes counted per route: 2xx, 3xx, 4xx, 5xx.
pub const STATUS_SLOTS: usize = 4;

/// One core's counters.
#[derive(Debug, Default)]
pub struct CoreCounters {
    /// Requests by route slot and status class.
    pub requests: [[Counter; STATUS_SLOTS]; ROUTE_SLOTS],
    pub open_connections: Counter,
    pub refused_connections: Counter,
    pub accept_errors: Counter,
    /// Connections cut off by the head or idle timeout.
    pub timeouts: Counter,
    /// Requests refused by the parser (400, 411, 413, 431).
    pub bad_requests: Counter,
    /// Unix seconds of the core's last event-loop tick (once a second):
    /// the systemd watchdog is fed only while every core's is recent.
    pub heartbeat: Counter,
    pub verified_cache_hits: Counter,
    /// Latency histograms of validate, introspect and token.
    pub latency: crate::metrics::RequestLatency,
    /// The core's Redis connection counters, published once a second.
    pub redis: crate::metrics::RedisCounters,
    pub verified_cache_misses: Counter,
    /// The revocation mirror (`redis.revocation_mirror`): 1 while it
    /// answers, the last stream entry it applied, the revocations it holds,
    /// its full syncs, and checks it answered or left to Redis.
    pub mirror_current: Counter,
    pub mirror_seq: Counter,
    pub mirror_entries: Counter,
    pub mirror_resyncs: Counter,
    pub mirror_answers: Counter,
    pub mirror_fallbacks: Counter,
}

impl CoreCounters {
    /// Counts a finished request.
    #[inline]
    pub fn count(&self, route_slot: usize, status: u16) {
        let class = match status {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        if let Some(row) = self.requests.get(route_slot) {
            row[class].inc();
        }
    }
}
