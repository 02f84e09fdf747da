//! Attacks and faults on the connection loop and the drain (issue #12,
//! findings 2, 3 and 5): a client that pipelines and never reads, an error
//! answer to a client that sends everything before reading, and SIGTERM
//! under keep-alive load. Each runs against a real tokend, with either
//! driver where the two differ.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::tokens::{deployment, PASSWORD};

/// The drivers to test: epoll always, io_uring where the kernel offers it.
fn drivers() -> Vec<&'static str> {
    let mut drivers = vec!["epoll"];
    if tokend::config::Driver::Auto.resolve() == tokend::config::Driver::IoUring {
        drivers.push("io_uring");
    } else {
        eprintln!("note: io_uring is not available here; testing epoll only");
    }
    drivers
}

/// A password-grant login on `server` as `user`; the access token.
fn access_token(server: &TestServer, secret: &str, user: &str) -> String {
    let r = server.post_form(
        "/oauth/token",
        Some(("app", secret)),
        &[
            ("grant_type", "password"),
            ("username", user),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// A client that pipelines `GET /metrics` as fast as it can and never reads
/// an answer, until `stop` or until tokend closes the connection. Counts the
/// bytes it got into the socket in `sent`.
fn never_reads(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let burst = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".repeat(64);
        let mut s = TcpStream::connect(addr).unwrap();
        // Blocked writes wake up now and then to look at `stop`.
        s.set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        while !stop.load(Ordering::Relaxed) {
            match s.write(burst.as_bytes()) {
                Ok(n) => {
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // Closed by tokend (reset, broken pipe).
                Err(_) => return,
            }
        }
    })
}

/// Finding 2: twenty connections pipeline `GET /metrics` and never read
/// their answers, on the core a well-behaved client validates on. The
/// output buffer of each is bounded (WRITE_HIGH_WATER in src/net/mod.rs) so
/// tokend's memory stays put; the well-behaved client is answered
/// throughout; and after `server.write_timeout` without write progress the
/// stuck connections are closed and counted.
#[test]
fn clients_that_pipeline_and_never_read_are_bounded_then_cut_off() {
    const STUCK: usize = 20;
    for driver in drivers() {
        let d = deployment(&[
            ("TOKEND_SERVER_CORES", "1"),
            ("TOKEND_SERVER_DRIVER", driver),
            ("TOKEND_SERVER_WRITE_TIMEOUT", "2s"),
            // The Redis every test shares can stall for ~100 ms on a loaded
            // machine, and the default timeout would then answer a fail-closed
            // 503 that has nothing to do with the attack (as in attack.rs).
            ("TOKEND_REDIS_TIMEOUT", "2s"),
        ]);
        let s = &d.server;
        let token = d.access_token("alice");
        // Warm up what every request touches (buffers, the metrics page, the
        // verified-token cache), then take the baseline.
        for _ in 0..20 {
            assert_eq!(s.get("/metrics").status, 200);
            assert_eq!(
                s.get_auth("/validate", &format!("Bearer {token}")).status,
                200
            );
        }
        let rss_before = rss_kib(s.pid());

        let steady = SteadyClient::start(
            s.addr,
            format!("GET /validate HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n"),
            200,
        );
        let peak = PeakRss::start(s.pid());
        let stop_attack = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let attackers: Vec<_> = (0..STUCK)
            .map(|_| never_reads(s.addr, stop_attack.clone(), sent.clone()))
            .collect();
        let start = Instant::now();
        // While they are stuck (before the 2 s write timeout can end them):
        // the resident memory, sampled. (A window of measurement, not a
        // wait for a state.)
        std::thread::sleep(Duration::from_millis(1500));
        let rss_peak = peak.finish();
        let stuck_open = metric(s, "tokend_open_connections{core=\"0\"}");
        // Then they are closed for making no write progress, and counted.
        let cut = eventually(Duration::from_secs(10), || {
            metric(s, "tokend_write_timeouts_total") >= STUCK as f64
        });
        let cut_after = start.elapsed();
        stop_attack.store(true, Ordering::Relaxed);
        let report = steady.finish();
        for a in attackers {
            a.join().unwrap();
        }
        let grew_kib = rss_peak.saturating_sub(rss_before);
        eprintln!(
            "{driver}: {STUCK} clients pipelining /metrics without reading ({} KiB sent): \
             RSS {rss_before} KiB before, peak {rss_peak} KiB (+{grew_kib} KiB); \
             {stuck_open} connections open at 1.5 s; write timeouts counted after {cut_after:?}; \
             well-behaved client: {} validations, slowest {:?}",
            sent.load(Ordering::Relaxed) / 1024,
            report.answered,
            report.worst
        );
        assert!(report.failure.is_none(), "{driver}: {report:?}");
        assert!(
            cut,
            "{driver}: the stuck connections were not cut off\n{}",
            s.log()
        );
        assert!(
            stuck_open > STUCK as f64,
            "{driver}: the stuck connections were not open while measured: {stuck_open}"
        );
        // Each stuck connection holds at most its output bound (32 KiB) and
        // one answer plus its read buffer (at most ~76 KiB): under 3 MiB for
        // twenty, allocator slack included. Unbounded, they took ~29 MiB
        // here. 8 MiB tells the two apart with room for a loaded machine.
        assert!(
            grew_kib < 8 * 1024,
            "{driver}: resident memory grew by {grew_kib} KiB"
        );
        assert!(report.answered > 50, "{driver}: {report:?}");
        // A validation takes well under a millisecond; the stuck clients'
        // work is bounded by their socket buffers and paused between
        // batches. Seen here: 50-130 ms, 355 ms at worst with the machine's
        // load average at 9 (other test suites running); before the bound
        // and the pause, 1.2-1.4 s with epoll (a core held by the
        // pipelines). 1 s leaves a loaded 2-CPU machine room.
        assert!(
            report.worst < Duration::from_secs(1),
            "{driver}: the well-behaved client waited {:?}",
            report.worst
        );
        // Their slots came back: the metrics scrape's own connection is the
        // only one left.
        assert!(
            eventually(Duration::from_secs(5), || metric(
                s,
                "tokend_open_connections{core=\"0\"}"
            ) == 1.0),
            "{driver}: connections left open"
        );
    }
}

/// Finding 2, during a drain: clients that never read do not hold up a
/// graceful shutdown until `server.write_timeout` (10 s by default) or
/// `server.shutdown_timeout`: a write stalled while draining gets a second.
#[test]
fn clients_that_never_read_do_not_hold_up_the_drain() {
    for driver in drivers() {
        let mut s = TestServer::with(Options {
            env: vec![("TOKEND_SERVER_DRIVER".into(), driver.into())],
            cores: 1,
            ..Options::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let attackers: Vec<_> = (0..4)
            .map(|_| never_reads(s.addr, stop.clone(), sent.clone()))
            .collect();
        // Stuck: tokend stopped reading them, because it waits to write
        // answers they do not read (what they sent stays the same for half
        // a second).
        let (mut last, mut since) = (0, Instant::now());
        assert!(
            eventually(Duration::from_secs(10), || {
                let now = sent.load(Ordering::Relaxed);
                if now != last {
                    (last, since) = (now, Instant::now());
                }
                now > 0 && since.elapsed() >= Duration::from_millis(500)
            }),
            "{driver}: the clients never got stuck"
        );
        let start = Instant::now();
        let status = s.terminate();
        let took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        for a in attackers {
            a.join().unwrap();
        }
        eprintln!("{driver}: drain with 4 stuck clients took {took:?}");
        assert!(status.success(), "{driver}: {status:?}\n{}", s.log());
        // DRAIN_WRITE_STALL is 1 s; 5 s is room for a loaded machine, and
        // half the 10 s the stuck clients held a drain before.
        assert!(
            took < Duration::from_secs(5),
            "{driver}: the drain took {took:?}"
        );
    }
}

/// Finding 5's bounds: a request left part-way in (a slowloris, or a client
/// gone silent) when the drain begins gets a second more for the rest, not
/// its whole head timeout; while a request whose rest does come is answered.
#[test]
fn a_drain_waits_a_second_at_most_for_the_rest_of_a_request() {
    for driver in drivers() {
        let mut s = TestServer::with(Options {
            env: vec![("TOKEND_SERVER_DRIVER".into(), driver.into())],
            cores: 1,
            ..Options::default()
        });
        let mut silent = s.conn();
        silent.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n");
        let mut finishing = s.conn();
        finishing.send(b"GET /healthz HTTP/1.1\r\n");
        // Both are open and part-way in (the scrape is the third).
        assert!(
            eventually(Duration::from_secs(10), || metric(
                &s,
                "tokend_open_connections{core=\"0\"}"
            ) >= 3.0),
            "{driver}: the connections were never accepted"
        );
        let start = Instant::now();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(s.pid() as i32, libc::SIGTERM) };
        // The drain has begun once the listener is closed; the rest of the
        // request comes after that, well within the second.
        assert!(
            eventually(Duration::from_millis(500), || matches!(
                TcpStream::connect(s.addr),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            )),
            "{driver}: still accepting after SIGTERM"
        );
        finishing.send(b"Host: t\r\n\r\n");
        let r = finishing
            .read_response()
            .unwrap_or_else(|| panic!("{driver}: the finished request was not answered"));
        assert_eq!(r.status, 200, "{driver}");
        assert_eq!(r.header("connection"), Some("close"), "{driver}");
        let status = s.terminate();
        let took = start.elapsed();
        eprintln!("{driver}: drain with a silent request part-way in took {took:?}");
        assert!(status.success(), "{driver}: {status:?}\n{}", s.log());
        assert!(silent.closed_within(Duration::from_secs(1)), "{driver}");
        // FRESH_CONNECTION_GRACE is 1 s; the head timeout, 10 s. 5 s is
        // room for a loaded machine and tells the two apart.
        assert!(
            took < Duration::from_secs(5),
            "{driver}: the drain took {took:?}"
        );
    }
}

/// Sends all of `raw` on a new connection, then reads until the end of the
/// stream: what came back, or the error that ended the reading.
fn send_all_then_read(addr: SocketAddr, raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .map_err(|e| format!("read after {} bytes: {e}", got.len()))?;
    Ok(got)
}

/// Finding 3: a client that sends a whole oversized request before reading
/// gets its error answer (and then a clean end of stream), not a reset:
/// tokend closes such connections gracefully (shutdown(SHUT_WR), then reads
/// and discards what the client still sends).
#[test]
fn an_error_answer_reaches_a_client_that_sends_everything_before_reading() {
    for driver in drivers() {
        let s = TestServer::with(Options {
            env: vec![("TOKEND_SERVER_DRIVER".into(), driver.into())],
            cores: 1,
            ..Options::default()
        });
        let body = "a".repeat(70_000);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "a 70 KB body",
                format!(
                    "POST /oauth/token HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 70000\r\n\r\n{body}"
                )
                .into_bytes(),
                "HTTP/1.1 413 ",
            ),
            (
                "a 70 KB head",
                format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {body}\r\n\r\n").into_bytes(),
                "HTTP/1.1 431 ",
            ),
            (
                "a bad head and a 70 KB body",
                format!("POST /oauth/token HTTP/1.1\r\nBad Header\r\nContent-Length: 70000\r\n\r\n{body}")
                    .into_bytes(),
                "HTTP/1.1 400 ",
            ),
        ];
        for (what, raw, status) in &cases {
            // A reset loses the answer only sometimes (it races the
            // client's read), so each case runs several times.
            for round in 0..5 {
                let got = send_all_then_read(s.addr, raw)
                    .unwrap_or_else(|e| panic!("{driver}, {what}, round {round}: {e}"));
                let text = String::from_utf8_lossy(&got);
                assert!(
                    text.starts_with(status),
                    "{driver}, {what}, round {round}: {text:?}"
                );
                assert!(
                    text.contains("Connection: close"),
                    "{driver}, {what}: {text}"
                );
            }
        }
        assert_eq!(s.get("/healthz").status, 200, "{driver}");
    }
}

/// Finding 3, bounded: the graceful close reads and discards for at most
/// LINGER_TIMEOUT (2 s) and LINGER_BYTES (256 KiB), so a client cannot hold
/// a connection open, or the core busy, by sending after its error answer.
#[test]
fn the_graceful_close_is_bounded_in_bytes_and_time() {
    let s = TestServer::with(Options {
        cores: 1,
        ..Options::default()
    });
    let refused = b"POST /oauth/token HTTP/1.1\r\nContent-Length: 70000\r\n\r\n";
    // Bytes: sends without pause after the 413; cut off past 256 KiB.
    let flood = std::thread::spawn({
        let addr = s.addr;
        move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(refused).unwrap();
            let chunk = [b'a'; 16 * 1024];
            let (mut sent, start) = (0usize, Instant::now());
            while c.write_all(&chunk).is_ok() {
                sent += chunk.len();
                assert!(sent < 64 << 20, "still reading after {sent} bytes");
            }
            (sent, start.elapsed())
        }
    });
    // Time: a byte every 100 ms after the 413; cut off after 2 s.
    let trickle = std::thread::spawn({
        let addr = s.addr;
        move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(refused).unwrap();
            let start = Instant::now();
            while c.write_all(b"a").is_ok() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(100));
            }
            start.elapsed()
        }
    });
    let (sent, flood_took) = flood.join().unwrap();
    let trickle_took = trickle.join().unwrap();
    eprintln!(
        "flood after a 413: cut off after {} KiB in {flood_took:?}; trickle: after {trickle_took:?}",
        sent / 1024
    );
    // The kernel's socket buffers take some MiB beyond what tokend read
    // (256 KiB); 64 MiB would mean it never stopped reading.
    assert!(sent < 64 << 20);
    // Cut off 2 s after the 413; the writes notice one or two writes later.
    // 8 s is room for a loaded machine, and short of the 10 s the trickle
    // would go on.
    assert!(
        trickle_took >= Duration::from_millis(1800) && trickle_took < Duration::from_secs(8),
        "{trickle_took:?}"
    );
    assert_eq!(s.get("/healthz").status, 200);
}

