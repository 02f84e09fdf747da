//! Issue #13: a revoked session stays revoked. Each test reproduces one hole
//! found by the security review against a running server, and fails without
//! its fix.

use std::process::Command;
use std::time::Duration;

use tokend::identity::{clients, GrantType};

use crate::harness::*;
use crate::tokens::{deployment, Deployment, PASSWORD};

/// The node's own lifetimes: 3 s for access and refresh tokens, so that a
/// "not before" mark kept for the node's lifetimes only is gone in 3 s.
const SHORT: [(&str, &str); 2] = [
    ("TOKEND_TOKENS_ACCESS_TTL", "3s"),
    ("TOKEND_TOKENS_REFRESH_TTL", "3s"),
];

/// Longer than a mark kept for [`SHORT`] lasts.
const PAST_THE_NODES_LIFETIMES: Duration = Duration::from_secs(5);

/// Client `long`: password and refresh grants, refresh tokens living an
/// hour, added as an operator would (`tokend client add --refresh-ttl 1h
/// --refresh-max-lifetime 2h`), known to the running server (SIGHUP, then
/// waited for). Returns its secret.
fn client_with_a_long_refresh_lifetime(d: &Deployment) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .args([
            "client",
            "add",
            "long",
            "--grant",
            "password",
            "--grant",
            "refresh_token",
            "--scope",
            "read",
            "--scope",
            "write",
            "--refresh-ttl",
            "1h",
            "--refresh-max-lifetime",
            "2h",
            "--json",
        ])
        .env("TOKEND_DATABASE_URL", &d.db.url)
        .env("TOKEND_KEYS_KEK", test_kek())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = added["client_secret"].as_str().unwrap().to_string();
    let (refresh_ttl, max): (Option<i32>, Option<i32>) = {
        let row =
            d.db.client()
                .query_one(
                    "SELECT refresh_ttl_seconds, refresh_max_lifetime_seconds \
                 FROM oauth_clients WHERE client_id = 'long'",
                    &[],
                )
                .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((refresh_ttl, max), (Some(3600), Some(7200)));
    // SAFETY: kill(2) on our own child process.
    unsafe { libc::kill(d.server.pid() as i32, libc::SIGHUP) };
    assert!(
        eventually(Duration::from_secs(10), || login(d, &secret, "bob").0
            == 200),
        "the new client was never loaded\n{}",
        d.server.log()
    );
    secret
}

/// Logs `user` in through client `long`: (status, access token, refresh
/// token).
fn login(d: &Deployment, secret: &str, user: &str) -> (u16, String, String) {
    let r = d.server.post_form(
        "/oauth/token",
        Some(("long", secret)),
        &[
            ("grant_type", "password"),
            ("username", user),
            ("password", PASSWORD),
        ],
    );
    if r.status != 200 {
        return (r.status, String::new(), String::new());
    }
    let j = r.json();
    let field = |name: &str| j[name].as_str().unwrap_or_default().to_string();
    (r.status, field("access_token"), field("refresh_token"))
}

