//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Every core owns its counters and histograms and writes them with a relaxed
//! load and store (single writer, no read-modify-write, no lock, no
//! allocation); the core that answers a scrape reads every core's atomics and
//! sums them into one [`render`]ed page. Only the argon2 histogram, observed
//! on the blocking pool's threads, uses `fetch_add` ([`SharedHistogram`]).
//!
//! The text is written by hand rather than with the `prometheus-client`
//! crate: that crate wants its own metric types registered in a `Registry`
//! (`'static`, `Send + Sync` collectors, boxed), encodes through
//! `fmt::Write` into a `String`, and speaks OpenMetrics (`# EOF`, `# UNIT`,
//! `_total` added for you). Here the values already live in per-core atomics
//! that must be summed at scrape time from borrowed data, so a registry would
//! only be an adapter around a loop over the cores; the 0.0.4 text format is
//! small enough to write exactly.
//!
//! Format rules followed (<https://prometheus.io/docs/instrumenting/exposition_formats/>):
//! one `# HELP` and one `# TYPE` line per family, before its samples, every
//! family once; label values escape `\`, `"` and newline; help text escapes
//! `\` and newline; histograms give cumulative `_bucket{le="…"}` series ending
//! with `le="+Inf"` (equal to `_count`), then `_sum` and `_count`.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::cores::counters::{CoreCounters, Counter, ROUTE_SLOTS, STATUS_SLOTS};
use crate::redis::RedisStats;
use crate::router::Route;
use crate::store::pool::PoolStats;

/// `Content-Type` of the page [`render`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Route slot of requests that matched no route (404, 405, parse errors).
pub const OTHER_SLOT: usize = ROUTE_SLOTS - 1;

/// The `route` label of each route slot (`route as usize`; the last is "other").
pub const ROUTE_LABELS: [&str; ROUTE_SLOTS] = [
    "healthz",
    "readyz",
    "metrics",
    "validate",
    "token",
    "introspect",
    "revoke",
    "jwks",
    "metadata",
    "users",
    "users_me",
    "users_me_password",
    "users_me_logout_all",
    "user_disable",
    "other",
];

/// The `status_class` label of each status slot of [`CoreCounters::requests`].
pub const STATUS_LABELS: [&str; STATUS_SLOTS] = ["2xx", "3xx", "4xx", "5xx"];

/// The `route` label of a route. Exhaustive on purpose: a new route does not
/// compile until it has a label (and a slot below [`OTHER_SLOT`]).
pub fn route_label(route: Route) -> &'static str {
    use Route::*;
    match route {
        Healthz => "healthz",
        Readyz => "readyz",
        Metrics => "metrics",
        Validate => "validate",
        Token => "token",
        Introspect => "introspect",
        Revoke => "revoke",
        Jwks => "jwks",
        Metadata => "metadata",
        Users => "users",
        UsersMe => "users_me",
        UsersMePassword => "users_me_password",
        UsersMeLogoutAll => "users_me_logout_all",
        UserDisable => "user_disable",
    }
}

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
const LATENCY_LE: [&str; 14] = [
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
const ARGON2_LE: [&str; 10] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
];

const LATENCY_SLOTS: usize = LATENCY_BOUNDS_NS.len() + 1;
const ARGON2_SLOTS: usize = ARGON2_BOUNDS_NS.len() + 1;

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

    fn add_into(&self, counts: &mut [u64; LATENCY_SLOTS], sum_ns: &mut u64) {
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

    fn families(&self) -> [(&'static str, &Histogram); 3] {
        [
            ("validate", &self.validate),
            ("introspect", &self.introspect),
            ("token", &self.token),
        ]
    }
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

/// What one core contributes to a scrape.
#[derive(Clone, Copy)]
pub struct CoreView<'a> {
    pub counters: &'a CoreCounters,
    pub latency: &'a RequestLatency,
    pub redis: &'a RedisCounters,
}

/// Everything a scrape reports; borrowed, filled by the `/metrics` handler.
pub struct Snapshot<'a> {
    /// Every core, in core order (the index is the `core` label).
    pub cores: Vec<CoreView<'a>>,
    /// The blocking pool's counters.
    pub pool: &'a PoolStats,
    /// Threads of the blocking pool.
    pub pool_threads: usize,
    /// argon2 hashing and verification times.
    pub argon2: &'a SharedHistogram,
    /// The driver the cores actually run (`"epoll"` or `"io_uring"`).
    pub driver: &'a str,
    /// Time since the server started.
    pub uptime: Duration,
}

