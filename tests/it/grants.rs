//! Issue #16, the groundwork: which client may use `authorization_code`
//! (the flow itself is `authorize.rs`'s), and `oauth.password_grant =
//! false`, which switches the password grant off for every client (RFC 6749
//! §5.2 `unsupported_grant_type`).

use tokend::identity::{clients, GrantType, NewClient};

use crate::harness::*;
use crate::tokens::{seed, PASSWORD};

/// The users and clients of [`crate::tokens::deployment`], plus `web`
/// (confidential: authorization_code, password, refresh_token) and `spa`
/// (public: authorization_code, password); returns the secrets of `app`,
/// `svc` and `web`.
fn seed_with_code_clients(db: &TestDb) -> (String, String, String) {
    let (app, svc) = seed(db);
    let mut c = db.client();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (_, web) = clients::create_client(
        &mut c,
        &NewClient {
            client_id: "web",
            grants: &[
                GrantType::AuthorizationCode,
                GrantType::Password,
                GrantType::RefreshToken,
            ],
            scopes: &s(&["read"]),
            redirect_uris: &s(&["https://web.example.com/cb"]),
            ..NewClient::default()
        },
    )
    .unwrap();
    clients::create_client(
        &mut c,
        &NewClient {
            client_id: "spa",
            grants: &[GrantType::AuthorizationCode, GrantType::Password],
            scopes: &s(&["read"]),
            public: true,
            redirect_uris: &s(&["com.example.app:/cb"]),
            post_logout_redirect_uris: &s(&["https://app.example.com/"]),
        },
    )
    .unwrap();
    (app, svc, web.unwrap())
}

fn start(db: &TestDb, env: &[(&str, &str)], prefix: Option<String>) -> TestServer {
    TestServer::with(Options {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        db_url: Some(db.url.clone()),
        prefix,
        cores: 1,
    })
}

/// `(status, error, error_description)` of a token-endpoint answer, which
/// must not be cached either way (RFC 6749 §5.1, §5.2).
fn outcome(r: &Response) -> (u16, String, String) {
    assert_eq!(r.header("cache-control"), Some("no-store"), "{}", r.text());
    let body = r.json();
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    (r.status, text("error"), text("error_description"))
}

fn grants_supported(server: &TestServer) -> serde_json::Value {
    let r = server.get("/.well-known/oauth-authorization-server");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["grant_types_supported"].clone()
}

