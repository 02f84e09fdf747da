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
//!
//! Owns the page: every metric's name, HELP and TYPE text, labels and order
//! (pinned byte for byte by `golden.prom`). Reads only what a [`Snapshot`]
//! holds and the route table; never imports a store, a service, a handler
//! or `cores`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::counters::{CoreCounters, STATUS_LABELS};
use super::histogram::{RequestLatency, SharedHistogram, ARGON2_LE, LATENCY_LE, LATENCY_SLOTS};
use crate::router::SLOT_LABELS;

/// `Content-Type` of the page [`render`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The blocking pool's figures at scrape time, copied from the pool's
/// atomics by the `/metrics` handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolValues {
    /// Jobs queued or running now.
    pub depth: u64,
    /// Jobs refused because the queue was full.
    pub rejected: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Threads of the pool.
    pub threads: usize,
}

/// Everything a scrape reports; borrowed, filled by the `/metrics` handler.
pub struct Snapshot<'a> {
    /// Every core's counters, in core order (the index is the `core` label).
    pub cores: &'a [Arc<CoreCounters>],
    /// Cores whose revocation mirror answers now, read by the handler from
    /// the mirrors' progress.
    pub mirror_current_cores: usize,
    /// The blocking pool.
    pub pool: PoolValues,
    /// argon2 hashing and verification times.
    pub argon2: &'a SharedHistogram,
    /// The driver the cores actually run (`"epoll"` or `"io_uring"`).
    pub driver: &'a str,
    /// Time since the server started.
    pub uptime: Duration,
}

/// Writes the Prometheus text page for `snapshot` into `out` (appending),
/// family after family in a fixed order.
pub fn render(out: &mut Vec<u8>, snapshot: &Snapshot) {
    let cores = snapshot.cores;
    requests(out, cores);
    request_latency(out, cores);
    connections(out, cores);
    verified_cache(out, cores);
    revocation_mirror(out, cores, snapshot.mirror_current_cores);
    redis(out, cores);
    blocking_pool(out, &snapshot.pool);
    argon2(out, snapshot.argon2);
    process(out, snapshot);
}

/// A counter summed over every core (wrapping, as the counters do).
fn sum(cores: &[Arc<CoreCounters>], f: impl Fn(&CoreCounters) -> u64) -> u64 {
    cores.iter().fold(0u64, |acc, c| acc.wrapping_add(f(c)))
}

/// `tokend_requests_total`: requests by route and status class.
fn requests(out: &mut Vec<u8>, cores: &[Arc<CoreCounters>]) {
    header(
        out,
        "tokend_requests_total",
        "counter",
        "Requests answered, by route and status class.",
    );
    for (slot, route) in SLOT_LABELS.iter().enumerate() {
        for (class, status) in STATUS_LABELS.iter().enumerate() {
            let v = sum(cores, |c| c.requests[slot][class].get());
            let _ = writeln!(
                out,
                "tokend_requests_total{{route=\"{route}\",status_class=\"{status}\"}} {v}"
            );
        }
    }
}

/// `tokend_request_duration_seconds`: the timed routes' latency.
fn request_latency(out: &mut Vec<u8>, cores: &[Arc<CoreCounters>]) {
    header(
        out,
        "tokend_request_duration_seconds",
        "histogram",
        "Time from a parsed request (in a pipelined burst, from the answer before it) to its response, by route.",
    );
    for route in RequestLatency::ROUTES {
        let mut counts = [0u64; LATENCY_SLOTS];
        let mut sum_ns = 0u64;
        for h in cores.iter().filter_map(|c| c.latency.for_route(route)) {
            h.add_into(&mut counts, &mut sum_ns);
        }
        histogram(
            out,
            "tokend_request_duration_seconds",
            &format!("route=\"{}\",", route.label()),
            &LATENCY_LE,
            &counts,
            sum_ns,
        );
    }
}