/// Writes the Prometheus text page for `snapshot` into `out` (appending).
pub fn render(out: &mut Vec<u8>, snapshot: &Snapshot) {
    let cores = &snapshot.cores;
    let sum = |f: &dyn Fn(&CoreView) -> u64| -> u64 {
        cores.iter().fold(0u64, |acc, c| acc.wrapping_add(f(c)))
    };

    // Requests by route and status class.
    header(
        out,
        "tokend_requests_total",
        "counter",
        "Requests answered, by route and status class.",
    );
    for (slot, route) in ROUTE_LABELS.iter().enumerate() {
        for (class, status) in STATUS_LABELS.iter().enumerate() {
            let v = sum(&|c| c.counters.requests[slot][class].get());
            let _ = writeln!(
                out,
                "tokend_requests_total{{route=\"{route}\",status_class=\"{status}\"}} {v}"
            );
        }
    }

    // Request latency.
    header(
        out,
        "tokend_request_duration_seconds",
        "histogram",
        "Time from a parsed request to its written response, by route.",
    );
    for (i, route) in ["validate", "introspect", "token"].iter().enumerate() {
        let mut counts = [0u64; LATENCY_SLOTS];
        let mut sum_ns = 0u64;
        for c in cores {
            c.latency.families()[i].1.add_into(&mut counts, &mut sum_ns);
        }
        histogram(
            out,
            "tokend_request_duration_seconds",
            &format!("route=\"{route}\","),
            &LATENCY_LE,
            &counts,
            sum_ns,
        );
    }

    // Connections.
    header(
        out,
        "tokend_open_connections",
        "gauge",
        "Open client connections, by core.",
    );
    for (i, c) in cores.iter().enumerate() {
        let v = c.counters.open_connections.get();
        let _ = writeln!(out, "tokend_open_connections{{core=\"{i}\"}} {v}");
    }
    counter(
        out,
        "tokend_refused_connections_total",
        "Connections closed at once because their core was at max_connections_per_core.",
        sum(&|c| c.counters.refused_connections.get()),
    );
    counter(
        out,
        "tokend_accept_errors_total",
        "Failed accept() calls.",
        sum(&|c| c.counters.accept_errors.get()),
    );
    counter(
        out,
        "tokend_timeouts_total",
        "Connections cut off by the head or idle timeout.",
        sum(&|c| c.counters.timeouts.get()),
    );
    counter(
        out,
        "tokend_bad_requests_total",
        "Requests refused by the HTTP parser (400, 411, 413, 431).",
        sum(&|c| c.counters.bad_requests.get()),
    );

    // Verified-token cache.
    counter(
        out,
        "tokend_verified_cache_hits_total",
        "Token validations answered from the per-core verified-token cache.",
        sum(&|c| c.counters.verified_cache_hits.get()),
    );
    counter(
        out,
        "tokend_verified_cache_misses_total",
        "Token validations that had to verify the signature.",
        sum(&|c| c.counters.verified_cache_misses.get()),
    );

    // Revocation mirror (redis.revocation_mirror).
    counter(
        out,
        "tokend_revocation_mirror_answers_total",
        "Revocation checks answered by the in-memory mirror.",
        sum(&|c| c.counters.mirror_answers.get()),
    );
    counter(
        out,
        "tokend_revocation_mirror_fallbacks_total",
        "Revocation checks sent to Redis because the mirror was not current.",
        sum(&|c| c.counters.mirror_fallbacks.get()),
    );
    counter(
        out,
        "tokend_revocation_mirror_syncs_total",
        "Full loads of the mirror from Redis (start, re-seed, gap in the stream).",
        sum(&|c| c.counters.mirror_resyncs.get()),
    );
    gauge(
        out,
        "tokend_revocation_mirror_current_cores",
        "Cores whose mirror answers now.",
        sum(&|c| c.counters.mirror_current.get()) as f64,
    );
    gauge(
        out,
        "tokend_revocation_mirror_entries",
        "Revocations held by the mirrors, summed over cores.",
        sum(&|c| c.counters.mirror_entries.get()) as f64,
    );

    // Redis.
    counter(
        out,
        "tokend_redis_round_trips_total",
        "Batches of pipelined commands written to Redis.",
        sum(&|c| c.redis.round_trips.get()),
    );
    counter(
        out,
        "tokend_redis_commands_total",
        "Commands sent to Redis.",
        sum(&|c| c.redis.commands.get()),
    );
    counter(
        out,
        "tokend_redis_errors_total",
        "Redis queries that failed other than by timing out.",
        sum(&|c| c.redis.errors.get()),
    );
    counter(
        out,
        "tokend_redis_reconnects_total",
        "Successful Redis connections after each core's first.",
        sum(&|c| c.redis.reconnects.get()),
    );
    counter(
        out,
        "tokend_redis_connect_failures_total",
        "Failed Redis connection attempts.",
        sum(&|c| c.redis.connect_failures.get()),
    );
    counter(
        out,
        "tokend_redis_timeouts_total",
        "Redis queries that gave up after redis.timeout.",
        sum(&|c| c.redis.timeouts.get()),
    );

    // Blocking pool.
    let pool = snapshot.pool;
    gauge(
        out,
        "tokend_blocking_queue_depth",
        "Jobs queued or running on the blocking pool.",
        pool.depth.load(Ordering::Relaxed) as f64,
    );
    counter(
        out,
        "tokend_blocking_rejected_total",
        "Jobs refused (503) because the blocking pool's queue was full.",
        pool.rejected.load(Ordering::Relaxed),
    );
    counter(
        out,
        "tokend_blocking_completed_total",
        "Jobs completed by the blocking pool.",
        pool.completed.load(Ordering::Relaxed),
    );
    gauge(
        out,
        "tokend_blocking_threads",
        "Threads of the blocking pool.",
        snapshot.pool_threads as f64,
    );

    // argon2.
    header(
        out,
        "tokend_argon2_seconds",
        "histogram",
        "Time of one argon2id password hash or verification.",
    );
    let mut counts = [0u64; ARGON2_SLOTS];
    for (c, b) in counts.iter_mut().zip(&snapshot.argon2.buckets) {
        *c = b.load(Ordering::Relaxed);
    }
    histogram(
        out,
        "tokend_argon2_seconds",
        "",
        &ARGON2_LE,
        &counts,
        snapshot.argon2.sum_ns.load(Ordering::Relaxed),
    );

    // Process.
    header(
        out,
        "tokend_build_info",
        "gauge",
        "Always 1; the labels say which tokend this is.",
    );
    let _ = write!(out, "tokend_build_info{{version=\"");
    escape_label(out, env!("CARGO_PKG_VERSION"));
    let _ = write!(out, "\",driver=\"");
    escape_label(out, snapshot.driver);
    let _ = writeln!(out, "\"}} 1");
    gauge(
        out,
        "tokend_cores",
        "Cores running an event loop.",
        cores.len() as f64,
    );
    gauge(
        out,
        "tokend_uptime_seconds",
        "Time since the server started.",
        snapshot.uptime.as_secs_f64(),
    );
}

