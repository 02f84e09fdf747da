//! Access-token verification: the hot path of the access check (`access`, for
//! `GET /validate`, `POST /oauth/introspect` and the user API) on a
//! verified-token cache miss (DESIGN rule 3); `/oauth/revoke` also verifies
//! the token it is asked to revoke.
//!
//! Order of checks, cheapest and least trusting first: size cap, shape
//! (three base64url parts), header `typ`, `kid` (one hash lookup in the
//! core's own keys), header `alg` against the key's algorithm, then the
//! payload's `exp`, `iss` and `aud` when they alone refuse the token
//! (before the signature: see `precheck_claims`), then
//! `jsonwebtoken::decode` (signature, `iss`, `aud`, required claims), then
//! `exp`/`nbf` against the caller's clock, then the claims that will be
//! written into response headers. Errors are a small `Copy` enum: nothing is
//! allocated to reject a token.
//!
//! Owns: what a valid access token is: the checks and their order,
//! [`Expectations`] (`iss`, `aud`, leeway), [`TokenError`], the size caps
//! ([`MAX_TOKEN_LEN`], [`MAX_KID_LEN`]), and the forward-auth headers a
//! [`VerifiedToken`] carries. Revocation is not checked here.
//!
//! Never imports: anything of the crate outside `tokens`: no clock (the
//! caller passes `now`), no `revocation`, `state`, `http` or handler.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;
use serde::Deserialize;

use super::claims::has_control;
use super::keys::CoreKeys;

/// Longest token we parse, in bytes. Security constant: bounds the work an
/// unauthenticated client can make a core do per request (base64 and JSON
/// decoding happen before the signature is checked) and the size of cache
/// keys. Our tokens are well under 1 KiB (RS256 ≈ 700 bytes); 8 KiB matches
/// common proxy header limits, so nothing legitimate is refused. Same idea
/// as rauthy's length check before parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Longest `kid` we look up. Our kids are 43-character RFC 7638 thumbprints;
/// the cap keeps an attacker from making us hash kilobytes per lookup.
pub const MAX_KID_LEN: usize = 256;

/// Why a bearer token was refused. `Copy`, no allocation; each variant maps
/// to `invalid_token` with [`TokenError::description`] as the RFC 6750
/// `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenError {
    /// Occurs when the token is longer than [`MAX_TOKEN_LEN`].
    TooLarge,
    /// Occurs when the token is not three base64url parts of JSON, or its
    /// header lacks a usable `kid`.
    Malformed,
    /// Occurs when the header `typ` is not `at+jwt` (RFC 9068 §4): an ID
    /// token or another JWT presented as an access token.
    NotAccessToken,
    /// Occurs when the `kid` is well formed but not in the core's key set.
    /// The caller may trigger a (rate-limited) key-set reload.
    UnknownKid,
    /// Occurs when the header `alg` differs from the algorithm of the key
    /// named by `kid` (defeats `alg: none` and HS256-with-the-public-key).
    AlgorithmMismatch,
    /// Occurs when the signature does not verify.
    BadSignature,
    /// Occurs when `exp` has passed (leeway included).
    Expired,
    /// Occurs when `nbf` is still in the future (leeway included).
    NotYetValid,
    /// Occurs when `iss` is not the expected issuer.
    WrongIssuer,
    /// Occurs when `aud` is not the expected audience.
    WrongAudience,
    /// Occurs when a required claim is missing or has the wrong type, or a
    /// claim holds a control character that must not reach a header.
    InvalidClaims,
}

