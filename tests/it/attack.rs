//! Attacks on the running server, each while a well-behaved client keeps
//! validating on the same core (`TOKEND_SERVER_CORES=1`): slowloris heads
//! and bodies, a flood of silent connections up to the connection cap,
//! oversized heads, oversized bodies. Each test asserts that every one of
//! the well-behaved client's requests succeeded and that its worst latency
//! stayed under [`WORST_LATENCY`]; that every attack connection got its
//! precise status or was closed, and was counted in the matching metric;
//! and that tokend's resident memory stayed bounded. Each prints its figures
//! (`attack figures: …`; run with `-- --nocapture`).
//!
//! Elsewhere: the quadratic form body and the pipelining client that never
//! reads (the other attacks of issue #12), and the timeouts and the cap
//! one by one, without load (`server.rs`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::tokens::{deployment, Deployment};

/// How long each attack goes on.
const ATTACK: Duration = Duration::from_secs(3);

/// The worst latency the well-behaved client may see during an attack. A
/// validation takes well under a millisecond here (one Redis round trip;
/// the mean is printed with the figures). On a loaded 2-CPU machine (the
/// attackers' threads, tokend, Redis, other tests' servers and builds all
/// competing for the two CPUs) the scheduler delays the client, the core or
/// Redis by tens of ms, and once here by 384 ms at a load average of 9, so
/// the bound is a second, as for the other latency tests of the suite. It
/// still catches a core that waited for an attacker: the slowloris test's
/// head timeout is two seconds.
const WORST_LATENCY: Duration = Duration::from_secs(1);

/// How much tokend's resident memory may grow during an attack, in KiB.
/// The attacks below hold at most ~100 connections at a time, each with at
/// most its two 4 KiB buffers and its task (about 1.2 MiB in all), or
/// buffers of up to head + body limit (~76 KiB) for the few connections of
/// an oversized request in flight; the allocator keeps some of what was
/// freed. Seen here: 1.5 MiB at most (slowloris). 8 MiB is several times
/// that, and far below what a buffer that grew with the attack would reach
/// (issue #12: twenty connections that pipelined without reading took 29 MB).
const RSS_GROWTH_KIB: u64 = 8 * 1024;

/// A deployment served by one core, so that the attack and the well-behaved
/// client share it, and a token of alice's to validate.
///
/// Its Redis timeout is 2 s, not 100 ms: Redis is shared with the tests
/// running alongside, which stall it at times for 100 ms (a cleanup's KEYS,
/// a large DEL); with 100 ms the revocation check then fails closed with a
/// 503 (tested in lifecycle.rs), which says nothing about the attack. With
/// 2 s such a stall shows as latency, under [`WORST_LATENCY`].
fn one_core(env: &[(&str, &str)]) -> (Deployment, String) {
    let mut all = vec![("TOKEND_SERVER_CORES", "1"), ("TOKEND_REDIS_TIMEOUT", "2s")];
    all.extend_from_slice(env);
    let d = deployment(&all);
    let token = d.access_token("alice");
    (d, token)
}

/// The well-behaved client: validates alice's token on one keep-alive
/// connection. Returned once it has been answered a few times.
fn validating(d: &Deployment, token: &str) -> SteadyClient {
    let client = SteadyClient::start(
        d.server.addr,
        format!("GET /validate HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"),
        200,
    );
    if !eventually(Duration::from_secs(10), || client.answered() >= 20) {
        panic!(
            "the well-behaved client was not served: {:?}\n{}",
            client.finish(),
            d.server.log()
        );
    }
    client
}

/// The window of an attack: the well-behaved client's count and tokend's
/// memory when it began, and the memory's peak.
struct Window {
    answered_before: u64,
    rss_before: u64,
    peak: PeakRss,
}

impl Window {
    fn open(d: &Deployment, client: &SteadyClient) -> Window {
        Window {
            answered_before: client.answered(),
            rss_before: rss_kib(d.server.pid()),
            peak: PeakRss::start(d.server.pid()),
        }
    }

