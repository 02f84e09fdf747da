//! A PostgreSQL that stops answering (issue #12, finding 6): tokend reaches
//! its database through [`FreezableProxy`], a TCP proxy in the test that
//! forwards normally and, once frozen, keeps accepting and holding
//! connections but forwards nothing, on new and existing connections alike
//! (a frozen server, or a network or pooler that holds connections open).
//! Every request that needs PostgreSQL must then answer `503` with
//! `Retry-After` within its bound, the rest go on, one log line names the
//! cause, and all recovers by itself once the proxy forwards again.
//!
//! The servers here run with `database.statement_timeout = 1s` and
//! `database.connect_timeout = 1s`: a request that meets the outage first
//! waits at most about 2 s (1 s + tokend's 1 s grace); the others are
//! refused at once. The bounds asserted (5 s) leave room for a loaded 2-CPU
//! machine running the rest of the suite.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::*;

/// What a request that needs PostgreSQL may take during the outage: 2 s
/// for the first (see the module header) and less for the rest, with room
/// for a loaded machine.
const BOUND: Duration = Duration::from_secs(5);

/// A TCP proxy in front of PostgreSQL that can be frozen and thawed.
struct FreezableProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct ProxyState {
    frozen: AtomicBool,
    stop: AtomicBool,
    /// Connections accepted while frozen: held open, never forwarded.
    held: Mutex<Vec<TcpStream>>,
}

impl FreezableProxy {
    fn start(upstream: SocketAddr) -> FreezableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::default());
        let s = state.clone();
        let accept = std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        if s.frozen.load(Ordering::Relaxed) {
                            s.held.lock().unwrap().push(client);
                        } else {
                            forward(client, upstream, s.clone());
                        }
                    }
                    // Nothing to accept: poll the stop flag again soon.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FreezableProxy {
            addr,
            state,
            accept: Some(accept),
        }
    }

    /// From now on nothing is forwarded, either way, on any connection.
    fn freeze(&self) {
        self.state.frozen.store(true, Ordering::Relaxed);
    }

    /// Forwards again: what was held on open connections goes through, and
    /// new connections reach PostgreSQL (those accepted while frozen stay
    /// dead, as behind a pooler that lost them).
    fn thaw(&self) {
        self.state.frozen.store(false, Ordering::Relaxed);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.state.held.lock().unwrap().clear();
    }
}

/// Connects `client` to `upstream` and pumps both ways on two threads.
fn forward(client: TcpStream, upstream: SocketAddr, state: Arc<ProxyState>) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
        return;
    };
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let st = state.clone();
    std::thread::spawn(move || pump(client, server, st));
    std::thread::spawn(move || pump(s2, c2, state));
}

