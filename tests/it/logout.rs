//! Issue #16 item 5: RP-initiated logout (OpenID Connect RP-Initiated
//! Logout 1.0) over raw HTTP: `GET`/`POST /logout` with `id_token_hint`,
//! `client_id`, `post_logout_redirect_uri` and `state`, the confirmation
//! page and its form, and the attacks on them: unregistered and look-alike
//! post-logout URIs (an error page, never a redirect), hints that are not
//! ours, a `client_id` that is not the hint's, a hint for another user, a
//! confirmation posted from another site or browser, Redis down. The flow
//! run by the `openidconnect` crate is `oidc.rs`'s.

use tokend::config::Algorithm;
use tokend::tokens::keys::{generate, CoreKeys, KeyEntry, KeyMaterial};
use tokend::tokens::{sign_id_token, IdTokenClaims};

use crate::authorize::{
    assert_cookie_attributes, assert_page, authorize_path, exchange, hidden, issuer, jwt_claims,
    location_params, param, params, pkce, seed_code_clients, set_cookie, start, Browser, SPA_BYE,
    WEB_BYE, WEB_CB,
};
use crate::harness::*;
use crate::lifecycle::PrivateRedis;
use crate::tokens::PASSWORD;

/// A `state` with every kind of character an app may put in it.
const STATE: &str = "st/ä te&x=1+%2F?#";

/// `/logout?…` with `params` encoded.
fn logout_path(params: &[(&str, &str)]) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("/logout?{q}")
}

/// Signs `user` in for `web` in `browser` (which keeps the session) and
/// returns the ID token of the code.
fn id_token(server: &TestServer, browser: &mut Browser, web_secret: &str, user: &str) -> String {
    let (verifier, challenge) = pkce();
    let r = browser.sign_in(
        server,
        &authorize_path(&params("web", WEB_CB, &challenge)),
        user,
        PASSWORD,
    );
    let code = param(&location_params(&r, WEB_CB), "code")
        .unwrap()
        .to_string();
    let r = exchange(server, Some(web_secret), &code, WEB_CB, Some(&verifier));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id_token"].as_str().unwrap().to_string()
}

/// Whether `browser`'s session signs it in: `prompt=none` gets a code, or
/// `login_required`.
fn signed_in(server: &TestServer, browser: &mut Browser) -> bool {
    let (_, challenge) = pkce();
    let mut p = params("web", WEB_CB, &challenge);
    p.push(("prompt", "none"));
    let got = location_params(&browser.get(server, &authorize_path(&p)), WEB_CB);
    if param(&got, "code").is_some() {
        return true;
    }
    assert_eq!(param(&got, "error"), Some("login_required"), "{got:?}");
    false
}

/// A refusal: the `400` page, no redirect, no cookie touched.
fn refused(r: &Response) -> String {
    let html = assert_page(r, 400);
    assert!(html.contains("Sign-out request refused"), "{html}");
    assert!(set_cookie(r, "tokend_session").is_none());
    html
}

/// The session cookie is cleared: no value, `Max-Age=0`, the attributes it
/// was set with.
fn assert_cleared(r: &Response, name: &str, secure: bool) {
    let line = set_cookie(r, name).unwrap_or_else(|| panic!("{name} not cleared: {r:?}"));
    assert!(line.starts_with(&format!("{name}=;")), "{line}");
    assert!(line.contains("Max-Age=0"), "{line}");
    assert_cookie_attributes(line, secure);
}