    /// Ends the attack's window: stops the well-behaved client and checks
    /// what it saw (every request answered, the worst under
    /// [`WORST_LATENCY`], a good many during the attack) and tokend's
    /// memory; prints the figures. `attack` names it, `figures` adds the
    /// attack's own.
    fn close(self, d: &Deployment, client: SteadyClient, attack: &str, figures: &str) {
        let during = client.answered() - self.answered_before;
        let peak = self.peak.finish();
        let report = client.finish();
        eprintln!(
            "attack figures: {attack}: well-behaved client {} validations ({during} during \
             the attack), worst latency {:?}, mean {:?}; tokend VmRSS {} KiB before, peak \
             {peak} KiB; {figures}",
            report.answered, report.worst, report.mean, self.rss_before
        );
        assert!(
            report.failure.is_none(),
            "{attack}: a well-behaved request failed: {report:?}\n{}",
            d.server.log()
        );
        assert!(
            report.worst < WORST_LATENCY,
            "{attack}: the well-behaved client waited {:?}",
            report.worst
        );
        // One request every few ms at worst on a loaded machine (each takes
        // well under one, plus a 1 ms pause): a hundred shows the client was
        // served all along, not only before and after.
        assert!(
            during >= 100,
            "{attack}: only {during} well-behaved requests during the attack"
        );
        assert!(
            peak.saturating_sub(self.rss_before) < RSS_GROWTH_KIB,
            "{attack}: tokend's memory grew from {} KiB to {peak} KiB",
            self.rss_before
        );
    }
}

// --- slowloris -------------------------------------------------------------

/// Slow connections open at once, each trickling a byte every [`PACE`]: a
/// 300-byte request would take 30 s, far longer than the head timeout.
const SLOWLORIS: usize = 100;

/// See [`SLOWLORIS`].
const PACE: Duration = Duration::from_millis(100);

/// Threads trickling a byte every millisecond, each on one connection at a
/// time: a 4,000-byte head would still take four seconds, twice the head
/// timeout, and its bytes keep coming as the deadline passes.
const FAST_TRICKLES: usize = 8;

/// One slowloris connection: `rest` sent a byte at a time, every `pace`.
struct Trickle {
    stream: TcpStream,
    rest: Vec<u8>,
    sent: usize,
    pace: Duration,
    /// When the request's first byte went out.
    started: Instant,
    next: Instant,
    /// What the server sent back (a 408, if it sends one).
    got: Vec<u8>,
}

impl Trickle {
    /// Opens a connection, sends `first` (at least a byte) at once, and
    /// trickles `rest`, a byte every `pace`.
    fn open(addr: SocketAddr, first: &[u8], rest: Vec<u8>, pace: Duration) -> Trickle {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(first).unwrap();
        let started = Instant::now();
        stream.set_nonblocking(true).unwrap();
        Trickle {
            stream,
            rest,
            sent: 0,
            pace,
            started,
            next: started + pace,
            got: Vec::new(),
        }
    }

    /// Reads whatever the server sent; true once it closed the connection
    /// (end of stream, or a reset when a byte crossed its close).
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 512];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }

    /// Sends the next byte when it is due. A failed write means the server
    /// closed the connection; the next [`Trickle::closed`] sees it.
    fn tick(&mut self, now: Instant) {
        if now >= self.next && self.sent < self.rest.len() {
            if let Ok(1) = self.stream.write(&self.rest[self.sent..=self.sent]) {
                self.sent += 1;
            }
            self.next = now + self.pace;
        }
    }
}

/// The slowloris connections tokend cut off: how many, how long after
/// their first byte, and how many got a 408 before the close.
#[derive(Debug, Default)]
struct Cuts {
    count: usize,
    shortest: Option<Duration>,
    longest: Duration,
    with_408: usize,
}

