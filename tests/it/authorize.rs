//! Issue #16: the authorization code flow over raw HTTP: `GET /authorize`
//! (RFC 6749 §4.1.1, RFC 7636, RFC 9207, RFC 9700 §2.1), the sign-in page
//! and its form (`POST /login`), and the attacks on them: unregistered and
//! look-alike redirect URIs (§4.1.2.1: an error page, never a redirect),
//! `plain` PKCE, a missing or wrong CSRF token, a replayed form.

use sha2::{Digest, Sha256};
use tokend::identity::{clients, GrantType, NewClient};

use crate::harness::*;
use crate::tokens::{seed, PASSWORD};

pub const WEB_CB: &str = "https://web.example.com/cb";
pub const SPA_CB: &str = "com.example.app:/cb";
/// `web`'s post-logout redirect URI (RP-Initiated Logout 1.0 §3); the
/// second one it has carries a query.
pub const WEB_BYE: &str = "https://web.example.com/bye";
/// `spa`'s post-logout redirect URI.
pub const SPA_BYE: &str = "com.example.app:/bye";

/// The users and clients of [`crate::tokens::deployment`], plus `web`
/// (confidential: authorization_code, refresh_token; openid read write;
/// two redirect URIs, one with a query; post-logout redirect URIs
/// [`WEB_BYE`] and the same with `?tenant=a`) and `spa` (public:
/// authorization_code, refresh_token; openid read; [`SPA_BYE`]). Returns
/// `web`'s secret.
pub fn seed_code_clients(db: &TestDb) -> String {
    seed(db);
    let mut c = db.client();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (_, web) = clients::create_client(
        &mut c,
        &NewClient {
            client_id: "web",
            grants: &[GrantType::AuthorizationCode, GrantType::RefreshToken],
            scopes: &s(&["openid", "read", "write"]),
            redirect_uris: &s(&[WEB_CB, "https://web.example.com/cb2?tenant=a"]),
            post_logout_redirect_uris: &s(&[WEB_BYE, "https://web.example.com/bye?tenant=a"]),
            ..NewClient::default()
        },
    )
    .unwrap();
    clients::create_client(
        &mut c,
        &NewClient {
            client_id: "spa",
            grants: &[GrantType::AuthorizationCode, GrantType::RefreshToken],
            scopes: &s(&["openid", "read"]),
            public: true,
            redirect_uris: &s(&[SPA_CB]),
            post_logout_redirect_uris: &s(&[SPA_BYE]),
        },
    )
    .unwrap();
    web.unwrap()
}

pub fn start(db: &TestDb, env: &[(&str, &str)]) -> TestServer {
    TestServer::with(Options {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        db_url: Some(db.url.clone()),
        cores: 1,
        ..Options::default()
    })
}

/// A PKCE pair (RFC 7636 §4.1, §4.2): a random verifier and its S256
/// challenge.
pub fn pkce() -> (String, String) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(rand::random::<[u8; 32]>());
    let challenge = b64.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// `/authorize?…` with `params` encoded.
pub fn authorize_path(params: &[(&str, &str)]) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("/authorize?{q}")
}

/// The usual parameters of `client`, `redirect_uri` and `challenge`.
pub fn params<'a>(
    client: &'a str,
    redirect_uri: &'a str,
    challenge: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", redirect_uri),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("scope", "openid read"),
        ("state", "st/ä te&x=1"),
        ("nonce", "n-0S6_WzA2Mj"),
    ]
}

/// The value of the hidden input `name` of a page.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_string()
}

/// The query parameters of a redirect's `Location`, which must start with
/// `base` followed by `?` or `&`.
pub fn location_params(r: &Response, base: &str) -> Vec<(String, String)> {
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let loc = r.header("location").expect("a Location").to_string();
    let rest = loc
        .strip_prefix(base)
        .unwrap_or_else(|| panic!("{loc} does not start with {base}"));
    assert!(rest.starts_with('?') || rest.starts_with('&'), "{loc}");
    form_urlencoded::parse(&rest.as_bytes()[1..])
        .into_owned()
        .collect()
}

pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The issuer the server puts in `iss` (its public URL).
pub fn issuer(server: &TestServer) -> String {
    server.get("/.well-known/oauth-authorization-server").json()["issuer"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Asserts an HTML page with the sign-in headers and no redirect.
pub fn assert_page(r: &Response, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("location"), None);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").unwrap();
    for part in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    r.text()
}

/// A browser over raw HTTP: sends its cookies, keeps those the server
/// sets (`Max-Age=0` removes one).
#[derive(Debug, Default, Clone)]
pub struct Browser {
    pub cookies: Vec<(String, String)>,
}

impl Browser {
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.cookies.retain(|(n, _)| n != name);
        self.cookies.push((name.to_string(), value.to_string()));
    }

    fn header(&self) -> String {
        if self.cookies.is_empty() {
            return String::new();
        }
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        format!("Cookie: {}\r\n", pairs.join("; "))
    }

    fn keep(&mut self, r: &Response) {
        for (name, value) in &r.headers {
            if !name.eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            let pair = value.split(';').next().unwrap();
            let (n, v) = pair.split_once('=').unwrap();
            if value.contains("Max-Age=0") {
                self.cookies.retain(|(c, _)| c != n);
            } else {
                self.set(n, v);
            }
        }
    }

    pub fn get(&mut self, server: &TestServer, path: &str) -> Response {
        let r = server.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\n{}Connection: close\r\n\r\n",
            self.header()
        ));
        self.keep(&r);
        r
    }

    pub fn post_form(
        &mut self,
        server: &TestServer,
        path: &str,
        form: &[(&str, &str)],
    ) -> Response {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let r = server.request(&format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\n{}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.header(),
            body.len()
        ));
        self.keep(&r);
        r
    }

    /// Signs in on the page of `authorize` with `username`/`password`;
    /// returns the answer to the form.
    pub fn sign_in(
        &mut self,
        server: &TestServer,
        authorize: &str,
        username: &str,
        password: &str,
    ) -> Response {
        let page = self.get(server, authorize);
        assert_eq!(page.status, 200, "{}", page.text());
        let html = page.text();
        self.post_form(
            server,
            "/login",
            &[
                ("request", &hidden(&html, "request")),
                ("csrf_token", &hidden(&html, "csrf_token")),
                ("username", username),
                ("password", password),
            ],
        )
    }
}