impl TokenError {
    /// The RFC 6750 `error_description`.
    pub fn description(self) -> &'static str {
        match self {
            TokenError::TooLarge => "token too large",
            TokenError::Malformed => "malformed token",
            TokenError::NotAccessToken => "not an access token",
            TokenError::UnknownKid => "unknown key",
            TokenError::AlgorithmMismatch => "algorithm does not match the key",
            TokenError::BadSignature => "bad signature",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::WrongIssuer => "wrong issuer",
            TokenError::WrongAudience => "wrong audience",
            TokenError::InvalidClaims => "invalid claims",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for TokenError {}

/// What a valid token must say, and the clock leeway. Built once per core
/// (it prepares one `jsonwebtoken::Validation` per algorithm, so a
/// verification allocates none).
#[derive(Debug, Clone)]
pub struct Expectations {
    iss: String,
    aud: String,
    leeway: u64,
    eddsa: Validation,
    es256: Validation,
    rs256: Validation,
}

impl Expectations {
    /// `leeway` (seconds) is added to `exp` and subtracted from `nbf`.
    pub fn new(iss: impl Into<String>, aud: impl Into<String>, leeway: u64) -> Expectations {
        let iss = iss.into();
        let aud = aud.into();
        let make = |alg| {
            let mut v = Validation::new(alg);
            // `exp` and `nbf` are checked by `verify` against the caller's
            // `now` (the core's clock, testable), not jsonwebtoken's own
            // clock; jsonwebtoken still requires `exp` to be present.
            v.validate_exp = false;
            v.validate_nbf = false;
            v.leeway = 0;
            v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
            v.set_issuer(&[iss.as_str()]);
            v.set_audience(&[aud.as_str()]);
            v
        };
        Expectations {
            eddsa: make(jsonwebtoken::Algorithm::EdDSA),
            es256: make(jsonwebtoken::Algorithm::ES256),
            rs256: make(jsonwebtoken::Algorithm::RS256),
            iss,
            aud,
            leeway,
        }
    }

    pub fn iss(&self) -> &str {
        &self.iss
    }

    pub fn aud(&self) -> &str {
        &self.aud
    }

    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    fn validation(&self, alg: jsonwebtoken::Algorithm) -> Option<&Validation> {
        match alg {
            jsonwebtoken::Algorithm::EdDSA => Some(&self.eddsa),
            jsonwebtoken::Algorithm::ES256 => Some(&self.es256),
            jsonwebtoken::Algorithm::RS256 => Some(&self.rs256),
            _ => None,
        }
    }
}

/// A token that passed every check, with its forward-auth response headers
/// rendered once so a cache hit writes them with one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub sub: String,
    pub username: Option<String>,
    pub scope: String,
    pub client_id: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: String,
    pub aud: String,
    pub iss: String,
    /// `X-Auth-Subject`, `X-Auth-Username` (users only), `X-Auth-Scope`,
    /// `X-Auth-Client-Id`, `X-Auth-Expires`, each ending in CRLF.
    headers: Box<[u8]>,
    /// The introspection answer's body, rendered at the token's first
    /// introspection (see [`VerifiedToken::introspection_body`]).
    introspection: Memo,
}

impl VerifiedToken {
    /// The `/validate` response headers, each line ending in `\r\n`.
    pub fn forward_auth_headers(&self) -> &[u8] {
        &self.headers
    }

    /// The body of an introspection answer for this token: `render`'s bytes,
    /// rendered at the first call and kept with the token (in the core's
    /// verified-token cache, so later introspections of the token copy
    /// them, issue #15). The body is a function of the token's claims only;
    /// whether the token is still active is checked on every call before.
    /// Tokens that are only ever validated never pay for it.
    pub fn introspection_body(&self, render: impl FnOnce(&VerifiedToken) -> Vec<u8>) -> &[u8] {
        self.introspection
            .0
            .get_or_init(|| render(self).into_boxed_slice())
    }
}

/// A value rendered once from the token's own fields: it takes no part in
/// comparisons (two verifications of one token are equal whether or not
/// one of them was introspected).
#[derive(Clone, Default)]
struct Memo(std::cell::OnceCell<Box<[u8]>>);

impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl Eq for Memo {}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "rendered"
        } else {
            "not rendered"
        })
    }
}

/// The header members we read before trusting anything; unknown members
/// are ignored (jsonwebtoken enforces `crit`/`b64`).
#[derive(Deserialize)]
pub(super) struct RawHeader<'a> {
    #[serde(borrow, default)]
    pub(super) alg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) typ: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) kid: Option<Cow<'a, str>>,
}

