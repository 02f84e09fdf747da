//! Issue #14: a Redis failover under load, on the topology of
//! `scripts/topology.sh` (a Redis primary and a replica, three sentinels
//! with quorum 2 and `down-after-milliseconds 1000`, two tokend nodes that
//! find the primary through the sentinels, one of them with the revocation
//! mirror). As root (CI) each Redis server and sentinel is a network
//! namespace of its own, with its own address; otherwise all is on
//! loopback. The primary is killed with SIGKILL while every node validates at
//! a constant rate and logins, revocations and refresh rotations go on.
//!
//! What must hold: no 200 for a token revoked before or during the failover,
//! no 401 for a valid one, no refresh token usable twice, no transport
//! error, and every node back to 200 within a second of the sentinels
//! naming the new primary, without a restart. The per-second counts and the
//! 503 window are printed (`cargo test --test it topology -- --nocapture`).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::tokens::{seed, PASSWORD};

const NODES: u16 = 2;
const MASTER: &str = "tokend-topology-test";

/// One topology of `scripts/topology.sh`, taken down on drop.
struct Topology {
    dir: std::path::PathBuf,
    base: u16,
    env: Vec<(String, String)>,
}

impl Topology {
    fn up(db_url: &str, prefix: &str) -> Topology {
        let dir = std::env::temp_dir().join(format!("tokend-topology-test-{}", random_suffix()));
        let base = free_port_block(25);
        let env: Vec<(String, String)> = [
            ("TOPOLOGY_DIR", dir.display().to_string()),
            ("TOPOLOGY_BASE_PORT", base.to_string()),
            ("TOPOLOGY_NODES", NODES.to_string()),
            ("TOPOLOGY_MASTER", MASTER.to_string()),
            (
                "TOPOLOGY_TOKEND_BIN",
                env!("CARGO_BIN_EXE_tokend").to_string(),
            ),
            // The second node answers revocation checks from its mirror.
            (
                "TOPOLOGY_NODE2_ENV",
                "TOKEND_REDIS_REVOCATION_MIRROR=true".to_string(),
            ),
            ("TOKEND_DATABASE_URL", db_url.to_string()),
            ("TOKEND_KEYS_KEK", test_kek().to_string()),
            ("TOKEND_REDIS_PREFIX", prefix.to_string()),
            ("TOKEND_PASSWORDS_MEMORY_KIB", "64".to_string()),
            ("TOKEND_PASSWORDS_ITERATIONS", "1".to_string()),
            ("TOKEND_LIMITS_BLOCKING_THREADS", "2".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let t = Topology { dir, base, env };
        t.script("up");
        t
    }

    fn script(&self, action: &str) -> String {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/topology.sh"))
            .arg(action)
            .env_remove("TOKEND_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run scripts/topology.sh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "topology.sh {action} failed:\n{text}");
        text
    }

    fn node(&self, n: u16) -> SocketAddr {
        ([127, 0, 0, 1], self.base + 19 + n).into()
    }

    /// The sentinels' `host:port`, as `topology.sh up` wrote them: on
    /// loopback, or each in a network namespace of its own (as root).
    fn sentinels(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("sentinels"))
            .expect("topology.sh up writes the sentinels' addresses")
            .trim()
            .split(',')
            .map(str::to_owned)
            .collect()
    }

    fn log(&self, n: u16) -> String {
        std::fs::read_to_string(self.dir.join(format!("node{n}/log"))).unwrap_or_default()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/topology.sh"))
            .arg("down")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output();
    }
}

/// The first of `n` consecutive free loopback ports.
fn free_port_block(n: u16) -> u16 {
    for _ in 0..200 {
        let base = 20_000 + (rand::random::<u16>() % 30_000);
        let free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no block of {n} free ports");
}

/// The port of the primary the first answering sentinel names.
fn primary_port(t: &Topology) -> Option<u16> {
    t.sentinels().into_iter().find_map(|addr| {
        let (host, port) = addr.rsplit_once(':')?;
        let out = Command::new("redis-cli")
            .args(["-h", host, "-p", port])
            .args(["SENTINEL", "get-master-addr-by-name", MASTER])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)?
            .trim()
            .parse()
            .ok()
    })
}

/// One request on a keep-alive connection (made again after an error);
/// the status, or `None` for a transport error.
fn send(conn: &mut Option<Conn>, addr: SocketAddr, raw: &str) -> Option<u16> {
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.set_nodelay(true).ok()?;
        *conn = Some(Conn::new(s));
    }
    let c = conn.as_mut()?;
    c.send(raw.as_bytes());
    match c.read_response() {
        Some(r) => Some(r.status),
        None => {
            *conn = None;
            None
        }
    }
}

fn validate_req(token: &str) -> String {
    format!("GET /validate HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n")
}

fn form_req(secret: &str, path: &str, form: &[(&str, &str)]) -> String {
    use base64::Engine;
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("app:{secret}"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {basic}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn post(addr: SocketAddr, raw: &str) -> Option<Response> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut c = Conn::new(s);
    c.send(raw.as_bytes());
    c.read_response()
}

/// What each validation was for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Valid,
    Revoked,
}

/// `(milliseconds since start, node, kind, status; 0 = transport error)`.
type Samples = Arc<Mutex<Vec<(u64, u16, Kind, u16)>>>;

#[test]
fn redis_failover_under_load_loses_nothing_and_recovers_by_itself() {
    let db = TestDb::new();
    let (secret, _) = seed(&db);
    // The topology's Redis is its own, removed with it.
    let prefix = format!("tokend-test:{}:", random_suffix());
    let topo = Topology::up(&db.url, &prefix);
    let nodes: Vec<SocketAddr> = (1..=NODES).map(|n| topo.node(n)).collect();

    let login = |addr: SocketAddr, user: &str| -> Option<serde_json::Value> {
        let r = post(
            addr,
            &form_req(
                &secret,
                "/oauth/token",
                &[
                    ("grant_type", "password"),
                    ("username", user),
                    ("password", PASSWORD),
                ],
            ),
        )?;
        (r.status == 200).then(|| r.json())
    };
    let valid = login(nodes[0], "alice").expect("login")["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = login(nodes[1], "bob").expect("login")["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post(
        nodes[0],
        &form_req(&secret, "/oauth/revoke", &[("token", &revoked)]),
    )
    .unwrap();
    assert_eq!(r.status, 200);

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Samples = Arc::default();
    // Tokens whose revocation was acknowledged (200) during the run.
    let revoked_later: Arc<Mutex<Vec<String>>> = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();

    // Constant-rate validation on every node: the valid token, the token
    // revoked before, and the latest token revoked during the run, every
    // 10 ms each.
    let mut threads = Vec::new();
    for (i, &addr) in nodes.iter().enumerate() {
        let (stop, samples, revoked_later) = (stop.clone(), samples.clone(), revoked_later.clone());
        let (valid, revoked) = (valid.clone(), revoked.clone());
        threads.push(std::thread::spawn(move || {
            let mut conn = None;
            let node = i as u16 + 1;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let later = revoked_later.lock().unwrap().last().cloned();
                let mut checks = vec![
                    (Kind::Valid, valid.clone()),
                    (Kind::Revoked, revoked.clone()),
                ];
                if let Some(t) = later {
                    checks.push((Kind::Revoked, t));
                }
                for (kind, token) in checks {
                    let status = send(&mut conn, addr, &validate_req(&token)).unwrap_or(0);
                    let ms = start.elapsed().as_millis() as u64;
                    samples.lock().unwrap().push((ms, node, kind, status));
                }
                next += Duration::from_millis(10);
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }));
    }

    // Logins, revocations and refresh rotations, alternating nodes.
    let lifecycle = {
        let (stop, revoked_later, violations) =
            (stop.clone(), revoked_later.clone(), violations.clone());
        let nodes = nodes.clone();
        let secret = secret.clone();
        std::thread::spawn(move || {
            let mut counts: BTreeMap<&'static str, u32> = BTreeMap::new();
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let (a, b) = (nodes[k % nodes.len()], nodes[(k + 1) % nodes.len()]);
                let Some(tokens) = post(
                    a,
                    &form_req(
                        &secret,
                        "/oauth/token",
                        &[
                            ("grant_type", "password"),
                            ("username", "alice"),
                            ("password", PASSWORD),
                        ],
                    ),
                )
                .filter(|r| r.status == 200)
                .map(|r| r.json()) else {
                    *counts.entry("login refused").or_default() += 1;
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let access = tokens["access_token"].as_str().unwrap().to_string();
                let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
                match post(
                    b,
                    &form_req(&secret, "/oauth/revoke", &[("token", &access)]),
                ) {
                    Some(r) if r.status == 200 => {
                        *counts.entry("revoked").or_default() += 1;
                        revoked_later.lock().unwrap().push(access);
                    }
                    _ => *counts.entry("revoke refused").or_default() += 1,
                }
                let rotate = |at: SocketAddr| {
                    post(
                        at,
                        &form_req(
                            &secret,
                            "/oauth/token",
                            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
                        ),
                    )
                    .map(|r| r.status)
                };
                if rotate(a) == Some(200) {
                    *counts.entry("rotated").or_default() += 1;
                    // The same refresh token again, on the other node.
                    if rotate(b) == Some(200) {
                        violations.lock().unwrap().push(format!(
                            "a refresh token was used twice at {:?}",
                            start.elapsed()
                        ));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            counts
        })
    };

    // Three seconds of steady state, then the primary is killed.
    std::thread::sleep(Duration::from_secs(3));
    let old_primary = primary_port(&topo).expect("a primary");
    let killed_at = start.elapsed();
    topo.script("kill-primary");
    let mut promoted_at = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if primary_port(&topo).is_some_and(|p| p != old_primary) {
            promoted_at = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let promoted_at = promoted_at.expect("the sentinels promoted no replica within 30 s");
    // Five more seconds of load on the new primary.
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let counts = lifecycle.join().unwrap();

    // The per-second table.
    let samples = samples.lock().unwrap().clone();
    let mut table: BTreeMap<u64, [u32; 5]> = BTreeMap::new();
    for &(ms, _, kind, status) in &samples {
        let row = table.entry(ms / 1000).or_default();
        let col = match (kind, status) {
            (Kind::Valid, 200) => 0,
            (Kind::Revoked, 401) => 1,
            (_, 503) => 2,
            (_, 0) => 4,
            _ => 3,
        };
        row[col] += 1;
    }
    eprintln!("sentinels: {}", topo.sentinels().join(", "));
    eprintln!(
        "primary killed at {:.2} s, new primary named at {:.2} s ({:.2} s later)",
        killed_at.as_secs_f64(),
        promoted_at.as_secs_f64(),
        (promoted_at - killed_at).as_secs_f64()
    );
    eprintln!("second  200-valid  401-revoked  503  other  errors");
    for (sec, r) in &table {
        eprintln!(
            "{sec:>6}  {:>9}  {:>11}  {:>3}  {:>5}  {:>6}",
            r[0], r[1], r[2], r[3], r[4]
        );
    }
    eprintln!("lifecycle: {counts:?}");

    // Nothing revoked was valid, nothing valid was refused, no errors.
    let wrong: Vec<_> = samples
        .iter()
        .filter(|&&(_, _, kind, status)| {
            matches!(
                (kind, status),
                (Kind::Revoked, 200) | (Kind::Valid, 401) | (_, 0)
            ) || !matches!(status, 0 | 200 | 401 | 503)
        })
        .collect();
    let logs = || {
        (1..=NODES)
            .map(|n| topo.log(n))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert!(
        wrong.is_empty(),
        "{} wrong answers, first {:?}\n{}",
        wrong.len(),
        &wrong[..wrong.len().min(5)],
        logs()
    );
    let v = violations.lock().unwrap();
    assert!(v.is_empty(), "{v:?}");
    assert!(
        counts.get("revoked").copied().unwrap_or(0) > 0,
        "{counts:?}"
    );
    assert!(
        counts.get("rotated").copied().unwrap_or(0) > 0,
        "{counts:?}"
    );

    // Back without a restart: the last 503 on every node comes within a
    // second of the new primary being named.
    let window: Vec<u64> = samples.iter().filter(|s| s.3 == 503).map(|s| s.0).collect();
    if let (Some(first), Some(last)) = (window.iter().min(), window.iter().max()) {
        eprintln!(
            "503 window: {:.2} s to {:.2} s ({:.2} s)",
            *first as f64 / 1000.0,
            *last as f64 / 1000.0,
            (last - first) as f64 / 1000.0
        );
        assert!(
            Duration::from_millis(*last) <= promoted_at + Duration::from_secs(1),
            "a 503 at {last} ms, the new primary was named at {promoted_at:?}\n{}",
            logs()
        );
    }
    // And every node answers 200 for the valid token at the end.
    let end = samples.iter().map(|s| s.0).max().unwrap();
    for n in 1..=NODES {
        assert!(
            samples
                .iter()
                .any(|&(ms, node, kind, status)| ms + 1000 >= end
                    && node == n
                    && kind == Kind::Valid
                    && status == 200),
            "node {n} did not come back\n{}",
            logs()
        );
    }
}

/// A redis-server of this test's own on a free port, killed on drop.
struct OwnRedis(std::process::Child, u16, std::path::PathBuf);

impl OwnRedis {
    fn start(extra: &[&str]) -> OwnRedis {
        let port = free_port_block(1);
        // Its own working directory: a replica writes its first sync to
        // dump.rdb there. Removed on drop.
        let dir = std::env::temp_dir().join(format!("tokend-it-redis-{}", random_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        assert!(eventually(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        }));
        OwnRedis(child, port, dir)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.2);
    }
}

/// Issue #14's bad input at start-up: one `tokend: …` line and a non-zero
/// exit for a sentinel list where none answers, a missing master name, and
/// a Redis that is a replica.
#[test]
fn redis_misconfiguration_stops_start_up_with_one_line() {
    let db = TestDb::new();
    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tokend"));
        c.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TOKEND_SERVER_LISTEN", "127.0.0.1:0")
            .env("TOKEND_DATABASE_URL", &db.url)
            .env("TOKEND_KEYS_KEK", test_kek())
            .env("TOKEND_REDIS_URL", redis_url())
            .env(
                "TOKEND_REDIS_PREFIX",
                format!("tokend-test:{}:", random_suffix()),
            );
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "started:\n{err}");
        assert!(!err.contains("panicked"), "{err}");
        err.trim().lines().last().unwrap_or("").to_string()
    };
    let nobody = format!("127.0.0.1:{}", free_port_block(1));
    let last = run(&[
        ("TOKEND_REDIS_SENTINELS", &nobody),
        ("TOKEND_REDIS_SENTINEL_MASTER", "mymaster"),
    ]);
    assert!(
        last.starts_with("tokend: ") && last.contains("no sentinel answered"),
        "{last}"
    );
    let last = run(&[("TOKEND_REDIS_SENTINELS", &nobody)]);
    assert!(
        last.starts_with("tokend: ") && last.contains("redis.sentinel_master"),
        "{last}"
    );
    let primary = OwnRedis::start(&[]);
    let replica = OwnRedis::start(&["--replicaof", "127.0.0.1", &primary.1.to_string()]);
    let last = run(&[(
        "TOKEND_REDIS_URL",
        &format!("redis://127.0.0.1:{}/0", replica.1),
    )]);
    assert!(
        last.starts_with("tokend: ") && last.contains("is a replica, not a primary"),
        "{last}"
    );
}

/// `redis.min_replicas_acked` (issue #14, item 4): a revocation or a refresh
/// rotation is answered only once a replica has it. With no replica in sync
/// it fails closed (503) instead of pretending, while validation goes on;
/// with one it is answered, and the replica holds it.
#[test]
fn writes_wait_for_their_replicas_or_fail_closed() {
    let primary = OwnRedis::start(&[]);
    let url = format!("redis://127.0.0.1:{}/0", primary.1);
    let d = crate::tokens::deployment(&[
        ("TOKEND_REDIS_URL", &url),
        ("TOKEND_REDIS_MIN_REPLICAS_ACKED", "1"),
        // A replica's acknowledgement is a round trip; the second leaves
        // room for this shared machine's stalls.
        ("TOKEND_REDIS_TIMEOUT", "1s"),
    ]);
    let login = || {
        let r = d.login("alice", PASSWORD);
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        (
            j["access_token"].as_str().unwrap().to_string(),
            j["refresh_token"].as_str().unwrap().to_string(),
        )
    };
    let revoke = |t: &str| {
        d.server
            .post_form("/oauth/revoke", Some(("app", &d.secret)), &[("token", t)])
    };
    let refresh = |t: &str| {
        d.server.post_form(
            "/oauth/token",
            Some(("app", &d.secret)),
            &[("grant_type", "refresh_token"), ("refresh_token", t)],
        )
    };
    let validate = |t: &str| {
        d.server
            .get_auth("/validate", &format!("Bearer {t}"))
            .status
    };

    // No replica: not acknowledged, 503, and validation is unaffected.
    let (access, refresh_token) = login();
    let r = revoke(&access);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "temporarily_unavailable", "{}", r.text());
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    let r = refresh(&refresh_token);
    assert_eq!(r.status, 503, "{}", r.text());
    let (fresh, _) = login();
    assert_eq!(validate(&fresh), 200);
    assert!(
        d.server.log().contains("redis.min_replicas_acked"),
        "the log names the cause:\n{}",
        d.server.log()
    );

    // A replica in sync: acknowledged, answered, and the replica has it.
    let replica = OwnRedis::start(&["--replicaof", "127.0.0.1", &primary.1.to_string()]);
    // In sync, and counted by the primary: after a full sync the primary
    // counts a replica for WAIT only once it has acknowledged an offset
    // (its first REPLCONF ACK, up to a second later).
    assert!(eventually(Duration::from_secs(15), || {
        Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.1.to_string(),
                "WAIT",
                "1",
                "100",
            ])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "1")
    }));
    let (access, refresh_token) = login();
    let r = revoke(&access);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(validate(&access), 401);
    let r = refresh(&refresh_token);
    assert_eq!(r.status, 200, "{}", r.text());
    let keys = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &replica.1.to_string(),
            "--scan",
            "--pattern",
        ])
        .arg(format!("{}rev:at:*", d.server.prefix))
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&keys.stdout).trim().is_empty(),
        "the replica holds no revocation"
    );
}

