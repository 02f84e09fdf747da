//! Issue #16 item 7: the whole flow driven by a real OpenID Connect relying
//! party, the `openidconnect` crate (4.0), as an app would run it:
//! discovery (OpenID Connect Discovery 1.0 §4), the authorization URL with
//! PKCE S256 and a nonce (Core §3.1.2.1, RFC 7636), the sign-in page and its
//! form, the redirect (RFC 9207 `iss`, `state` unchanged), the code
//! exchange, the library's ID token verification (signature by the JWKS,
//! `iss`, `aud`, `exp`, nonce; `at_hash`, Core §3.1.3.6), UserInfo (Core
//! §5.3), a refresh (RFC 6749 §6), and RP-initiated logout (RP-Initiated
//! Logout 1.0: `end_session_endpoint` read from discovery, the library's
//! logout URL with the ID token as hint). The attacks on the same flow are
//! `authorize.rs`'s and `logout.rs`'s.
//!
//! The library speaks HTTP through a closure: a small synchronous client on
//! `std::net::TcpStream` that sends every request, whatever its host, to
//! the test server (whose public URL is `http://tokend.test`).

use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest,
    HttpResponse, IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope, TokenResponse,
};

use crate::authorize::{location_params, param, seed_code_clients, Browser, WEB_BYE, WEB_CB};
use crate::harness::*;
use crate::tokens::PASSWORD;

const ISSUER: &str = "http://tokend.test";

/// The relying party's HTTP client: each request on a new connection to
/// `server`, `Host` taken from the URL.
fn http_client(
    server: &TestServer,
) -> impl Fn(HttpRequest) -> Result<HttpResponse, std::io::Error> + '_ {
    move |req: HttpRequest| {
        let uri = req.uri();
        let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let host = uri.host().unwrap_or("tokend.test");
        let mut raw = format!(
            "{} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n",
            req.method()
        )
        .into_bytes();
        for (name, value) in req.headers() {
            raw.extend_from_slice(name.as_str().as_bytes());
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(value.as_bytes());
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", req.body().len()).as_bytes());
        raw.extend_from_slice(req.body());
        let mut conn = server.conn();
        conn.send(&raw);
        let r = conn
            .read_response()
            .ok_or_else(|| std::io::Error::other("no response"))?;
        let mut builder = openidconnect::http::Response::builder().status(r.status);
        for (name, value) in &r.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder.body(r.body).map_err(std::io::Error::other)
    }
}