/// The claims `verify` requires (RFC 9068 §2.2): `iat` and `jti` are
/// required here because jsonwebtoken's required-claims list only knows
/// `exp nbf aud iss sub`.
#[derive(Deserialize)]
struct TokenClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    jti: String,
    client_id: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    nbf: Option<u64>,
}

/// Whether `s` is non-empty unpadded base64url.
///
/// Branch-free over the whole string (`fold` with `&`, as the bearer
/// value's token68 check): the short-circuiting `all(..)` it replaced cost
/// ~13 instructions a byte, ~6,600 for a 485-byte token on every cache miss
/// (callgrind, issue #15). Every byte is looked at either way for a token
/// that goes on to be verified.
pub(super) fn is_b64url(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().fold(true, |ok, b| {
            let alpha = (b | 0x20).wrapping_sub(b'a') < 26;
            let digit = b.wrapping_sub(b'0') < 10;
            ok & (alpha | digit | (b == b'-') | (b == b'_'))
        })
}

fn is_access_token_typ(typ: &str) -> bool {
    // RFC 9068 §4: compare case-insensitively; RFC 7515 §4.1.9 allows the
    // "application/" prefix.
    typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
}

#[cold]
fn from_jwt_error(e: &jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAlgorithm => TokenError::AlgorithmMismatch,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            TokenError::InvalidClaims
        }
        ErrorKind::Json(j) if j.classify() == serde_json::error::Category::Data => {
            TokenError::InvalidClaims
        }
        _ => TokenError::Malformed,
    }
}

/// Verifies a bearer access token with the core's keys, at `now` (unix
/// seconds). Never panics on any input.
pub fn verify(
    keys: &CoreKeys,
    token: &str,
    expect: &Expectations,
    now: u64,
) -> Result<VerifiedToken, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    // memchr (SIMD) for the dots: `str::split('.')` cost ~1,700
    // instructions for a 485-byte token (callgrind, issue #15).
    let mut dots = memchr::memchr_iter(b'.', token.as_bytes());
    let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err(TokenError::Malformed);
    };
    let (header, payload, signature) = (
        &token[..first],
        &token[first + 1..second],
        &token[second + 1..],
    );
    if !is_b64url(header) || !is_b64url(payload) || !is_b64url(signature) {
        return Err(TokenError::Malformed);
    }

    let header_json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let raw: RawHeader<'_> =
        serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
    match raw.typ.as_deref() {
        Some(typ) if is_access_token_typ(typ) => {}
        _ => return Err(TokenError::NotAccessToken),
    }
    let kid = raw.kid.as_deref().ok_or(TokenError::Malformed)?;
    // Our kids are base64url thumbprints: anything else (`../`, spaces,
    // kilobytes) cannot be ours and must not trigger a key-set reload.
    if kid.len() > MAX_KID_LEN || !is_b64url(kid) {
        return Err(TokenError::Malformed);
    }
    let key = keys.verifier(kid).ok_or(TokenError::UnknownKid)?;
    // The algorithm comes from the key, never from the token.
    let alg_ok = raw.alg.as_deref().is_some_and(|alg| alg == key.alg_name);
    if !alg_ok {
        return Err(TokenError::AlgorithmMismatch);
    }
    let validation = expect
        .validation(key.alg)
        .ok_or(TokenError::AlgorithmMismatch)?;
    precheck_claims(payload, expect, now)?;

    let claims = jsonwebtoken::decode::<TokenClaims>(token, &key.key, validation)
        .map_err(|e| from_jwt_error(&e))?
        .claims;

    if now >= claims.exp.saturating_add(expect.leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = claims.nbf {
        if nbf > now.saturating_add(expect.leeway) {
            return Err(TokenError::NotYetValid);
        }
    }
    // Issued in the future (past the leeway): a node with a fast clock. A
    // "not before" mark set now would not void it, since its `iat` is
    // later than the mark (issue #13).
    if claims.iat > now.saturating_add(expect.leeway) {
        return Err(TokenError::NotYetValid);
    }
    // jsonwebtoken checked them already; this keeps the guarantee local.
    if claims.iss != expect.iss {
        return Err(TokenError::WrongIssuer);
    }
    if claims.aud != expect.aud {
        return Err(TokenError::WrongAudience);
    }
    render(claims)
}