/// A code exchange is served: a client registered for it gets
/// `invalid_grant` for a code tokend never issued (confidential with Basic,
/// public with `client_id`), a client not registered for it
/// `unauthorized_client`; the client is authenticated first, as for any
/// grant; an unknown grant names the ones served.
#[test]
fn authorization_code_is_served_to_the_clients_registered_for_it() {
    let db = TestDb::new();
    let (app, _, web) = seed_with_code_clients(&db);
    let server = start(&db, &[], None);
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", "SplxlOBeZQQYbYS6WxSbIA"),
        ("redirect_uri", "https://web.example.com/cb"),
        (
            "code_verifier",
            "dBjftJeZ4CVP-mJ0fjJl0nLbE45Bno0RjI2Vz0D2bYM",
        ),
    ];
    let unknown = outcome(&server.post_form(
        "/oauth/token",
        Some(("web", &web)),
        &[("grant_type", "urn:ietf:params:oauth:grant-type:device_code")],
    ));
    assert_eq!(
        unknown,
        (
            400,
            "unsupported_grant_type".into(),
            "grant_type must be authorization_code, password, refresh_token or client_credentials"
                .into()
        )
    );
    let invalid = (
        400,
        "invalid_grant".to_string(),
        "invalid or expired authorization code".to_string(),
    );
    let mut spa = vec![("client_id", "spa")];
    spa.extend(exchange);
    assert_eq!(
        outcome(&server.post_form("/oauth/token", Some(("web", &web)), &exchange)),
        invalid
    );
    assert_eq!(
        outcome(&server.post_form("/oauth/token", None, &spa)),
        invalid
    );
    assert_eq!(
        outcome(&server.post_form("/oauth/token", Some(("app", &app)), &exchange)),
        (
            400,
            "unauthorized_client".into(),
            "this client may not use this grant type".into()
        )
    );
    // Client authentication still comes first.
    let r = server.post_form("/oauth/token", Some(("web", "tokend_cs_wrong")), &exchange);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_client");
    // Advertised (RFC 8414 §2).
    assert_eq!(
        grants_supported(&server),
        serde_json::json!([
            "authorization_code",
            "password",
            "refresh_token",
            "client_credentials"
        ])
    );
    // The password grant of a client that also has the code grant works.
    let r = server.post_form(
        "/oauth/token",
        Some(("web", &web)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `oauth.password_grant = false`: every client's password login is
/// refused before any password is looked at (no argon2, nothing counted
/// against the login limits), the other grants go on, and refresh tokens
/// issued before the switch keep refreshing.
#[test]
fn password_grant_switched_off_refuses_it_for_every_client() {
    let db = TestDb::new();
    let (app, svc, web) = seed_with_code_clients(&db);

    // A session opened while the password grant was on.
    let mut before = start(&db, &[], None);
    let r = before.post_form(
        "/oauth/token",
        Some(("app", &app)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    assert!(before.terminate().success());

    // The same deployment (database and Redis prefix), switched off.
    let server = start(
        &db,
        &[("TOKEND_OAUTH_PASSWORD_GRANT", "false")],
        Some(before.prefix.clone()),
    );
    let off = (
        400,
        "unsupported_grant_type".to_string(),
        "the password grant is disabled on this server".to_string(),
    );
    let login = |basic: Option<(&str, &str)>, extra: &[(&str, &str)], password: &str| {
        let mut form = vec![
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", password),
        ];
        form.extend_from_slice(extra);
        server.post_form("/oauth/token", basic, &form)
    };
    // Confidential clients, a public one, right and wrong passwords: more
    // attempts than limits.login_failures_per_user (10) allows, and never a
    // 429, since none is counted.
    for _ in 0..6 {
        for r in [
            login(Some(("app", &app)), &[], PASSWORD),
            login(Some(("web", &web)), &[], "wrong password"),
            login(None, &[("client_id", "spa")], PASSWORD),
        ] {
            assert_eq!(outcome(&r), off);
        }
    }
    // A client not registered for the grant gets the same answer: the
    // switch comes before the client's own grants.
    let r = login(Some(("svc", &svc)), &[], PASSWORD);
    assert_eq!(outcome(&r), off);
    // Client authentication still comes first.
    let r = login(Some(("app", "tokend_cs_wrong")), &[], PASSWORD);
    assert_eq!(r.status, 401, "{}", r.text());
    // An unknown grant's description no longer offers the password grant.
    let r = server.post_form(
        "/oauth/token",
        Some(("app", &app)),
        &[("grant_type", "implicit"), ("code", "x")],
    );
    assert_eq!(
        outcome(&r),
        (
            400,
            "unsupported_grant_type".into(),
            "grant_type must be authorization_code, refresh_token or client_credentials".into()
        )
    );
    assert_eq!(
        grants_supported(&server),
        serde_json::json!(["authorization_code", "refresh_token", "client_credentials"])
    );

    // The other grants are untouched.
    let r = server.post_form(
        "/oauth/token",
        Some(("svc", &svc)),
        &[("grant_type", "client_credentials")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.post_form(
        "/oauth/token",
        Some(("app", &app)),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let r = server.get_auth("/validate", &format!("Bearer {token}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-auth-username"), Some("alice"));

    // Switched on again, the same client logs in at once: nothing was
    // counted while it was off.
    drop(server);
    let again = start(&db, &[], Some(before.prefix.clone()));
    let r = again.post_form(
        "/oauth/token",
        Some(("app", &app)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}
