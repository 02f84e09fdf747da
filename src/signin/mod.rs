//! Pending authorization requests (issue #16): what `GET /authorize`
//! checked, carried by the sign-in page's form to `POST /login`, sealed so
//! that only a page tokend rendered for that request can sign anybody in.
//!
//! Nothing is stored: the form carries the request itself (`request`:
//! base64url of its JSON, with an expiry [`PENDING_TTL_SECS`] ahead) and
//! its CSRF token (`csrf_token`: an HMAC-SHA256 of it under a key derived
//! from the KEK, [`SigninMac::PURPOSE`]). The token is checked, in constant
//! time, before any password is looked at; a form made by another site, or
//! one whose request was altered (another redirect URI, another PKCE
//! challenge), or an expired one, signs nobody in. Keeping the request in
//! the page rather than in Redis means an anonymous `GET /authorize` writes
//! nothing anywhere: a flood of them cannot fill Redis.
//!
//! # Login CSRF: the pre-session cookie
//!
//! The seal alone proves tokend made the form, not that this browser got
//! it: an attacker could fetch a page himself and make a victim's browser
//! post it with the attacker's username and password, signing the victim
//! into the attacker's account (and session). So the page that shows the
//! form also sets a random cookie ([`LOGIN_COOKIE_SECURE`] over https,
//! [`LOGIN_COOKIE_PLAIN`] over http; `Path=/; HttpOnly; SameSite=Lax`,
//! [`PENDING_TTL_SECS`]), kept when the browser already has one, and the
//! request carries the SHA-256 of its value ([`PendingAuthorization::browser`]).
//! `POST /login` signs somebody in only when the cookie it gets hashes to
//! it ([`PendingAuthorization::is_for_browser`]). `SameSite=Lax` keeps the
//! cookie off a cross-site `POST`, and the attacker cannot set it (a
//! `__Host-` cookie only comes from this origin).
//!
//! What the request says is checked again at `POST /login` (the redirect
//! URI is still registered, the scope still allowed), since the client may
//! have changed meanwhile.
//!
//! # The sign-out confirmation
//!
//! RP-initiated logout asks the user before it ends a session it cannot
//! tie to the app's request (`handlers::logout`). That page's form is
//! sealed the same way ([`SigninMac::seal_logout`]): a [`PendingLogout`]
//! under the same key, with another domain-separation prefix, so that a
//! sign-in form is never a sign-out form nor the other way round. The
//! pending logout is bound to the browser's session cookie (its SHA-256,
//! [`PendingLogout::session`]), the one the page was shown for: a form
//! fetched by another browser (an attacker's, with his own session) ends
//! nothing, and a cross-site `POST` carries no `SameSite=Lax` cookie.
//!
//! Owns: the pending requests' format, their seal and their lifetime.
//! Never imports: anything of the crate.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The pre-session cookie's name over https.
pub const LOGIN_COOKIE_SECURE: &str = "__Host-tokend_login";
/// The pre-session cookie's name over plain http (development only).
pub const LOGIN_COOKIE_PLAIN: &str = "tokend_login";

/// How long a sign-in page stays usable, seconds: 10 minutes to type a
/// username and password (and find them). Past it the form answers "this
/// sign-in page has expired" and the user starts again from the app.
pub const PENDING_TTL_SECS: u64 = 600;

/// Largest sealed request taken back from a form, bytes: a request comes
/// from a query string, which the head limit (8 KiB by default) bounds;
/// base64 adds a third.
pub const MAX_SEALED_BYTES: usize = 16 * 1024;

/// An authorization request that passed every check of `GET /authorize`,
/// waiting for the user to sign in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub client_id: String,
    /// The registered redirect URI the request named.
    pub redirect_uri: String,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The scope the client asked for (space-separated), within the
    /// client's; narrowed to the user's at sign-in.
    pub scope: String,
    /// The client's `state`, returned unchanged.
    pub state: Option<String>,
    /// The OpenID Connect `nonce`.
    pub nonce: Option<String>,
    /// Unix seconds after which the form is refused.
    pub expires: u64,
    /// 128 random bits ([`page_salt`]): each page its own token, even for
    /// the same request in the same second.
    pub salt: String,
    /// SHA-256 (base64url) of the pre-session cookie of the browser the
    /// page was shown to ([`browser_binding`]).
    pub browser: String,
}

