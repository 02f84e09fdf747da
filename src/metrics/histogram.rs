//! Latency histograms: their bucket bounds, the per-core request histograms
//! and the argon2 one the blocking pool writes.
//!
//! Buckets are stored non-cumulative (the last one is "over every bound"), so
//! an observation touches one bucket and the sum;
//! [`render`](mod@super::render) makes them cumulative.
//!
//! Owns: the bucket bounds and their `le` labels, [`Histogram`],
//! [`SharedHistogram`], and which routes are timed ([`RequestLatency`]).
//!
//! Never imports: a store, a service, a handler, `state`, `net` or `cores`;
//! of the crate, only [`crate::router::Route`] (which routes are timed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::counters::Counter;
use crate::router::Route;

/// Upper bounds of the request-latency buckets, nanoseconds: 50µs … 1s.
pub const LATENCY_BOUNDS_NS: [u64; 14] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];
/// The same bounds as `le` label values, seconds.
pub(super) const LATENCY_LE: [&str; 14] = [
    "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1", "0.25", "0.5", "1",
];

/// Upper bounds of the argon2 buckets, nanoseconds: 5ms … 5s.
pub const ARGON2_BOUNDS_NS: [u64; 10] = [
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];
/// The same bounds as `le` label values, seconds.
pub(super) const ARGON2_LE: [&str; 10] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
];

/// Buckets of a request histogram: one per bound, then "over every bound".
pub(super) const LATENCY_SLOTS: usize = LATENCY_BOUNDS_NS.len() + 1;
/// Buckets of the argon2 histogram.
pub(super) const ARGON2_SLOTS: usize = ARGON2_BOUNDS_NS.len() + 1;

#[inline]
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A latency histogram written by one core and read by any thread. Buckets
/// are stored non-cumulative (the last one is "over every bound"), so an
/// observation is one relaxed load + store on its bucket and one on the sum.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; LATENCY_SLOTS],
    sum_ns: Counter,
}

impl Histogram {
    /// Records one observation. Only the owning core calls this.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let ns = nanos(d);
        // `le` is inclusive: the first bound >= ns.
        let i = LATENCY_BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i].inc();
        self.sum_ns.add(ns);
    }

    /// Adds this histogram's buckets and sum into a scrape's totals.
    pub(super) fn add_into(&self, counts: &mut [u64; LATENCY_SLOTS], sum_ns: &mut u64) {
        for (c, b) in counts.iter_mut().zip(&self.buckets) {
            *c = c.wrapping_add(b.get());
        }
        *sum_ns = sum_ns.wrapping_add(self.sum_ns.get());
    }
}

/// A histogram any thread may write (`fetch_add`): the argon2 timings,
/// observed on the blocking pool. Share it by reference or `Arc`.
#[derive(Debug, Default)]
pub struct SharedHistogram {
    buckets: [AtomicU64; ARGON2_SLOTS],
    sum_ns: AtomicU64,
}

impl SharedHistogram {
    /// Records one observation (from any thread).
    #[inline]
    pub fn observe(&self, d: Duration) {
        let ns = nanos(d);
        let i = ARGON2_BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The (non-cumulative) buckets and the sum, nanoseconds.
    pub(super) fn read(&self) -> ([u64; ARGON2_SLOTS], u64) {
        let mut counts = [0u64; ARGON2_SLOTS];
        for (c, b) in counts.iter_mut().zip(&self.buckets) {
            *c = b.load(Ordering::Relaxed);
        }
        (counts, self.sum_ns.load(Ordering::Relaxed))
    }
}

/// The request-duration histograms of one core, for the routes whose latency
/// matters (validation, introspection and the token endpoint).
#[derive(Debug, Default)]
pub struct RequestLatency {
    pub validate: Histogram,
    pub introspect: Histogram,
    pub token: Histogram,
}

impl RequestLatency {
    /// The routes whose latency is recorded, in the page's order.
    pub const ROUTES: [Route; 3] = [Route::Validate, Route::Introspect, Route::Token];

    /// Whether a route's latency is recorded: the dispatcher reads the clock
    /// only for these.
    #[inline]
    pub const fn records(route: Route) -> bool {
        matches!(route, Route::Validate | Route::Introspect | Route::Token)
    }

    /// The histogram of a route, if its latency is recorded.
    #[inline]
    pub fn for_route(&self, route: Route) -> Option<&Histogram> {
        match route {
            Route::Validate => Some(&self.validate),
            Route::Introspect => Some(&self.introspect),
            Route::Token => Some(&self.token),
            _ => None,
        }
    }

    /// Records a finished request's duration; a no-op for other routes.
    #[inline]
    pub fn observe(&self, route: Route, d: Duration) {
        if let Some(h) = self.for_route(route) {
            h.observe(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn le_labels_match_the_bounds() {
        assert_eq!(LATENCY_LE.len(), LATENCY_BOUNDS_NS.len());
        for (le, ns) in LATENCY_LE.iter().zip(LATENCY_BOUNDS_NS) {
            assert_eq!(le.parse::<f64>().unwrap(), ns as f64 / 1e9);
        }
        for (le, ns) in ARGON2_LE.iter().zip(ARGON2_BOUNDS_NS) {
            assert_eq!(le.parse::<f64>().unwrap(), ns as f64 / 1e9);
        }
    }

    #[test]
    fn histogram_buckets_are_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // le 0.00005
        h.observe(Duration::from_nanos(50_001)); // le 0.0001
        h.observe(Duration::from_secs(1)); // le 1
        h.observe(Duration::from_secs(3)); // +Inf only
        h.observe(Duration::MAX); // saturates, +Inf only
        let counts: Vec<u64> = h.buckets.iter().map(Counter::get).collect();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[13], 1);
        assert_eq!(counts[14], 2);
        assert_eq!(counts.iter().sum::<u64>(), 5);
    }

    #[test]
    fn recorded_routes_have_a_histogram() {
        let latency = RequestLatency::default();
        for &r in Route::ALL {
            assert_eq!(
                RequestLatency::records(r),
                latency.for_route(r).is_some(),
                "{r:?}"
            );
        }
        for r in RequestLatency::ROUTES {
            assert!(RequestLatency::records(r), "{r:?}");
        }
        let recorded = Route::ALL.iter().filter(|&&r| RequestLatency::records(r));
        assert_eq!(recorded.count(), RequestLatency::ROUTES.len());
    }
}