/// How one keep-alive client connection of the drain test ended.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    /// Requests written to the socket.
    sent: u64,
    /// Whole answers read.
    answered: u64,
    /// Requests written and never answered: the connection was reset, or
    /// ended before (or in the middle of) their answer.
    lost: u64,
    /// Connections that ended as they should: an answer saying
    /// `Connection: close`, then tokend's FIN (not a reset).
    closed_clean: u64,
    /// Connections tokend closed before a request could be written on them
    /// (idle at the drain).
    closed_idle: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.lost += o.lost;
        self.closed_clean += o.closed_clean;
        self.closed_idle += o.closed_idle;
    }
}

/// True when the peer ends the stream with a FIN (no more bytes, no reset)
/// within 5 s.
fn fin_follows(c: &mut Conn) -> bool {
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 64];
    matches!(c.stream.read(&mut b), Ok(0))
}

/// A client thread of the drain test: `conns` keep-alive connections, each
/// with one `GET /validate` in flight at a time, until tokend ends them
/// (an answer with `Connection: close`, then the connection is not reused;
/// no reconnection: the listener is closed); counts what it sent and what
/// was answered.
fn keep_alive_client(addr: SocketAddr, token: String, conns: usize) -> Tally {
    let request = format!("GET /validate HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut open: Vec<Conn> = (0..conns)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            Conn::new(s)
        })
        .collect();
    let mut t = Tally::default();
    while !open.is_empty() {
        // One request on each connection, then each answer.
        let mut written = Vec::with_capacity(open.len());
        for c in open.iter_mut() {
            let ok = c.stream.write_all(request.as_bytes()).is_ok();
            t.sent += u64::from(ok);
            written.push(ok);
        }
        let mut still = Vec::with_capacity(open.len());
        for (mut c, ok) in open.into_iter().zip(written) {
            if !ok {
                // Not sent: tokend had closed the connection.
                t.closed_idle += 1;
                continue;
            }
            match c.read_response() {
                Some(r) => {
                    assert_eq!(r.status, 200, "{}", r.text());
                    t.answered += 1;
                    if r.header("connection") == Some("close") {
                        t.closed_clean += u64::from(fin_follows(&mut c));
                    } else {
                        still.push(c);
                    }
                }
                None => t.lost += 1,
            }
        }
        open = still;
    }
    t
}