impl PendingAuthorization {
    /// Whether `cookie` (the pre-session cookie `POST /login` got) is the
    /// one the page was shown with. Compared in constant time.
    pub fn is_for_browser(&self, cookie: Option<&str>) -> bool {
        let Some(cookie) = cookie.filter(|c| is_login_cookie_value(c)) else {
            return false;
        };
        aws_lc_rs::constant_time::verify_slices_are_equal(
            browser_binding(cookie).as_bytes(),
            self.browser.as_bytes(),
        )
        .is_ok()
    }
}

/// [`PendingAuthorization::browser`] of a pre-session cookie value.
pub fn browser_binding(cookie: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(cookie.as_bytes()))
}

/// A fresh pre-session cookie value: 256 random bits, base64url.
pub fn new_login_cookie() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Whether `v` has the shape of a pre-session cookie value tokend gives.
pub fn is_login_cookie_value(v: &str) -> bool {
    v.len() == 43
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The pre-session cookie's name: [`LOGIN_COOKIE_SECURE`] when the public
/// URL is https, else [`LOGIN_COOKIE_PLAIN`].
pub fn login_cookie_name(https: bool) -> &'static str {
    if https {
        LOGIN_COOKIE_SECURE
    } else {
        LOGIN_COOKIE_PLAIN
    }
}

/// The `Set-Cookie` header line (with CRLF) of the pre-session cookie.
pub fn set_login_cookie(value: &str, https: bool) -> String {
    format!(
        "Set-Cookie: {}={value}; Path=/; Max-Age={PENDING_TTL_SECS}; HttpOnly; SameSite=Lax{}\r\n",
        login_cookie_name(https),
        if https { "; Secure" } else { "" }
    )
}

/// The well-formed value of the cookie `name` in a `Cookie` header (RFC
/// 6265 §4.2), if any; the last one wins when a name repeats.
pub fn find_cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a str> {
    let mut found = None;
    for pair in header.split(|&b| b == b';') {
        let pair = pair.trim_ascii();
        if let Some(value) = pair
            .strip_prefix(name.as_bytes())
            .and_then(|r| r.strip_prefix(b"="))
        {
            found = std::str::from_utf8(value).ok();
        }
    }
    found
}

/// A fresh [`PendingAuthorization::salt`].
pub fn page_salt() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// Why a form's request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Occurs when the CSRF token is missing or is not the request's: the
    /// form was not made by tokend for this request.
    Forged,
    /// Occurs when the page is older than [`PENDING_TTL_SECS`].
    Expired,
}

/// The key that seals pending requests (HMAC-SHA256).
pub struct SigninMac {
    key: aws_lc_rs::hmac::Key,
}

impl SigninMac {
    /// The HKDF purpose of the key: `Kek::derive(SigninMac::PURPOSE)`.
    pub const PURPOSE: &'static str = "tokend sign-in form mac v1";

    /// Seals under `key` (32 bytes, derived from the KEK).
    pub fn new(key: &[u8; 32]) -> SigninMac {
        SigninMac {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key),
        }
    }

    /// The MAC's input: a 16-byte prefix naming what is sealed (a sign-in
    /// form's request, [`SIGNIN_DOMAIN`], or a sign-out confirmation's,
    /// [`LOGOUT_DOMAIN`]), then the sealed text.
    fn input(domain: &[u8; 16], sealed: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + sealed.len());
        out.extend_from_slice(domain);
        out.extend_from_slice(sealed.as_bytes());
        out
    }

    fn seal_as<T: Serialize>(&self, domain: &[u8; 16], value: &T) -> (String, String) {
        // Serialising a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(value).unwrap_or_default();
        let sealed = URL_SAFE_NO_PAD.encode(json);
        let tag = aws_lc_rs::hmac::sign(&self.key, &Self::input(domain, &sealed));
        let csrf = URL_SAFE_NO_PAD.encode(tag.as_ref());
        (sealed, csrf)
    }

    /// The value sealed in `sealed` under `domain`, if `csrf` is its tag
    /// (checked in constant time, before anything of it is read).
    fn open_as<T: DeserializeOwned>(
        &self,
        domain: &[u8; 16],
        sealed: &str,
        csrf: Option<&str>,
    ) -> Result<T, OpenError> {
        let Some(tag) = csrf.and_then(|c| URL_SAFE_NO_PAD.decode(c).ok()) else {
            return Err(OpenError::Forged);
        };
        if sealed.len() > MAX_SEALED_BYTES
            || aws_lc_rs::hmac::verify(&self.key, &Self::input(domain, sealed), &tag).is_err()
        {
            return Err(OpenError::Forged);
        }
        // Sealed by tokend: it decodes, unless the format changed between
        // versions, which is as good as forged.
        URL_SAFE_NO_PAD
            .decode(sealed)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(OpenError::Forged)
    }

    /// The form fields of `pending`: `(request, csrf_token)`.
    pub fn seal(&self, pending: &PendingAuthorization) -> (String, String) {
        self.seal_as(SIGNIN_DOMAIN, pending)
    }

    /// The request of a form's `request` and `csrf_token` fields, if the
    /// token is the request's (checked in constant time, before anything of
    /// the request is read) and the page has not expired at `now`.
    pub fn open(
        &self,
        sealed: &str,
        csrf: Option<&str>,
        now: u64,
    ) -> Result<PendingAuthorization, OpenError> {
        let pending: PendingAuthorization = self.open_as(SIGNIN_DOMAIN, sealed, csrf)?;
        if pending.expires <= now {
            return Err(OpenError::Expired);
        }
        Ok(pending)
    }

    /// The form fields of a sign-out confirmation: `(logout_request,
    /// csrf_token)`.
    pub fn seal_logout(&self, pending: &PendingLogout) -> (String, String) {
        self.seal_as(LOGOUT_DOMAIN, pending)
    }

    /// The pending logout of a confirmation form's `logout_request` and
    /// `csrf_token` fields, as [`SigninMac::open`] does for a sign-in form.
    pub fn open_logout(
        &self,
        sealed: &str,
        csrf: Option<&str>,
        now: u64,
    ) -> Result<PendingLogout, OpenError> {
        let pending: PendingLogout = self.open_as(LOGOUT_DOMAIN, sealed, csrf)?;
        if pending.expires <= now {
            return Err(OpenError::Expired);
        }
        Ok(pending)
    }
}

