//! Metrics: the per-core counters and histograms every part of tokend
//! writes, and `/metrics` in the Prometheus text exposition format.
//!
//! The path of a figure:
//!
//! - [`counters`]: [`Counter`] (single writer, relaxed load + store) and one
//!   [`CoreCounters`] per core; the Redis connection's figures
//!   ([`RedisStats`], published per core as [`RedisCounters`]).
//! - [`histogram`]: the latency buckets ([`Histogram`], per core), the
//!   argon2 one written from the blocking pool ([`SharedHistogram`]), and
//!   which routes are timed ([`RequestLatency`]).
//! - [`render`]: a [`Snapshot`] of every core → the text page, one function
//!   per family of metrics.
//!
//! Imports only [`crate::router`] (route slots and labels) and `std`; never a
//! store, a service, a handler or `cores` (they all write here, so an import
//! the other way would be a cycle). Figures owned elsewhere come in as plain
//! values defined here: the Redis client fills a [`RedisStats`]
//! (`RedisConn::stats`), and the `/metrics` handler passes in the blocking
//! pool's figures ([`PoolValues`], copied from the pool's atomics) and the
//! number of cores whose revocation mirror is current (read from the
//! mirrors' progress, which metrics reads but never carries).

pub mod counters;
pub mod histogram;
pub mod render;

pub use counters::{CoreCounters, Counter, RedisCounters, RedisStats, STATUS_LABELS, STATUS_SLOTS};
pub use histogram::{
    Histogram, RequestLatency, SharedHistogram, ARGON2_BOUNDS_NS, LATENCY_BOUNDS_NS,
};
pub use render::{render, PoolValues, Snapshot, CONTENT_TYPE};