/// Discovery, sign-in, code exchange with PKCE, ID token verification
/// (signature, nonce, at_hash), UserInfo, a refresh and RP-initiated
/// logout, by the `openidconnect` crate against a running tokend.
#[test]
fn a_relying_party_signs_a_user_in() {
    let db = TestDb::new();
    let secret = seed_code_clients(&db);
    let server = TestServer::with(Options {
        env: vec![("TOKEND_SERVER_PUBLIC_URL".into(), ISSUER.into())],
        db_url: Some(db.url.clone()),
        cores: 1,
        ..Options::default()
    });
    let http = http_client(&server);

    // Discovery (and the JWKS it names), with the logout metadata
    // (RP-Initiated Logout 1.0 §2.1).
    let metadata =
        ProviderMetadataWithLogout::discover(&IssuerUrl::new(ISSUER.into()).unwrap(), &http)
            .unwrap();
    assert_eq!(metadata.issuer().as_str(), ISSUER);
    let end_session = metadata
        .additional_metadata()
        .end_session_endpoint
        .clone()
        .expect("an end_session_endpoint");
    assert_eq!(end_session.url().as_str(), format!("{ISSUER}/logout"));
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new("web".into()),
        Some(ClientSecret::new(secret)),
    )
    .set_redirect_uri(RedirectUrl::new(WEB_CB.into()).unwrap());

    // The authorization URL: code flow, PKCE S256, state, nonce.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("read".into()))
        .set_pkce_challenge(challenge)
        .url();
    assert!(url.as_str().starts_with(&format!("{ISSUER}/authorize?")));

    // The browser: the sign-in page, the form, the redirect.
    let target = &url.as_str()[ISSUER.len()..];
    let mut browser = Browser::default();
    let r = browser.sign_in(&server, target, "alice", PASSWORD);
    let back = location_params(&r, WEB_CB);
    assert_eq!(param(&back, "state"), Some(state.secret().as_str()));
    assert_eq!(param(&back, "iss"), Some(ISSUER));
    let code = param(&back, "code").unwrap().to_string();

    // The code exchange (client_secret_basic), with the verifier.
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request(&http)
        .unwrap();
    let scopes: Vec<String> = tokens
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(scopes, ["openid", "read"]);

    // The ID token, verified by the library: signature with the key the
    // JWKS names (EdDSA, tokend's default), iss, aud, exp, nonce.
    let id_token = tokens.id_token().expect("an id_token");
    let id_verifier = client
        .id_token_verifier()
        .set_allowed_algs(vec![CoreJwsSigningAlgorithm::EdDsa]);
    let claims = id_token.claims(&id_verifier, &nonce).unwrap();
    assert_eq!(claims.issuer().as_str(), ISSUER);
    assert_eq!(
        claims.preferred_username().map(|u| u.as_str()),
        Some("alice")
    );
    assert!(claims.auth_time().is_some());
    // A wrong nonce is refused.
    assert!(id_token
        .claims(&id_verifier, &Nonce::new("another".into()))
        .is_err());
    // at_hash binds the access token to the ID token.
    let expected = claims.access_token_hash().expect("at_hash");
    let actual = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&id_verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(&actual, expected);

    // UserInfo, for the subject of the ID token.
    let info: CoreUserInfoClaims = client
        .user_info(
            tokens.access_token().to_owned(),
            Some(claims.subject().clone()),
        )
        .unwrap()
        .request(&http)
        .unwrap();
    assert_eq!(info.subject(), claims.subject());
    assert_eq!(info.preferred_username().map(|u| u.as_str()), Some("alice"));

    // A refresh: a new access token that validates.
    let refreshed = client
        .exchange_refresh_token(tokens.refresh_token().expect("a refresh token"))
        .unwrap()
        .request(&http)
        .unwrap();
    let access = refreshed.access_token().secret();
    let v = server.get_auth("/validate", &format!("Bearer {access}"));
    assert_eq!(v.status, 200, "{}", v.text());
    assert_eq!(v.header("x-auth-username"), Some("alice"));

    // The browser's session signs it in without a page (prompt=none)…
    let prompt_none = |browser: &mut Browser| {
        let (challenge, _) = PkceCodeChallenge::new_random_sha256();
        let (url, state, _) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_prompt(CoreAuthPrompt::None)
            .set_pkce_challenge(challenge)
            .url();
        let r = browser.get(&server, &url.as_str()[ISSUER.len()..]);
        let back = location_params(&r, WEB_CB);
        assert_eq!(param(&back, "state"), Some(state.secret().as_str()));
        back
    };
    assert!(param(&prompt_none(&mut browser), "code").is_some());

    // …until the app logs the user out: the library's logout URL, with the
    // ID token as hint, the registered post-logout URI and a state (§2),
    // back to the app with the state unchanged (§3).
    let logout_state = CsrfToken::new_random();
    let url = LogoutRequest::from(end_session)
        .set_id_token_hint(id_token)
        .set_client_id(ClientId::new("web".into()))
        .set_post_logout_redirect_uri(PostLogoutRedirectUrl::new(WEB_BYE.into()).unwrap())
        .set_state(logout_state.clone())
        .http_get_url();
    assert!(url.as_str().starts_with(&format!("{ISSUER}/logout?")));
    let r = browser.get(&server, &url.as_str()[ISSUER.len()..]);
    let back = location_params(&r, WEB_BYE);
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(param(&back, "state"), Some(logout_state.secret().as_str()));
    // OpenID Connect Core §3.1.2.6: no session, no page: login_required.
    let back = prompt_none(&mut browser);
    assert_eq!(param(&back, "error"), Some("login_required"));
    assert!(param(&back, "code").is_none());
    // Logout ends the browser session, not the tokens the app holds (those
    // are revoked at /oauth/revoke).
    let v = server.get_auth("/validate", &format!("Bearer {access}"));
    assert_eq!(v.status, 200, "{}", v.text());
}