/// The MAC prefix of sign-in forms (unchanged since the first version:
/// forms already shown stay valid across an upgrade).
const SIGNIN_DOMAIN: &[u8; 16] = b"tokend-signin-v1";
/// The MAC prefix of sign-out confirmations.
const LOGOUT_DOMAIN: &[u8; 16] = b"tokend-logout-v1";

/// An RP-initiated logout request that passed its checks, waiting for the
/// user to confirm it (OpenID Connect RP-Initiated Logout 1.0 §2: the OP
/// asks the user whether to log out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogout {
    /// The client the request named (by its hint or its `client_id`).
    pub client_id: Option<String>,
    /// Where to send the browser afterwards: registered for `client_id`
    /// (checked again when the form comes back).
    pub post_logout_redirect_uri: Option<String>,
    /// The client's `state`, returned unchanged.
    pub state: Option<String>,
    /// Unix seconds after which the form is refused.
    pub expires: u64,
    /// 128 random bits ([`page_salt`]): each page its own token.
    pub salt: String,
    /// SHA-256 (base64url) of the session cookie of the browser the page
    /// was shown to ([`browser_binding`]).
    pub session: String,
}

impl PendingLogout {
    /// Whether `cookie` (the session cookie the confirmation came back
    /// with) is the one the page was shown for. Compared in constant time.
    pub fn is_for_session(&self, cookie: Option<&str>) -> bool {
        // A session cookie has the pre-session cookie's shape (32 random
        // bytes, base64url).
        let Some(cookie) = cookie.filter(|c| is_login_cookie_value(c)) else {
            return false;
        };
        aws_lc_rs::constant_time::verify_slices_are_equal(
            browser_binding(cookie).as_bytes(),
            self.session.as_bytes(),
        )
        .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(expires: u64) -> PendingAuthorization {
        PendingAuthorization {
            client_id: "web".into(),
            redirect_uri: "https://app.example/cb".into(),
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            scope: "openid".into(),
            state: Some("xyz".into()),
            nonce: None,
            expires,
            salt: page_salt(),
            browser: browser_binding("b"),
        }
    }

    /// The request is for the browser whose pre-session cookie hashes to
    /// its binding, and no other.
    #[test]
    fn bound_to_one_browser() {
        let cookie = new_login_cookie();
        assert!(is_login_cookie_value(&cookie));
        let mut p = pending(1);
        p.browser = browser_binding(&cookie);
        assert!(p.is_for_browser(Some(&cookie)));
        assert!(!p.is_for_browser(None));
        assert!(!p.is_for_browser(Some(&new_login_cookie())));
        assert!(!p.is_for_browser(Some("b")));
        assert_eq!(
            set_login_cookie("v", true),
            "Set-Cookie: __Host-tokend_login=v; Path=/; Max-Age=600; HttpOnly; SameSite=Lax; Secure\r\n"
        );
        assert_eq!(
            set_login_cookie("v", false),
            "Set-Cookie: tokend_login=v; Path=/; Max-Age=600; HttpOnly; SameSite=Lax\r\n"
        );
        assert_eq!(
            find_cookie(b"a=1; tokend_login=x; b", "tokend_login"),
            Some("x")
        );
        assert_eq!(find_cookie(b"xtokend_login=x", "tokend_login"), None);
    }

    /// A sealed request opens with its own token, until it expires; never
    /// with another's, an altered one, none, or under another key.
    #[test]
    fn seal_and_open() {
        let mac = SigninMac::new(&[4; 32]);
        let p = pending(1_000);
        let (sealed, csrf) = mac.seal(&p);
        assert_eq!(csrf.len(), 43);
        // Each page its own token, the same request or not.
        assert_ne!(mac.seal(&pending(1_000)).1, mac.seal(&pending(1_000)).1);
        assert_eq!(mac.open(&sealed, Some(&csrf), 999), Ok(p.clone()));
        assert_eq!(
            mac.open(&sealed, Some(&csrf), 1_000),
            Err(OpenError::Expired)
        );
        assert_eq!(mac.open(&sealed, None, 999), Err(OpenError::Forged));
        assert_eq!(mac.open(&sealed, Some(""), 999), Err(OpenError::Forged));
        assert_eq!(
            mac.open(&sealed, Some(&csrf[1..]), 999),
            Err(OpenError::Forged)
        );
        let (other, other_csrf) = mac.seal(&pending(1_001));
        assert_eq!(
            mac.open(&sealed, Some(&other_csrf), 999),
            Err(OpenError::Forged)
        );
        assert_eq!(mac.open(&other, Some(&csrf), 999), Err(OpenError::Forged));
        // Another redirect URI, sealed by someone without the key.
        let mut evil = p.clone();
        evil.redirect_uri = "https://evil.example/".into();
        let (evil_sealed, evil_csrf) = SigninMac::new(&[5; 32]).seal(&evil);
        assert_eq!(
            mac.open(&evil_sealed, Some(&evil_csrf), 999),
            Err(OpenError::Forged)
        );
        assert_eq!(
            mac.open(&evil_sealed, Some(&csrf), 999),
            Err(OpenError::Forged)
        );
        let huge = "A".repeat(MAX_SEALED_BYTES + 1);
        assert_eq!(mac.open(&huge, Some(&csrf), 999), Err(OpenError::Forged));
    }

    fn pending_logout(expires: u64, session: &str) -> PendingLogout {
        PendingLogout {
            client_id: Some("web".into()),
            post_logout_redirect_uri: Some("https://app.example/bye".into()),
            state: Some("s t".into()),
            expires,
            salt: page_salt(),
            session: browser_binding(session),
        }
    }

    /// A sign-out confirmation opens with its own token until it expires,
    /// for the session it was shown to; a sign-in form's seal is no
    /// sign-out seal, nor the other way round (another MAC prefix).
    #[test]
    fn logout_seals_are_their_own() {
        let mac = SigninMac::new(&[4; 32]);
        let session = new_login_cookie();
        let p = pending_logout(1_000, &session);
        let (sealed, csrf) = mac.seal_logout(&p);
        assert_eq!(mac.open_logout(&sealed, Some(&csrf), 999), Ok(p.clone()));
        assert_eq!(
            mac.open_logout(&sealed, Some(&csrf), 1_000),
            Err(OpenError::Expired)
        );
        assert_eq!(mac.open_logout(&sealed, None, 999), Err(OpenError::Forged));
        // Another page's token (another salt), for the same session.
        let other = mac.seal_logout(&pending_logout(1_000, &session)).1;
        assert_eq!(
            mac.open_logout(&sealed, Some(&other), 999),
            Err(OpenError::Forged)
        );
        assert!(p.is_for_session(Some(&session)));
        assert!(!p.is_for_session(Some(&new_login_cookie())));
        assert!(!p.is_for_session(None));
        // Across kinds: the same bytes sealed as the other kind do not open.
        assert_eq!(mac.open(&sealed, Some(&csrf), 999), Err(OpenError::Forged));
        let (signin, signin_csrf) = mac.seal(&pending(1_000));
        assert_eq!(
            mac.open_logout(&signin, Some(&signin_csrf), 999),
            Err(OpenError::Forged)
        );
        // Under another key.
        let (evil, evil_csrf) = SigninMac::new(&[5; 32]).seal_logout(&p);
        assert_eq!(
            mac.open_logout(&evil, Some(&evil_csrf), 999),
            Err(OpenError::Forged)
        );
    }
}