fn header(out: &mut Vec<u8>, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} ");
    for &b in help.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
    let _ = writeln!(out, "\n# TYPE {name} {kind}");
}

fn counter(out: &mut Vec<u8>, name: &str, help: &str, v: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {v}");
}

fn gauge(out: &mut Vec<u8>, name: &str, help: &str, v: f64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {v}");
}

/// Writes one histogram's series. `labels` is empty or `k="v",` (with the
/// trailing comma); `counts` are non-cumulative, the last one over every bound.
fn histogram(
    out: &mut Vec<u8>,
    name: &str,
    labels: &str,
    le: &[&str],
    counts: &[u64],
    sum_ns: u64,
) {
    debug_assert_eq!(le.len() + 1, counts.len());
    let mut cumulative = 0u64;
    for (bound, c) in le.iter().zip(counts) {
        cumulative = cumulative.wrapping_add(*c);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
    }
    cumulative = cumulative.wrapping_add(counts[counts.len() - 1]);
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {cumulative}");
    let plain = labels.trim_end_matches(',');
    let braces = |out: &mut Vec<u8>| {
        if !plain.is_empty() {
            let _ = write!(out, "{{{plain}}}");
        }
    };
    let _ = write!(out, "{name}_sum");
    braces(out);
    let _ = writeln!(out, " {}", sum_ns as f64 / 1e9);
    let _ = write!(out, "{name}_count");
    braces(out);
    let _ = writeln!(out, " {cumulative}");
}

