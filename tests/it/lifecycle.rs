use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::tokens::{deployment, Deployment, PASSWORD};

fn login_full(d: &Deployment, user: &str) -> (String, String) {
    let r = d.login(user, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    (
        j["access_token"].as_str().unwrap().to_string(),
        j["refresh_token"]
            .as_str()
            .expect("a refresh token")
            .to_string(),
    )
}

fn refresh(d: &Deployment, server: &TestServer, token: &str) -> Response {
    server.post_form(
        "/oauth/token",
        Some(("app", &d.secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
}

fn validate(server: &TestServer, token: &str) -> u16 {
    server
        .get_auth("/validate", &format!("Bearer {token}"))
        .status
}

/// The environment that turns the in-memory revocation mirror on, or
/// nothing: the revocation tests run once with each way of checking.
fn mirror_env(mirror: bool) -> Vec<(&'static str, &'static str)> {
    if mirror {
        vec![("TOKEND_REDIS_REVOCATION_MIRROR", "true")]
    } else {
        Vec::new()
    }
}

/// With the mirror: waits until both cores' mirrors answer.
fn wait_mirror_current(server: &TestServer, mirror: bool) {
    if mirror {
        assert!(
            eventually(Duration::from_secs(5), || metric(
                server,
                "tokend_revocation_mirror_current_cores"
            ) == 2.0),
            "the mirror never became current:\n{}",
            server.log()
        );
    }
}

/// With the mirror: it answered checks (the test exercised it, not only the
/// Redis fallback).
fn assert_mirror_answered(server: &TestServer, mirror: bool) {
    if mirror {
        let n = metric(server, "tokend_revocation_mirror_answers_total");
        assert!(n > 0.0, "the mirror answered no check");
    }
}

/// A second node of the same deployment: same database, same Redis prefix.
fn second_node(d: &Deployment, mirror: bool) -> TestServer {
    // Nodes of one deployment share an issuer (set `tokens.issuer` or
    // `server.public_url` in production); here, the first node's.
    let mut env = vec![(
        "TOKEND_TOKENS_ISSUER".to_string(),
        format!("http://{}", d.server.addr),
    )];
    env.extend(
        mirror_env(mirror)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    TestServer::with(Options {
        env,
        db_url: Some(d.db.url.clone()),
        prefix: Some(d.server.prefix.clone()),
        ..Options::default()
    })
}

#[test]
fn revoke_access_token_on_every_core_and_on_a_second_node() {
    revoke_on_every_core_and_on_a_second_node(false);
}

#[test]
fn revoke_access_token_on_every_core_and_on_a_second_node_with_the_mirror() {
    revoke_on_every_core_and_on_a_second_node(true);
}

fn revoke_on_every_core_and_on_a_second_node(mirror: bool) {
    let d = deployment(&mirror_env(mirror));
    let node2 = second_node(&d, mirror);
    wait_mirror_current(&d.server, mirror);
    wait_mirror_current(&node2, mirror);
    let (access, _) = login_full(&d, "alice");
    // Warm the verified caches of several connections (both cores).
    for _ in 0..8 {
        assert_eq!(validate(&d.server, &access), 200);
        assert_eq!(validate(&node2, &access), 200);
    }
    let r = d.server.post_form(
        "/oauth/revoke",
        Some(("app", &d.secret)),
        &[("token", &access)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    if mirror {
        // The node that took the revoke has it on every core before it
        // answers; another node sees it when its mirror reads the entry
        // (milliseconds; the 5 s deadline is for a loaded 2-CPU machine and
        // only a mirror that never reads it meets it).
        assert_eq!(validate(&d.server, &access), 401);
        assert!(eventually(Duration::from_secs(5), || validate(
            &node2, &access
        ) == 401));
    }
    for _ in 0..8 {
        assert_eq!(validate(&d.server, &access), 401);
        assert_eq!(validate(&node2, &access), 401);
    }
    assert_mirror_answered(&d.server, mirror);
    assert_mirror_answered(&node2, mirror);
    let r = d.server.post_form(
        "/oauth/introspect",
        Some(("app", &d.secret)),
        &[("token", &access)],
    );
    assert_eq!(r.json()["active"], false);
    // Durable copy in PostgreSQL.
    let n: i64 =
        d.db.client()
            .query_one(
                "SELECT count(*) FROM revocations WHERE kind = 'access'",
                &[],
            )
            .unwrap()
            .get(0);
    assert_eq!(n, 1);
    // RFC 7009 §2.2: garbage, unknown and repeated revocations answer 200.
    for t in ["garbage", "a.b.c", access.as_str()] {
        assert_eq!(
            d.server
                .post_form("/oauth/revoke", Some(("app", &d.secret)), &[("token", t)])
                .status,
            200
        );
    }
    assert_eq!(
        d.server
            .post_form("/oauth/revoke", None, &[("token", &access)])
            .status,
        401
    );
}

#[test]
fn a_client_cannot_revoke_another_clients_token() {
    let d = deployment(&[]);
    let r = d.server.post_form(
        "/oauth/token",
        Some(("svc", &d.cc_secret)),
        &[("grant_type", "client_credentials")],
    );
    let svc_token = r.json()["access_token"].as_str().unwrap().to_string();
    let r = d.server.post_form(
        "/oauth/revoke",
        Some(("app", &d.secret)),
        &[("token", &svc_token)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(validate(&d.server, &svc_token), 200);
}

#[test]
fn refresh_rotation_and_reuse_revokes_the_family() {
    let d = deployment(&[]);
    let node2 = second_node(&d, false);
    let (_, rt1) = login_full(&d, "alice");
    assert!(rt1.starts_with("tokend_rt_"));
    let r = refresh(&d, &d.server, &rt1);
    assert_eq!(r.status, 200, "{}", r.text());
    let rt2 = r.json()["refresh_token"].as_str().unwrap().to_string();
    let access2 = r.json()["access_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    assert_eq!(validate(&d.server, &access2), 200);
    // Rotation is seen by the other node at once: rt2 works there.
    let r = refresh(&d, &node2, &rt2);
    assert_eq!(r.status, 200, "{}", r.text());
    let rt3 = r.json()["refresh_token"].as_str().unwrap().to_string();
    // Presenting rt1 again: theft. The whole family is revoked, rt3 too.
    let r = refresh(&d, &d.server, &rt1);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_eq!(refresh(&d, &node2, &rt3).status, 400);
    // Scope may be narrowed, never widened.
    let (_, rt) = login_full(&d, "alice");
    let widen = d.server.post_form(
        "/oauth/token",
        Some(("app", &d.secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("scope", "read tokend:admin"),
        ],
    );
    assert_eq!(widen.json()["error"], "invalid_scope");
    let narrow = d.server.post_form(
        "/oauth/token",
        Some(("app", &d.secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("scope", "read"),
        ],
    );
    assert_eq!(narrow.status, 200, "{}", narrow.text());
    assert_eq!(narrow.json()["scope"], "read");
    // A refresh token is not an access token, and the other way round.
    assert_eq!(validate(&d.server, &rt), 401);
    assert_eq!(refresh(&d, &d.server, &access2).status, 400);
}

#[test]
fn concurrent_refreshes_of_one_token_exactly_one_wins() {
    let d = deployment(&[]);
    let (_, rt) = login_full(&d, "bob");
    let addr = d.server.addr;
    let secret = d.secret.clone();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (rt, secret) = (rt.clone(), secret.clone());
            std::thread::spawn(move || {
                let body = format!("grant_type=refresh_token&refresh_token={rt}");
                let mut c = Conn::new(std::net::TcpStream::connect(addr).unwrap());
                c.send(raw_token_request(&secret, &body).as_bytes());
                c.read_response().unwrap().status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 400),
        "{statuses:?}"
    );
}

#[test]
fn logout_all_voids_every_token_of_the_user() {
    logout_all_voids_every_token(false);
}

#[test]
fn logout_all_voids_every_token_of_the_user_with_the_mirror() {
    logout_all_voids_every_token(true);
}

fn logout_all_voids_every_token(mirror: bool) {
    let d = deployment(&mirror_env(mirror));
    wait_mirror_current(&d.server, mirror);
    let (a1, r1) = login_full(&d, "alice");
    let (a2, _) = login_full(&d, "alice");
    let (bob, _) = login_full(&d, "bob");
    let r = d.server.post_json("/users/me/logout-all", Some(&a1), "");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(validate(&d.server, &a1), 401);
    assert_eq!(validate(&d.server, &a2), 401);
    assert_eq!(refresh(&d, &d.server, &r1).status, 400);
    assert_eq!(validate(&d.server, &bob), 200);
    // A login after the mark (next second) works again.
    std::thread::sleep(Duration::from_millis(1100));
    let (a3, _) = login_full(&d, "alice");
    assert_eq!(validate(&d.server, &a3), 200);
    assert_mirror_answered(&d.server, mirror);
}

#[test]
fn password_change_and_admin_disable_end_sessions() {
    password_change_and_admin_disable(false);
}

#[test]
fn password_change_and_admin_disable_end_sessions_with_the_mirror() {
    password_change_and_admin_disable(true);
}

fn password_change_and_admin_disable(mirror: bool) {
    let d = deployment(&mirror_env(mirror));
    wait_mirror_current(&d.server, mirror);
    let (alice, _) = login_full(&d, "alice");
    let r = d.server.post_json(
        "/users/me/password",
        Some(&alice),
        r#"{"current_password":"wrong one!","new_password":"a brand new password"}"#,
    );
    assert_eq!(r.status, 403);
    let r = d.server.post_json(
        "/users/me/password",
        Some(&alice),
        &format!(r#"{{"current_password":"{PASSWORD}","new_password":"a brand new password"}}"#),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(validate(&d.server, &alice), 401);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(d.login("alice", PASSWORD).status, 400);
    assert_eq!(d.login("alice", "a brand new password").status, 200);

    let admin = d.access_token("admin");
    let (bob, bob_rt) = login_full(&d, "bob");
    let bob_user = d.access_token("bob");
    assert_eq!(
        d.server
            .post_json("/users/bob/disable", Some(&bob_user), "")
            .status,
        403
    );
    assert_eq!(
        d.server
            .post_json("/users/bob/disable", Some(&admin), "")
            .status,
        204
    );
    assert_eq!(validate(&d.server, &bob), 401);
    assert_eq!(refresh(&d, &d.server, &bob_rt).status, 400);
    assert_eq!(d.login("bob", PASSWORD).status, 400);
    assert_eq!(
        d.server
            .post_json("/users/nobody/disable", Some(&admin), "")
            .status,
        404
    );
    assert_mirror_answered(&d.server, mirror);
}

/// A private redis-server a test can stop, start and flush (also used by
/// `nginx`).
pub(crate) struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub(crate) fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = PrivateRedis { port, child: None };
        r.run();
        r
    }

    pub(crate) fn run(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        assert!(eventually(Duration::from_secs(5), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        }));
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn flushall(&self) {
        let target = tokend::redis::RedisTarget::parse(&self.url()).unwrap();
        let mut c = tokend::redis::BlockingRedis::connect(&target, Duration::from_secs(2)).unwrap();
        c.query(&redis::cmd("FLUSHALL")).unwrap();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn redis_down_fails_closed_then_recovers() {
    redis_down_fails_closed(false);
}

#[test]
fn redis_down_fails_closed_then_recovers_with_the_mirror() {
    redis_down_fails_closed(true);
}

fn redis_down_fails_closed(mirror: bool) {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let mut env = mirror_env(mirror);
    env.push(("TOKEND_REDIS_URL", &url));
    let d = deployment(&env);
    wait_mirror_current(&d.server, mirror);
    let (access, _) = login_full(&d, "alice");
    assert_eq!(validate(&d.server, &access), 200);
    assert_mirror_answered(&d.server, mirror);
    redis.stop();
    if mirror {
        // The mirror stops answering as soon as its reader loses Redis (at
        // the latest after redis.mirror_max_lag, 1 s); from then on, 503.
        // The deadline adds 4 s for a loaded 2-CPU machine: what this test
        // must catch is a mirror that keeps answering without Redis at all.
        assert!(
            eventually(Duration::from_secs(5), || validate(&d.server, &access)
                == 503),
            "the mirror kept answering without Redis"
        );
    }
    for _ in 0..6 {
        let r = d.server.get_auth("/validate", &format!("Bearer {access}"));
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.header("retry-after").is_some());
    }
    let r = d.server.post_form(
        "/oauth/introspect",
        Some(("app", &d.secret)),
        &[("token", &access)],
    );
    assert_eq!(r.status, 503);
    assert_eq!(d.server.get("/healthz").status, 200);
    redis.run();
    // The restarted Redis is empty: the seeder re-seeds it, then validation
    // recovers by itself.
    assert!(
        eventually(Duration::from_secs(10), || validate(&d.server, &access)
            == 200),
        "validation did not recover:\n{}",
        d.server.log()
    );
}

#[test]
fn flushall_does_not_bring_a_revoked_token_back() {
    flushall_does_not_bring_it_back(false);
}

#[test]
fn flushall_does_not_bring_a_revoked_token_back_with_the_mirror() {
    flushall_does_not_bring_it_back(true);
}

fn flushall_does_not_bring_it_back(mirror: bool) {
    let redis = PrivateRedis::start();
    let url = redis.url();
    let mut env = mirror_env(mirror);
    env.push(("TOKEND_REDIS_URL", &url));
    let d = deployment(&env);
    wait_mirror_current(&d.server, mirror);
    let (revoked, _) = login_full(&d, "alice");
    let (alive, _) = login_full(&d, "bob");
    assert_eq!(
        d.server
            .post_form(
                "/oauth/revoke",
                Some(("app", &d.secret)),
                &[("token", &revoked)]
            )
            .status,
        200
    );
    assert_eq!(validate(&d.server, &revoked), 401);
    redis.flushall();
    // Never 200 for the revoked token: not in the window before the re-seed
    // (503 there, or 401 from the mirror's memory), nor after it (401).
    let reseeded = || d.server.log().matches("redis: re-seeded").count() >= 2;
    assert!(
        eventually(Duration::from_secs(10), || {
            let s = validate(&d.server, &revoked);
            assert!(s == 401 || s == 503, "revoked token answered {s}");
            reseeded()
        }),
        "never re-seeded:\n{}",
        d.server.log()
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            assert_eq!(validate(&d.server, &revoked), 401);
            validate(&d.server, &alive) == 200
        }),
        "validation did not recover after the re-seed:\n{}",
        d.server.log()
    );
    if mirror {
        // Each core's mirror syncs again from the re-seeded Redis (2 cores:
        // 2 syncs at start, 2 after), answers again, and still refuses the
        // revoked token.
        let syncs = || metric(&d.server, "tokend_revocation_mirror_syncs_total");
        assert!(
            eventually(Duration::from_secs(10), || syncs() >= 4.0),
            "{} syncs:\n{}",
            syncs(),
            d.server.log()
        );
        wait_mirror_current(&d.server, mirror);
        // Within `mirror_max_lag` (1 s) of the revoke the mirrors leave it
        // to Redis (their stream numbers started again below the revoke's);
        // then they answer.
        let before = metric(&d.server, "tokend_revocation_mirror_answers_total");
        assert!(
            eventually(Duration::from_secs(5), || {
                assert_eq!(validate(&d.server, &revoked), 401);
                assert_eq!(validate(&d.server, &alive), 200);
                metric(&d.server, "tokend_revocation_mirror_answers_total") > before
            }),
            "the mirrors never answered again:\n{}",
            d.server.log()
        );
    }
}

#[test]
fn key_rotation_across_two_nodes_rejects_no_token() {
    let env = [("TOKEND_KEYS_RELOAD_INTERVAL", "500ms")];
    let d = deployment(&env);
    let node2 = TestServer::with(Options {
        env: vec![
            (
                "TOKEND_TOKENS_ISSUER".into(),
                format!("http://{}", d.server.addr),
            ),
            ("TOKEND_KEYS_RELOAD_INTERVAL".into(), "500ms".into()),
        ],
        db_url: Some(d.db.url.clone()),
        prefix: Some(d.server.prefix.clone()),
        ..Options::default()
    });
    let kid_of = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    let first = d.access_token("alice");
    // Rotate with a short publish-ahead: the new key is in the JWKS at once
    // and signs 2 s later; both nodes reload every 500 ms.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokend"))
        .args(["keys", "rotate"])
        .env("TOKEND_DATABASE_URL", &d.db.url)
        .env("TOKEND_KEYS_KEK", test_kek())
        .env("TOKEND_KEYS_PUBLISH_AHEAD", "2s")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Sample every 100 ms (the pacing is the test: tokens issued all across
    // the switch) until the new key has signed for 1.5 s. The switch is due
    // about 2.5 s after the rotation; the 20 s deadline is for a loaded
    // machine, and only a key that never signs meets it.
    let mut kids = std::collections::BTreeSet::new();
    let start = std::time::Instant::now();
    let mut switched: Option<Instant> = None;
    while start.elapsed() < Duration::from_secs(20) {
        // Issued by node 1, validated by node 2 and node 1 at once.
        let t = d.access_token("alice");
        kids.insert(kid_of(&t));
        assert_eq!(
            validate(&node2, &t),
            200,
            "node 2 refused a token signed by {}",
            kid_of(&t)
        );
        assert_eq!(validate(&d.server, &t), 200);
        assert_eq!(
            validate(&node2, &first),
            200,
            "the old key stopped verifying"
        );
        if kids.len() == 2
            && switched.get_or_insert_with(Instant::now).elapsed() >= Duration::from_millis(1500)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(kids.len(), 2, "the new key never started signing: {kids:?}");
    let jwks: serde_json::Value =
        serde_json::from_slice(&node2.get("/.well-known/jwks.json").body).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
}

#[test]
fn sighup_reloads_clients_and_log_level_without_dropping_connections() {
    let dir = std::env::temp_dir().join(format!("tokend-hup-{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokend.toml");
    std::fs::write(&file, "[server]\nlog_level = \"info\"\n").unwrap();
    let d = deployment(&[("TOKEND_CONFIG", file.to_str().unwrap())]);
    let mut kept = d.server.conn();
    kept.send(b"GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(kept.read_response().unwrap().status, 200);

    // A client created after start is unknown until a reload…
    let (_, secret) = tokend::identity::clients::create(
        &mut d.db.client(),
        "late",
        &[tokend::identity::GrantType::Password],
        &[],
        false,
    )
    .unwrap();
    let secret = secret.unwrap();
    let login = || {
        d.server.post_form(
            "/oauth/token",
            Some(("late", &secret)),
            &[
                ("grant_type", "password"),
                ("username", "bob"),
                ("password", PASSWORD),
            ],
        )
    };
    assert_eq!(login().status, 401);
    std::fs::write(&file, "[server]\nlog_level = \"debug\"\n").unwrap();
    // SAFETY: kill(2) on our own child process.
    unsafe { libc::kill(d.server.pid() as i32, libc::SIGHUP) };
    // …and known right after SIGHUP.
    assert!(eventually(Duration::from_secs(5), || login().status == 200));
    assert!(eventually(Duration::from_secs(5), || d
        .server
        .log()
        .contains("log level reloaded")));
    // The connection opened before the reload is still served.
    kept.send(b"GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(kept.read_response().unwrap().status, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sets `net.ipv4.tcp_migrate_req` (Linux 5.14+: connections waiting in a
/// closing SO_REUSEPORT listener's queue move to another listener of the
/// group instead of being reset) and puts the old value back on drop.
struct MigrateReq(Option<String>);

impl MigrateReq {
    const PATH: &'static str = "/proc/sys/net/ipv4/tcp_migrate_req";
    fn enable() -> MigrateReq {
        let old = std::fs::read_to_string(Self::PATH).ok();
        if old.is_some() && std::fs::write(Self::PATH, "1").is_ok() {
            MigrateReq(old)
        } else {
            MigrateReq(None)
        }
    }
    fn active(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for MigrateReq {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write(Self::PATH, old.trim());
        }
    }
}

// Needs root (it sets net.ipv4.tcp_migrate_req for its run and restores
// it); elsewhere it says so and passes without testing.
#[test]
fn zero_downtime_restart_loses_no_request() {
    let migrate = MigrateReq::enable();
    if !migrate.active() {
        eprintln!(
            "note: cannot set net.ipv4.tcp_migrate_req (not root or kernel < 5.14); skipping"
        );
        return;
    }
    let d = deployment(&[]);
    let mut old = d.server;
    let addr = old.addr;
    let kernel_before = tcp_counters();
    eprintln!("zero-downtime restart: load on {addr}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counts = std::sync::Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let t0 = Instant::now();
    let mut load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, counts) = (stop.clone(), counts.clone());
            std::thread::spawn(move || {
                let t0 = t0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // One connection per request, as a load balancer's
                    // health checks and many clients do.
                    let result = one_request(addr);
                    if let Err(e) = &result {
                        eprintln!(
                            "zero-downtime restart: a request failed at {:?}: {e}",
                            t0.elapsed()
                        );
                    }
                    let ok = result.is_ok();
                    let mut c = counts.lock().unwrap();
                    if ok {
                        c.0 += 1
                    } else {
                        c.1 += 1
                    }
                }
            })
        })
        .collect();
    // And two keep-alive clients, as a reverse proxy's upstream pool: a
    // connection is used until an answer says `Connection: close` (the old
    // process draining), then the next one is opened, which the kernel gives
    // to either process.
    for _ in 0..2 {
        let (stop, counts) = (stop.clone(), counts.clone());
        load.push(std::thread::spawn(move || {
            let mut conn: Option<Conn> = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let c = conn.get_or_insert_with(|| {
                    let s = std::net::TcpStream::connect(addr).expect("connect");
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    Conn::new(s)
                });
                let answer = std::io::Write::write_all(
                    &mut c.stream,
                    b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
                )
                .ok()
                .and_then(|()| c.read_response());
                let mut n = counts.lock().unwrap();
                match answer {
                    Some(r) if r.status == 200 => {
                        n.0 += 1;
                        if r.header("connection") == Some("close") {
                            conn = None;
                        }
                    }
                    other => {
                        eprintln!(
                            "zero-downtime restart: a keep-alive request failed at {:?}: {:?}",
                            t0.elapsed(),
                            other.map(|r| r.status)
                        );
                        n.1 += 1;
                        conn = None;
                    }
                }
            }
        }));
    }
    // The load runs (a couple of hundred requests) before the restart.
    assert!(
        eventually(Duration::from_secs(10), || counts.lock().unwrap().0 >= 200),
        "the load never started"
    );
    // The new process binds the same address (SO_REUSEPORT) while the old
    // one serves, then the old one drains and exits.
    let new = TestServer::with(Options {
        env: vec![("TOKEND_SERVER_LISTEN".into(), addr.to_string())],
        db_url: Some(d.db.url.clone()),
        prefix: Some(old.prefix.clone()),
        ..Options::default()
    });
    // Both serve: the kernel gives the new process part of the load (a
    // couple of hundred requests) before the old one is stopped.
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &new,
            r#"tokend_requests_total{route="healthz",status_class="2xx"}"#
        ) >= 200.0),
        "the new process never got any of the load\n{}",
        new.log()
    );
    eprintln!(
        "zero-downtime restart: SIGTERM to the old process at {:?}",
        t0.elapsed()
    );
    assert!(old.terminate().success());
    eprintln!(
        "zero-downtime restart: old process exited at {:?}",
        t0.elapsed()
    );
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let (ok, failed) = *counts.lock().unwrap();
    eprintln!("zero-downtime restart: {ok} requests answered, {failed} failed");
    eprintln!(
        "zero-downtime restart: kernel counters during the test: {}",
        tcp_counters_delta(&kernel_before)
    );
    assert!(ok > 100, "too little load to mean anything: {ok}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed across the restart",
        ok + failed
    );
    assert_eq!(new.get("/healthz").status, 200);
}

/// The machine's TcpExt counters that tell where a connection was reset or
/// dropped around a listener's close (for the failure message; other tests
/// running at the same time count in them too).
fn tcp_counters() -> Vec<(String, i64)> {
    const NAMES: [&str; 7] = [
        "TCPMigrateReqSuccess",
        "TCPMigrateReqFailure",
        "ListenOverflows",
        "ListenDrops",
        "TCPReqQFullDrop",
        "TCPAbortOnClose",
        "TCPAbortOnData",
    ];
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut rows = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        return Vec::new();
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(n, _)| NAMES.contains(n))
        .map(|(n, v)| (n.to_string(), v.parse().unwrap_or(0)))
        .collect()
}

fn tcp_counters_delta(before: &[(String, i64)]) -> String {
    tcp_counters()
        .iter()
        .map(|(n, v)| {
            let was = before.iter().find(|(b, _)| b == n).map_or(0, |(_, v)| *v);
            format!("{n} +{}", v - was)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One `GET /healthz` on a new connection, with `Connection: close`; the
/// error says at which step and how it failed.
fn one_request(addr: std::net::SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let local = s.local_addr().map(|a| a.port()).unwrap_or(0);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write (port {local}): {e}"))?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => {
                return Err(format!(
                    "read (port {local}) after {} bytes: {e} ({:?})",
                    got.len(),
                    e.kind()
                ))
            }
        }
    }
    if got.starts_with(b"HTTP/1.1 200 ") {
        Ok(())
    } else {
        Err(format!(
            "port {local}: {} bytes then EOF: {:?}",
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(40)])
        ))
    }
}