/// §2, §3: a hint for the signed-in user ends the session at once: `303`
/// to the registered post-logout URI (its own query kept) with `state`
/// unchanged, the cookie cleared; the session is gone in Redis too (the
/// old cookie, replayed, signs nobody in). Without a post-logout URI,
/// "You are signed out". `POST` works as `GET`.
#[test]
fn a_hint_for_the_signed_in_user_ends_the_session() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);

    // GET, with a post-logout URI and state.
    let mut browser = Browser::default();
    let hint = id_token(&server, &mut browser, &web, "alice");
    assert!(signed_in(&server, &mut browser));
    let stolen = browser.clone();
    let r = browser.get(
        &server,
        &logout_path(&[
            ("id_token_hint", &hint),
            ("post_logout_redirect_uri", WEB_BYE),
            ("state", STATE),
        ]),
    );
    let back = location_params(&r, WEB_BYE);
    assert_eq!(back, [("state".to_string(), STATE.to_string())]);
    assert_cleared(&r, "tokend_session", false);
    assert!(browser.cookie("tokend_session").is_none());
    assert!(!signed_in(&server, &mut browser));
    let mut stolen = stolen;
    assert!(
        !signed_in(&server, &mut stolen),
        "the session outlived the logout"
    );

    // POST, the URI with a query of its own, no state.
    let mut browser = Browser::default();
    let hint = id_token(&server, &mut browser, &web, "alice");
    let r = browser.post_form(
        &server,
        "/logout",
        &[
            ("id_token_hint", &hint),
            ("client_id", "web"),
            (
                "post_logout_redirect_uri",
                "https://web.example.com/bye?tenant=a",
            ),
            ("ui_locales", "fr-CA"),
            ("logout_hint", "bob"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some("https://web.example.com/bye?tenant=a")
    );
    assert!(!signed_in(&server, &mut browser));

    // No post-logout URI: the page.
    let mut browser = Browser::default();
    let hint = id_token(&server, &mut browser, &web, "alice");
    let r = browser.get(&server, &logout_path(&[("id_token_hint", &hint)]));
    let html = assert_page(&r, 200);
    assert!(html.contains("You are signed out"), "{html}");
    assert_cleared(&r, "tokend_session", false);
    assert!(!signed_in(&server, &mut browser));

    // Again, with no session left: nothing to end, the same answer.
    let r = browser.get(
        &server,
        &logout_path(&[
            ("id_token_hint", &hint),
            ("post_logout_redirect_uri", WEB_BYE),
            ("state", "s"),
        ]),
    );
    assert_eq!(param(&location_params(&r, WEB_BYE), "state"), Some("s"));
    let r = browser.get(&server, "/logout");
    assert!(assert_page(&r, 200).contains("You are signed out"));
}

/// §3, RFC 9700 §4.1: a post-logout URI that is not registered for the
/// client (look-alikes, another client's, the sign-in redirect URI), or
/// that comes with no client at all, gets an error page, never a redirect,
/// and ends nothing; an unknown `client_id` likewise.
#[test]
fn an_unregistered_post_logout_redirect_uri_gets_an_error_page_never_a_redirect() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);
    let mut browser = Browser::default();
    let hint = id_token(&server, &mut browser, &web, "alice");
    for evil in [
        "https://evil.example/bye",
        "https://web.example.com/bye/",
        "https://web.example.com/bye?next=https://evil.example",
        "https://web.example.com/bye?tenant=b",
        "https://web.example.com/bye#x",
        "https://web.example.com:444/bye",
        "https://web.example.com.evil.example/bye",
        "https://evil.example@web.example.com/bye",
        "HTTPS://WEB.EXAMPLE.COM/bye",
        "http://web.example.com/bye",
        // A sign-in redirect URI is not a post-logout one.
        WEB_CB,
        // Registered for another client.
        SPA_BYE,
    ] {
        for extra in [None, Some(("client_id", "web"))] {
            let mut p = vec![
                ("id_token_hint", hint.as_str()),
                ("post_logout_redirect_uri", evil),
                ("state", "s"),
            ];
            p.extend(extra);
            let html = refused(&browser.get(&server, &logout_path(&p)));
            assert!(html.contains("not registered"), "{evil}: {html}");
            assert!(!html.contains("evil.example"), "{evil}: reflected: {html}");
        }
        // client_id alone names the client just as well.
        let html = refused(&browser.get(
            &server,
            &logout_path(&[("client_id", "web"), ("post_logout_redirect_uri", evil)]),
        ));
        assert!(html.contains("not registered"), "{evil}: {html}");
    }
    // No client named: no redirect, even to a URI some client registered.
    let html = refused(&browser.get(
        &server,
        &logout_path(&[("post_logout_redirect_uri", WEB_BYE), ("state", "s")]),
    ));
    assert!(html.contains("no app"), "{html}");
    // An unknown client.
    let html = refused(&browser.get(
        &server,
        &logout_path(&[
            ("client_id", "<script>alert(1)</script>"),
            ("post_logout_redirect_uri", WEB_BYE),
        ]),
    ));
    assert!(html.contains("unknown client_id"), "{html}");
    assert!(!html.contains("<script>alert"), "{html}");
    // A repeated parameter (the first registered, the second not).
    let r = browser.get(
        &server,
        &format!(
            "{}&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F",
            logout_path(&[
                ("id_token_hint", &hint),
                ("post_logout_redirect_uri", WEB_BYE)
            ])
        ),
    );
    assert!(refused(&r).contains("repeated"));
    assert!(
        signed_in(&server, &mut browser),
        "a refused request ended the session"
    );
}