/// Finding 5: SIGTERM under keep-alive load answers every request that
/// reached tokend. Ten runs (the drivers alternate), each: a fresh tokend on
/// one database, four client threads with four keep-alive connections each
/// validating without pause, SIGTERM once the load runs; every request sent
/// must be answered (the last one on each connection with `Connection:
/// close`), none reset, and tokend must exit 0.
#[test]
fn sigterm_under_keep_alive_load_answers_every_request() {
    const RUNS: usize = 10;
    let d = deployment(&[]);
    let drivers = drivers();
    let mut totals = Tally::default();
    let mut lost_per_run = Vec::new();
    let kernel_before = abort_on_close();
    let started = Instant::now();
    for run in 0..RUNS {
        let driver = drivers[run % drivers.len()];
        let mut s = TestServer::with(Options {
            env: vec![("TOKEND_SERVER_DRIVER".into(), driver.into())],
            db_url: Some(d.db.url.clone()),
            ..Options::default()
        });
        let token = access_token(&s, &d.secret, "alice");
        let answered_before = |s: &TestServer| {
            metric(
                s,
                r#"tokend_requests_total{route="validate",status_class="2xx"}"#,
            )
        };
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (addr, token) = (s.addr, token.clone());
                std::thread::spawn(move || keep_alive_client(addr, token, 4))
            })
            .collect();
        // The load runs: a few hundred validations answered.
        assert!(
            eventually(Duration::from_secs(10), || answered_before(&s) >= 300.0),
            "run {run} ({driver}): the load never started\n{}",
            s.log()
        );
        let status = s.terminate();
        let mut run_tally = Tally::default();
        for c in clients {
            run_tally.add(&c.join().unwrap());
        }
        eprintln!("run {run} ({driver}): {run_tally:?}");
        assert!(
            status.success(),
            "run {run} ({driver}): {status:?}\n{}",
            s.log()
        );
        assert!(
            !s.log().contains("shutdown timeout"),
            "run {run} ({driver}): the drain hit its timeout\n{}",
            s.log()
        );
        lost_per_run.push(run_tally.lost);
        totals.add(&run_tally);
    }
    eprintln!(
        "{RUNS} runs in {:?}: {totals:?}; unanswered per run {lost_per_run:?}; \
         TCPAbortOnClose rose by {} (other tests count in it too)",
        started.elapsed(),
        abort_on_close() - kernel_before
    );
    assert_eq!(
        totals.lost, 0,
        "requests sent but never answered, per run: {lost_per_run:?}"
    );
    assert_eq!(totals.sent, totals.answered);
    // Every connection ended with an answer saying `Connection: close`, then
    // tokend's FIN: none was busy enough to count as idle at the drain.
    assert_eq!(totals.closed_clean, RUNS as u64 * 16, "{totals:?}");
}

/// The kernel's count of connections closed with unread data (each one a
/// reset sent to the client).
fn abort_on_close() -> i64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut rows = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "TCPAbortOnClose")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}