impl Cuts {
    fn record(&mut self, t: &Trickle) {
        let lasted = t.started.elapsed();
        self.count += 1;
        self.shortest = Some(self.shortest.map_or(lasted, |s| s.min(lasted)));
        self.longest = self.longest.max(lasted);
        if !t.got.is_empty() {
            // tokend closes a slow connection without a word today; a 408
            // before the close would be as good.
            assert!(
                t.got.starts_with(b"HTTP/1.1 408 "),
                "a slowloris connection got: {}",
                String::from_utf8_lossy(&t.got)
            );
            self.with_408 += 1;
        }
    }

    fn add(&mut self, other: Cuts) {
        self.count += other.count;
        self.shortest = match (self.shortest, other.shortest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.longest = self.longest.max(other.longest);
        self.with_408 += other.with_408;
    }
}

/// The longest a slowloris connection may last: each is cut off at the head
/// timeout; the attackers notice within their pace (10 ms, 1 ms), and three
/// more seconds leave a loaded machine room. Without the head timeout they
/// would still be open (the idle timeout is 60 s, and the bytes keep coming).
fn slowloris_bound(head_timeout: Duration) -> Duration {
    head_timeout + Duration::from_secs(3)
}

/// A fast trickler: connection after connection until `end`, each sending a
/// head a byte every millisecond until tokend closes it.
fn fast_trickler(addr: SocketAddr, end: Instant, head_timeout: Duration) -> Cuts {
    let mut cuts = Cuts::default();
    while Instant::now() < end {
        let mut rest = b"ET /validate HTTP/1.1\r\nHost: t\r\nX-Fast: ".to_vec();
        rest.resize(4000, b'a');
        let mut t = Trickle::open(addr, b"G", rest, Duration::from_millis(1));
        while !t.closed() {
            assert!(
                t.started.elapsed() < slowloris_bound(head_timeout),
                "a fast slowloris connection was not cut off"
            );
            t.tick(Instant::now());
            // The attacker's pace.
            std::thread::sleep(Duration::from_millis(1));
        }
        cuts.record(&t);
    }
    cuts
}

/// Slowloris: a hundred connections at a time, each trickling a request a
/// byte every 100 ms, replaced as they are cut off, for three seconds; half
/// of them trickle the head, half a form body after a whole head (the
/// head timeout covers both); and eight threads trickling a head a byte
/// every millisecond, a connection at a time. Each is cut off once the head timeout
/// (2 s) has passed since its first byte and counted in
/// `tokend_timeouts_total`, and the well-behaved client on the same core
/// never notices.
#[test]
fn slowloris_heads_and_bodies_are_cut_off_while_a_client_keeps_validating() {
    let head_timeout = Duration::from_secs(2);
    let (d, token) = one_core(&[("TOKEND_SERVER_HEAD_TIMEOUT", "2s")]);
    let addr = d.server.addr;
    let client = validating(&d, &token);
    let timeouts_before = metric(&d.server, "tokend_timeouts_total");
    let window = Window::open(&d, &client);

    let slow_head = |_: usize| {
        let mut rest = b"ET /validate HTTP/1.1\r\nHost: t\r\nX-Slow: ".to_vec();
        rest.resize(300, b'a');
        Trickle::open(addr, b"G", rest, PACE)
    };
    let slow_body = |i: usize| {
        let head = "POST /oauth/token HTTP/1.1\r\nHost: t\r\n\
                    Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 300\r\n\r\ng";
        let mut rest = format!("rant_type=password&username=slow{i}&password=").into_bytes();
        rest.resize(299, b'x');
        Trickle::open(addr, head.as_bytes(), rest, PACE)
    };
    let attack_end = Instant::now() + ATTACK;
    let fast: Vec<_> = (0..FAST_TRICKLES)
        .map(|_| std::thread::spawn(move || fast_trickler(addr, attack_end, head_timeout)))
        .collect();
    let mut live: Vec<Trickle> = Vec::new();
    let mut slow = Cuts::default();
    let mut opened = 0usize;
    loop {
        let now = Instant::now();
        while now < attack_end && live.len() < SLOWLORIS {
            live.push(if opened % 2 == 0 {
                slow_head(opened)
            } else {
                slow_body(opened)
            });
            opened += 1;
        }
        live.retain_mut(|t| {
            if t.closed() {
                slow.record(t);
                return false;
            }
            t.tick(now);
            true
        });
        if now >= attack_end && live.is_empty() {
            break;
        }
        assert!(
            now < attack_end + slowloris_bound(head_timeout),
            "{} slowloris connections still open after the attack\n{}",
            live.len(),
            d.server.log()
        );
        // The attacker's pace: it checks and trickles every 10 ms.
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut fast_cuts = Cuts::default();
    for t in fast {
        fast_cuts.add(t.join().expect("a fast trickler"));
    }
    assert_eq!(slow.count, opened);
    let (slow_count, fast_count) = (slow.count, fast_cuts.count);
    let mut all = slow;
    all.add(fast_cuts);

    // None cut off before the head timeout (tokend counts it from when it
    // read the first byte, after this side sent it), none long after.
    let shortest = all.shortest.expect("slowloris connections");
    assert!(
        shortest >= head_timeout - Duration::from_millis(100),
        "a slowloris connection was cut off after {shortest:?}"
    );
    assert!(
        all.longest < slowloris_bound(head_timeout),
        "a slowloris connection lasted {:?}",
        all.longest
    );
    // Every one of them, and nothing else, timed out. The fast tricklers
    // are there for the count: their next byte often arrives between the
    // deadline and the moment the core handles its timer. The read then
    // wins (monoio's `timeout` polls the read first), and the connection
    // loop must still count the cut-off when it finds the deadline passed.
    let timeouts = metric(&d.server, "tokend_timeouts_total") - timeouts_before;
    let figures = format!(
        "{} slowloris connections ({slow_count} slow, {SLOWLORIS} at a time, half heads, half \
         bodies; {fast_count} fast), cut off {shortest:?}..{:?} after their first byte, {} \
         of them with a 408 first; tokend_timeouts_total +{timeouts}",
        all.count, all.longest, all.with_408
    );
    // The well-behaved client's figures first, printed whatever the count.
    window.close(&d, client, "slowloris", &figures);
    assert_eq!(
        timeouts, all.count as f64,
        "tokend_timeouts_total: {figures}"
    );
}

// --- a flood of silent connections ---------------------------------------------

/// A scrape of one sample over `observer`'s keep-alive connection: a new
/// connection would itself be refused while the cap is full.
fn scrape(observer: &mut Conn, name: &str) -> f64 {
    observer.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let page = observer
        .read_response()
        .expect("the observer is served")
        .text();
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{page}"))
}

/// A flood of connections that connect and send nothing, up to the core's
/// cap (100): the next connection is accepted and closed at once (a clean
/// end of stream, no reset) and counted in
/// `tokend_refused_connections_total`, the others untouched; the slots come
/// back as the flood goes, half closed by their clients, half by the head
/// timeout (4 s: a connection that never sent a request is not idle between
/// requests; counted in `tokend_timeouts_total`). All the while the
/// well-behaved client on the same core is served.
#[test]
fn a_flood_of_silent_connections_fills_the_cap_then_one_more_is_refused() {
    const CAP: usize = 100;
    // A connection that never sends a request goes at the head timeout.
    let head_timeout = Duration::from_secs(4);
    let (d, token) = one_core(&[
        ("TOKEND_SERVER_MAX_CONNECTIONS_PER_CORE", "100"),
        ("TOKEND_SERVER_HEAD_TIMEOUT", "4s"),
    ]);
    let addr = d.server.addr;
    let open = "tokend_open_connections{core=\"0\"}";
    let client = validating(&d, &token);
    // Two slots: the well-behaved client's and the observer's. Both have
    // been answered, so the idle timeout (a minute) applies to them.
    let mut observer = d.server.conn();
    assert!(
        eventually(Duration::from_secs(5), || scrape(&mut observer, open)
            == 2.0),
        "connections other than the client's and the observer's are open"
    );
    let timeouts_before = scrape(&mut observer, "tokend_timeouts_total");
    let window = Window::open(&d, &client);

    let flood_start = Instant::now();
    let flood: Vec<TcpStream> = (0..CAP - 2)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || scrape(&mut observer, open)
            == CAP as f64),
        "the flood never filled the cap: {} open",
        scrape(&mut observer, open)
    );
    let filled_in = flood_start.elapsed();