/// §2: a hint that is not an ID token this server issued is refused with
/// an error page and ends nothing: a forged signature, another issuer
/// (a tokend with another public URL, same keys), a key this server does
/// not have, an access token, `alg: none`, garbage. (An empty
/// `id_token_hint` is no hint: RFC 6749 §3.1, empty parameters are
/// absent.)
#[test]
fn a_hint_that_is_not_ours_is_refused() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);
    let iss = issuer(&server);
    let mut browser = Browser::default();
    let hint = id_token(&server, &mut browser, &web, "alice");

    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (signed, signature) = hint.rsplit_once('.').unwrap();
    let mut sig = b64.decode(signature).unwrap();
    sig[0] ^= 1;
    let forged_signature = format!("{signed}.{}", b64.encode(&sig));
    // Another user's claims under alice's signature.
    let mut claims = jwt_claims(&hint);
    claims["sub"] = "someone-else".into();
    let parts: Vec<&str> = hint.split('.').collect();
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );

    // Another issuer: the same database (so the same keys), another URL.
    let other = start(&db, &[("TOKEND_SERVER_PUBLIC_URL", "http://other.test")]);
    let other_hint = id_token(&other, &mut Browser::default(), &web, "alice");
    assert_eq!(jwt_claims(&other_hint)["iss"], "http://other.test");

    // Our issuer, a key this server never had.
    let key = generate(Algorithm::EdDSA).unwrap();
    let foreign = CoreKeys::from_material(
        &KeyMaterial::from_entries(vec![KeyEntry::from_generated(&key, 0).unwrap()]).unwrap(),
    )
    .unwrap();
    let c = jwt_claims(&hint);
    let foreign_hint = sign_id_token(
        &foreign,
        &IdTokenClaims {
            iss: iss.clone(),
            sub: c["sub"].as_str().unwrap().into(),
            aud: "web".into(),
            exp: c["exp"].as_u64().unwrap(),
            iat: c["iat"].as_u64().unwrap(),
            auth_time: c["auth_time"].as_u64().unwrap(),
            nonce: None,
            at_hash: String::new(),
            azp: "web".into(),
            preferred_username: Some("alice".into()),
        },
        "at",
        c["iat"].as_u64().unwrap(),
    )
    .unwrap();

    // An access token of alice's (typ at+jwt).
    let (verifier, challenge) = pkce();
    let r = browser.get(&server, &authorize_path(&params("web", WEB_CB, &challenge)));
    let code = param(&location_params(&r, WEB_CB), "code")
        .unwrap()
        .to_string();
    let access = exchange(&server, Some(&web), &code, WEB_CB, Some(&verifier)).json()
        ["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let header: serde_json::Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let none = format!(
        "{}.{}.",
        b64.encode(
            serde_json::to_vec(&serde_json::json!({
                "alg": "none", "typ": "JWT", "kid": header["kid"]
            }))
            .unwrap()
        ),
        parts[1]
    );

    for (name, bad, says) in [
        (
            "forged signature",
            forged_signature.as_str(),
            "bad signature",
        ),
        ("claims swapped", swapped.as_str(), "bad signature"),
        ("other issuer", other_hint.as_str(), "another server"),
        (
            "foreign key",
            foreign_hint.as_str(),
            "key this server does not have",
        ),
        ("access token", access.as_str(), "not an ID token"),
        ("alg none", none.as_str(), "not a JWT"),
        ("garbage", "not.a.jwt", "not a JWT"),
    ] {
        let html = refused(&browser.get(
            &server,
            &logout_path(&[
                ("id_token_hint", bad),
                ("post_logout_redirect_uri", WEB_BYE),
                ("state", "s"),
            ]),
        ));
        assert!(html.contains("invalid_request"), "{name}: {html}");
        assert!(html.contains(says), "{name}: {html}");
    }
    assert!(
        signed_in(&server, &mut browser),
        "a refused hint ended the session"
    );
    // The real one still works.
    let r = browser.get(&server, &logout_path(&[("id_token_hint", &hint)]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!signed_in(&server, &mut browser));
}