/// Connections: open per core, refused, accept errors, timeouts, and
/// requests the parser refused.
fn connections(out: &mut Vec<u8>, cores: &[Arc<CoreCounters>]) {
    header(
        out,
        "tokend_open_connections",
        "gauge",
        "Open client connections, by core.",
    );
    for (i, c) in cores.iter().enumerate() {
        let v = c.open_connections.get();
        let _ = writeln!(out, "tokend_open_connections{{core=\"{i}\"}} {v}");
    }
    counter(
        out,
        "tokend_refused_connections_total",
        "Connections closed at once because their core was at max_connections_per_core.",
        sum(cores, |c| c.refused_connections.get()),
    );
    counter(
        out,
        "tokend_accept_errors_total",
        "Failed accept() calls.",
        sum(cores, |c| c.accept_errors.get()),
    );
    counter(
        out,
        "tokend_timeouts_total",
        "Connections cut off by the head or idle timeout.",
        sum(cores, |c| c.timeouts.get()),
    );
    counter(
        out,
        "tokend_write_timeouts_total",
        "Connections closed because their answers made no write progress for server.write_timeout (a client that does not read them).",
        sum(cores, |c| c.write_timeouts.get()),
    );
    counter(
        out,
        "tokend_bad_requests_total",
        "Requests refused by the HTTP parser (400, 411, 413, 431).",
        sum(cores, |c| c.bad_requests.get()),
    );
}

/// The per-core verified-token cache.
fn verified_cache(out: &mut Vec<u8>, cores: &[Arc<CoreCounters>]) {
    counter(
        out,
        "tokend_verified_cache_hits_total",
        "Token validations answered from the per-core verified-token cache.",
        sum(cores, |c| c.verified_cache_hits.get()),
    );
    counter(
        out,
        "tokend_verified_cache_misses_total",
        "Token validations that had to verify the signature.",
        sum(cores, |c| c.verified_cache_misses.get()),
    );
}

/// The revocation mirror (`redis.revocation_mirror`).
fn revocation_mirror(out: &mut Vec<u8>, cores: &[Arc<CoreCounters>], current: usize) {
    counter(
        out,
        "tokend_revocation_mirror_answers_total",
        "Revocation checks answered by the in-memory mirror.",
        sum(cores, |c| c.mirror_answers.get()),
    );
    counter(
        out,
        "tokend_revocation_mirror_fallbacks_total",
        "Revocation checks sent to Redis because the mirror was not current.",
        sum(cores, |c| c.mirror_fallbacks.get()),
    );
    counter(
        out,
        "tokend_revocation_mirror_syncs_total",
        "Full loads of the mirror from Redis (start, re-seed, gap in the stream).",
        sum(cores, |c| c.mirror_resyncs.get()),
    );
    gauge(
        out,
        "tokend_revocation_mirror_current_cores",
        "Cores whose mirror answers now.",
        current as f64,
    );
    gauge(
        out,
        "tokend_revocation_mirror_entries",
        "Revocations held by the mirrors, summed over cores.",
        sum(cores, |c| c.mirror_entries.get()) as f64,
    );
}

/// Every core's Redis connection, as last published.
fn redis(out: &mut Vec<u8>, cores: &[Arc<CoreCounters>]) {
    counter(
        out,
        "tokend_redis_round_trips_total",
        "Batches of pipelined commands written to Redis.",
        sum(cores, |c| c.redis.round_trips.get()),
    );
    counter(
        out,
        "tokend_redis_commands_total",
        "Commands sent to Redis.",
        sum(cores, |c| c.redis.commands.get()),
    );
    counter(
        out,
        "tokend_redis_errors_total",
        "Redis queries that failed other than by timing out.",
        sum(cores, |c| c.redis.errors.get()),
    );
    counter(
        out,
        "tokend_redis_reconnects_total",
        "Successful Redis connections after each core's first.",
        sum(cores, |c| c.redis.reconnects.get()),
    );
    counter(
        out,
        "tokend_redis_connect_failures_total",
        "Failed Redis connection attempts.",
        sum(cores, |c| c.redis.connect_failures.get()),
    );
    counter(
        out,
        "tokend_redis_timeouts_total",
        "Redis queries that gave up after redis.timeout.",
        sum(cores, |c| c.redis.timeouts.get()),
    );
}

