//! Issue #12, bounded work before authentication and readiness that means
//! what it says, against a running server: the quadratic form body, its
//! cost in tokend's CPU time, a well-behaved client validating on the same
//! core during the attack, and `/readyz` through a login storm.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::tokens::{deployment, Deployment};

/// The body of the finding: 8,014 distinct short parameters, 63 KB.
fn quadratic_body() -> String {
    (0..8014)
        .map(|i| format!("p{i}=1"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The costliest body within the cap: 64 names of ~1,000 bytes, alike but
/// for their last bytes (each comparison of the duplicate scan reads all of
/// a name), no client credentials.
fn long_names_body() -> String {
    (0..64)
        .map(|i| format!("{}{i:02}=", "n".repeat(1000)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_request(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// CPU time tokend has used so far, every thread of it (the first field of
/// each task's schedstat: nanoseconds on a CPU).
fn process_cpu(pid: u32) -> Duration {
    let mut total = 0u64;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tokend is running");
    for task in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(total)
}

/// The finding's body is refused at the cap with a precise answer, on each
/// form endpoint, and costs tokend under a millisecond of CPU time a
/// request (reading 63 KB from the socket included). Before the fix it was
/// decoded whole, with a duplicate scan quadratic in its 8,014 parameters:
/// 175–190 ms a request in a release build.
#[test]
fn the_quadratic_form_body_is_refused_at_the_cap_cheaply() {
    let s = TestServer::with(Options {
        cores: 1,
        ..Options::default()
    });
    let body = quadratic_body();
    for path in ["/oauth/token", "/oauth/introspect", "/oauth/revoke"] {
        let r = s.request(&form_request(path, &body));
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let json = r.json();
        assert_eq!(json["error"], "invalid_request", "{path}");
        assert_eq!(
            json["error_description"], "a form may have at most 64 parameters",
            "{path}"
        );
    }
    // At the cap, the form is decoded and the client authentication is
    // what refuses it.
    let r = s.request(&form_request("/oauth/token", &long_names_body()));
    assert_eq!(r.status, 401, "{}", r.text());

    // CPU time over many requests on one keep-alive connection (the
    // server's whole process: its idle threads add microseconds a second).
    // Bounded by 5 s of wall time so that a server that takes seconds a
    // request fails quickly instead of hanging the suite.
    let mut c = s.conn();
    let request = form_request("/oauth/token", &body);
    let before = process_cpu(s.pid());
    let start = Instant::now();
    let mut sent = 0u32;
    while sent < 200 && start.elapsed() < Duration::from_secs(5) {
        c.send(request.as_bytes());
        let r = c.read_response().expect("an answer");
        assert_eq!(r.status, 400);
        sent += 1;
    }
    let per_request = (process_cpu(s.pid()) - before) / sent;
    eprintln!("{sent} quadratic bodies: {per_request:?} of tokend CPU time each");
    assert!(
        per_request < Duration::from_millis(1),
        "{per_request:?} of CPU time a request"
    );
}

/// A validating client: keep-alive `/validate` requests, one at a time,
/// until `stop`; returns each one's latency (and panics on any answer but
/// 200).
fn validate_until(addr: SocketAddr, token: &str, stop: &AtomicBool) -> Vec<Duration> {
    let mut c = Conn::new(TcpStream::connect(addr).unwrap());
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    c.stream.set_nodelay(true).unwrap();
    let request =
        format!("GET /validate HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        c.send(request.as_bytes());
        let r = c.read_response().expect("validate answered");
        latencies.push(start.elapsed());
        assert_eq!(r.status, 200, "{}", r.text());
    }
    latencies
}

/// Issue #12's attack: the quadratic body sent again and again (by two
/// clients, and the costliest body within the cap by a third) while a
/// well-behaved client validates on the same core
/// (`TOKEND_SERVER_CORES=1`). All its requests succeed, their median latency
/// stays under 100 ms and the worst under 1 s.
///
/// Before the fix each quadratic request held the core for 71 ms in a
/// release build (346 ms in the debug build the tests run), and every
/// validation waited behind the ones in progress; now each costs
/// microseconds. The bound is loose for a loaded 2-CPU machine (the
/// attackers, the server, Redis and other tests share it: runs measured
/// worst latencies of 20–40 ms there, and one of 250+ ms at a load average
/// of 9, which is why the worst case alone is bounded at 1 s, still a
/// quarter of the 4.65 s seen before the fix). The median, under 100 ms, is
/// what an attack that holds the core would break: before the fix every
/// validation waited behind at least one quadratic request (346 ms).
///
/// Each attacker waits 1 ms after an answer before it sends again: an
/// attacker that always has its next request in the socket before tokend
/// reads again keeps its connection's task from ever yielding the core (the
/// connection loop reads and answers while bytes keep coming), which
/// starves the other connections whatever the requests cost — the
/// connection loop's problem, not the form's, and not what this test is
/// about. The redis.timeout is raised to 2 s for the same reason: a loaded
/// machine can delay Redis's own answer past the default 100 ms, and a 503
/// then would say nothing about the form.
#[test]
fn a_well_behaved_client_keeps_validating_during_the_form_attack() {
    let d: Deployment = deployment(&[("TOKEND_SERVER_CORES", "1"), ("TOKEND_REDIS_TIMEOUT", "2s")]);
    let token = d.access_token("alice");
    let addr = d.server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let attacks: Vec<_> = [quadratic_body(), quadratic_body(), long_names_body()]
        .into_iter()
        .map(|body| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Conn::new(TcpStream::connect(addr).unwrap());
                let request = form_request("/oauth/introspect", &body);
                let mut sent = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    c.stream.write_all(request.as_bytes()).unwrap();
                    let r = c.read_response().expect("the attack is answered");
                    assert!(matches!(r.status, 400 | 401), "{}", r.status);
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                sent
            })
        })
        .collect();
    let good = {
        let stop = stop.clone();
        std::thread::spawn(move || validate_until(addr, &token, &stop))
    };
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let attack_requests: u32 = attacks.into_iter().map(|a| a.join().unwrap()).sum();
    let mut latencies = good.join().expect("every validation answered 200");
    latencies.sort();
    let worst = latencies.last().copied().unwrap_or_default();
    eprintln!(
        "under {attack_requests} attack requests: {} validations, median {:?}, worst {worst:?}",
        latencies.len(),
        latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default(),
    );
    assert!(attack_requests > 10, "the attack ran: {attack_requests}");
    assert!(latencies.len() > 10, "validations ran: {}", latencies.len());
    let median = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    assert!(
        median < Duration::from_millis(100),
        "median validation latency {median:?}"
    );
    assert!(
        worst < Duration::from_secs(1),
        "worst validation latency {worst:?}"
    );
}

/// Issue #12: `/readyz` said "postgresql unreachable" when the blocking
/// pool's queue was merely full. A login storm at real argon2 cost (one
/// blocking thread, a queue of one, six clients logging in without pause)
/// keeps the queue full, which `tokend_blocking_rejected_total` counts;
/// `/readyz` answers 200 throughout, since PostgreSQL and Redis are up.
#[test]
fn readyz_stays_ready_through_a_login_storm() {
    let d = deployment(&[
        ("TOKEND_PASSWORDS_MEMORY_KIB", "19456"),
        ("TOKEND_PASSWORDS_ITERATIONS", "2"),
        ("TOKEND_LIMITS_BLOCKING_THREADS", "1"),
        ("TOKEND_LIMITS_BLOCKING_QUEUE", "1"),
        ("TOKEND_LIMITS_LOGIN_FAILURES_PER_IP", "1000000"),
    ]);
    let addr = d.server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let storm: Vec<_> = (0..6)
        .map(|t| {
            let (stop, secret) = (stop.clone(), d.secret.clone());
            std::thread::spawn(move || {
                let mut c = Conn::new(TcpStream::connect(addr).unwrap());
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    // Unknown users, each its own: a full argon2 verification
                    // of the dummy hash, and no per-user failure limit met.
                    let body = format!("grant_type=password&username=ghost{t}x{n}&password=wrong");
                    c.send(raw_token_request(&secret, &body).as_bytes());
                    let r = c.read_response().expect("a login answered");
                    assert!(matches!(r.status, 400 | 503), "{}", r.text());
                    n += 1;
                }
            })
        })
        .collect();
    let rejected = || metric(&d.server, "tokend_blocking_rejected_total");
    assert!(
        eventually(Duration::from_secs(10), || rejected() > 0.0),
        "the storm never filled the queue\n{}",
        d.server.log()
    );
    // At least 10 checks, and on until the queue has refused more logins
    // since the first (so the checks overlapped a full queue).
    let before = rejected();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut checks = 0;
    while checks < 10 || (rejected() <= before && Instant::now() < deadline) {
        let r = d.server.get("/readyz");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "ready\n");
        checks += 1;
    }
    assert!(
        rejected() > before,
        "no login was refused for a full queue while /readyz was checked"
    );
    stop.store(true, Ordering::Relaxed);
    for s in storm {
        s.join().unwrap();
    }
}