/// The claims a token can be refused for before its signature is checked:
/// the signature costs ~500,000 instructions (callgrind, issue #15: some 70
/// cached validations), the payload's base64 and JSON a few thousand. A
/// token that is expired, or made for another issuer or audience, is
/// refused whoever signed it, so refusing it first gives nothing away and
/// accepts nothing more: every token this lets through is still checked in
/// full, signature first, by `jsonwebtoken::decode` and the checks after
/// it. A payload that does not parse here is left to those checks (they
/// give the same answers as before this step).
fn precheck_claims(payload: &str, expect: &Expectations, now: u64) -> Result<(), TokenError> {
    #[derive(Deserialize)]
    struct Outline<'a> {
        #[serde(borrow, default)]
        iss: Option<Cow<'a, str>>,
        // A string here; an array (which no tokend token has) is left to
        // the full check.
        #[serde(default)]
        aud: Option<serde_json::Value>,
        #[serde(default)]
        exp: Option<u64>,
    }
    let Ok(json) = URL_SAFE_NO_PAD.decode(payload) else {
        return Ok(());
    };
    let Ok(outline) = serde_json::from_slice::<Outline<'_>>(&json) else {
        return Ok(());
    };
    if outline
        .exp
        .is_some_and(|exp| now >= exp.saturating_add(expect.leeway))
    {
        return Err(TokenError::Expired);
    }
    if outline.iss.is_some_and(|iss| iss != expect.iss) {
        return Err(TokenError::WrongIssuer);
    }
    if let Some(serde_json::Value::String(aud)) = outline.aud {
        if aud != expect.aud {
            return Err(TokenError::WrongAudience);
        }
    }
    Ok(())
}