/// Certificates for a TLS Redis, made in the test (rcgen): a CA, a server
/// certificate for 127.0.0.1, a client certificate, and an unrelated CA.
struct Certs {
    dir: std::path::PathBuf,
}

impl Certs {
    fn new() -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = std::env::temp_dir().join(format!("tokend-it-tls-{}", random_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            (cert, Issuer::new(params, key))
        };
        let (ca_cert, issuer) = ca("tokend test CA");
        let (other, _) = ca("another CA");
        for (names, file) in [
            (vec!["127.0.0.1".to_string()], "server"),
            (vec!["tokend".to_string()], "client"),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        }
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// TLS to Redis (issue #14, item 1): a Redis that speaks only TLS and
/// requires a client certificate. tokend serves through it (the per-core
/// connections, the mirror readers, the seeder); a CA the server's
/// certificate does not chain to stops start-up with one line.
#[test]
fn tokend_reaches_a_tls_only_redis_with_a_client_certificate() {
    let certs = Certs::new();
    let port = free_port_block(1);
    let mut child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--tls-cert-file", &certs.path("server.pem")])
        .args(["--tls-key-file", &certs.path("server.key")])
        .args(["--tls-ca-cert-file", &certs.path("ca.pem")])
        .args(["--tls-auth-clients", "yes"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    assert!(eventually(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    let url = format!("rediss://127.0.0.1:{port}/0");
    let (ca, cert, key) = (
        certs.path("ca.pem"),
        certs.path("client.pem"),
        certs.path("client.key"),
    );
    for mirror in ["false", "true"] {
        let d = crate::tokens::deployment(&[
            ("TOKEND_REDIS_URL", &url),
            ("TOKEND_REDIS_TLS_CA_FILE", &ca),
            ("TOKEND_REDIS_TLS_CERT_FILE", &cert),
            ("TOKEND_REDIS_TLS_KEY_FILE", &key),
            ("TOKEND_REDIS_REVOCATION_MIRROR", mirror),
        ]);
        let r = d.login("alice", PASSWORD);
        assert_eq!(r.status, 200, "{}", r.text());
        let access = r.json()["access_token"].as_str().unwrap().to_string();
        let refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
        let bearer = format!("Bearer {access}");
        assert_eq!(d.server.get_auth("/validate", &bearer).status, 200);
        let r = d.server.post_form(
            "/oauth/token",
            Some(("app", &d.secret)),
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let r = d.server.post_form(
            "/oauth/revoke",
            Some(("app", &d.secret)),
            &[("token", &access)],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            d.server.get_auth("/validate", &bearer).status,
            401,
            "mirror {mirror}"
        );
        assert_eq!(d.server.get("/readyz").status, 200);
    }

    // A CA the server's certificate does not chain to: one line, exit 1.
    let db = TestDb::new();
    let out = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TOKEND_SERVER_LISTEN", "127.0.0.1:0")
        .env("TOKEND_DATABASE_URL", &db.url)
        .env("TOKEND_KEYS_KEK", test_kek())
        .env("TOKEND_REDIS_URL", &url)
        .env("TOKEND_REDIS_TLS_CA_FILE", certs.path("other-ca.pem"))
        .env("TOKEND_REDIS_TLS_CERT_FILE", &cert)
        .env("TOKEND_REDIS_TLS_KEY_FILE", &key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap_or("");
    assert!(!out.status.success(), "{err}");
    assert!(
        last.starts_with("tokend: ") && last.contains("TLS") && last.contains("certificate"),
        "{err}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