/// Refreshes through client `long`: the status and the body.
fn refresh(d: &Deployment, secret: &str, refresh_token: &str) -> Response {
    d.server.post_form(
        "/oauth/token",
        Some(("long", secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
}

/// Asserts that `refresh_token` no longer refreshes, once the node's own
/// lifetimes are over (a mark kept only for those would be gone).
fn stays_void(d: &Deployment, secret: &str, refresh_token: &str, what: &str) {
    std::thread::sleep(PAST_THE_NODES_LIFETIMES);
    let r = refresh(d, secret, refresh_token);
    assert_eq!(
        (r.status, r.json()["error"].as_str().map(String::from)),
        (400, Some("invalid_grant".to_string())),
        "{what}: a refresh token issued before it refreshed {} s later: {}",
        PAST_THE_NODES_LIFETIMES.as_secs(),
        r.text()
    );
}

/// Issue #13, finding 1, as reproduced: with access and refresh lifetimes
/// of 3 s on the node and a client whose refresh tokens live an hour,
/// logout-all, wait 5 s, and the old refresh token gave a new access token.
#[test]
fn logout_all_voids_refresh_tokens_of_a_client_with_a_longer_refresh_lifetime() {
    let d = deployment(&SHORT);
    let secret = client_with_a_long_refresh_lifetime(&d);
    let (status, access, refresh_token) = login(&d, &secret, "alice");
    assert_eq!(status, 200);
    let r = d
        .server
        .post_json("/users/me/logout-all", Some(&access), "");
    assert_eq!(r.status, 204, "{}", r.text());
    stays_void(&d, &secret, &refresh_token, "logout-all");
}

/// The same through the command line's `tokend user disable`, which writes
/// the mark to Redis itself.
#[test]
fn disable_from_the_command_line_voids_refresh_tokens_of_a_client_with_a_longer_refresh_lifetime() {
    let d = deployment(&SHORT);
    let secret = client_with_a_long_refresh_lifetime(&d);
    let (status, _, refresh_token) = login(&d, &secret, "bob");
    assert_eq!(status, 200);
    let out = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .args(["user", "disable", "bob"])
        .env("TOKEND_DATABASE_URL", &d.db.url)
        .env("TOKEND_REDIS_URL", redis_url())
        .env("TOKEND_REDIS_PREFIX", &d.server.prefix)
        .env("TOKEND_KEYS_KEK", test_kek())
        .envs(SHORT)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stays_void(&d, &secret, &refresh_token, "tokend user disable");
}

/// The same after a re-seed: Redis lost the mark and the `seeded` marker
/// (a restart without persistence does this to every key), and the mark
/// re-applied from PostgreSQL must last as long as when it was written.
#[test]
fn a_reseeded_mark_voids_refresh_tokens_of_a_client_with_a_longer_refresh_lifetime() {
    let d = deployment(&SHORT);
    let secret = client_with_a_long_refresh_lifetime(&d);
    let (status, access, refresh_token) = login(&d, &secret, "alice");
    assert_eq!(status, 200);
    let r = d
        .server
        .post_json("/users/me/logout-all", Some(&access), "");
    assert_eq!(r.status, 204, "{}", r.text());
    // The mark and the marker go; the refresh records stay.
    let target = tokend::redis::RedisTarget::parse(&redis_url()).unwrap();
    let mut redis = tokend::redis::BlockingRedis::connect(&target, Duration::from_secs(2)).unwrap();
    let sub: String =
        d.db.client()
            .query_one("SELECT id::text FROM users WHERE username = 'alice'", &[])
            .unwrap()
            .get(0);
    let prefix = &d.server.prefix;
    let deleted = redis
        .query(
            redis::cmd("DEL")
                .arg(format!("{prefix}nbf:{sub}"))
                .arg(format!("{prefix}seeded")),
        )
        .unwrap();
    assert_eq!(deleted.as_int(), Some(2), "the mark and the marker");
    // The node notices within a second or two and re-seeds.
    assert!(
        eventually(Duration::from_secs(10), || {
            let seeded = redis
                .query(redis::cmd("EXISTS").arg(format!("{prefix}seeded")))
                .unwrap();
            seeded.as_int() == Some(1)
        }),
        "the node never re-seeded\n{}",
        d.server.log()
    );
    stays_void(&d, &secret, &refresh_token, "a re-seeded logout-all");
}

/// A password login through client `app`, with `extra` header lines (each
/// ending in CRLF).
fn login_with(d: &Deployment, user: &str, password: &str, extra: &str) -> Response {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "password"),
            ("username", user),
            ("password", password),
        ])
        .finish();
    let request = raw_token_request(&d.secret, &body).replacen("\r\n", &format!("\r\n{extra}"), 1);
    let mut c = d.server.conn();
    c.send(request.as_bytes());
    c.read_response().expect("an answer")
}

/// A wrong-password login: the status.
fn wrong_login(d: &Deployment, user: &str, extra: &str) -> u16 {
    login_with(d, user, "not the password", extra).status
}