/// §2: "the OP SHOULD accept ID Tokens when the RP identified by the ID
/// Token's aud claim … has a current session or had a recent session",
/// even expired: an ID token whose `exp` has passed (access lifetime 1 s)
/// is a valid hint.
#[test]
fn an_expired_hint_is_accepted() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[("TOKEND_TOKENS_ACCESS_TTL", "1s")]);
    let mut browser = Browser::default();
    let hint = id_token(&server, &mut browser, &web, "alice");
    let exp = jwt_claims(&hint)["exp"].as_u64().unwrap();
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= exp + 1
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let r = browser.get(
        &server,
        &logout_path(&[
            ("id_token_hint", &hint),
            ("post_logout_redirect_uri", WEB_BYE),
            ("state", STATE),
        ]),
    );
    assert_eq!(param(&location_params(&r, WEB_BYE), "state"), Some(STATE));
    assert!(!signed_in(&server, &mut browser));
}

/// §2: when both are given, `client_id` must be the client the hint was
/// issued to; another (even one that has the URI registered) is refused.
#[test]
fn a_client_id_that_is_not_the_hints_is_refused() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);
    let mut browser = Browser::default();
    let hint = id_token(&server, &mut browser, &web, "alice");
    for (client, uri) in [("spa", SPA_BYE), ("spa", WEB_BYE), ("nobody", WEB_BYE)] {
        let html = refused(&browser.get(
            &server,
            &logout_path(&[
                ("id_token_hint", &hint),
                ("client_id", client),
                ("post_logout_redirect_uri", uri),
            ]),
        ));
        assert!(html.contains("invalid_request"), "{html}");
        assert!(html.contains("its client_id is not the app"), "{html}");
    }
    assert!(signed_in(&server, &mut browser));
    let r = browser.get(
        &server,
        &logout_path(&[
            ("id_token_hint", &hint),
            ("client_id", "web"),
            ("post_logout_redirect_uri", WEB_BYE),
        ]),
    );
    assert_eq!(r.header("location"), Some(WEB_BYE));
    assert!(!signed_in(&server, &mut browser));
}

/// §2: a hint for another user than the session's asks the user (the
/// confirmation page, naming who is signed in), and ends nothing until
/// the form comes back; confirmed, it ends the session and goes back with
/// `state` unchanged.
#[test]
fn a_hint_for_another_user_asks_first() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);
    let bobs = id_token(&server, &mut Browser::default(), &web, "bob");
    let mut browser = Browser::default();
    id_token(&server, &mut browser, &web, "alice");
    let r = browser.get(
        &server,
        &logout_path(&[
            ("id_token_hint", &bobs),
            ("post_logout_redirect_uri", WEB_BYE),
            ("state", STATE),
        ]),
    );
    let html = assert_page(&r, 200);
    assert!(html.contains("Sign out of"), "{html}");
    assert!(html.contains("<strong>alice</strong>"), "{html}");
    assert!(html.contains("another account"), "{html}");
    assert!(html.contains(r#"action="/logout""#), "{html}");
    assert!(set_cookie(&r, "tokend_session").is_none());
    // The form's answer is a redirect to the app: form-action allows it.
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("form-action 'self' https://web.example.com"),
        "{csp}"
    );
    assert!(
        signed_in(&server, &mut browser),
        "ended before confirmation"
    );
    let mut stolen = browser.clone();
    let r = browser.post_form(
        &server,
        "/logout",
        &[
            ("logout_request", &hidden(&html, "logout_request")),
            ("csrf_token", &hidden(&html, "csrf_token")),
        ],
    );
    assert_eq!(param(&location_params(&r, WEB_BYE), "state"), Some(STATE));
    assert_cleared(&r, "tokend_session", false);
    assert!(!signed_in(&server, &mut browser));
    assert!(
        !signed_in(&server, &mut stolen),
        "the session outlived the logout"
    );
}