    // One more: accepted and closed at once, without a reset.
    let mut one_more = TcpStream::connect(addr).unwrap();
    one_more
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let refused_start = Instant::now();
    let mut b = [0u8; 16];
    let end = one_more.read(&mut b);
    let refused_in = refused_start.elapsed();
    assert!(
        matches!(end, Ok(0)),
        "the connection over the cap was not closed cleanly: {end:?} after {refused_in:?}"
    );
    assert_eq!(
        scrape(&mut observer, "tokend_refused_connections_total"),
        1.0
    );
    // The flood's connections are untouched by the refusal.
    for s in &flood {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(&(&*s).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a connection of the flood was closed by the refusal"
        );
    }

    // Half of the flood goes: as many slots come back, and a new connection
    // is served at once.
    let mut flood = flood;
    let stay = flood.split_off(flood.len() / 2);
    let gone = flood.len();
    drop(flood);
    assert!(
        eventually(Duration::from_secs(5), || scrape(&mut observer, open)
            <= (CAP - gone) as f64),
        "the slots of closed connections did not come back: {} open",
        scrape(&mut observer, open)
    );
    assert_eq!(d.server.get("/healthz").status, 200);
    assert_eq!(
        scrape(&mut observer, "tokend_refused_connections_total"),
        1.0
    );