/// The blocking pool.
fn blocking_pool(out: &mut Vec<u8>, pool: &PoolValues) {
    gauge(
        out,
        "tokend_blocking_queue_depth",
        "Jobs queued or running on the blocking pool.",
        pool.depth as f64,
    );
    counter(
        out,
        "tokend_blocking_rejected_total",
        "Jobs refused (503) because the blocking pool's queue was full.",
        pool.rejected,
    );
    counter(
        out,
        "tokend_blocking_completed_total",
        "Jobs completed by the blocking pool.",
        pool.completed,
    );
    gauge(
        out,
        "tokend_blocking_threads",
        "Threads of the blocking pool.",
        pool.threads as f64,
    );
}

/// `tokend_argon2_seconds`: password hashing and verification times.
fn argon2(out: &mut Vec<u8>, argon2: &SharedHistogram) {
    header(
        out,
        "tokend_argon2_seconds",
        "histogram",
        "Time of one argon2id password hash or verification.",
    );
    let (counts, sum_ns) = argon2.read();
    histogram(
        out,
        "tokend_argon2_seconds",
        "",
        &ARGON2_LE,
        &counts,
        sum_ns,
    );
}

/// The process: build, cores, uptime.
fn process(out: &mut Vec<u8>, snapshot: &Snapshot) {
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
        snapshot.cores.len() as f64,
    );
    gauge(
        out,
        "tokend_uptime_seconds",
        "Time since the server started.",
        snapshot.uptime.as_secs_f64(),
    );
}

/// The `# HELP` and `# TYPE` lines of a family (help text escaped).
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

/// A counter family of one unlabelled sample.
fn counter(out: &mut Vec<u8>, name: &str, help: &str, v: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {v}");
}