/// Issue #13, finding 2: the limiter read the counters, ran argon2, then
/// counted, so concurrent wrong passwords all passed the check. Fifty at
/// once for one user, with a limit of 5: five are verified (400), the
/// others refused before argon2 (429).
#[test]
fn fifty_concurrent_wrong_passwords_get_no_more_argon2_runs_than_the_limit() {
    let d = deployment(&[
        ("TOKEND_LIMITS_LOGIN_FAILURES_PER_USER", "5"),
        ("TOKEND_LIMITS_LOGIN_FAILURES_PER_IP", "1000"),
    ]);
    let argon2_runs = |d: &Deployment| metric(&d.server, "tokend_argon2_seconds_count");
    let before = argon2_runs(&d);
    let start = std::sync::Barrier::new(50);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..50)
            .map(|_| {
                s.spawn(|| {
                    // Connected first, so that the fifty requests leave together.
                    let body = "grant_type=password&username=alice&password=not+the+password";
                    let mut c = d.server.conn();
                    start.wait();
                    c.send(raw_token_request(&d.secret, body).as_bytes());
                    c.read_response().expect("an answer").status
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let count = |code: u16| statuses.iter().filter(|&&s| s == code).count();
    let runs = argon2_runs(&d) - before;
    eprintln!(
        "limiter figures: 50 concurrent wrong passwords, limit 5: {} × 400, {} × 429, \
         {runs} argon2 verifications",
        count(400),
        count(429)
    );
    assert_eq!((count(400), count(429)), (5, 45), "{statuses:?}");
    assert_eq!(
        runs, 5.0,
        "argon2 verifications for 50 attempts with a limit of 5"
    );
    // The right password is refused too until the window ends.
    assert_eq!(d.login("alice", PASSWORD).status, 429);
}

/// Issue #13, finding 3: `current_password` of a password change is a
/// guess, limited like a login's (the same counter: guesses through login
/// and through the password change add up).
#[test]
fn password_change_guesses_count_against_the_login_limit() {
    let d = deployment(&[
        ("TOKEND_LIMITS_LOGIN_FAILURES_PER_USER", "3"),
        ("TOKEND_LIMITS_LOGIN_FAILURES_PER_IP", "1000"),
    ]);
    let token = d.access_token("alice");
    let change = |current: &str| {
        d.server
            .post_json(
                "/users/me/password",
                Some(&token),
                &format!(
                    r#"{{"current_password":"{current}","new_password":"a brand new password"}}"#
                ),
            )
            .status
    };
    assert_eq!(wrong_login(&d, "alice", ""), 400);
    assert_eq!(change("guess one"), 403);
    assert_eq!(change("guess two"), 403);
    // The limit (3) is reached: refused before argon2, the right one too.
    let r = d.server.post_json(
        "/users/me/password",
        Some(&token),
        r#"{"current_password":"guess three","new_password":"a brand new password"}"#,
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert_eq!(change(PASSWORD), 429);
    assert_eq!(d.login("alice", PASSWORD).status, 429);
    // Another user is not affected.
    assert_eq!(d.login("bob", PASSWORD).status, 200);
}

/// Issue #13, finding 2: behind a reverse proxy every login came from the
/// proxy's address, so one attacker's failures locked every user out. With
/// `server.trusted_proxies`, the address is the client's from
/// `X-Forwarded-For`; a client that is not a trusted proxy cannot set it.
#[test]
fn behind_a_trusted_proxy_the_address_limit_counts_each_client() {
    let d = deployment(&[
        ("TOKEND_LIMITS_LOGIN_FAILURES_PER_USER", "1000"),
        ("TOKEND_LIMITS_LOGIN_FAILURES_PER_IP", "3"),
        ("TOKEND_SERVER_TRUSTED_PROXIES", "127.0.0.1, ::1"),
    ]);
    let attacker = "X-Forwarded-For: 203.0.113.66\r\n";
    for user in ["alice", "bob", "admin"] {
        assert_eq!(wrong_login(&d, user, attacker), 400);
    }
    assert_eq!(wrong_login(&d, "alice", attacker), 429);
    // The attacker's claims further left are never read: the proxy appends
    // what it saw.
    assert_eq!(
        wrong_login(
            &d,
            "alice",
            "X-Forwarded-For: 198.51.100.1, 203.0.113.66\r\n"
        ),
        429
    );
    // Every other client behind the proxy still logs in.
    let r = login_with(&d, "bob", PASSWORD, "X-Forwarded-For: 198.51.100.7\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        wrong_login(&d, "bob", "X-Forwarded-For: 198.51.100.8\r\n"),
        400
    );
}

/// Without `server.trusted_proxies` the header is anyone's to write and is
/// ignored: the TCP peer's address is counted.
#[test]
fn without_trusted_proxies_a_forwarded_address_is_ignored() {
    let d = deployment(&[
        ("TOKEND_LIMITS_LOGIN_FAILURES_PER_USER", "1000"),
        ("TOKEND_LIMITS_LOGIN_FAILURES_PER_IP", "3"),
    ]);
    for i in 0..3 {
        let spoofed = format!("X-Forwarded-For: 203.0.113.{i}\r\n");
        assert_eq!(wrong_login(&d, "alice", &spoofed), 400);
    }
    assert_eq!(
        wrong_login(&d, "alice", "X-Forwarded-For: 203.0.113.99\r\n"),
        429
    );
}

/// Issue #13, finding 7: introspection took public clients (no secret, so
/// anyone who knows the client id), although the metadata says otherwise.
#[test]
fn a_public_client_may_not_introspect() {
    let d = deployment(&[]);
    clients::create(
        &mut d.db.client(),
        "spa",
        &[GrantType::Password, GrantType::RefreshToken],
        &["read".to_string()],
        true,
    )
    .unwrap();
    // SAFETY: kill(2) on our own child process.
    unsafe { libc::kill(d.server.pid() as i32, libc::SIGHUP) };
    let login = || {
        d.server.post_form(
            "/oauth/token",
            None,
            &[
                ("grant_type", "password"),
                ("client_id", "spa"),
                ("username", "bob"),
                ("password", PASSWORD),
            ],
        )
    };
    assert!(
        eventually(Duration::from_secs(10), || login().status == 200),
        "the public client was never loaded"
    );
    let token = d.access_token("alice");
    let r = d.server.post_form(
        "/oauth/introspect",
        None,
        &[("client_id", "spa"), ("token", &token)],
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_client");
    // A confidential client still may.
    let r = d.server.post_form(
        "/oauth/introspect",
        Some(("app", &d.secret)),
        &[("token", &token)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["active"], true);
}

/// Issue #13, finding 4: PostgreSQL and Redis could drift apart with nothing
/// to reconcile them. A logout-all and a revocation that reached PostgreSQL
/// but not Redis (the Redis write failed after the commit; or a failover to
/// a replica that had not received it, the `seeded` marker kept) are written
/// back within `redis.reconcile_interval`, with and without the mirror.
#[test]
fn revocations_that_reached_only_postgresql_are_written_back_to_redis() {
    for mirror in [false, true] {
        let d = deployment(&[
            ("TOKEND_REDIS_RECONCILE_INTERVAL", "1s"),
            (
                "TOKEND_REDIS_REVOCATION_MIRROR",
                if mirror { "true" } else { "false" },
            ),
        ]);
        let alice = d.access_token("alice");
        let bob = d.access_token("bob");
        let validate = |t: &str| {
            d.server
                .get_auth("/validate", &format!("Bearer {t}"))
                .status
        };
        assert_eq!(validate(&alice), 200);
        assert_eq!(validate(&bob), 200);
        let mut db = d.db.client();
        // alice's logout-all, and the revocation of bob's token, committed
        // in PostgreSQL only.
        db.execute(
            "UPDATE users SET not_before = now() WHERE username = 'alice'",
            &[],
        )
        .unwrap();
        let claims = |t: &str| -> serde_json::Value {
            use base64::Engine;
            let payload = t.split('.').nth(1).unwrap();
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .unwrap(),
            )
            .unwrap()
        };
        let jti = claims(&bob)["jti"].as_str().unwrap().to_string();
        db.execute(
            "INSERT INTO revocations (token_id, kind, expires_at) \
             VALUES ($1, 'access', now() + interval '15 minutes')",
            &[&jti],
        )
        .unwrap();
        // Written back within the interval (1 s) and the seeder's tick.
        let start = std::time::Instant::now();
        assert!(
            eventually(Duration::from_secs(10), || validate(&alice) == 401
                && validate(&bob) == 401),
            "mirror {mirror}: PostgreSQL's revocations never reached Redis: alice {}, bob {}\n{}",
            validate(&alice),
            validate(&bob),
            d.server.log()
        );
        eprintln!(
            "reconcile figures: mirror {mirror}: both revocations in force {:?} after \
             their PostgreSQL commit (interval 1 s)",
            start.elapsed()
        );
        assert!(
            d.server
                .log()
                .contains("reconciliation: Redis lacked revocations"),
            "the repair is logged"
        );
        // Others are untouched.
        assert_eq!(validate(&d.access_token("admin")), 200);
    }
}

/// Issue #13, finding 6: revocation writes shared the one blocking queue
/// with anonymous logins, so a login flood made revocation answer 503
/// exactly when it was needed. With one login thread, a queue of two and a
/// flood of slow logins keeping both full, revocations, logouts-all and a
/// disable are all done at once.
#[test]
fn revocations_are_not_held_up_by_a_login_flood() {
    let d = deployment(&[
        ("TOKEND_LIMITS_BLOCKING_THREADS", "1"),
        ("TOKEND_LIMITS_BLOCKING_QUEUE", "2"),
        ("TOKEND_PASSWORDS_MEMORY_KIB", "19456"),
        ("TOKEND_PASSWORDS_ITERATIONS", "4"),
        ("TOKEND_LIMITS_LOGIN_FAILURES_PER_USER", "1000000"),
        ("TOKEND_LIMITS_LOGIN_FAILURES_PER_IP", "1000000"),
    ]);
    // Tokens to revoke, taken before the flood (bob's hash is cheap).
    let tokens: Vec<String> = (0..3).map(|_| d.access_token("bob")).collect();
    let alice = d.access_token("alice");
    let admin = d.access_token("admin");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let busy = std::sync::atomic::AtomicU64::new(0);
    /// Stops the flood when dropped, also when an assertion fails (the scope
    /// then waits for the flood's threads).
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let _stop_flood = StopOnDrop(&stop);
        for i in 0..8 {
            let (d, stop, busy) = (&d, &stop, &busy);
            s.spawn(move || {
                // Unknown users: a full argon2 run each, at the server's cost.
                let body = format!("grant_type=password&username=flood{i}&password=x");
                let request = raw_token_request(&d.secret, &body);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut c = d.server.conn();
                    c.send(request.as_bytes());
                    if c.read_response().map(|r| r.status) == Some(503) {
                        busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
        // The flood has filled the queue: logins are being refused.
        assert!(
            eventually(Duration::from_secs(10), || busy
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 20),
            "the login flood never filled the queue"
        );
        let mut slowest = Duration::ZERO;
        let mut timed = |what: &str, f: &dyn Fn() -> Response, want: u16| {
            let start = std::time::Instant::now();
            let r = f();
            slowest = slowest.max(start.elapsed());
            assert_eq!(
                r.status,
                want,
                "{what} during the login flood: {}",
                r.text()
            );
        };
        for t in &tokens {
            timed(
                "a revocation",
                &|| {
                    d.server
                        .post_form("/oauth/revoke", Some(("app", &d.secret)), &[("token", t)])
                },
                200,
            );
        }
        timed(
            "a logout-all",
            &|| d.server.post_json("/users/me/logout-all", Some(&alice), ""),
            204,
        );
        timed(
            "a disable",
            &|| d.server.post_json("/users/bob/disable", Some(&admin), ""),
            204,
        );
        let refused = busy.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "flood figures: 3 revocations, a logout-all and a disable during a login flood \
             ({refused} logins refused with 503 so far): slowest {slowest:?}"
        );
        // What shows that these writes do not wait in the login queue is
        // their status: behind the flood they were refused with 503 at once
        // (a queue of two, always full). The time bound only catches one that
        // hangs; it is generous because eight flooding threads share this
        // machine's CPUs with tokend (a clean Debian 12 run of
        // scripts/test.sh, on a 2-CPU machine busy with builds, once took
        // 2.03 s for the slowest of the five).
        assert!(slowest < Duration::from_secs(10), "{slowest:?}");
    });
    let validate = |t: &str| {
        d.server
            .get_auth("/validate", &format!("Bearer {t}"))
            .status
    };
    for t in &tokens {
        assert_eq!(validate(t), 401);
    }
    assert_eq!(validate(&alice), 401);
}

/// Issue #13, finding 7: a refresh family had no absolute lifetime (its TTL
/// slid on every rotation). With `tokens.refresh_max_lifetime = 3s` a family
/// rotated every second ends three seconds after its login.
#[test]
fn a_refresh_family_ends_at_its_absolute_lifetime() {
    let d = deployment(&[("TOKEND_TOKENS_REFRESH_MAX_LIFETIME", "3s")]);
    let r = d.login("alice", PASSWORD);
    assert_eq!(r.status, 200);
    let login = std::time::Instant::now();
    let mut token = r.json()["refresh_token"].as_str().unwrap().to_string();
    let refresh = |t: &str| {
        d.server.post_form(
            "/oauth/token",
            Some(("app", &d.secret)),
            &[("grant_type", "refresh_token"), ("refresh_token", t)],
        )
    };
    let mut rotations = 0;
    while login.elapsed() < Duration::from_millis(1500) {
        let r = refresh(&token);
        assert_eq!(r.status, 200, "{}", r.text());
        token = r.json()["refresh_token"].as_str().unwrap().to_string();
        rotations += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(4).saturating_sub(login.elapsed()));
    let r = refresh(&token);
    assert_eq!(
        (r.status, r.json()["error"].as_str().map(String::from)),
        (400, Some("invalid_grant".to_string())),
        "after {rotations} rotations, 4 s after the login: {}",
        r.text()
    );
}

/// Issue #13, finding 5: refresh records were plain hashes, so anyone who
/// can write to Redis could mint one with `tokend:admin` scope and refresh it
/// into an admin access token. A record written without the KEK is refused
/// (`invalid_grant`), logged as tampering, and its family revoked.
#[test]
fn a_forged_refresh_record_is_refused() {
    let d = deployment(&[]);
    let r = d.login("alice", PASSWORD);
    assert_eq!(r.status, 200);
    let genuine = r.json()["refresh_token"].as_str().unwrap().to_string();
    let target = tokend::redis::RedisTarget::parse(&redis_url()).unwrap();
    let mut redis = tokend::redis::BlockingRedis::connect(&target, Duration::from_secs(2)).unwrap();
    let prefix = &d.server.prefix;
    let record_key = |t: &str| format!("{prefix}rt:{}", tokend::refresh::token_hash_hex(t));
    let field = |redis: &mut tokend::redis::BlockingRedis, name: &str| -> Option<String> {
        redis
            .query(redis::cmd("HGET").arg(record_key(&genuine)).arg(name))
            .unwrap()
            .as_str()
            .map(String::from)
    };
    // A record for a token of the attacker's choosing: alice's family, user
    // and client, her genuine tag copied, and the admin scope.
    let forged = format!("tokend_rt_{}", &random_suffix().repeat(4)[..43]);
    let mut hset = redis::cmd("HSET");
    hset.arg(record_key(&forged));
    for name in ["fam", "sub", "usr", "cid", "iat", "fst"] {
        let value = field(&mut redis, name).unwrap_or_else(|| panic!("{name} of the record"));
        hset.arg(name).arg(value);
    }
    if let Some(tag) = field(&mut redis, "mac") {
        hset.arg("mac").arg(tag);
    }
    hset.arg("scp").arg("read write tokend:admin");
    redis.query(&hset).unwrap();
    redis
        .query(redis::cmd("EXPIRE").arg(record_key(&forged)).arg(3600))
        .unwrap();
    let refresh = |t: &str| {
        d.server.post_form(
            "/oauth/token",
            Some(("app", &d.secret)),
            &[("grant_type", "refresh_token"), ("refresh_token", t)],
        )
    };
    let r = refresh(&forged);
    assert_eq!(
        (r.status, r.json()["error"].as_str().map(String::from)),
        (400, Some("invalid_grant".to_string())),
        "a forged record refreshed: {}",
        r.text()
    );
    assert!(
        eventually(Duration::from_secs(5), || d
            .server
            .log()
            .contains("failed its integrity check")),
        "the tampering was not logged"
    );
    // Its family is revoked: alice logs in again.
    assert_eq!(refresh(&genuine).status, 400);
    let r = d.login("alice", PASSWORD);
    let fresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(refresh(&fresh).status, 200);
}