    // The other half goes at the head timeout.
    if !eventually(head_timeout + Duration::from_secs(5), || {
        scrape(&mut observer, open) == 2.0
    }) {
        panic!(
            "the silent connections outlived the head timeout: {} open; the client: {:?}\n{}",
            scrape(&mut observer, open),
            client.finish(),
            d.server.log()
        );
    }
    let reaped_in = flood_start.elapsed();
    for s in &stay {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!((&*s).read(&mut b), Ok(0)),
            "a silent connection was not closed cleanly by the head timeout"
        );
    }
    // The half left open timed out; the half closed by their clients did
    // not, unless a very loaded machine took more than the head timeout to
    // get from the flood to closing them.
    let timeouts = scrape(&mut observer, "tokend_timeouts_total") - timeouts_before;
    assert!(
        timeouts >= stay.len() as f64 && timeouts <= (CAP - 2) as f64,
        "tokend_timeouts_total +{timeouts} for {} connections left to time out",
        stay.len()
    );
    window.close(
        &d,
        client,
        "half-open flood",
        &format!(
            "{} silent connections filled the cap of {CAP} in {filled_in:?}; the next one \
             closed cleanly in {refused_in:?} (tokend_refused_connections_total 1); {gone} \
             closed by their clients, {} by the head timeout (all gone {reaped_in:?} after \
             the flood began; tokend_timeouts_total +{timeouts})",
            CAP - 2,
            stay.len()
        ),
    );
    drop(stay);
}

// --- oversized heads and bodies -------------------------------------------------

/// What an attack connection got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// A response with this status, and then the end of the connection.
    Status(u16),
    /// The end of the connection (or a reset) before a whole response.
    Closed,
}