/// A gauge family of one unlabelled sample.
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
    cumulative = cumulative.wrapping_add(counts.get(le.len()).copied().unwrap_or(0));
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
    use crate::metrics::RedisStats;
    use crate::metrics::STATUS_SLOTS;
    use crate::router::{Route, OTHER_SLOT, ROUTE_SLOTS};
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

    fn fake_core() -> Arc<CoreCounters> {
        Arc::new(CoreCounters::default())
    }

    fn page(
        cores: &[Arc<CoreCounters>],
        mirror_current_cores: usize,
        pool: PoolValues,
        argon2: &SharedHistogram,
        driver: &str,
    ) -> String {
        let snapshot = Snapshot {
            cores,
            mirror_current_cores,
            pool,
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
    fn sums_two_cores_in_a_well_formed_page() {
        let cores = [fake_core(), fake_core()];
        let (a, b) = (&cores[0], &cores[1]);
        // Requests.
        a.count(Route::Validate.slot(), 200);
        a.count(Route::Validate.slot(), 200);
        b.count(Route::Validate.slot(), 204);
        b.count(Route::Validate.slot(), 401);
        a.count(OTHER_SLOT, 404);
        b.count(Route::UserDisable.slot(), 503);
        a.count(99, 200); // out of range: ignored
        a.open_connections.set(7);
        b.open_connections.set(5);
        a.refused_connections.add(2);
        b.refused_connections.add(3);
        a.timeouts.inc();
        b.write_timeouts.add(2);
        b.bad_requests.add(4);
        a.verified_cache_hits.add(10);
        b.verified_cache_hits.add(1);
        b.verified_cache_misses.add(6);
        // Latency: validate on both cores, token on one.
        a.latency
            .observe(Route::Validate, Duration::from_micros(40));
        a.latency
            .observe(Route::Validate, Duration::from_micros(300));
        b.latency.observe(Route::Validate, Duration::from_millis(2));
        b.latency.observe(Route::Validate, Duration::from_secs(2));
        b.latency.observe(Route::Token, Duration::from_millis(30));
        // Not a timed route: not recorded.
        b.latency.observe(Route::Healthz, Duration::from_millis(30));
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
        let pool = PoolValues {
            depth: 9,
            rejected: 8,
            completed: 77,
            threads: 3,
        };
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

        let text = page(&cores, 0, pool, &argon2, "io_\"uring\"\n");
        let (samples, types) = parse(&text);

        // Every family is declared with the right type.
        for (name, kind) in [
            ("tokend_requests_total", "counter"),
            ("tokend_request_duration_seconds", "histogram"),
            ("tokend_open_connections", "gauge"),
            ("tokend_refused_connections_total", "counter"),
            ("tokend_accept_errors_total", "counter"),
            ("tokend_timeouts_total", "counter"),
            ("tokend_write_timeouts_total", "counter"),
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
        assert_eq!(types.len(), 29);

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
            ("tokend_write_timeouts_total", 2.0),
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

    /// A snapshot with a distinct known value in every counter, gauge and
    /// histogram: two cores, the pool, argon2, the driver and the uptime.
    fn golden_page() -> String {
        let cores = [fake_core(), fake_core()];
        for (i, c) in cores.iter().enumerate() {
            let k = i as u64 + 1;
            for (slot, row) in c.requests.iter().enumerate() {
                for (class, cell) in row.iter().enumerate() {
                    cell.add(k * 100 + slot as u64 * 4 + class as u64);
                }
            }
            c.open_connections.set(k * 3);
            c.refused_connections.add(k * 5);
            c.accept_errors.add(k * 7);
            c.timeouts.add(k * 11);
            c.write_timeouts.add(k * 83);
            c.bad_requests.add(k * 13);
            c.verified_cache_hits.add(k * 17);
            c.verified_cache_misses.add(k * 19);
            c.mirror_answers.add(k * 23);
            c.mirror_fallbacks.add(k * 29);
            c.mirror_resyncs.add(k * 31);
            c.mirror_entries.set(k * 37);
            c.latency
                .observe(Route::Validate, Duration::from_nanos(k * 30_000));
            c.latency
                .observe(Route::Validate, Duration::from_millis(k * 3));
            c.latency
                .observe(Route::Introspect, Duration::from_micros(k * 700));
            c.latency
                .observe(Route::Token, Duration::from_millis(k * 40));
            c.latency.observe(Route::Token, Duration::from_secs(k * 2));
            c.redis.publish(&RedisStats {
                round_trips: k * 43,
                commands: k * 47,
                errors: k * 53,
                reconnects: k * 59,
                connect_failures: k * 61,
                timeouts: k * 67,
            });
        }
        let pool = PoolValues {
            depth: 71,
            rejected: 73,
            completed: 79,
            threads: 3,
        };
        let argon2 = SharedHistogram::default();
        argon2.observe(Duration::from_millis(4));
        argon2.observe(Duration::from_millis(60));
        argon2.observe(Duration::from_millis(60));
        argon2.observe(Duration::from_secs(7));
        // One core's mirror is current, the other's is not.
        page(&cores, 1, pool, &argon2, "io_uring \"x\\y\"\n")
    }

    /// The page before the reshaping of issue #11, byte for byte: every
    /// name, HELP and TYPE line, label and value must stay as it was.
    /// `{version}` stands for the crate's version.
    const GOLDEN: &str = include_str!("golden.prom");

    #[test]
    fn renders_the_golden_page() {
        let golden = GOLDEN.replace("{version}", env!("CARGO_PKG_VERSION"));
        let page = golden_page();
        for (n, (got, want)) in page.lines().zip(golden.lines()).enumerate() {
            assert_eq!(got, want, "line {} of golden.prom", n + 1);
        }
        assert_eq!(page, golden);
    }

    #[test]
    fn empty_server_renders() {
        let argon2 = SharedHistogram::default();
        let text = page(&[], 0, PoolValues::default(), &argon2, "epoll");
        let (samples, _) = parse(&text);
        assert_eq!(find(&samples, "tokend_cores", &[]), 0.0);
        assert_eq!(find(&samples, "tokend_argon2_seconds_count", &[]), 0.0);
        assert_eq!(find(&samples, "tokend_argon2_seconds_sum", &[]), 0.0);
        // A family with no series still has HELP and TYPE, which is valid.
        assert!(text.contains("# TYPE tokend_open_connections gauge\n"));
    }
}
