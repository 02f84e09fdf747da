//! The proof of the work budget before authentication (issue #12; the
//! budget itself is stated in [`super`]'s module comment): the slowest
//! requests we could construct for each route an anonymous client reaches,
//! each parsed and handled as the connection loop does, cost under 1 ms of
//! the core's CPU time in an optimised build (see [`budget`] for the
//! unoptimised one `cargo test` makes).
//!
//! CPU time, not wall time: the thread's own clock
//! (`CLOCK_THREAD_CPUTIME_ID`) counts only what this thread ran, so a loaded
//! machine (other tests, other processes on 2 CPUs) does not inflate it; the
//! median of several runs drops a run that an interrupt or a page fault
//! happened to land on.
//!
//! Tests only. Never imports: a store, `net` or `cores`; it drives the
//! handlers through `http`'s parser and [`super::handle`] on a test core.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use crate::config::Config;
use crate::http::{self, form::MAX_FORM_PARAMS, Parsed};
use crate::state::{shared_for_tests, Core};

/// What one request may cost a core before the client is authenticated.
const BUDGET: Duration = Duration::from_millis(1);

/// The budget of an unoptimised build, as a multiple of [`BUDGET`]. The
/// dependencies are optimised even in debug builds (Cargo.toml), tokend is
/// not, and its own byte loops run 10 to 16 times slower there (measured:
/// the `%41` form 1.5 ms against 0.09 ms optimised, the 16 KiB of JSON
/// scopes 0.57 ms against 0.17 ms). 5 ms keeps a third of the budget as
/// headroom for a loaded machine, and is still 70 times below the 346 ms the
/// quadratic scan took in that build.
const UNOPTIMISED_BUDGET: u32 = 5;

/// The budget this build is held to: [`BUDGET`] when optimised
/// (`cargo test --release --lib budget`), [`UNOPTIMISED_BUDGET`] ms in the
/// unoptimised build `cargo test` makes.
fn budget() -> Duration {
    if cfg!(debug_assertions) {
        BUDGET * UNOPTIMISED_BUDGET
    } else {
        BUDGET
    }
}

/// Runs of each request; the median is compared with [`BUDGET`].
const RUNS: usize = 15;

/// CPU time this thread has run.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is available on Linux");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Parses and handles `raw` as `net` does; returns the status and the CPU
/// time it took (parse + handle + the response written into the buffer).
async fn one(core: &Rc<Core>, raw: &[u8], out: &mut Vec<u8>) -> (u16, Duration) {
    out.clear();
    let peer = "127.0.0.1:40000".parse().unwrap();
    let limits = core.limits();
    let start = thread_cpu();
    let status = match http::parse(raw, &limits) {
        Ok(Parsed::Complete(req, len)) => {
            assert_eq!(len, raw.len(), "one whole request");
            super::handle(core, &req, peer, out, &mut super::BurstClock::default()).await;
            std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap()
        }
        Ok(Parsed::Partial) => panic!("a partial request"),
        Err(e) => e.status(),
    };
    (status, thread_cpu() - start)
}

/// The median CPU time of [`RUNS`] runs of `raw` (after one to warm the
/// caches), and its status.
async fn cost(core: &Rc<Core>, raw: &[u8]) -> (u16, Duration) {
    let mut out = Vec::with_capacity(4096);
    let (status, _) = one(core, raw, &mut out).await;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (s, t) = one(core, raw, &mut out).await;
        assert_eq!(s, status, "the same answer every time");
        times.push(t);
    }
    times.sort();
    (status, times[RUNS / 2])
}

