//! Per-core counters. Each core writes only its own set (a relaxed load and
//! store: no read-modify-write, no contention); the metrics scrape reads
//! every core's set and sums them.
//!
//! Owns: the counters' layout ([`Counter`], [`CoreCounters`], the status
//! classes, the Redis connection's [`RedisStats`] and [`RedisCounters`]), not
//! what they mean to the code that writes them.
//!
//! Never imports: a store, a service, a handler, `state`, `net` or `cores`
//! (they all count here, so an import the other way would be a cycle); of the
//! crate, only the route table ([`crate::router::ROUTE_SLOTS`]).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::router::ROUTE_SLOTS;

use super::histogram::RequestLatency;

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

/// Status classes counted per route: 2xx, 3xx, 4xx, 5xx.
pub const STATUS_SLOTS: usize = 4;
/// The `status_class` label of each status slot of [`CoreCounters::requests`].
pub const STATUS_LABELS: [&str; STATUS_SLOTS] = ["2xx", "3xx", "4xx", "5xx"];

/// One core's counters.
#[derive(Debug, Default)]
pub struct CoreCounters {
    /// Requests by route slot ([`crate::router::Route::slot`], then
    /// [`crate::router::OTHER_SLOT`]) and status class.
    pub requests: [[Counter; STATUS_SLOTS]; ROUTE_SLOTS],
    pub open_connections: Counter,
    pub refused_connections: Counter,
    pub accept_errors: Counter,
    /// Connections cut off by the head or idle timeout.
    pub timeouts: Counter,
    /// Connections closed because their answers made no write progress
    /// for `server.write_timeout` (shorter while draining).
    pub write_timeouts: Counter,
    /// Requests refused by the parser (400, 411, 413, 431).
    pub bad_requests: Counter,
    pub verified_cache_hits: Counter,
    /// Latency histograms of validate, introspect and token.
    pub latency: RequestLatency,
    /// The core's Redis connection counters, published once a second.
    pub redis: RedisCounters,
    pub verified_cache_misses: Counter,
    /// The revocation mirror (`redis.revocation_mirror`): the revocations
    /// it holds, its full syncs, and checks it answered or left to Redis.
    /// Whether it is current, and how far it got, is its own progress
    /// (`revocation::mirror::Progress`), not a counter: revokes wait on it.
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

/// What one core's Redis connection has done so far: the plain values the
/// page prints, filled by the Redis client (`RedisConn::stats`), which keeps
/// them in `Cell`s of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Batches written to the socket (each carries one or more commands).
    pub round_trips: u64,
    /// Commands queued for sending.
    pub commands: u64,
    /// Queries that failed for a reason other than a timeout (unavailable,
    /// error reply, protocol error).
    pub errors: u64,
    /// Successful connections after the first one.
    pub reconnects: u64,
    /// Failed connection attempts (connect, AUTH, SELECT or PING).
    pub connect_failures: u64,
    /// Queries that gave up waiting after `redis.timeout`.
    pub timeouts: u64,
}

/// One core's Redis connection counters, published for other threads to
/// read. `RedisConn` keeps its own counters in `Cell`s (it is per core);
/// the owning core copies them here with [`RedisCounters::publish`] — e.g.
/// from its once-a-second ticker, and the scraping core just before it
/// renders.
#[derive(Debug, Default)]
pub struct RedisCounters {
    pub round_trips: Counter,
    pub commands: Counter,
    pub errors: Counter,
    pub reconnects: Counter,
    pub connect_failures: Counter,
    pub timeouts: Counter,
}

impl RedisCounters {
    /// Copies the connection's (cumulative) counters. Owning core only.
    pub fn publish(&self, s: &RedisStats) {
        self.round_trips.set(s.round_trips);
        self.commands.set(s.commands);
        self.errors.set(s.errors);
        self.reconnects.set(s.reconnects);
        self.connect_failures.set(s.connect_failures);
        self.timeouts.set(s.timeouts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{Route, OTHER_SLOT};

    #[test]
    fn counts_by_route_and_status_class() {
        let c = CoreCounters::default();
        c.count(Route::Token.slot(), 200);
        c.count(Route::Token.slot(), 302);
        c.count(Route::Token.slot(), 429);
        c.count(OTHER_SLOT, 404);
        c.count(OTHER_SLOT, 101); // not a class of its own: 5xx row
        c.count(ROUTE_SLOTS, 200); // out of range: ignored
        let row = |slot: usize| {
            c.requests[slot]
                .iter()
                .map(Counter::get)
                .collect::<Vec<_>>()
        };
        assert_eq!(row(Route::Token.slot()), [1, 1, 1, 0]);
        assert_eq!(row(OTHER_SLOT), [0, 0, 1, 1]);
        let total: u64 = c.requests.iter().flatten().map(Counter::get).sum();
        assert_eq!(total, 5);
    }
}