/// Copies `from` to `to` until either closes or the proxy stops; while
/// frozen it neither reads nor writes (bytes already read are held).
fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<ProxyState>) {
    // A short read timeout only to look at the flags again.
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 16384];
    let hold = |state: &ProxyState| {
        while state.frozen.load(Ordering::Relaxed) && !state.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    while !state.stop.load(Ordering::Relaxed) {
        hold(&state);
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Frozen while this read was in progress: hold it too.
                hold(&state);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Where the test PostgreSQL listens, from `url`'s authority.
fn upstream(url: &str) -> SocketAddr {
    let authority = authority(url);
    let host_port = authority.rsplit('@').next().unwrap();
    let with_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    with_port.to_socket_addrs().unwrap().next().unwrap()
}

/// The `user@host:port` part of a `postgres://` URL.
fn authority(url: &str) -> &str {
    let rest = &url[url.find("://").unwrap() + 3..];
    &rest[..rest.find('/').unwrap_or(rest.len())]
}

/// `url` with its host and port replaced by `addr`.
fn via(url: &str, addr: SocketAddr) -> String {
    let authority = authority(url);
    let user = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    url.replacen(authority, &format!("{user}{addr}"), 1)
}

/// Seeds `db`: user alice (read), client `app` (password grant, read) and
/// client `svc` (client_credentials). Returns the two secrets.
fn seed(db: &TestDb) -> (String, String) {
    use tokend::identity::{clients, users, GrantType, Hasher};
    let mut c = db.client();
    let h = Hasher::new(&tokend::config::PasswordsConfig {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    })
    .unwrap();
    users::create(
        &mut c,
        "alice",
        &h.hash(PASSWORD).unwrap(),
        &["read".into()],
    )
    .unwrap();
    let (_, app) = clients::create(
        &mut c,
        "app",
        &[GrantType::Password],
        &["read".into()],
        false,
    )
    .unwrap();
    let (_, svc) = clients::create(
        &mut c,
        "svc",
        &[GrantType::ClientCredentials],
        &["metrics".into()],
        false,
    )
    .unwrap();
    (app.unwrap(), svc.unwrap())
}

const PASSWORD: &str = "correct horse battery";

/// A tokend on `db` through `proxy`, with 1 s database bounds and `env`.
fn server_via(db: &TestDb, proxy: &FreezableProxy, env: &[(&str, &str)]) -> TestServer {
    let mut all = vec![
        (
            "TOKEND_DATABASE_STATEMENT_TIMEOUT".to_string(),
            "1s".to_string(),
        ),
        (
            "TOKEND_DATABASE_CONNECT_TIMEOUT".to_string(),
            "1s".to_string(),
        ),
    ];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    TestServer::with(Options {
        env: all,
        db_url: Some(via(&db.url, proxy.addr)),
        ..Options::default()
    })
}

/// Runs `f` and returns its result with how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed())
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_frozen_postgresql_costs_503s_within_the_bound_and_recovers_by_itself() {
    let db = TestDb::new();
    let (secret, svc_secret) = seed(&db);
    let proxy = FreezableProxy::start(upstream(&db.url));
    let server = server_via(&db, &proxy, &[]);
    let login = || {
        server.post_form(
            "/oauth/token",
            Some(("app", &secret)),
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
    };
    let r = login();
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");
    assert_eq!(server.get("/readyz").status, 200);

    proxy.freeze();
    let lines_before = server.log().lines().count();

    // The request that meets the outage first: bounded by the statement
    // timeout plus the grace.
    let (r, first) = timed(login);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert!(first < BOUND, "first login answered after {first:?}");

    // Readiness says so, in time.
    let (r, ready) = timed(|| server.get("/readyz"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("postgresql unreachable"), "{}", r.text());
    assert!(r.header("Retry-After").is_some());
    assert!(ready < BOUND, "/readyz answered after {ready:?}");

    // What never needs PostgreSQL goes on: validation, client_credentials.
    for _ in 0..20 {
        let (r, t) = timed(|| server.get_auth("/validate", &bearer));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(t < Duration::from_secs(1), "/validate took {t:?}");
    }
    let r = server.post_form(
        "/oauth/token",
        Some(("svc", &svc_secret)),
        &[("grant_type", "client_credentials")],
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Revocation (its durable write) and the user API: 503, in time.
    let (r, revoke) = timed(|| {
        server.post_form(
            "/oauth/revoke",
            Some(("app", &secret)),
            &[("token", token.as_str())],
        )
    });
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("Retry-After").is_some());
    assert!(revoke < BOUND, "revoke answered after {revoke:?}");
    let (r, me) = timed(|| server.get_auth("/users/me", &bearer));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("Retry-After").is_some());
    assert!(me < BOUND, "/users/me answered after {me:?}");

    // Logins for 2.5 s more, long enough for probes (one a second) to go
    // through and find PostgreSQL still frozen: every one answered 503
    // within the bound.
    let (mut worst, mut n) = (Duration::ZERO, 0);
    let more = Instant::now();
    while more.elapsed() < Duration::from_millis(2500) {
        let (r, t) = timed(login);
        assert_eq!(r.status, 503, "{}", r.text());
        worst = worst.max(t);
        n += 1;
    }
    assert!(worst < BOUND, "a login during the outage took {worst:?}");
    eprintln!(
        "frozen PostgreSQL: first login {first:?}, /readyz {ready:?}, revoke {revoke:?}, \
         /users/me {me:?}, worst of {n} more logins {worst:?}"
    );

    // One line names the cause, not one per request.
    let log = server.log();
    let during: String = log
        .lines()
        .skip(lines_before)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(count(&during, "PostgreSQL unavailable"), 1, "{during}");
    assert!(
        during.contains("no answer from PostgreSQL within"),
        "{during}"
    );
    assert!(
        during.lines().count() <= 4,
        "log lines during the outage:\n{during}"
    );

    // Thawed: logins come back by themselves.
    proxy.thaw();
    let thawed = Instant::now();
    // PROBE_EVERY (1 s) plus r2d2's reconnect back-off (at most half the
    // connect timeout) plus a connect: 10 s is generous.
    assert!(
        eventually(Duration::from_secs(10), || login().status == 200),
        "no successful login within 10 s of the thaw:\n{}",
        server.log()
    );
    eprintln!("logins back {:?} after the thaw", thawed.elapsed());
    // Readiness follows within the readiness probe's own period: its
    // latest result may still be the failure seen during the freeze for up
    // to a second after the pool recovered (seen failing when asked at
    // once, at a load average of 10); 5 s is generous.
    assert!(
        eventually(Duration::from_secs(5), || server.get("/readyz").status
            == 200),
        "/readyz not ready within 5 s of logins coming back"
    );
    assert_eq!(
        count(&server.log(), "PostgreSQL answers again"),
        1,
        "{}",
        server.log()
    );
}

#[test]
fn a_frozen_postgresql_never_stalls_the_control_loop() {
    use std::os::unix::net::UnixDatagram;
    let db = TestDb::new();
    seed(&db);
    let proxy = FreezableProxy::start(upstream(&db.url));
    let dir = std::env::temp_dir().join(format!("tokend-notify-{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // Watchdog pings every 500 ms.
    let mut server = server_via(
        &db,
        &proxy,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    assert!(
        recv_until(&sock, Instant::now() + Duration::from_secs(10), |m| m
            .contains("READY=1")),
        "no READY=1"
    );

    // Frozen, then SIGHUP: the reload waits on PostgreSQL (up to 2 s here),
    // on its own thread; the loop keeps pinging the watchdog meanwhile.
    proxy.freeze();
    // SAFETY: kill(2) on the pid of the child this test started.
    unsafe {
        libc::kill(server.pid() as i32, libc::SIGHUP);
    }
    let sighup = Instant::now();
    let mut reloading = false;
    let mut pings_while_reloading = 0;
    let done = recv_until(&sock, sighup + BOUND, |m| {
        if m.contains("RELOADING=1") {
            reloading = true;
        } else if reloading && m.contains("WATCHDOG=1") {
            pings_while_reloading += 1;
        }
        reloading && m.contains("READY=1")
    });
    let reload = sighup.elapsed();
    assert!(done, "the reload did not end (READY=1) within {BOUND:?}");
    // The reload took ~2 s: at 500 ms a ping, at least 2 came meanwhile.
    assert!(
        pings_while_reloading >= 2,
        "{pings_while_reloading} watchdog pings during a {reload:?} reload"
    );
    eprintln!("reload on a frozen PostgreSQL: {reload:?}, {pings_while_reloading} pings meanwhile");

    // And SIGTERM is handled at once, the database still frozen.
    let (status, stop) = timed(|| server.terminate());
    assert!(status.success());
    assert!(stop < BOUND, "stopped {stop:?} after SIGTERM");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Reads sd_notify messages from `sock` until `done` says so (true) or
/// `deadline` passes (false).
fn recv_until(
    sock: &std::os::unix::net::UnixDatagram,
    deadline: Instant,
    mut done: impl FnMut(&str) -> bool,
) -> bool {
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            if done(&String::from_utf8_lossy(&buf[..n])) {
                return true;
            }
        }
    }
    false
}

#[test]
fn the_cli_fails_within_the_bound_on_a_frozen_postgresql() {
    let db = TestDb::new();
    let proxy = FreezableProxy::start(upstream(&db.url));
    proxy.freeze();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TOKEND_DATABASE_URL", via(&db.url, proxy.addr))
        .env("TOKEND_DATABASE_CONNECT_TIMEOUT", "1s")
        .env("TOKEND_DATABASE_STATEMENT_TIMEOUT", "1s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tokend migrate still hangs after 20 s on a frozen PostgreSQL");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(took < BOUND, "tokend migrate failed after {took:?}");
    assert!(err.contains("no answer from PostgreSQL within 1s"), "{err}");
    eprintln!("tokend migrate on a frozen PostgreSQL: failed after {took:?}");
}

/// What a [`PgNode`] plays.
const PRIMARY: u8 = 0;
/// A hot standby: every session it forwards is read-only (its start-up
/// packet gets `options=-c default_transaction_read_only=on`, so `SHOW
/// transaction_read_only` says `on`, as on a real standby).
const STANDBY: u8 = 1;
/// Gone: connections are closed at once, new and existing.
const DOWN: u8 = 2;

/// A PostgreSQL "node" in front of the test server: a primary, a standby,
/// or down, switched at run time (issue #14, item 5).
struct PgNode {
    addr: SocketAddr,
    mode: Arc<std::sync::atomic::AtomicU8>,
    stop: Arc<AtomicBool>,
}

impl PgNode {
    fn start(upstream: SocketAddr, mode: u8) -> PgNode {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(std::sync::atomic::AtomicU8::new(mode));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (mode.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        match m.load(Ordering::Relaxed) {
                            DOWN => drop(client),
                            mode => {
                                let (m, s) = (m.clone(), s.clone());
                                std::thread::spawn(move || {
                                    node_session(client, upstream, mode, m, s)
                                });
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        PgNode { addr, mode, stop }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::Relaxed);
    }
}

impl Drop for PgNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One session through a [`PgNode`]: the start-up packet (rewritten for a
/// standby), then both directions pumped until either side closes or the
/// node goes down.
fn node_session(
    mut client: TcpStream,
    upstream: SocketAddr,
    mode: u8,
    now: Arc<std::sync::atomic::AtomicU8>,
    stop: Arc<AtomicBool>,
) {
    let Ok(mut server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
        return;
    };
    // tokend connects with `sslnegotiation=direct` and no TLS (see
    // `store::deadline`): the first bytes are the plain StartupMessage.
    let mut len = [0u8; 4];
    if client.read_exact(&mut len).is_err() {
        return;
    }
    let n = u32::from_be_bytes(len) as usize;
    let mut body = vec![0u8; n.saturating_sub(4)];
    if client.read_exact(&mut body).is_err() {
        return;
    }
    if mode == STANDBY {
        // Before the list's final NUL.
        let at = body.len() - 1;
        body.splice(at..at, *b"options\0-c default_transaction_read_only=on\0");
    }
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    if server.write_all(&packet).is_err() {
        return;
    }
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (now2, stop2) = (now.clone(), stop.clone());
    std::thread::spawn(move || node_pump(s2, c2, now2, stop2));
    node_pump(client, server, now, stop);
}

fn node_pump(
    mut from: TcpStream,
    mut to: TcpStream,
    mode: Arc<std::sync::atomic::AtomicU8>,
    stop: Arc<AtomicBool>,
) {
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 16384];
    while !stop.load(Ordering::Relaxed) && mode.load(Ordering::Relaxed) != DOWN {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// PostgreSQL failover (issue #14, item 5): a multi-host `database.url`
/// with `target_session_attrs=read-write` finds the primary among a primary
/// and a standby; when the primary goes away, logins answer 503 with
/// `Retry-After` (the standby is refused: read-only) while validation goes
/// on; once the standby is promoted, logins recover by themselves, without
/// a restart.
#[test]
fn postgresql_failover_with_a_multi_host_url() {
    let db = TestDb::new();
    let (secret, _) = seed(&db);
    let up = upstream(&db.url);
    let standby = PgNode::start(up, STANDBY);
    let primary = PgNode::start(up, PRIMARY);
    // The standby first: read-write must skip it.
    let one = via(&db.url, standby.addr);
    let url = one.replacen(
        &standby.addr.to_string(),
        &format!("{},{}", standby.addr, primary.addr),
        1,
    ) + "?target_session_attrs=read-write";
    let server = TestServer::with(Options {
        env: vec![
            ("TOKEND_DATABASE_STATEMENT_TIMEOUT".into(), "1s".into()),
            ("TOKEND_DATABASE_CONNECT_TIMEOUT".into(), "1s".into()),
        ],
        db_url: Some(url),
        ..Options::default()
    });
    let login = || {
        server.post_form(
            "/oauth/token",
            Some(("app", &secret)),
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
    };
    let r = login();
    assert_eq!(r.status, 200, "{}", r.text());
    let bearer = format!("Bearer {}", r.json()["access_token"].as_str().unwrap());
    assert_eq!(server.get_auth("/validate", &bearer).status, 200);

    // The primary goes away; the standby is read-only.
    primary.set(DOWN);
    let (r, took) = timed(login);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert!(took < BOUND, "the login answered after {took:?}");
    for _ in 0..20 {
        assert_eq!(server.get_auth("/validate", &bearer).status, 200);
    }

    // The standby is promoted: logins come back by themselves.
    standby.set(PRIMARY);
    assert!(
        eventually(Duration::from_secs(15), || login().status == 200),
        "logins did not recover after the promotion:\n{}",
        server.log()
    );
    assert_eq!(server.get_auth("/validate", &bearer).status, 200);
}

/// TLS to PostgreSQL (issue #14, item 2): with `sslmode=require` in
/// `database.url`, every connection of the pool is encrypted (the server
/// says so in `pg_stat_ssl`), and logins work through it.
#[test]
fn the_pool_speaks_tls_with_sslmode_require() {
    let db = TestDb::new();
    let (secret, _) = seed(&db);
    let mut admin = db.client();
    let ssl_on: String = admin.query_one("SHOW ssl", &[]).unwrap().get(0);
    if ssl_on != "on" {
        eprintln!(
            "the test PostgreSQL has ssl = off: nothing to check here (see store::pg's tests)"
        );
        return;
    }
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let server = TestServer::with(Options {
        db_url: Some(format!("{}{sep}sslmode=require", db.url)),
        ..Options::default()
    });
    let r = server.post_form(
        "/oauth/token",
        Some(("app", &secret)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rows = admin
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = $1 AND a.application_name = 'tokend'",
            &[&db.name],
        )
        .unwrap();
    assert!(!rows.is_empty(), "no tokend connection to the database");
    assert!(
        rows.iter().all(|r| r.get::<_, bool>(0)),
        "a tokend connection in clear text"
    );
}