/// A label value, escaped (`\` → `\\`, `"` → `\"`, newline → `\n`).
fn escape_label(out: &mut Vec<u8>, v: &str) {
    for &b in v.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap, HashSet};

    /// One parsed sample: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parses a 0.0.4 text page strictly enough to catch format mistakes:
    /// HELP then TYPE once per family before its samples, samples contiguous
    /// by family, labels well-formed and unique, values parse as floats.
    fn parse(text: &str) -> (Vec<Sample>, HashMap<String, String>) {
        assert!(text.ends_with('\n'), "page must end with a newline");
        let mut samples = Vec::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helped: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut seen_series: HashSet<String> = HashSet::new();
        for line in text.lines() {
            assert!(!line.is_empty(), "no blank lines");
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has text");
                assert!(!help.is_empty());
                assert!(helped.insert(name.to_string()), "HELP twice for {name}");
                assert!(!types.contains_key(name), "HELP after TYPE for {name}");
                current = Some(name.to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(helped.contains(name), "TYPE before HELP for {name}");
                assert_eq!(current.as_deref(), Some(name));
                assert!(types.insert(name.into(), kind.into()).is_none());
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line}");
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels close");
                    (name.to_string(), parse_labels(body))
                }
            };
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{name}"
            );
            let family = current.as_deref().expect("sample before any TYPE");
            let kind = types.get(family).expect("sample before TYPE");
            let ok = match kind.as_str() {
                "histogram" => [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count"),
                ]
                .contains(&name),
                _ => name == family,
            };
            assert!(ok, "sample {name} outside its family {family}");
            assert!(seen_series.insert(series.to_string()), "duplicate {series}");
            samples.push((name, labels, value));
        }
        (samples, types)
    }

    fn parse_labels(body: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let mut chars = body.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert!(!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            assert_eq!(chars.next(), Some('"'), "label value is quoted");
            let mut value = String::new();
            loop {
                match chars.next().expect("label value closes") {
                    '\\' => match chars.next() {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => panic!("bad escape {other:?}"),
                    },
                    '"' => break,
                    '\n' => panic!("raw newline in label value"),
                    c => value.push(c),
                }
            }
            assert!(labels.insert(key, value).is_none(), "duplicate label");
            match chars.next() {
                None => break,
                Some(',') => {}
                Some(c) => panic!("unexpected {c:?} after a label"),
            }
        }
        labels
    }

    fn find(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
            .2
    }

    struct FakeCore {
        counters: CoreCounters,
        latency: RequestLatency,
        redis: RedisCounters,
    }

    fn fake_core() -> FakeCore {
        FakeCore {
            counters: CoreCounters::default(),
            latency: RequestLatency::default(),
            redis: RedisCounters::default(),
        }
    }

    fn page(
        cores: &[FakeCore],
        pool: &PoolStats,
        argon2: &SharedHistogram,
        driver: &str,
    ) -> String {
        let snapshot = Snapshot {
            cores: cores
                .iter()
                .map(|c| CoreView {
                    counters: &c.counters,
                    latency: &c.latency,
                    redis: &c.redis,
                })
                .collect(),
            pool,
            pool_threads: 3,
            argon2,
            driver,
            uptime: Duration::from_millis(12_500),
        };
        let mut out = b"leftover".to_vec();
        render(&mut out, &snapshot);
        assert!(out.starts_with(b"leftover"), "render appends");
        String::from_utf8(out.split_off(8)).unwrap()
    }

    #[test]
    fn route_slots_match_the_router() {
        use Route::*;
        let all = [
            Healthz,
            Readyz,
            Metrics,
            Validate,
            Token,
            Introspect,
            Revoke,
            Jwks,
            Metadata,
            Users,
            UsersMe,
            UsersMePassword,
            UsersMeLogoutAll,
            UserDisable,
        ];
        assert_eq!(all.len(), OTHER_SLOT);
        for r in all {
            assert_eq!(ROUTE_LABELS[r as usize], route_label(r), "{r:?}");
        }
        assert_eq!(ROUTE_LABELS[OTHER_SLOT], "other");
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
    fn sums_two_cores_in_a_well_formed_page() {
        let cores = [fake_core(), fake_core()];
        let (a, b) = (&cores[0], &cores[1]);
        // Requests.
        a.counters.count(Route::Validate as usize, 200);
        a.counters.count(Route::Validate as usize, 200);
        b.counters.count(Route::Validate as usize, 204);
        b.counters.count(Route::Validate as usize, 401);
        a.counters.count(OTHER_SLOT, 404);
        b.counters.count(Route::UserDisable as usize, 503);
        a.counters.count(99, 200); // out of range: ignored
        a.counters.open_connections.set(7);
        b.counters.open_connections.set(5);
        a.counters.refused_connections.add(2);
        b.counters.refused_connections.add(3);
        a.counters.timeouts.inc();
        b.counters.bad_requests.add(4);
        a.counters.verified_cache_hits.add(10);
        b.counters.verified_cache_hits.add(1);
        b.counters.verified_cache_misses.add(6);
        // Latency: validate on both cores, token on one.
        a.latency
            .observe(Route::Validate, Duration::from_micros(40));
        a.latency
            .observe(Route::Validate, Duration::from_micros(300));
        b.latency.observe(Route::Validate, Duration::from_millis(2));
        b.latency.observe(Route::Validate, Duration::from_secs(2));
        b.latency.observe(Route::Token, Duration::from_millis(30));
        b.latency.observe(Route::Healthz, Duration::from_millis(30)); // not recorded
                                                                      // Redis.
        a.redis.publish(&RedisStats {
            round_trips: 100,
            commands: 150,
            errors: 1,
            reconnects: 2,
            connect_failures: 3,
            timeouts: 4,
        });
        b.redis.publish(&RedisStats {
            round_trips: 11,
            commands: 12,
            errors: 13,
            reconnects: 14,
            connect_failures: 15,
            timeouts: 16,
        });
        // Pool and argon2.
        let pool = PoolStats::default();
        pool.depth.store(9, Ordering::Relaxed);
        pool.rejected.store(8, Ordering::Relaxed);
        pool.completed.store(77, Ordering::Relaxed);
        let argon2 = SharedHistogram::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..25 {
                        argon2.observe(Duration::from_millis(40));
                    }
                });
            }
        });
        argon2.observe(Duration::from_secs(10));

        let text = page(&cores, &pool, &argon2, "io_\"uring\"\n");
        let (samples, types) = parse(&text);

        // Every family is declared with the right type.
        for (name, kind) in [
            ("tokend_requests_total", "counter"),
            ("tokend_request_duration_seconds", "histogram"),
            ("tokend_open_connections", "gauge"),
            ("tokend_refused_connections_total", "counter"),
            ("tokend_accept_errors_total", "counter"),
            ("tokend_timeouts_total", "counter"),
            ("tokend_bad_requests_total", "counter"),
            ("tokend_verified_cache_hits_total", "counter"),
            ("tokend_verified_cache_misses_total", "counter"),
            ("tokend_revocation_mirror_answers_total", "counter"),
            ("tokend_revocation_mirror_fallbacks_total", "counter"),
            ("tokend_revocation_mirror_syncs_total", "counter"),
            ("tokend_revocation_mirror_current_cores", "gauge"),
            ("tokend_revocation_mirror_entries", "gauge"),
            ("tokend_redis_round_trips_total", "counter"),
            ("tokend_redis_commands_total", "counter"),
            ("tokend_redis_errors_total", "counter"),
            ("tokend_redis_reconnects_total", "counter"),
            ("tokend_redis_connect_failures_total", "counter"),
            ("tokend_redis_timeouts_total", "counter"),
            ("tokend_blocking_queue_depth", "gauge"),
            ("tokend_blocking_rejected_total", "counter"),
            ("tokend_blocking_completed_total", "counter"),
            ("tokend_blocking_threads", "gauge"),
            ("tokend_argon2_seconds", "histogram"),
            ("tokend_build_info", "gauge"),
            ("tokend_cores", "gauge"),
            ("tokend_uptime_seconds", "gauge"),
        ] {
            assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
        }
        assert_eq!(types.len(), 28);

        // Requests: every route × class present, summed across cores.
        let req = |route, class| {
            find(
                &samples,
                "tokend_requests_total",
                &[("route", route), ("status_class", class)],
            )
        };
        assert_eq!(req("validate", "2xx"), 3.0);
        assert_eq!(req("validate", "4xx"), 1.0);
        assert_eq!(req("validate", "5xx"), 0.0);
        assert_eq!(req("other", "4xx"), 1.0);
        assert_eq!(req("user_disable", "5xx"), 1.0);
        assert_eq!(req("healthz", "3xx"), 0.0);
        let total: f64 = samples
            .iter()
            .filter(|(n, _, _)| n == "tokend_requests_total")
            .map(|s| s.2)
            .sum();
        assert_eq!(total, 6.0);
        assert_eq!(
            samples
                .iter()
                .filter(|(n, _, _)| n == "tokend_requests_total")
                .count(),
            ROUTE_SLOTS * STATUS_SLOTS
        );

        // Per-core gauge and summed counters.
        assert_eq!(
            find(&samples, "tokend_open_connections", &[("core", "0")]),
            7.0
        );
        assert_eq!(
            find(&samples, "tokend_open_connections", &[("core", "1")]),
            5.0
        );
        for (name, v) in [
            ("tokend_refused_connections_total", 5.0),
            ("tokend_accept_errors_total", 0.0),
            ("tokend_timeouts_total", 1.0),
            ("tokend_bad_requests_total", 4.0),
            ("tokend_verified_cache_hits_total", 11.0),
            ("tokend_verified_cache_misses_total", 6.0),
            ("tokend_redis_round_trips_total", 111.0),
            ("tokend_redis_commands_total", 162.0),
            ("tokend_redis_errors_total", 14.0),
            ("tokend_redis_reconnects_total", 16.0),
            ("tokend_redis_connect_failures_total", 18.0),
            ("tokend_redis_timeouts_total", 20.0),
            ("tokend_blocking_queue_depth", 9.0),
            ("tokend_blocking_rejected_total", 8.0),
            ("tokend_blocking_completed_total", 77.0),
            ("tokend_blocking_threads", 3.0),
            ("tokend_cores", 2.0),
            ("tokend_uptime_seconds", 12.5),
        ] {
            assert_eq!(find(&samples, name, &[]), v, "{name}");
        }

        // Latency histograms: cumulative, +Inf == count, sums in seconds.
        let bucket = |route, le| {
            find(
                &samples,
                "tokend_request_duration_seconds_bucket",
                &[("route", route), ("le", le)],
            )
        };
        assert_eq!(bucket("validate", "0.00005"), 1.0);
        assert_eq!(bucket("validate", "0.0005"), 2.0);
        assert_eq!(bucket("validate", "0.0025"), 3.0);
        assert_eq!(bucket("validate", "1"), 3.0);
        assert_eq!(bucket("validate", "+Inf"), 4.0);
        assert_eq!(bucket("token", "0.025"), 0.0);
        assert_eq!(bucket("token", "0.05"), 1.0);
        assert_eq!(bucket("introspect", "+Inf"), 0.0);
        let count = |route| {
            find(
                &samples,
                "tokend_request_duration_seconds_count",
                &[("route", route)],
            )
        };
        assert_eq!(count("validate"), 4.0);
        assert_eq!(count("token"), 1.0);
        let s = find(
            &samples,
            "tokend_request_duration_seconds_sum",
            &[("route", "validate")],
        );
        assert!((s - 2.00234).abs() < 1e-9, "{s}");
        for (name, labels, _) in &samples {
            assert!(
                !(name == "tokend_request_duration_seconds_count"
                    && labels.get("route").map(String::as_str) == Some("healthz")),
                "no histogram for unrecorded routes"
            );
        }
        check_cumulative(&samples, "tokend_request_duration_seconds");

        // argon2, observed from several threads.
        assert_eq!(
            find(&samples, "tokend_argon2_seconds_bucket", &[("le", "0.025")]),
            0.0
        );
        assert_eq!(
            find(&samples, "tokend_argon2_seconds_bucket", &[("le", "0.05")]),
            100.0
        );
        assert_eq!(
            find(&samples, "tokend_argon2_seconds_bucket", &[("le", "+Inf")]),
            101.0
        );
        assert_eq!(find(&samples, "tokend_argon2_seconds_count", &[]), 101.0);
        let s = find(&samples, "tokend_argon2_seconds_sum", &[]);
        assert!((s - 14.0).abs() < 1e-9, "{s}");
        check_cumulative(&samples, "tokend_argon2_seconds");

        // Build info, with the label value escaped and parsed back.
        assert_eq!(
            find(
                &samples,
                "tokend_build_info",
                &[
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("driver", "io_\"uring\"\n")
                ],
            ),
            1.0
        );
    }

    /// Buckets never decrease, and `+Inf` equals `_count`, per label set.
    fn check_cumulative(samples: &[Sample], family: &str) {
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (name, labels, v) in samples {
            if *name == format!("{family}_bucket") {
                let mut rest = labels.clone();
                let le = rest.remove("le").expect("le label");
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                series
                    .entry(format!("{rest:?}"))
                    .or_default()
                    .push((le, *v));
            }
        }
        assert!(!series.is_empty());
        for (key, buckets) in series {
            assert!(buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
            let (le, inf) = *buckets.last().unwrap();
            assert!(le.is_infinite(), "{key}: last bucket is +Inf");
            let rest: BTreeMap<String, String> = samples
                .iter()
                .find(|(n, l, _)| *n == format!("{family}_count") && format!("{l:?}") == key)
                .map(|(_, l, _)| l.clone())
                .unwrap_or_else(|| panic!("{key}: no _count"));
            let count = find(
                samples,
                &format!("{family}_count"),
                &rest
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect::<Vec<_>>(),
            );
            assert_eq!(inf, count, "{key}");
        }
    }

    #[test]
    fn empty_server_renders() {
        let pool = PoolStats::default();
        let argon2 = SharedHistogram::default();
        let text = page(&[], &pool, &argon2, "epoll");
        let (samples, _) = parse(&text);
        assert_eq!(find(&samples, "tokend_cores", &[]), 0.0);
        assert_eq!(find(&samples, "tokend_argon2_seconds_count", &[]), 0.0);
        assert_eq!(find(&samples, "tokend_argon2_seconds_sum", &[]), 0.0);
        // A family with no series still has HELP and TYPE, which is valid.
        assert!(text.contains("# TYPE tokend_open_connections gauge\n"));
    }
}