/// A `state` over 4 KiB (as at `/authorize`): refused with the page, the
/// session kept; the longest taken travels through the confirmation form
/// and comes back byte for byte.
#[test]
fn a_long_state_is_carried_or_refused() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);
    let mut browser = Browser::default();
    id_token(&server, &mut browser, &web, "alice");
    let too_long = "s".repeat(4097);
    let r = browser.post_form(
        &server,
        "/logout",
        &[
            ("client_id", "web"),
            ("post_logout_redirect_uri", WEB_BYE),
            ("state", &too_long),
        ],
    );
    assert!(refused(&r).contains("longer than 4096 bytes"));
    assert!(signed_in(&server, &mut browser));

    let longest: String = (0..4096).map(|i| (b'!' + (i % 90) as u8) as char).collect();
    let r = browser.post_form(
        &server,
        "/logout",
        &[
            ("client_id", "web"),
            ("post_logout_redirect_uri", WEB_BYE),
            ("state", &longest),
        ],
    );
    let html = assert_page(&r, 200);
    let r = browser.post_form(
        &server,
        "/logout",
        &[
            ("logout_request", &hidden(&html, "logout_request")),
            ("csrf_token", &hidden(&html, "csrf_token")),
        ],
    );
    assert_eq!(
        param(&location_params(&r, WEB_BYE), "state"),
        Some(longest.as_str())
    );
    assert!(!signed_in(&server, &mut browser));
}