/// Sends `raw` on a new connection (all of it, unless the server closes
/// first), then reads the answer. Panics when the server neither answers
/// nor closes within 5 s, or keeps the connection open after an error.
fn attack_once(addr: SocketAddr, raw: &[u8]) -> Outcome {
    let limit = Duration::from_secs(5);
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(limit)).unwrap();
    stream.set_write_timeout(Some(limit)).unwrap();
    let mut c = Conn::new(stream);
    let start = Instant::now();
    let _ = c.stream.write_all(raw);
    match c.read_response() {
        Some(r) => {
            assert_eq!(r.header("connection"), Some("close"), "{}", r.text());
            assert!(c.closed_within(limit), "left open after a {}", r.status);
            Outcome::Status(r.status)
        }
        None => {
            assert!(
                start.elapsed() < limit,
                "neither answered nor closed within {limit:?}"
            );
            Outcome::Closed
        }
    }
}

/// Attackers sending at once, each on one connection at a time.
const ATTACKERS: usize = 2;

/// Attacks each attacker sends, spread over [`ATTACK`] (one every 6 ms at
/// most): left unpaced, two attackers send a thousand each within a
/// fraction of a second here, and more would tie up thousands of loopback
/// ports in TIME_WAIT, shared with the tests running alongside.
const ATTACKS_EACH: u32 = 500;