/// Checks the values that go into headers and renders them.
fn render(c: TokenClaims) -> Result<VerifiedToken, TokenError> {
    let values = [
        c.sub.as_str(),
        &c.scope,
        &c.client_id,
        &c.jti,
        &c.iss,
        &c.aud,
        c.username.as_deref().unwrap_or(""),
    ];
    if values.iter().any(|v| has_control(v)) {
        return Err(TokenError::InvalidClaims);
    }
    let mut h = Vec::with_capacity(
        96 + c.sub.len()
            + c.scope.len()
            + c.client_id.len()
            + c.username.as_ref().map_or(0, |u| u.len() + 19),
    );
    // Writes into a Vec cannot fail.
    let _ = write!(h, "X-Auth-Subject: {}\r\n", c.sub);
    if let Some(u) = &c.username {
        let _ = write!(h, "X-Auth-Username: {u}\r\n");
    }
    let _ = write!(
        h,
        "X-Auth-Scope: {}\r\nX-Auth-Client-Id: {}\r\nX-Auth-Expires: {}\r\n",
        c.scope, c.client_id, c.exp
    );
    Ok(VerifiedToken {
        sub: c.sub,
        username: c.username,
        scope: c.scope,
        client_id: c.client_id,
        exp: c.exp,
        iat: c.iat,
        jti: c.jti,
        aud: c.aud,
        iss: c.iss,
        headers: h.into_boxed_slice(),
        introspection: Memo::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;
    use crate::tokens::claims::{new_jti, sign_access, AccessClaims};
    use crate::tokens::keys::tests::material;
    use crate::tokens::keys::GeneratedKey;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair as _;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "https://auth.example";
    const AUD: &str = "tokend";

    fn expect() -> Expectations {
        Expectations::new(ISS, AUD, 0)
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: ISS.into(),
            sub: "0b7e-user".into(),
            aud: AUD.into(),
            exp: NOW + 900,
            iat: NOW,
            jti: new_jti(),
            client_id: "web".into(),
            scope: "read write".into(),
            username: Some("alice".into()),
        }
    }

    fn setup(alg: Algorithm) -> (GeneratedKey, CoreKeys) {
        let (key, m) = material(alg);
        (key, CoreKeys::from_material(&m).unwrap())
    }

    /// Signs arbitrary header and claims with the core's real key.
    fn sign_raw(core: &CoreKeys, header: &Header, claims: &impl serde::Serialize) -> String {
        let (key, _) = core.signer_at(NOW).unwrap();
        jsonwebtoken::encode(header, claims, key).unwrap()
    }

    fn at_header(core: &CoreKeys) -> Header {
        core.signer_at(NOW).unwrap().1.clone()
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn round_trip_every_algorithm() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let (_, core) = setup(alg);
            let c = claims();
            let token = sign_access(&core, &c, NOW).unwrap();
            let v = verify(&core, &token, &expect(), NOW).unwrap();
            assert_eq!(v.sub, c.sub);
            assert_eq!(v.username.as_deref(), Some("alice"));
            assert_eq!((v.exp, v.iat), (c.exp, c.iat));
            assert_eq!(v.jti, c.jti);
            assert_eq!((v.iss.as_str(), v.aud.as_str()), (ISS, AUD));
            let expected = format!(
                "X-Auth-Subject: 0b7e-user\r\nX-Auth-Username: alice\r\nX-Auth-Scope: read write\r\n\
                 X-Auth-Client-Id: web\r\nX-Auth-Expires: {}\r\n",
                NOW + 900
            );
            assert_eq!(v.forward_auth_headers(), expected.as_bytes());
        }
    }

    #[test]
    fn client_token_has_no_username_header() {
        let (_, core) = setup(Algorithm::EdDSA);
        let mut c = claims();
        c.username = None;
        let token = sign_access(&core, &c, NOW).unwrap();
        let v = verify(&core, &token, &expect(), NOW).unwrap();
        assert!(!String::from_utf8_lossy(v.forward_auth_headers()).contains("Username"));
    }

    #[test]
    fn another_keys_token_is_unknown_kid() {
        let (_, core) = setup(Algorithm::EdDSA);
        let (_, other) = setup(Algorithm::EdDSA);
        let token = sign_access(&other, &claims(), NOW).unwrap();
        assert_eq!(
            verify(&core, &token, &expect(), NOW),
            Err(TokenError::UnknownKid)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let (key, core) = setup(Algorithm::EdDSA);
        let header = b64(&format!(
            r#"{{"alg":"none","typ":"at+jwt","kid":"{}"}}"#,
            key.kid()
        ));
        let payload = b64(&serde_json::to_string(&claims()).unwrap());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.AAAA"),
        ] {
            let err = verify(&core, &token, &expect(), NOW).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed | TokenError::AlgorithmMismatch),
                "{err:?}"
            );
        }
        // No alg at all.
        let header = b64(&format!(r#"{{"typ":"at+jwt","kid":"{}"}}"#, key.kid()));
        let token = format!("{header}.{payload}.AAAA");
        assert_eq!(
            verify(&core, &token, &expect(), NOW),
            Err(TokenError::AlgorithmMismatch)
        );
    }

    #[test]
    fn hs256_with_the_public_key_as_secret_is_refused() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let (key, core) = setup(alg);
            let jwk = key.public_jwk();
            let raw_public: Vec<u8> = match alg {
                Algorithm::RS256 => URL_SAFE_NO_PAD.decode(jwk.n.as_ref().unwrap()).unwrap(),
                _ => URL_SAFE_NO_PAD.decode(jwk.x.as_ref().unwrap()).unwrap(),
            };
            let spki = match alg {
                Algorithm::EdDSA => {
                    aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(key.pkcs8().expose())
                        .unwrap()
                        .public_key()
                        .as_der()
                        .unwrap()
                        .as_ref()
                        .to_vec()
                }
                _ => raw_public.clone(),
            };
            let pem = format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                base64::engine::general_purpose::STANDARD.encode(&spki)
            );
            let jwk_json = serde_json::to_string(jwk).unwrap();
            for secret in [raw_public.as_slice(), pem.as_bytes(), jwk_json.as_bytes()] {
                let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
                header.typ = Some("at+jwt".into());
                header.kid = Some(key.kid().to_string());
                let token = jsonwebtoken::encode(
                    &header,
                    &claims(),
                    &EncodingKey::from_secret(secret).unwrap(),
                )
                .unwrap();
                assert_eq!(
                    verify(&core, &token, &expect(), NOW),
                    Err(TokenError::AlgorithmMismatch)
                );
            }
        }
    }

    #[test]
    fn alg_of_another_family_is_refused() {
        let (_, core) = setup(Algorithm::EdDSA);
        let token = sign_access(&core, &claims(), NOW).unwrap();
        let (h, rest) = token.split_once('.').unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
        let mut header = header.as_object().unwrap().clone();
        header.insert("alg".into(), json!("ES256"));
        let forged = format!("{}.{rest}", b64(&serde_json::to_string(&header).unwrap()));
        assert_eq!(
            verify(&core, &forged, &expect(), NOW),
            Err(TokenError::AlgorithmMismatch)
        );
    }

    #[test]
    fn bad_kids() {
        let (_, core) = setup(Algorithm::EdDSA);
        let payload = b64(&serde_json::to_string(&claims()).unwrap());
        let with_kid = |kid: &str| {
            let h = b64(&json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}).to_string());
            format!("{h}.{payload}.AAAA")
        };
        // 10 KB kid: over the token cap.
        assert_eq!(
            verify(&core, &with_kid(&"A".repeat(10_000)), &expect(), NOW),
            Err(TokenError::TooLarge)
        );
        // Over the kid cap but under the token cap.
        assert_eq!(
            verify(&core, &with_kid(&"A".repeat(300)), &expect(), NOW),
            Err(TokenError::Malformed)
        );
        for kid in ["../../etc/passwd", "a b", "", "kid\u{0}"] {
            assert_eq!(
                verify(&core, &with_kid(kid), &expect(), NOW),
                Err(TokenError::Malformed),
                "{kid:?}"
            );
        }
        // Well formed but unknown: the caller may reload.
        assert_eq!(
            verify(
                &core,
                &with_kid("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"),
                &expect(),
                NOW
            ),
            Err(TokenError::UnknownKid)
        );
        // Missing kid.
        let h = b64(r#"{"alg":"EdDSA","typ":"at+jwt"}"#);
        assert_eq!(
            verify(&core, &format!("{h}.{payload}.AAAA"), &expect(), NOW),
            Err(TokenError::Malformed)
        );
    }

    /// Expired, or for another issuer or audience: refused before the
    /// signature (a forged one gets the same answer as a real one), and
    /// nothing the pre-check lets through skips the signature.
    #[test]
    fn b64url_alphabet() {
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        assert!(is_b64url(alphabet));
        for b in 0..=255u8 {
            let s = [b'A', b, b'z'];
            let Ok(s) = std::str::from_utf8(&s) else {
                continue;
            };
            assert_eq!(is_b64url(s), alphabet.as_bytes().contains(&b), "{b:#x}");
        }
        assert!(!is_b64url(""));
        assert!(!is_b64url("ab=c") && !is_b64url("a+b") && !is_b64url("a/b") && !is_b64url("é"));
    }

    #[test]
    fn claims_that_alone_refuse_are_checked_before_the_signature() {
        let (_, core) = setup(Algorithm::EdDSA);
        let token = sign_access(&core, &claims(), NOW).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let with_payload = |c: &AccessClaims, sig: &str| {
            format!(
                "{}.{}.{sig}",
                parts[0],
                b64(&serde_json::to_string(c).unwrap())
            )
        };
        let mut expired = claims();
        expired.exp = NOW - 10;
        let mut foreign_iss = claims();
        foreign_iss.iss = "https://elsewhere.example".into();
        let mut foreign_aud = claims();
        foreign_aud.aud = "another-api".into();
        for sig in [parts[2], "AAAA"] {
            for (c, want) in [
                (&expired, TokenError::Expired),
                (&foreign_iss, TokenError::WrongIssuer),
                (&foreign_aud, TokenError::WrongAudience),
            ] {
                assert_eq!(
                    verify(&core, &with_payload(c, sig), &expect(), NOW),
                    Err(want)
                );
            }
        }
        // Real claims and a real token's signature over other claims: the
        // signature decides.
        let mut other = claims();
        other.scope = "admin".into();
        assert_eq!(
            verify(&core, &with_payload(&other, parts[2]), &expect(), NOW),
            Err(TokenError::BadSignature)
        );
        // A payload the outline cannot read goes on to the full check.
        let odd = b64(r#"{"iss":1,"exp":"soon"}"#);
        assert_eq!(
            verify(
                &core,
                &format!("{}.{odd}.{}", parts[0], parts[2]),
                &expect(),
                NOW
            ),
            Err(TokenError::BadSignature)
        );
        assert!(verify(&core, &token, &expect(), NOW).is_ok());
    }

    #[test]
    fn tampering_is_a_bad_signature() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let (_, core) = setup(alg);
            let token = sign_access(&core, &claims(), NOW).unwrap();
            let parts: Vec<&str> = token.split('.').collect();

            let mut c = claims();
            c.sub = "admin".into();
            let forged_payload = b64(&serde_json::to_string(&c).unwrap());
            let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
            assert_eq!(
                verify(&core, &forged, &expect(), NOW),
                Err(TokenError::BadSignature)
            );

            let mut sig = parts[2].as_bytes().to_vec();
            sig[0] = if sig[0] == b'A' { b'B' } else { b'A' };
            let forged = format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                String::from_utf8(sig).unwrap()
            );
            assert_eq!(
                verify(&core, &forged, &expect(), NOW),
                Err(TokenError::BadSignature)
            );
        }
    }

    #[test]
    fn time_and_audience_checks() {
        let (_, core) = setup(Algorithm::EdDSA);
        let token = sign_access(&core, &claims(), NOW).unwrap();
        assert!(verify(&core, &token, &expect(), NOW + 899).is_ok());
        assert_eq!(
            verify(&core, &token, &expect(), NOW + 900),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(&core, &token, &expect(), NOW + 10_000),
            Err(TokenError::Expired)
        );
        // Leeway.
        let lenient = Expectations::new(ISS, AUD, 30);
        assert!(verify(&core, &token, &lenient, NOW + 929).is_ok());
        assert_eq!(
            verify(&core, &token, &lenient, NOW + 930),
            Err(TokenError::Expired)
        );

        // nbf in the future.
        let mut v = serde_json::to_value(claims()).unwrap();
        v["nbf"] = json!(NOW + 60);
        let token = sign_raw(&core, &at_header(&core), &v);
        assert_eq!(
            verify(&core, &token, &expect(), NOW),
            Err(TokenError::NotYetValid)
        );
        assert!(verify(&core, &token, &expect(), NOW + 60).is_ok());
        assert!(verify(&core, &token, &Expectations::new(ISS, AUD, 60), NOW).is_ok());

        // iat in the future: issued by a node whose clock is ahead.
        let mut c = claims();
        (c.iat, c.exp) = (c.iat + 60, c.exp + 60);
        let token = sign_access(&core, &c, NOW).unwrap();
        assert_eq!(
            verify(&core, &token, &expect(), NOW),
            Err(TokenError::NotYetValid)
        );
        assert!(verify(&core, &token, &Expectations::new(ISS, AUD, 60), NOW).is_ok());
        assert!(verify(&core, &token, &expect(), NOW + 60).is_ok());

        let mut c = claims();
        c.iss = "https://evil.example".into();
        let token = sign_access(&core, &c, NOW).unwrap();
        assert_eq!(
            verify(&core, &token, &expect(), NOW),
            Err(TokenError::WrongIssuer)
        );

        let mut c = claims();
        c.aud = "other-api".into();
        let token = sign_access(&core, &c, NOW).unwrap();
        assert_eq!(
            verify(&core, &token, &expect(), NOW),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn missing_required_claims() {
        let (_, core) = setup(Algorithm::EdDSA);
        for missing in ["exp", "iat", "sub", "jti", "iss", "aud", "client_id"] {
            let mut v = serde_json::to_value(claims()).unwrap();
            v.as_object_mut().unwrap().remove(missing);
            let token = sign_raw(&core, &at_header(&core), &v);
            let err = verify(&core, &token, &expect(), NOW).unwrap_err();
            assert!(
                matches!(
                    err,
                    TokenError::InvalidClaims | TokenError::WrongIssuer | TokenError::WrongAudience
                ),
                "{missing}: {err:?}"
            );
        }
        // exp as a string.
        let mut v = serde_json::to_value(claims()).unwrap();
        v["exp"] = json!("tomorrow");
        let token = sign_raw(&core, &at_header(&core), &v);
        assert!(verify(&core, &token, &expect(), NOW).is_err());
    }

    #[test]
    fn size_and_shape() {
        let (_, core) = setup(Algorithm::EdDSA);
        let big = format!(
            "{}.{}.{}",
            "a".repeat(4000),
            "b".repeat(4000),
            "c".repeat(200)
        );
        assert_eq!(
            verify(&core, &big, &expect(), NOW),
            Err(TokenError::TooLarge)
        );
        for bad in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "..",
            "a..c",
            "aaaa.bbbb.cccc",
            "abc$.def.ghi",
            "eyJ=.eyJ=.AAAA",
            "a+b/.c.d",
            "a b.c.d",
            "é.é.é",
        ] {
            let err = verify(&core, bad, &expect(), NOW).unwrap_err();
            assert_eq!(err, TokenError::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn payload_that_is_not_an_object() {
        let (_, core) = setup(Algorithm::EdDSA);
        for payload in [json!([1, 2, 3]), json!(42), json!("x"), json!(null)] {
            let token = sign_raw(&core, &at_header(&core), &payload);
            let err = verify(&core, &token, &expect(), NOW).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed | TokenError::InvalidClaims),
                "{payload}: {err:?}"
            );
        }
        // Valid signature over bytes that are not JSON at all.
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&at_header(&core)).unwrap());
        let p = b64("not json");
        let msg = format!("{h}.{p}");
        let (key, header) = core.signer_at(NOW).unwrap();
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, header.alg).unwrap();
        let token = format!("{msg}.{sig}");
        assert_eq!(
            verify(&core, &token, &expect(), NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn typ_must_be_at_jwt() {
        let (_, core) = setup(Algorithm::EdDSA);
        for (typ, ok) in [
            (None, false),
            (Some("JWT"), false),
            (Some("jwt"), false),
            (Some("at+jwt"), true),
            (Some("AT+JWT"), true),
            (Some("application/at+jwt"), true),
            (Some("Application/AT+JWT"), true),
        ] {
            let mut header = at_header(&core);
            header.typ = typ.map(String::from);
            let token = sign_raw(&core, &header, &claims());
            let got = verify(&core, &token, &expect(), NOW);
            if ok {
                assert!(got.is_ok(), "{typ:?}: {got:?}");
            } else {
                assert_eq!(got, Err(TokenError::NotAccessToken), "{typ:?}");
            }
        }
    }

    #[test]
    fn control_characters_never_reach_headers() {
        let (_, core) = setup(Algorithm::EdDSA);
        for field in ["sub", "scope", "client_id", "username"] {
            let mut v = serde_json::to_value(claims()).unwrap();
            v[field] = json!("x\r\nX-Auth-Subject: admin");
            let token = sign_raw(&core, &at_header(&core), &v);
            assert_eq!(
                verify(&core, &token, &expect(), NOW),
                Err(TokenError::InvalidClaims),
                "{field}"
            );
        }
        let mut v = serde_json::to_value(claims()).unwrap();
        v["scope"] = json!("a\u{7f}b");
        let token = sign_raw(&core, &at_header(&core), &v);
        assert_eq!(
            verify(&core, &token, &expect(), NOW),
            Err(TokenError::InvalidClaims)
        );
    }

    #[test]
    fn every_error_has_a_description() {
        for e in [
            TokenError::TooLarge,
            TokenError::Malformed,
            TokenError::NotAccessToken,
            TokenError::UnknownKid,
            TokenError::AlgorithmMismatch,
            TokenError::BadSignature,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::InvalidClaims,
        ] {
            let d = e.description();
            assert!(!d.is_empty() && !d.contains('"') && !d.contains('\\'));
            assert_eq!(e.to_string(), d);
        }
    }
}