/// The `Set-Cookie` header of `r` for the cookie `name`.
pub fn set_cookie<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .find(|v| v.starts_with(&format!("{name}=")))
}

/// Signs in, in a new browser, on the page of `authorize` with
/// `username`/`password`; returns the answer to the form.
pub fn sign_in(server: &TestServer, authorize: &str, username: &str, password: &str) -> Response {
    Browser::default().sign_in(server, authorize, username, password)
}

/// RFC 6749 §4.1.2.1, RFC 9700 §4.1: a missing, unknown or unregistered
/// client or redirect URI gets an error page, never a redirect; look-alike
/// URIs (another path, an added query, another host or port, a fragment,
/// another case) are not the registered one; nothing of the request is
/// reflected unescaped.
#[test]
fn bad_clients_and_redirect_uris_get_an_error_page_never_a_redirect() {
    let db = TestDb::new();
    seed_code_clients(&db);
    let server = start(&db, &[]);
    let (_, challenge) = pkce();
    let page = |client: &str, uri: Option<&str>| {
        let mut p = params(client, uri.unwrap_or(""), &challenge);
        if uri.is_none() {
            p.retain(|(k, _)| *k != "redirect_uri");
        }
        let r = server.get(&authorize_path(&p));
        assert_page(&r, 400)
    };
    let html = page("nobody", Some(WEB_CB));
    assert!(html.contains("unknown client_id"), "{html}");
    let html = page("<script>alert(1)</script>", Some(WEB_CB));
    assert!(!html.contains("<script>alert"), "{html}");
    let html = page("web", None);
    assert!(html.contains("no redirect_uri"), "{html}");
    for evil in [
        "https://evil.example/cb",
        "https://web.example.com/cb/",
        "https://web.example.com/cb/../evil",
        "https://web.example.com/cb?next=https://evil.example",
        "https://web.example.com/cb#x",
        "https://web.example.com:444/cb",
        "https://web.example.com.evil.example/cb",
        "https://evil.example@web.example.com/cb",
        "HTTPS://WEB.EXAMPLE.COM/cb",
        "http://web.example.com/cb",
        "https://web.example.com/cb2",
        "https://web.example.com/cb2?tenant=b",
        // Registered for another client.
        SPA_CB,
    ] {
        let html = page("web", Some(evil));
        assert!(html.contains("not registered"), "{evil}: {html}");
        assert!(!html.contains("evil.example"), "{evil}: reflected: {html}");
    }
    // A repeated parameter (RFC 6749 §3.1) cannot be trusted either.
    let r = server.get(&format!(
        "{}&redirect_uri=https%3A%2F%2Fevil.example%2Fcb",
        authorize_path(&params("web", WEB_CB, &challenge))
    ));
    let html = assert_page(&r, 400);
    assert!(html.contains("repeated"), "{html}");
    // OpenID Connect Core §3.1.2.1: POST too, the parameters in a form.
    let r = server.post_form("/authorize", None, &params("web", WEB_CB, &challenge));
    let html = assert_page(&r, 200);
    assert!(html.contains(r#"action="/login""#), "{html}");
    let r = server.post_form(
        "/authorize",
        None,
        &params("web", "https://evil.example/cb", &challenge),
    );
    assert_page(&r, 400);
    let r = server.request(
        "PUT /authorize HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
}

/// Once the client and the redirect URI are valid, errors go back to the
/// app (RFC 6749 §4.1.2.1) with `state` unchanged and `iss` (RFC 9207):
/// `response_type`, PKCE required and S256 only (RFC 7636 §4.4.1, RFC 9700
/// §2.1.1: `plain` refused), scopes, `prompt`, `max_age`.
#[test]
fn request_errors_go_back_to_the_app_with_state_and_iss() {
    let db = TestDb::new();
    seed_code_clients(&db);
    let server = start(&db, &[]);
    let iss = issuer(&server);
    let (verifier, challenge) = pkce();
    // Each case: parameters replaced (`Some`) or removed (`None`), and the
    // error the app gets.
    let check = |change: &[(&str, Option<&str>)], error: &str, description: &str| {
        let mut p = params("web", WEB_CB, &challenge);
        for (name, value) in change {
            p.retain(|(k, _)| k != name);
            if let Some(v) = value {
                p.push((name, v));
            }
        }
        let r = server.get(&authorize_path(&p));
        let got = location_params(&r, WEB_CB);
        assert_eq!(param(&got, "error"), Some(error), "{got:?}");
        assert_eq!(param(&got, "error_description"), Some(description));
        assert_eq!(param(&got, "state"), Some("st/ä te&x=1"));
        assert_eq!(param(&got, "iss"), Some(iss.as_str()));
        assert_eq!(param(&got, "code"), None);
    };
    check(
        &[("response_type", Some("token"))],
        "unsupported_response_type",
        "response_type must be code",
    );
    check(
        &[("response_type", None)],
        "invalid_request",
        "response_type is required",
    );
    check(
        &[("code_challenge", None)],
        "invalid_request",
        "code_challenge is required (PKCE with S256)",
    );
    check(
        &[("code_challenge_method", Some("plain"))],
        "invalid_request",
        "code_challenge_method must be S256",
    );
    // RFC 7636 §4.3: no method means plain.
    check(
        &[("code_challenge_method", None)],
        "invalid_request",
        "code_challenge_method must be S256",
    );
    // `plain` in disguise: a verifier as the challenge.
    let longer = format!("{verifier}x");
    check(
        &[("code_challenge", Some(&longer))],
        "invalid_request",
        "code_challenge must be 43 characters of base64url (S256)",
    );
    check(
        &[("scope", Some("openid tokend:admin"))],
        "invalid_scope",
        "a requested scope is not allowed",
    );
    check(
        &[("prompt", Some("none"))],
        "login_required",
        "the user is not signed in",
    );
    check(
        &[("prompt", Some("consent"))],
        "invalid_request",
        "prompt must be none or login",
    );
    check(
        &[("max_age", Some("-1"))],
        "invalid_request",
        "max_age must be a number of seconds",
    );
    check(
        &[("request", Some("eyJ"))],
        "request_not_supported",
        "request objects are not supported",
    );
    // A client not registered for the flow.
    let r = server.get(&authorize_path(&params("app", WEB_CB, &challenge)));
    // `app` has no redirect URI at all: the page, not a redirect.
    assert_page(&r, 400);
}

/// A sign-in page is only made for a request its form can carry back
/// (found by the budget test of the sign-in routes): a `state` of 4 KiB
/// with the longest `nonce` makes a page whose form signs in and returns
/// `state` byte for byte; a longer `state` goes back to the app as
/// `invalid_request`, not echoed (RFC 6749 §4.1.2.1). Before the cap, a
/// 20 KiB `state` made a page whose form was always refused.
#[test]
fn a_long_state_is_carried_or_refused_never_a_dead_form() {
    let db = TestDb::new();
    seed_code_clients(&db);
    let server = start(&db, &[]);
    let (_, challenge) = pkce();
    let longest_state: String = (0..4096).map(|i| (b'!' + (i % 90) as u8) as char).collect();
    let longest_nonce = "ü".repeat(512);
    let mut p = params("web", WEB_CB, &challenge);
    p.retain(|(k, _)| *k != "state" && *k != "nonce");
    p.push(("state", &longest_state));
    p.push(("nonce", &longest_nonce));
    // POST /authorize (OpenID Connect Core §3.1.2.1): this request does
    // not fit in a URL's 8 KiB of head.
    let mut browser = Browser::default();
    let page = browser.post_form(&server, "/authorize", &p);
    let html = assert_page(&page, 200);
    let r = browser.post_form(
        &server,
        "/login",
        &[
            ("request", &hidden(&html, "request")),
            ("csrf_token", &hidden(&html, "csrf_token")),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    );
    let got = location_params(&r, WEB_CB);
    assert!(param(&got, "code").is_some(), "{got:?}");
    assert_eq!(param(&got, "state"), Some(longest_state.as_str()));

    for len in [4097, 20_000] {
        let state = "s".repeat(len);
        let mut p = params("web", WEB_CB, &challenge);
        p.retain(|(k, _)| *k != "state");
        p.push(("state", &state));
        let r = server.post_form("/authorize", None, &p);
        let got = location_params(&r, WEB_CB);
        assert_eq!(param(&got, "error"), Some("invalid_request"), "{len}");
        assert_eq!(
            param(&got, "error_description"),
            Some("state is longer than 4096 bytes")
        );
        assert_eq!(param(&got, "state"), None);
        assert_eq!(param(&got, "code"), None);
    }
}

/// The sign-in page (issue #16 item 2): its headers, accessible labels,
/// hidden request and CSRF token; a wrong password and an unknown user get
/// the same words; the right password sends the browser back with a code,
/// `state` unchanged and `iss`; the form cannot be replayed.
#[test]
fn the_sign_in_page_signs_in_and_sends_a_code() {
    let db = TestDb::new();
    seed_code_clients(&db);
    let server = start(&db, &[("TOKEND_OAUTH_DISPLAY_NAME", "Example <Corp>")]);
    let iss = issuer(&server);
    let (_, challenge) = pkce();
    let authorize = authorize_path(&params("web", WEB_CB, &challenge));
    let mut browser = Browser::default();
    let r = browser.get(&server, &authorize);
    let html = assert_page(&r, 200);
    // The form may be answered with a redirect to the app's origin.
    assert!(r
        .header("content-security-policy")
        .unwrap()
        .ends_with("form-action 'self' https://web.example.com"));
    assert!(
        html.contains("Sign in to Example &#60;Corp&#62;")
            || html.contains("Sign in to Example &lt;Corp&gt;"),
        "{html}"
    );
    assert!(html.contains(r#"<label for="username">Username</label>"#));
    assert!(html.contains(r#"<label for="password">Password</label>"#));
    assert!(html.contains(r#"action="/login""#));
    assert!(!html.contains("<script"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external asset: {html}"
    );
    let request = hidden(&html, "request");
    let csrf = hidden(&html, "csrf_token");
    assert_ne!(request, csrf);
    assert_eq!(csrf.len(), 43);

    let post = |username: &str, password: &str| {
        browser.clone().post_form(
            &server,
            "/login",
            &[
                ("request", &request),
                ("csrf_token", &csrf),
                ("username", username),
                ("password", password),
            ],
        )
    };
    let wrong = post("alice", "wrong password");
    let unknown = post("nobody", PASSWORD);
    for r in [&wrong, &unknown] {
        let html = assert_page(r, 200);
        assert!(html.contains("Incorrect username or password."), "{html}");
        assert!(html.contains(&csrf));
    }
    // The typed username comes back escaped.
    let r = post("\"><b>x</b>", "pw");
    let html = assert_page(&r, 200);
    assert!(!html.contains("<b>x</b>"), "{html}");

    let ok = post("alice", PASSWORD);
    let got = location_params(&ok, WEB_CB);
    let code = param(&got, "code").unwrap();
    assert!(code.starts_with("tokend_ac_") && code.len() == 53, "{code}");
    assert_eq!(param(&got, "state"), Some("st/ä te&x=1"));
    assert_eq!(param(&got, "iss"), Some(iss.as_str()));
    // The same form again: it carries the request, not a session, so it
    // signs in again (the password is needed each time), with another code.
    let again = post("alice", PASSWORD);
    assert_ne!(param(&location_params(&again, WEB_CB), "code"), Some(code));

    // A registered URI with a query keeps it; another request gets
    // another code.
    let cb2 = "https://web.example.com/cb2?tenant=a";
    let r = sign_in(
        &server,
        &authorize_path(&params("web", cb2, &challenge)),
        "alice",
        PASSWORD,
    );
    let got = location_params(&r, cb2);
    assert_ne!(param(&got, "code"), Some(code));
}

/// The CSRF token (issue #16 item 2): a form without it, or with another
/// page's, signs nobody in, and no password is checked (the right one
/// included).
#[test]
fn a_form_without_its_csrf_token_signs_nobody_in() {
    let db = TestDb::new();
    seed_code_clients(&db);
    let server = start(&db, &[]);
    let (_, challenge) = pkce();
    let authorize = authorize_path(&params("web", WEB_CB, &challenge));
    let mut browser = Browser::default();
    let first = browser.get(&server, &authorize).text();
    let other = browser.get(&server, &authorize).text();
    let request = hidden(&first, "request");
    for csrf in [
        None,
        Some(String::new()),
        Some(hidden(&other, "csrf_token")),
        Some(hidden(&first, "csrf_token")[1..].to_string()),
    ] {
        let mut form = vec![
            ("request", request.as_str()),
            ("username", "alice"),
            ("password", PASSWORD),
        ];
        if let Some(c) = &csrf {
            form.push(("csrf_token", c));
        }
        let r = browser.clone().post_form(&server, "/login", &form);
        let html = assert_page(&r, 400);
        assert!(html.contains("CSRF token is missing or wrong"), "{html}");
    }
    // The request is still usable with its own token.
    let r = browser.clone().post_form(
        &server,
        "/login",
        &[
            ("request", &request),
            ("csrf_token", &hidden(&first, "csrf_token")),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    );
    assert!(param(&location_params(&r, WEB_CB), "code").is_some());
    // The request altered (another redirect URI), its token kept.
    {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let json = String::from_utf8(b64.decode(&request).unwrap()).unwrap();
        assert!(json.contains(WEB_CB), "{json}");
        let evil = b64.encode(json.replace(WEB_CB, "https://evil.example/cb"));
        let r = browser.clone().post_form(
            &server,
            "/login",
            &[
                ("request", &evil),
                ("csrf_token", &hidden(&first, "csrf_token")),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        );
        let html = assert_page(&r, 400);
        assert!(html.contains("CSRF token is missing or wrong"), "{html}");
    }
    // A request tokend never sealed.
    let r = server.post_form(
        "/login",
        None,
        &[
            ("request", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            ("csrf_token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    );
    assert_page(&r, 400);
}

/// The sign-in page counts failures against the password grant's limits
/// (`limits.login_failures_per_user`): past them it answers 429 and checks
/// no password, the right one included.
#[test]
fn the_sign_in_page_shares_the_login_limits() {
    let db = TestDb::new();
    seed_code_clients(&db);
    let server = start(&db, &[("TOKEND_LIMITS_LOGIN_FAILURES_PER_USER", "3")]);
    let (_, challenge) = pkce();
    let authorize = authorize_path(&params("web", WEB_CB, &challenge));
    for _ in 0..3 {
        let r = sign_in(&server, &authorize, "bob", "wrong");
        assert_eq!(r.status, 200);
    }
    let r = sign_in(&server, &authorize, "bob", PASSWORD);
    let html = assert_page(&r, 429);
    assert!(html.contains("Too many failed sign-ins"), "{html}");
}

/// Signs alice in for `client` at `redirect_uri` with `challenge`; returns
/// the code.
pub fn code_for(server: &TestServer, client: &str, redirect_uri: &str, challenge: &str) -> String {
    let r = sign_in(
        server,
        &authorize_path(&params(client, redirect_uri, challenge)),
        "alice",
        PASSWORD,
    );
    param(&location_params(&r, redirect_uri), "code")
        .unwrap()
        .to_string()
}

/// `grant_type=authorization_code` for `web` (Basic) or, without a secret,
/// for the public `spa` (`client_id` in the form).
pub fn exchange(
    server: &TestServer,
    web_secret: Option<&str>,
    code: &str,
    redirect_uri: &str,
    verifier: Option<&str>,
) -> Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    match web_secret {
        Some(secret) => server.post_form("/oauth/token", Some(("web", secret)), &form),
        None => {
            form.push(("client_id", "spa"));
            server.post_form("/oauth/token", None, &form)
        }
    }
}

fn invalid_grant(r: &Response) -> String {
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["error"], "invalid_grant", "{body}");
    body["error_description"].as_str().unwrap().to_string()
}

/// RFC 6749 §4.1.3, RFC 7636 §4.6: a confidential client (Basic) and a
/// public one (`client_id` only) exchange their codes for an access token
/// bound to the user who signed in (it validates, with the username) and a
/// refresh token that refreshes; the granted scope is what the client asked
/// that the user holds.
#[test]
fn codes_are_exchanged_for_tokens_by_confidential_and_public_clients() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);
    let (verifier, challenge) = pkce();

    let code = code_for(&server, "web", WEB_CB, &challenge);
    let r = exchange(&server, Some(&web), &code, WEB_CB, Some(&verifier));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "openid read");
    let access = body["access_token"].as_str().unwrap();
    let v = server.get_auth("/validate", &format!("Bearer {access}"));
    assert_eq!(v.status, 200, "{}", v.text());
    assert_eq!(v.header("x-auth-username"), Some("alice"));
    assert_eq!(v.header("x-auth-client-id"), Some("web"));
    assert_eq!(v.header("x-auth-scope"), Some("openid read"));
    let refresh = body["refresh_token"].as_str().unwrap();
    let r = server.post_form(
        "/oauth/token",
        Some(("web", &web)),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // A public client: no secret, PKCE only.
    let code = code_for(&server, "spa", SPA_CB, &challenge);
    let r = exchange(&server, None, &code, SPA_CB, Some(&verifier));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["refresh_token"].is_string());
    // A public client that sends a secret is not authenticated.
    let code = code_for(&server, "spa", SPA_CB, &challenge);
    let r = server.post_form(
        "/oauth/token",
        None,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", SPA_CB),
            ("code_verifier", &verifier),
            ("client_id", "spa"),
            ("client_secret", "x"),
        ],
    );
    assert_eq!(r.status, 401, "{}", r.text());
}

/// RFC 7636 §4.6 and RFC 6749 §4.1.3: a missing or wrong `code_verifier`,
/// another `redirect_uri`, another client: `invalid_grant`, and the code is
/// used up.
#[test]
fn a_code_needs_its_verifier_redirect_uri_and_client() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);
    let (verifier, challenge) = pkce();
    let (other_verifier, _) = pkce();
    let cases: [(&str, Option<&str>, Option<&str>, &str); 5] = [
        (WEB_CB, Some(&web), None, "code_verifier is required (PKCE)"),
        (
            WEB_CB,
            Some(&web),
            Some(&other_verifier),
            "code_verifier does not match the code_challenge",
        ),
        // `plain`: the challenge itself as the verifier.
        (
            WEB_CB,
            Some(&web),
            Some(&challenge),
            "code_verifier does not match the code_challenge",
        ),
        (
            "https://web.example.com/cb2?tenant=a",
            Some(&web),
            Some(&verifier),
            "redirect_uri does not match the authorization request",
        ),
        (
            WEB_CB,
            None,
            Some(&verifier),
            "the authorization code was issued to another client",
        ),
    ];
    for (redirect_uri, secret, v, description) in cases {
        let code = code_for(&server, "web", WEB_CB, &challenge);
        let r = exchange(&server, secret, &code, redirect_uri, v);
        assert_eq!(invalid_grant(&r), description);
        // Used up: the right request now finds a used code.
        let r = exchange(&server, Some(&web), &code, WEB_CB, Some(&verifier));
        assert!(invalid_grant(&r).contains("already used"));
    }
    // A code tokend never issued, and no code at all.
    let r = exchange(&server, Some(&web), "tokend_ac_x", WEB_CB, Some(&verifier));
    assert_eq!(invalid_grant(&r), "invalid or expired authorization code");
    let r = server.post_form(
        "/oauth/token",
        Some(("web", &web)),
        &[("grant_type", "authorization_code")],
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");
}

/// RFC 6749 §4.1.2: a code used twice is refused, and the access and
/// refresh tokens issued from it the first time are revoked.
#[test]
fn a_reused_code_revokes_the_tokens_it_gave() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);
    let (verifier, challenge) = pkce();
    let code = code_for(&server, "web", WEB_CB, &challenge);
    let first = exchange(&server, Some(&web), &code, WEB_CB, Some(&verifier));
    assert_eq!(first.status, 200, "{}", first.text());
    let body = first.json();
    let access = body["access_token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();
    assert_eq!(
        server
            .get_auth("/validate", &format!("Bearer {access}"))
            .status,
        200
    );

    let again = exchange(&server, Some(&web), &code, WEB_CB, Some(&verifier));
    assert_eq!(
        invalid_grant(&again),
        "the authorization code was already used; the tokens issued from it are revoked"
    );
    let v = server.get_auth("/validate", &format!("Bearer {access}"));
    assert_eq!(v.status, 401, "{}", v.text());
    let r = server.post_form(
        "/oauth/token",
        Some(("web", &web)),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    );
    invalid_grant(&r);
    // Recorded durably, like any revocation (re-seeded into a Redis that
    // lost its data).
    let mut c = db.client();
    let kinds: Vec<String> = c
        .query("SELECT kind FROM revocations ORDER BY kind", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, ["access", "refresh_family"]);
}

/// An expired code (`oauth.code_ttl`) is refused as invalid, never as
/// reused.
#[test]
fn an_expired_code_is_refused() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[("TOKEND_OAUTH_CODE_TTL", "1s")]);
    let (verifier, challenge) = pkce();
    let code = code_for(&server, "web", WEB_CB, &challenge);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = exchange(&server, Some(&web), &code, WEB_CB, Some(&verifier));
    assert_eq!(invalid_grant(&r), "invalid or expired authorization code");
}

/// A logout everywhere between the sign-in and the exchange voids the code.
#[test]
fn logout_everywhere_voids_a_code_not_yet_exchanged() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);
    let (verifier, challenge) = pkce();
    // A bearer token of alice's, to log out everywhere with.
    let code = code_for(&server, "web", WEB_CB, &challenge);
    let r = exchange(&server, Some(&web), &code, WEB_CB, Some(&verifier));
    let access = r.json()["access_token"].as_str().unwrap().to_string();
    let code = code_for(&server, "web", WEB_CB, &challenge);
    // The mark voids what was signed in at or before its second.
    let r = server.post_json("/users/me/logout-all", Some(&access), "");
    assert_eq!(r.status, 204, "{}", r.text());
    let r = exchange(&server, Some(&web), &code, WEB_CB, Some(&verifier));
    assert_eq!(invalid_grant(&r), "invalid or expired authorization code");
}

/// The claims of a JWT, unverified (the RP test in `oidc.rs` verifies).
pub fn jwt_claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// OpenID Connect Core §3.1.3.3, §3.1.3.6, §5.3: with `openid` the token
/// response carries an ID token (iss, sub, aud = azp = client id, exp, iat,
/// auth_time, nonce, at_hash for EdDSA: SHA-512's left half); without it,
/// none; `/userinfo` answers GET and POST for a token with `openid`, and
/// refuses one without.
#[test]
fn openid_gives_an_id_token_and_userinfo() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);
    let iss = issuer(&server);
    let (verifier, challenge) = pkce();
    let code = code_for(&server, "web", WEB_CB, &challenge);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let r = exchange(&server, Some(&web), &code, WEB_CB, Some(&verifier));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let access = body["access_token"].as_str().unwrap();
    let id = body["id_token"].as_str().expect("an id_token");
    let c = jwt_claims(id);
    assert_eq!(c["iss"], iss.as_str());
    assert_eq!(c["aud"], "web");
    assert_eq!(c["azp"], "web");
    assert_eq!(c["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(c["preferred_username"], "alice");
    assert_eq!(c["sub"], jwt_claims(access)["sub"]);
    let auth_time = c["auth_time"].as_u64().unwrap();
    assert!(auth_time <= before + 1 && auth_time + 60 > before, "{c}");
    assert!(c["exp"].as_u64().unwrap() > c["iat"].as_u64().unwrap());
    {
        use base64::Engine;
        use sha2::Sha512;
        let h = Sha512::digest(access.as_bytes());
        assert_eq!(
            c["at_hash"],
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h[..32])
        );
    }
    let header: serde_json::Value = {
        use base64::Engine;
        let h = id.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["alg"], "EdDSA");

    // UserInfo, GET and POST (OpenID Connect Core §5.3.1).
    let get = server.get_auth("/userinfo", &format!("Bearer {access}"));
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(get.header("cache-control"), Some("no-store"));
    assert_eq!(get.json()["preferred_username"], "alice");
    assert_eq!(get.json()["sub"], c["sub"]);
    let post = server.request(&format!(
        "POST /userinfo HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {access}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(post.status, 200, "{}", post.text());
    assert_eq!(post.json(), get.json());
    let none = server.get("/userinfo");
    assert_eq!(none.status, 401);
    assert!(none
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));

    // Without `openid`: no ID token, and no UserInfo.
    let mut p = params("web", WEB_CB, &challenge);
    p.retain(|(k, _)| *k != "scope");
    p.push(("scope", "read"));
    let r = sign_in(&server, &authorize_path(&p), "alice", PASSWORD);
    let code = param(&location_params(&r, WEB_CB), "code")
        .unwrap()
        .to_string();
    let r = exchange(&server, Some(&web), &code, WEB_CB, Some(&verifier));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("id_token").is_none());
    let access = r.json()["access_token"].as_str().unwrap().to_string();
    let r = server.get_auth("/userinfo", &format!("Bearer {access}"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "insufficient_scope");
}

/// OpenID Connect Discovery 1.0 §3 beside RFC 8414: the endpoints, `code`
/// only, S256 only, `iss` in authorization responses (RFC 9207), the
/// signing algorithms of the keys.
#[test]
fn discovery_documents_describe_the_code_flow() {
    let db = TestDb::new();
    seed_code_clients(&db);
    let server = start(&db, &[]);
    let oidc = server.get("/.well-known/openid-configuration");
    assert_eq!(oidc.status, 200, "{}", oidc.text());
    let d = oidc.json();
    let iss = d["issuer"].as_str().unwrap();
    assert_eq!(d["authorization_endpoint"], format!("{iss}/authorize"));
    assert_eq!(d["token_endpoint"], format!("{iss}/oauth/token"));
    assert_eq!(d["userinfo_endpoint"], format!("{iss}/userinfo"));
    assert_eq!(d["jwks_uri"], format!("{iss}/.well-known/jwks.json"));
    // OpenID Connect RP-Initiated Logout 1.0 §2.1.
    assert_eq!(d["end_session_endpoint"], format!("{iss}/logout"));
    assert_eq!(d["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(d["subject_types_supported"], serde_json::json!(["public"]));
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        serde_json::json!(["EdDSA"])
    );
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert!(d["scopes_supported"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("openid")));
    assert!(d["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("authorization_code")));
    let rfc8414 = server.get("/.well-known/oauth-authorization-server").json();
    assert_eq!(rfc8414, d);
}

/// `Path=/; HttpOnly; SameSite=Lax`, no `Domain`, `Secure` only when
/// `secure`; asserted on a `Set-Cookie` value.
pub fn assert_cookie_attributes(line: &str, secure: bool) {
    let attrs: Vec<&str> = line.split("; ").skip(1).collect();
    for a in ["Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(attrs.contains(&a), "{line}");
    }
    assert_eq!(attrs.contains(&"Secure"), secure, "{line}");
    assert!(!line.to_ascii_lowercase().contains("domain"), "{line}");
}

/// The answer to `authorize` in `browser` when a code comes at once
/// (single sign-on): its parameters.
fn sso_code(
    server: &TestServer,
    browser: &mut Browser,
    authorize: &str,
    redirect_uri: &str,
) -> Vec<(String, String)> {
    let r = browser.get(server, authorize);
    location_params(&r, redirect_uri)
}

/// Issue #16 item 3: the sign-in sets a session cookie with which a second
/// app (another client) gets a code without a password, its `auth_time`
/// the first sign-in's; `prompt=none` gets one too; `prompt=login` and
/// `max_age=0` (or a `max_age` already past) show the page; a cookie
/// tokend never gave is ignored.
#[test]
fn a_browser_session_signs_a_second_app_in_without_a_password() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);
    let iss = issuer(&server);
    let mut browser = Browser::default();
    let (verifier, challenge) = pkce();
    let authorize = authorize_path(&params("web", WEB_CB, &challenge));
    let page = browser.get(&server, &authorize);
    assert_page(&page, 200);
    assert_cookie_attributes(set_cookie(&page, "tokend_login").unwrap(), false);
    assert!(set_cookie(&page, "__Host-tokend_login").is_none());
    let r = browser.sign_in(&server, &authorize, "alice", PASSWORD);
    let cookie = set_cookie(&r, "tokend_session").expect("a session cookie");
    assert_cookie_attributes(cookie, false);
    assert!(cookie.contains("Max-Age=43200"), "{cookie}");
    let code = param(&location_params(&r, WEB_CB), "code")
        .unwrap()
        .to_string();
    let first = exchange(&server, Some(&web), &code, WEB_CB, Some(&verifier)).json();
    let auth_time = jwt_claims(first["id_token"].as_str().unwrap())["auth_time"].clone();
    assert!(auth_time.is_u64(), "{first}");
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // The second app: a code at once, state and iss as always.
    let (spa_verifier, spa_challenge) = pkce();
    let spa = authorize_path(&params("spa", SPA_CB, &spa_challenge));
    let got = sso_code(&server, &mut browser, &spa, SPA_CB);
    assert_eq!(param(&got, "state"), Some("st/ä te&x=1"));
    assert_eq!(param(&got, "iss"), Some(iss.as_str()));
    let r = exchange(
        &server,
        None,
        param(&got, "code").unwrap(),
        SPA_CB,
        Some(&spa_verifier),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let claims = jwt_claims(r.json()["id_token"].as_str().unwrap());
    assert_eq!(claims["auth_time"], auth_time);
    assert_eq!(claims["aud"], "spa");
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");

    // prompt=none and a max_age the sign-in meets: a code.
    let mut p = params("spa", SPA_CB, &spa_challenge);
    p.push(("prompt", "none"));
    let got = sso_code(&server, &mut browser, &authorize_path(&p), SPA_CB);
    assert!(param(&got, "code").is_some());
    let mut p = params("spa", SPA_CB, &spa_challenge);
    p.push(("max_age", "3600"));
    let got = sso_code(&server, &mut browser, &authorize_path(&p), SPA_CB);
    assert!(param(&got, "code").is_some());

    // prompt=login, max_age=0, a max_age already past: the page.
    for extra in [("prompt", "login"), ("max_age", "0")] {
        let mut p = params("spa", SPA_CB, &spa_challenge);
        p.push(extra);
        let r = browser.get(&server, &authorize_path(&p));
        assert_page(&r, 200);
    }
    // A fresh sign-in from prompt=login resets auth_time.
    let mut p = params("web", WEB_CB, &challenge);
    p.push(("prompt", "login"));
    let r = browser.sign_in(&server, &authorize_path(&p), "alice", PASSWORD);
    assert!(set_cookie(&r, "tokend_session").is_some());
    let mut p = params("spa", SPA_CB, &spa_challenge);
    p.extend([("prompt", "none"), ("max_age", "0")]);
    let got = location_params(&browser.get(&server, &authorize_path(&p)), SPA_CB);
    assert_eq!(param(&got, "error"), Some("login_required"));
    assert!(param(&got, "code").is_none());

    // A cookie tokend never gave, or one of another shape: the page, and
    // prompt=none gets login_required.
    for forged in ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "x", ""] {
        let mut other = Browser::default();
        other.set("tokend_session", forged);
        assert_page(&other.get(&server, &spa), 200);
        let mut p = params("spa", SPA_CB, &spa_challenge);
        p.push(("prompt", "none"));
        let got = location_params(&other.get(&server, &authorize_path(&p)), SPA_CB);
        assert_eq!(param(&got, "error"), Some("login_required"));
    }
}

/// A logout everywhere, a password change and a disable end the browser
/// session: the page again, and `prompt=none` gets `login_required`.
#[test]
fn logout_everywhere_password_change_and_disable_end_the_browser_session() {
    let db = TestDb::new();
    let web = seed_code_clients(&db);
    let server = start(&db, &[]);
    let (verifier, challenge) = pkce();
    let authorize = authorize_path(&params("web", WEB_CB, &challenge));
    let mut none = params("web", WEB_CB, &challenge);
    none.push(("prompt", "none"));
    let none = authorize_path(&none);
    let ended = |browser: &mut Browser| {
        assert_page(&browser.get(&server, &authorize), 200);
        let got = location_params(&browser.get(&server, &none), WEB_CB);
        assert_eq!(param(&got, "error"), Some("login_required"));
    };
    // Signs in (in a second after any mark) and returns an access token.
    let sign_in_for_token = |browser: &mut Browser, password: &str| {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let r = browser.sign_in(&server, &authorize, "alice", password);
        let code = param(&location_params(&r, WEB_CB), "code")
            .unwrap()
            .to_string();
        let r = exchange(&server, Some(&web), &code, WEB_CB, Some(&verifier));
        assert_eq!(r.status, 200, "{}", r.text());
        let got = location_params(&browser.get(&server, &none), WEB_CB);
        assert!(param(&got, "code").is_some(), "{got:?}");
        r.json()["access_token"].as_str().unwrap().to_string()
    };

    let mut browser = Browser::default();
    let access = sign_in_for_token(&mut browser, PASSWORD);
    let r = server.post_json("/users/me/logout-all", Some(&access), "");
    assert_eq!(r.status, 204, "{}", r.text());
    ended(&mut browser);

    let access = sign_in_for_token(&mut browser, PASSWORD);
    let r = server.post_json(
        "/users/me/password",
        Some(&access),
        &format!(r#"{{"current_password":"{PASSWORD}","new_password":"a brand new password"}}"#),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    ended(&mut browser);

    // Disabled in the database only (no mark in Redis): the session's user
    // is looked up and refused all the same.
    sign_in_for_token(&mut browser, "a brand new password");
    tokend::identity::users::disable(&mut db.client(), "alice", 0)
        .unwrap()
        .unwrap();
    ended(&mut browser);
}

/// Login CSRF: a sealed form fetched by another browser (the attacker's),
/// posted by the victim's without the pre-session cookie it was bound to,
/// or with its own, signs nobody in and sets no session cookie; the form
/// in its own browser works.
#[test]
fn a_form_from_another_browser_signs_nobody_in() {
    let db = TestDb::new();
    seed_code_clients(&db);
    let server = start(&db, &[]);
    let (_, challenge) = pkce();
    let authorize = authorize_path(&params("web", WEB_CB, &challenge));
    let mut attacker = Browser::default();
    let html = attacker.get(&server, &authorize).text();
    let form = [
        ("request", hidden(&html, "request")),
        ("csrf_token", hidden(&html, "csrf_token")),
        ("username", "bob".to_string()),
        ("password", PASSWORD.to_string()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut victim = Browser::default();
    let mut victims = vec![victim.clone()];
    assert_page(&victim.get(&server, &authorize), 200);
    assert_ne!(
        victim.cookie("tokend_login"),
        attacker.cookie("tokend_login")
    );
    victims.push(victim);
    for mut v in victims {
        let r = v.post_form(&server, "/login", &form);
        let html = assert_page(&r, 400);
        assert!(html.contains("not opened in this browser"), "{html}");
        assert!(html.contains("Go back to the app"), "{html}");
        assert!(set_cookie(&r, "tokend_session").is_none());
        assert!(v.cookie("tokend_session").is_none());
    }
    // The pre-session cookie is kept across pages (several tabs), and the
    // form works in the browser it was shown in.
    let before = attacker.cookie("tokend_login").unwrap().to_string();
    assert_page(&attacker.get(&server, &authorize), 200);
    assert_eq!(attacker.cookie("tokend_login"), Some(before.as_str()));
    let r = attacker.post_form(&server, "/login", &form);
    assert!(param(&location_params(&r, WEB_CB), "code").is_some());
    assert!(attacker.cookie("tokend_session").is_some());
}

/// With an https public URL both cookies take the `__Host-` prefix and
/// `Secure` (RFC 6265bis §4.1.3.2), and single sign-on works with them.
#[test]
fn cookies_are_secure_with_an_https_public_url() {
    let db = TestDb::new();
    seed_code_clients(&db);
    let server = start(
        &db,
        &[("TOKEND_SERVER_PUBLIC_URL", "https://auth.example.com")],
    );
    let (_, challenge) = pkce();
    let authorize = authorize_path(&params("web", WEB_CB, &challenge));
    let mut browser = Browser::default();
    let page = browser.get(&server, &authorize);
    assert_cookie_attributes(set_cookie(&page, "__Host-tokend_login").unwrap(), true);
    assert!(set_cookie(&page, "tokend_login").is_none());
    let r = browser.sign_in(&server, &authorize, "alice", PASSWORD);
    assert_cookie_attributes(set_cookie(&r, "__Host-tokend_session").unwrap(), true);
    assert!(set_cookie(&r, "tokend_session").is_none());
    let got = sso_code(&server, &mut browser, &authorize, WEB_CB);
    assert_eq!(param(&got, "iss"), Some("https://auth.example.com"));
    assert!(param(&got, "code").is_some());
    // The plain name means nothing over https.
    let mut other = Browser::default();
    other.set(
        "tokend_session",
        browser.cookie("__Host-tokend_session").unwrap(),
    );
    assert_page(&other.get(&server, &authorize), 200);
}