fn post(path: &str, content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn form(path: &str, body: &[u8]) -> Vec<u8> {
    post(path, "application/x-www-form-urlencoded", "", body)
}

/// `count` parameters `name_i=value` joined by `&`.
fn params(count: usize, name: impl Fn(usize) -> String, value: &str) -> Vec<u8> {
    (0..count)
        .map(|i| format!("{}={value}", name(i)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// The requests, each with the status it must get: the issue's body, then
/// the slowest we could make of each step an anonymous request reaches.
fn attacks(core: &Core) -> Vec<(&'static str, Vec<u8>, u16)> {
    let max_body = core.limits().max_body;
    let mut v: Vec<(&'static str, Vec<u8>, u16)> = Vec::new();

    // The issue's body: 8,014 distinct short parameters (63 KB), refused at
    // the 65th.
    let issue = params(8014, |i| format!("p{i}"), "1");
    assert!(issue.len() > 60_000 && issue.len() <= max_body);
    v.push((
        "issue body, /oauth/token",
        form("/oauth/token", &issue),
        400,
    ));
    v.push((
        "issue body, /oauth/introspect",
        form("/oauth/introspect", &issue),
        400,
    ));
    v.push((
        "issue body, /oauth/revoke",
        form("/oauth/revoke", &issue),
        400,
    ));
    // The most parts a body can have: empty ones.
    v.push((
        "64 KiB of '&'",
        form("/oauth/token", &vec![b'&'; max_body]),
        400,
    ));

    // Within the cap, the slowest duplicate scan: 64 names of one length
    // (~1,000 bytes), alike but for their last bytes, so every comparison
    // reads the whole name; no client credentials, so 401 after the scan.
    let len = max_body / MAX_FORM_PARAMS - 8;
    let long_names = params(
        MAX_FORM_PARAMS,
        |i| format!("{}{i:02}", "n".repeat(len - 2)),
        "",
    );
    assert!(long_names.len() <= max_body);
    v.push((
        "64 alike 1 KB names, /oauth/token",
        form("/oauth/token", &long_names),
        401,
    ));
    v.push((
        "64 alike 1 KB names, /oauth/introspect",
        form("/oauth/introspect", &long_names),
        401,
    ));
    // The slowest decoding: every byte an escape or a '+'.
    let escapes = "%41".repeat(len / 3);
    v.push((
        "64 values of %41 escapes",
        form(
            "/oauth/token",
            &params(MAX_FORM_PARAMS, |i| format!("v{i}"), &escapes),
        ),
        401,
    ));
    let pluses = "+".repeat(len);
    v.push((
        "64 values of '+'",
        form(
            "/oauth/token",
            &params(MAX_FORM_PARAMS, |i| format!("v{i}"), &pluses),
        ),
        401,
    ));
    // client_secret_post: one SHA-256 over a secret as long as the body.
    let mut secret_post = b"client_id=nobody&client_secret=".to_vec();
    secret_post.resize(max_body, b'x');
    v.push((
        "64 KiB client_secret, /oauth/token",
        form("/oauth/token", &secret_post),
        401,
    ));
    // client_secret_basic: the longest header parse_basic decodes, every
    // byte of it escaped.
    let creds = format!("nobody:{}", "%41".repeat(1000));
    let basic = format!("Authorization: Basic {}\r\n", STANDARD.encode(&creds));
    assert!(basic.len() < http::auth::MAX_BASIC_HEADER_BYTES);
    v.push((
        "4 KiB Basic credentials, /oauth/introspect",
        post(
            "/oauth/introspect",
            "application/x-www-form-urlencoded",
            &basic,
            b"token=x",
        ),
        401,
    ));

    // The largest head: 63 headers filling 8 KiB, a `Connection` list of
    // hundreds of tokens among them.
    let mut head = String::from("GET /healthz HTTP/1.1\r\nConnection: ");
    head.push_str(&"a, ".repeat(40));
    head.push_str("keep-alive\r\n");
    for i in 0..61 {
        head.push_str(&format!("X-Filler-{i:02}: {}\r\n", "v".repeat(100)));
    }
    head.push_str("\r\n");
    assert!(head.len() <= core.limits().max_head);
    v.push(("8 KiB head, 63 headers", head.into_bytes(), 200));

    // Bearer tokens: the longest that fits the head, shaped as a JWT whose
    // header is ~5.9 KB of JSON (decoded and parsed before its `kid` is
    // refused); then a well-formed token with a forged signature (one
    // signature verification: the costliest refusal).
    let header = format!(
        r#"{{"typ":"at+jwt","alg":"EdDSA","kid":"{}"}}"#,
        "k".repeat(5800)
    );
    let huge = format!(
        "GET /validate HTTP/1.1\r\nAuthorization: Bearer {}.e30.AAAA\r\n\r\n",
        URL_SAFE_NO_PAD.encode(header)
    );
    assert!(huge.len() <= core.limits().max_head, "{}", huge.len());
    v.push(("7.8 KB bearer token, /validate", huge.into_bytes(), 401));
    let forged = forged_token(core);
    v.push((
        "forged signature, /validate",
        format!("GET /validate HTTP/1.1\r\nAuthorization: Bearer {forged}\r\n\r\n").into_bytes(),
        401,
    ));
    v.push((
        "forged signature, /users/me",
        format!("GET /users/me HTTP/1.1\r\nAuthorization: Bearer {forged}\r\n\r\n").into_bytes(),
        401,
    ));
    v.push((
        "forged signature, /users/{8 KB name}/disable",
        format!(
            "POST /users/{}/disable HTTP/1.1\r\nAuthorization: Bearer {forged}\r\nContent-Length: 0\r\n\r\n",
            "u".repeat(7000)
        )
        .into_bytes(),
        401,
    ));

    // RP-initiated logout: an `id_token_hint` is verified (one signature)
    // before anything else is looked at; the longest the head holds,
    // shaped as a JWT with a ~5.9 KB header, then a well-formed ID token
    // with a forged signature (the costliest refusal). Without a session
    // cookie nothing reaches Redis. The confirmation form: one HMAC over
    // the longest sealed request taken (16 KiB), refused.
    let hint_header = format!(
        r#"{{"typ":"JWT","alg":"EdDSA","kid":"{}"}}"#,
        "k".repeat(5800)
    );
    let huge_hint = format!(
        "GET /logout?id_token_hint={}.e30.AAAA HTTP/1.1\r\nHost: t\r\n\r\n",
        URL_SAFE_NO_PAD.encode(hint_header)
    );
    assert!(
        huge_hint.len() <= core.limits().max_head,
        "{}",
        huge_hint.len()
    );
    v.push(("7.8 KB id_token_hint, /logout", huge_hint.into_bytes(), 400));
    v.push((
        "forged id_token_hint, /logout",
        format!(
            "GET /logout?id_token_hint={}&post_logout_redirect_uri=https%3A%2F%2Fa.example%2F HTTP/1.1\r\nHost: t\r\n\r\n",
            forged_id_token(core)
        )
        .into_bytes(),
        400,
    ));
    let mut confirmation = b"csrf_token=AAAA&logout_request=".to_vec();
    confirmation.resize(31 + crate::signin::MAX_SEALED_BYTES, b'A');
    v.push((
        "16 KiB sealed confirmation, POST /logout",
        form("/logout", &confirmation),
        400,
    ));
    v.push((
        "64 KiB of '&', POST /logout",
        form("/logout", &vec![b'&'; max_body]),
        400,
    ));

    // Self-registration (on in this core's configuration): the JSON body is
    // parsed before anything else. Over MAX_JSON_BODY_BYTES it is refused
    // unread; at it, the most values it can hold (4,000 one-letter scopes,
    // refused after parsing), the longest string of escapes, the deepest
    // nesting.
    let json_max = super::users::MAX_JSON_BODY_BYTES;
    let scopes = |size: usize| {
        format!(
            r#"{{"username":"a","password":"b","scopes":[{}"a"]}}"#,
            r#""a","#.repeat((size - 60) / 4)
        )
    };
    v.push((
        "64 KiB of JSON scopes, POST /users",
        post(
            "/users",
            "application/json",
            "",
            scopes(max_body).as_bytes(),
        ),
        413,
    ));
    assert!(scopes(json_max).len() <= json_max);
    v.push((
        "16 KiB of JSON scopes, POST /users",
        post(
            "/users",
            "application/json",
            "",
            scopes(json_max).as_bytes(),
        ),
        403,
    ));
    let escaped = format!(
        r#"{{"username":"a","password":"{}"}}"#,
        r"\u0041".repeat((json_max - 40) / 6)
    );
    assert!(escaped.len() <= json_max);
    v.push((
        "16 KiB of JSON escapes, POST /users",
        post("/users", "application/json", "", escaped.as_bytes()),
        400,
    ));
    let deep = format!("{}{}", "[".repeat(json_max / 2), "]".repeat(json_max / 2));
    v.push((
        "16 KiB of JSON nesting, POST /users",
        post("/users", "application/json", "", deep.as_bytes()),
        400,
    ));

    // The sign-in routes (issue #16), which every browser reaches before
    // anyone is signed in. The authorization request at its largest, for
    // the client of this core's table and its registered redirect URI: a
    // 64 KiB form whose `state` fills it (refused: longer than 4 KiB), the
    // longest state and nonce, then a query filling the head with escapes;
    // the last two answered by the sign-in page, one HMAC seal and one
    // template.
    let challenge = URL_SAFE_NO_PAD.encode([7u8; 32]);
    let authz = |state: &str, nonce: &str| {
        format!(
            "response_type=code&client_id={BUDGET_CLIENT}&redirect_uri={}&scope=openid&nonce={nonce}\
             &code_challenge={challenge}&code_challenge_method=S256&state={state}",
            "http%3A%2F%2F127.0.0.1%2Fcb"
        )
    };
    let big_state = "s".repeat(max_body - authz("", "n").len());
    v.push((
        "64 KiB state, POST /authorize",
        form("/authorize", authz(&big_state, "n").as_bytes()),
        303,
    ));
    // The longest state and nonce taken, every byte of them escaped (the
    // nonce's characters two bytes each), made into a page.
    let longest = authz(&"%22".repeat(4096), &"%C3%BC".repeat(512));
    v.push((
        "longest state and nonce, POST /authorize",
        form("/authorize", longest.as_bytes()),
        200,
    ));
    let query = authz(&"%41".repeat(2600), "n");
    let escaped_query = format!("GET /authorize?{query} HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(escaped_query.len() <= core.limits().max_head);
    v.push((
        "8 KB query of escapes, GET /authorize",
        escaped_query.into_bytes(),
        200,
    ));
    // The sign-in form's POST with the largest seal it opens, forged: one
    // HMAC over it, refused before any password is looked at.
    let forged_seal = URL_SAFE_NO_PAD.encode(vec![b'x'; crate::signin::MAX_SEALED_BYTES / 4 * 3]);
    assert!(forged_seal.len() <= crate::signin::MAX_SEALED_BYTES);
    v.push((
        "16 KiB forged seal, POST /login",
        post(
            "/login",
            "application/x-www-form-urlencoded",
            "Cookie: tokend_login=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n",
            format!(
                "request={forged_seal}&csrf_token={}&username=alice&password=p",
                URL_SAFE_NO_PAD.encode([0u8; 32])
            )
            .as_bytes(),
        ),
        400,
    ));
    v.push((
        "forged signature, /userinfo",
        format!("GET /userinfo HTTP/1.1\r\nAuthorization: Bearer {forged}\r\n\r\n").into_bytes(),
        401,
    ));

    // What needs no authentication at all.
    for (name, path) in [
        ("/metrics", "/metrics"),
        ("/.well-known/jwks.json", "/.well-known/jwks.json"),
        (
            "/.well-known/oauth-authorization-server",
            "/.well-known/oauth-authorization-server",
        ),
        (
            "/.well-known/openid-configuration",
            "/.well-known/openid-configuration",
        ),
    ] {
        v.push((
            name,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes(),
            200,
        ));
    }
    v
}

/// The browser app of the core's client table: the sign-in routes need a
/// client and a registered redirect URI to reach their costliest answers.
const BUDGET_CLIENT: &str = "web";

fn budget_client() -> crate::identity::ClientRecord {
    crate::identity::ClientRecord {
        client_id: BUDGET_CLIENT.into(),
        secret_sha256: None,
        grant_types: vec![crate::identity::GrantType::AuthorizationCode],
        scopes: vec!["openid".into()],
        access_ttl: None,
        refresh_ttl: None,
        refresh_max_lifetime: None,
        redirect_uris: vec!["http://127.0.0.1/cb".into()],
        post_logout_redirect_uris: Vec::new(),
    }
}

/// A token of this core's key whose signature is wrong in its last byte.
fn forged_token(core: &Core) -> String {
    let now = crate::clock::unix_now();
    let claims = crate::tokens::AccessClaims {
        iss: core.issuer().to_owned(),
        sub: "u1".into(),
        aud: core.tokens_config().audience.clone(),
        exp: now + 600,
        iat: now,
        jti: crate::tokens::new_jti(),
        client_id: "c".into(),
        scope: "read".into(),
        username: Some("alice".into()),
    };
    let token = crate::tokens::sign_access(&core.keys(), &claims, now).unwrap();
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    *sig.last_mut().unwrap() ^= 1;
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// An ID token of this core's key whose signature is wrong in its last
/// byte.
fn forged_id_token(core: &Core) -> String {
    let now = crate::clock::unix_now();
    let claims = crate::tokens::IdTokenClaims {
        iss: core.issuer().to_owned(),
        sub: "u1".into(),
        aud: "web".into(),
        exp: now + 600,
        iat: now,
        auth_time: now,
        nonce: None,
        at_hash: String::new(),
        azp: "web".into(),
        preferred_username: Some("alice".into()),
    };
    let token = crate::tokens::sign_id_token(&core.keys(), &claims, "at", now).unwrap();
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    *sig.last_mut().unwrap() ^= 1;
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Issue #12: no request an anonymous client can make costs the core more
/// than [`BUDGET`] of CPU time ([`budget`] in an unoptimised build). Prints
/// each request's median for the record (`-- --nocapture`).
#[test]
fn the_slowest_anonymous_requests_cost_under_a_millisecond_of_core_time() {
    let mut config = Config::default();
    config.users.self_registration = true;
    let shared = Arc::new(shared_for_tests(config, 1));
    shared.publish_clients(crate::identity::ClientTable::new([budget_client()]));
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(async move {
            let core = Core::new(0, shared).unwrap();
            let mut over = Vec::new();
            for (name, raw, want) in attacks(&core) {
                let (status, median) = cost(&core, &raw).await;
                eprintln!(
                    "{name:<48} {:>6} bytes  {status}  {:>7.1} µs",
                    raw.len(),
                    median.as_secs_f64() * 1e6
                );
                assert_eq!(status, want, "{name}");
                if median >= budget() {
                    over.push(format!("{name}: {median:?}"));
                }
            }
            assert!(over.is_empty(), "over the {:?} budget: {over:#?}", budget());
        });
}