/// Runs the attackers, sending the `shapes` in turn; the outcomes, by shape.
fn attack_with(
    addr: SocketAddr,
    shapes: &[(&'static str, Vec<u8>)],
) -> BTreeMap<(&'static str, Outcome), u64> {
    let start = Instant::now();
    let threads: Vec<_> = (0..ATTACKERS)
        .map(|t| {
            let shapes = shapes.to_vec();
            std::thread::spawn(move || {
                let mut seen = BTreeMap::new();
                for i in 0..ATTACKS_EACH {
                    // The attacker's pace: not before its turn, and not
                    // past the attack's end on a slow machine.
                    let turn = start + ATTACK * i / ATTACKS_EACH;
                    if Instant::now() >= start + ATTACK {
                        break;
                    }
                    std::thread::sleep(turn.saturating_duration_since(Instant::now()));
                    let (name, raw) = &shapes[(i as usize + t) % shapes.len()];
                    *seen.entry((*name, attack_once(addr, raw))).or_insert(0) += 1;
                }
                seen
            })
        })
        .collect();
    let mut all = BTreeMap::new();
    for t in threads {
        for (k, v) in t.join().expect("an attacker") {
            *all.entry(k).or_insert(0) += v;
        }
    }
    all
}

/// Checks that each shape got only the outcomes allowed for it; the total.
fn check_outcomes(
    seen: &BTreeMap<(&'static str, Outcome), u64>,
    allowed: &[(&str, &[Outcome])],
) -> u64 {
    for ((name, outcome), n) in seen {
        let ok = allowed
            .iter()
            .find(|(s, _)| s == name)
            .is_some_and(|(_, o)| o.contains(outcome));
        assert!(ok, "{name}: {n} attacks got {outcome:?}");
    }
    seen.values().sum()
}

fn describe(seen: &BTreeMap<(&'static str, Outcome), u64>) -> String {
    seen.iter()
        .map(|((name, outcome), n)| format!("{name}: {n} × {outcome:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Oversized heads (default limits: 8 KiB, 64 headers), sent for three
/// seconds by two attackers, each time on a new connection: 431 and a closed
/// connection each time, counted in `tokend_bad_requests_total`.
#[test]
fn oversized_heads_get_431_while_a_client_keeps_validating() {
    let (d, token) = one_core(&[]);
    let client = validating(&d, &token);
    let bad_before = metric(&d.server, "tokend_bad_requests_total");
    let window = Window::open(&d, &client);

    let header_over = format!(
        "GET /validate HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let many_headers = format!(
        "GET /validate HTTP/1.1\r\n{}\r\n",
        (0..65).map(|i| format!("X-{i}: v\r\n")).collect::<String>()
    );
    let endless = format!(
        "GET /validate HTTP/1.1\r\nHost: t\r\nX-Endless: {}",
        "a".repeat(64 * 1024)
    );
    let seen = attack_with(
        d.server.addr,
        &[
            ("a 9 KB header", header_over.into_bytes()),
            ("65 headers", many_headers.into_bytes()),
            ("a 64 KB head without end", endless.into_bytes()),
        ],
    );
    // 65 short headers come in one read: the 431 always arrives. A head
    // over 8 KiB is refused as soon as tokend has read past the limit; what
    // it has not read yet makes the kernel answer its close with a reset,
    // which can take the 431 with it (issue #12, finding 3; over loopback
    // here it arrived every time). Once the graceful close is in, only the
    // 431 should be allowed.
    let total = check_outcomes(
        &seen,
        &[
            ("a 9 KB header", &[Outcome::Status(431), Outcome::Closed]),
            ("65 headers", &[Outcome::Status(431)]),
            (
                "a 64 KB head without end",
                &[Outcome::Status(431), Outcome::Closed],
            ),
        ],
    );
    let bad = metric(&d.server, "tokend_bad_requests_total") - bad_before;
    assert_eq!(bad, total as f64, "tokend_bad_requests_total");
    window.close(
        &d,
        client,
        "oversized heads",
        &format!(
            "{total} attack connections ({}); tokend_bad_requests_total +{bad}",
            describe(&seen)
        ),
    );
}

/// Oversized bodies (default limit: 64 KiB), sent for three seconds by two
/// attackers, each time on a new connection: 413 and a closed connection each
/// time, counted in `tokend_bad_requests_total`.
#[test]
fn oversized_bodies_get_413_while_a_client_keeps_validating() {
    let (d, token) = one_core(&[]);
    let client = validating(&d, &token);
    let bad_before = metric(&d.server, "tokend_bad_requests_total");
    let window = Window::open(&d, &client);

    let head = |length: &str| {
        format!(
            "POST /oauth/token HTTP/1.1\r\nHost: t\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    let mut whole = head("70000").into_bytes();
    whole.extend_from_slice(&[b'a'; 70000]);
    let seen = attack_with(
        d.server.addr,
        &[
            ("70 KB announced, head only", head("70000").into_bytes()),
            ("a 15-digit length", head("999999999999999").into_bytes()),
            ("70 KB sent whole", whole),
        ],
    );
    // tokend refuses as soon as it has the head. Sent alone, the head is
    // all read: the 413 always arrives. With the body behind it, the bytes
    // tokend never read make the kernel answer its close with a reset,
    // which can take the 413 with it (issue #12, finding 3; over loopback
    // here it arrived every time). Once the graceful close is in, only the
    // 413 should be allowed.
    let total = check_outcomes(
        &seen,
        &[
            ("70 KB announced, head only", &[Outcome::Status(413)]),
            ("a 15-digit length", &[Outcome::Status(413)]),
            ("70 KB sent whole", &[Outcome::Status(413), Outcome::Closed]),
        ],
    );
    let bad = metric(&d.server, "tokend_bad_requests_total") - bad_before;
    assert_eq!(bad, total as f64, "tokend_bad_requests_total");
    window.close(
        &d,
        client,
        "oversized bodies",
        &format!(
            "{total} attack connections ({}); tokend_bad_requests_total +{bad}",
            describe(&seen)
        ),
    );
}

// --- a request sent a byte at a time ---------------------------------------------

/// The server's CPU time so far (user + system), from `/proc/PID/stat`, whose
/// figures count in USER_HZ, 100 a second on Linux.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The fields after the command name (in parentheses, which may hold
    // spaces): the state is field 3; utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Sends `head` and `rest` a byte per write, a little apart so that the
/// server reads them one by one, then reads the answer. Returns its status,
/// the server's CPU time meanwhile, and how long the sending took.
fn trickled(d: &Deployment, raw: &[u8]) -> (u16, Duration, Duration) {
    let mut c = d.server.conn();
    c.stream.set_nodelay(true).unwrap();
    let cpu_before = cpu_time(d.server.pid());
    let start = Instant::now();
    for byte in raw.chunks(1) {
        c.stream.write_all(byte).unwrap();
        std::thread::sleep(Duration::from_micros(50));
    }
    let sent_in = start.elapsed();
    let status = c.read_response().expect("an answer").status;
    (status, cpu_time(d.server.pid()) - cpu_before, sent_in)
}

/// A head sent a byte at a time costs its core about what a body of the
/// same size sent the same way does. Each read parses the request from its
/// start again (the head, for a body), so a trickled head could cost time
/// quadratic in its size; measured, it does not matter: a 30 KB head costs
/// 350 ms of a debug build's core against 300 ms for the body (the per-read
/// wake-up and system call dominate; httparse scans a 30 KB head in
/// microseconds), and the head is capped by `limits.max_head_bytes` (8 KiB by
/// default). Kept as a guard: a parser made slower on long heads fails it.
/// Compared with the body in the same run, since the machine's speed varies.
#[test]
fn a_head_sent_a_byte_at_a_time_costs_about_what_a_body_does() {
    const SIZE: usize = 30_000;
    let (d, _token) = one_core(&[
        ("TOKEND_LIMITS_MAX_HEAD_BYTES", "32768"),
        ("TOKEND_SERVER_HEAD_TIMEOUT", "60s"),
    ]);
    // One header line of SIZE bytes: its end comes only with the head's.
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: ".to_vec();
    head.resize(SIZE, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    // A form body of SIZE bytes after a short head (401: no client).
    let mut body = b"token=".to_vec();
    body.resize(SIZE, b'a');
    let mut form = format!(
        "POST /oauth/introspect HTTP/1.1\r\nHost: t\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    form.extend_from_slice(&body);

    let (status, body_cpu, body_wall) = trickled(&d, &form);
    assert_eq!(status, 401);
    let (status, head_cpu, head_wall) = trickled(&d, &head);
    assert_eq!(status, 200);
    eprintln!(
        "trickle figures: {SIZE} bytes a byte per write; body: tokend CPU {body_cpu:?} \
         in {body_wall:?}; head: tokend CPU {head_cpu:?} in {head_wall:?}"
    );
    assert!(
        head_cpu <= body_cpu * 2 + Duration::from_millis(200),
        "a trickled head cost {head_cpu:?} of CPU, a trickled body of the same size {body_cpu:?}"
    );
}

// --- a client that always has the next request ready --------------------------

/// A client that keeps its connection full of pipelined requests and reads
/// every answer as fast as it comes: its connection always has a request
/// ready, so a connection loop that reads again at once, without letting the
/// core's other tasks run, would keep the core to itself. The well-behaved
/// client on the same core is served all along (seen here, debug build: its
/// mean latency 0.9 ms instead of the other attacks' 0.1 ms, its worst
/// 45 ms), and every pipelined request is answered.
#[test]
fn a_client_that_always_has_a_request_ready_does_not_starve_the_core() {
    let (d, token) = one_core(&[]);
    let client = validating(&d, &token);
    let window = Window::open(&d, &client);
    let stream = TcpStream::connect(d.server.addr).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let end = Instant::now() + ATTACK;
    let writer = std::thread::spawn(move || {
        let batch = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n".repeat(64);
        let mut stream = stream;
        let mut sent = 0u64;
        while Instant::now() < end && stream.write_all(batch.as_bytes()).is_ok() {
            sent += 64;
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        sent
    });
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Status lines counted across read boundaries: the last bytes of a read
    // are kept for the next.
    const STATUS: &[u8] = b"HTTP/1.1 200 ";
    let mut answers = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail = Vec::new();
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                answers += tail.windows(STATUS.len()).filter(|w| *w == STATUS).count() as u64;
                tail.drain(..tail.len().saturating_sub(STATUS.len() - 1));
            }
        }
    }
    let sent = writer.join().unwrap();
    window.close(
        &d,
        client,
        "a connection always ready",
        &format!("{sent} pipelined requests sent, {answers} answered with 200"),
    );
    assert_eq!(answers, sent, "pipelined requests went unanswered");
}