/// §2 without a hint: the user is asked; the confirmation is a form sealed
/// by tokend (CSRF token) and bound to the browser's session. Posted
/// without its token, with another's, altered, from another browser (the
/// attacker's own page, posted by the victim's), without the session
/// cookie (a cross-site POST: `SameSite=Lax` keeps it off), or as a GET:
/// refused, and the session lives. Then the real one ends it.
#[test]
fn a_confirmation_without_its_csrf_token_or_session_ends_nothing() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);
    let ask = logout_path(&[
        ("client_id", "web"),
        ("post_logout_redirect_uri", WEB_BYE),
        ("state", STATE),
    ]);
    let mut victim = Browser::default();
    id_token(&server, &mut victim, &web, "alice");
    let html = assert_page(&victim.get(&server, &ask), 200);
    assert!(
        html.contains("<strong>web</strong> asks to sign you out"),
        "{html}"
    );
    let request = hidden(&html, "logout_request");
    let csrf = hidden(&html, "csrf_token");

    let mut attacker = Browser::default();
    id_token(&server, &mut attacker, &web, "bob");
    let evil_html = assert_page(&attacker.get(&server, &ask), 200);
    let evil_request = hidden(&evil_html, "logout_request");
    let evil_csrf = hidden(&evil_html, "csrf_token");

    // The sealed request, altered: another redirect URI.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut pending: serde_json::Value =
        serde_json::from_slice(&b64.decode(&request).unwrap()).unwrap();
    pending["post_logout_redirect_uri"] = "https://evil.example/".into();
    let altered = b64.encode(serde_json::to_vec(&pending).unwrap());

    // A sign-in form's seal and token (the same key, another prefix).
    let (_, challenge) = pkce();
    let mut p = params("web", WEB_CB, &challenge);
    p.push(("prompt", "login"));
    let signin = assert_page(&victim.get(&server, &authorize_path(&p)), 200);
    let signin_request = hidden(&signin, "request");
    let signin_csrf = hidden(&signin, "csrf_token");

    // (what, the form, what the page says)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 5] = [
        ("no token", vec![("logout_request", &request)], "CSRF token"),
        (
            "another page's token",
            vec![("logout_request", &request), ("csrf_token", &evil_csrf)],
            "CSRF token",
        ),
        (
            "altered",
            vec![("logout_request", &altered), ("csrf_token", &csrf)],
            "CSRF token",
        ),
        (
            "another browser's form",
            vec![
                ("logout_request", &evil_request),
                ("csrf_token", &evil_csrf),
            ],
            "not opened in this browser",
        ),
        (
            "a sign-in form's seal",
            vec![
                ("logout_request", &signin_request),
                ("csrf_token", &signin_csrf),
            ],
            "CSRF token",
        ),
    ];
    for (name, form, says) in cases {
        let r = victim.post_form(&server, "/logout", &form);
        let html = refused(&r);
        assert!(html.contains(says), "{name}: {html}");
    }
    // Cross-site: the form without the session cookie.
    let mut cookieless = victim.clone();
    cookieless.cookies.retain(|(n, _)| n != "tokend_session");
    let html = refused(&cookieless.post_form(
        &server,
        "/logout",
        &[("logout_request", &request), ("csrf_token", &csrf)],
    ));
    assert!(html.contains("not opened in this browser"), "{html}");
    // The confirmation as a link.
    let html = refused(&victim.get(
        &server,
        &logout_path(&[("logout_request", &request), ("csrf_token", &csrf)]),
    ));
    assert!(html.contains("must be sent by its form"), "{html}");
    assert!(signed_in(&server, &mut victim), "the victim was signed out");
    assert!(signed_in(&server, &mut attacker));

    // The victim's own confirmation.
    let r = victim.post_form(
        &server,
        "/logout",
        &[("logout_request", &request), ("csrf_token", &csrf)],
    );
    assert_eq!(param(&location_params(&r, WEB_BYE), "state"), Some(STATE));
    assert!(!signed_in(&server, &mut victim));
    assert!(
        signed_in(&server, &mut attacker),
        "another browser's session ended"
    );
}

/// With an https public URL the cleared cookie is `__Host-tokend_session`
/// with `Secure`, as it was set (RFC 6265bis §4.1.3.2: a browser ignores a
/// `__Host-` cookie line without it, and would keep the session cookie).
#[test]
fn the_cleared_cookie_has_the_attributes_it_was_set_with() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(
        &db,
        &[("TOKEND_SERVER_PUBLIC_URL", "https://auth.example.com")],
    );
    let mut browser = Browser::default();
    let hint = id_token(&server, &mut browser, &web, "alice");
    let r = browser.get(&server, &logout_path(&[("id_token_hint", &hint)]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_cleared(&r, "__Host-tokend_session", true);
    assert!(set_cookie(&r, "tokend_session").is_none());
    assert!(browser.cookie("__Host-tokend_session").is_none());
}

/// Redis down: the session cannot be read or ended, so the answer is a
/// `503` page with `Retry-After` that says the user is still signed in —
/// never the redirect that would tell the app the logout happened, and the
/// cookie is kept.
#[test]
fn redis_down_fails_closed() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(
        &db,
        &[("TOKEND_REDIS_URL", &url), ("TOKEND_REDIS_TIMEOUT", "1s")],
    );
    let mut browser = Browser::default();
    let hint = id_token(&server, &mut browser, &web, "alice");
    redis.stop();
    for path in [
        logout_path(&[
            ("id_token_hint", &hint),
            ("post_logout_redirect_uri", WEB_BYE),
            ("state", "s"),
        ]),
        logout_path(&[("client_id", "web")]),
    ] {
        let r = browser.get(&server, &path);
        let html = assert_page(&r, 503);
        assert!(html.contains("still signed in"), "{html}");
        assert!(r.header("retry-after").is_some());
        assert!(set_cookie(&r, "tokend_session").is_none());
    }
    assert!(browser.cookie("tokend_session").is_some());
}
