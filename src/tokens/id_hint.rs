//! ID token hints (OpenID Connect RP-Initiated Logout 1.0 §2): is a token
//! an ID token this server issued, and whose?
//!
//! A relying party sends the ID token it got back to the logout endpoint as
//! `id_token_hint`, to say which user and which app the logout is for. The
//! hint is checked as an ID token is, but for its expiry: §2 says the OP
//! should accept a hint whose `exp` has passed (the app may keep the ID
//! token for a whole session, longer than its lifetime), so an expired hint
//! is accepted. What is checked, cheapest and least trusting first: size
//! ([`MAX_TOKEN_LEN`]), shape (three base64url parts), header `typ: JWT`
//! (an access token, `at+jwt`, is not an ID token), `kid` (one lookup in
//! the core's keys), header `alg` against the key's algorithm (the
//! algorithm comes from the key, never from the token), the signature, then
//! `iss` (ours), and `sub`, `aud` (one client id, as tokend issues them)
//! present. A hint whose key was pruned (every token it signed has expired
//! for longer than the prune delay) no longer verifies: it is refused like
//! any hint that is not ours.
//!
//! Owns: what a valid ID token hint is. Never imports: anything of the
//! crate outside `tokens`: no clock, `state`, `http` or handler.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Validation;
use serde::Deserialize;

use super::claims::ID_TOKEN_TYP;
use super::keys::CoreKeys;
use super::verify::{is_b64url, RawHeader, MAX_KID_LEN, MAX_TOKEN_LEN};

/// Why an `id_token_hint` was refused. `Copy`, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintError {
    /// Occurs when the hint is longer than [`MAX_TOKEN_LEN`].
    TooLarge,
    /// Occurs when the hint is not three base64url parts of JSON, or its
    /// header lacks a usable `kid`.
    Malformed,
    /// Occurs when the header `typ` is not `JWT`: an access token or
    /// another JWT presented as an ID token.
    NotIdToken,
    /// Occurs when the `kid` is well formed but not in the core's key set
    /// (another issuer's key, or one of ours pruned since). The caller may
    /// trigger a (rate-limited) key-set reload.
    UnknownKid,
    /// Occurs when the header `alg` differs from the algorithm of the key
    /// named by `kid`.
    AlgorithmMismatch,
    /// Occurs when the signature does not verify.
    BadSignature,
    /// Occurs when `iss` is not this server.
    WrongIssuer,
    /// Occurs when `sub` or `aud` is missing, empty or of the wrong type.
    InvalidClaims,
}

impl HintError {
    /// What the error page says, after "the id_token_hint …".
    pub fn description(self) -> &'static str {
        match self {
            HintError::TooLarge => "is too large",
            HintError::Malformed => "is not a JWT",
            HintError::NotIdToken => "is not an ID token",
            HintError::UnknownKid => "is signed with a key this server does not have",
            HintError::AlgorithmMismatch => "names another algorithm than its key's",
            HintError::BadSignature => "has a bad signature",
            HintError::WrongIssuer => "was issued by another server",
            HintError::InvalidClaims => "lacks its sub or aud",
        }
    }
}

impl fmt::Display for HintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for HintError {}

/// What a verified hint says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenHint {
    /// The user id.
    pub sub: String,
    /// The client id the ID token was issued to.
    pub aud: String,
    /// The authorized party (the same client id, in tokend's ID tokens).
    pub azp: Option<String>,
    /// Unix seconds; may have passed.
    pub exp: u64,
}

impl IdTokenHint {
    /// Whether `client_id` is the client this ID token was issued to (its
    /// `aud`, or its `azp`).
    pub fn names_client(&self, client_id: &str) -> bool {
        self.aud == client_id || self.azp.as_deref() == Some(client_id)
    }
}

/// The claims read from a hint. `aud` is one string: tokend's ID tokens
/// have one audience, so an array is not one of ours.
#[derive(Deserialize)]
struct HintClaims {
    iss: String,
    sub: String,
    aud: String,
    #[serde(default)]
    azp: Option<String>,
    exp: u64,
}

/// Verifies `token` as an ID token issued by `issuer` with one of `keys`,
/// whether or not it has expired. Never panics on any input.
pub fn verify_id_token_hint(
    keys: &CoreKeys,
    token: &str,
    issuer: &str,
) -> Result<IdTokenHint, HintError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(HintError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HintError::Malformed);
    };
    if !is_b64url(header) || !is_b64url(payload) || !is_b64url(signature) {
        return Err(HintError::Malformed);
    }
    let header_json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| HintError::Malformed)?;
    let raw: RawHeader<'_> =
        serde_json::from_slice(&header_json).map_err(|_| HintError::Malformed)?;
    // RFC 7515 §4.1.9: compared case-insensitively.
    if !raw
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(ID_TOKEN_TYP))
    {
        return Err(HintError::NotIdToken);
    }
    let kid = raw.kid.as_deref().ok_or(HintError::Malformed)?;
    if kid.len() > MAX_KID_LEN || !is_b64url(kid) {
        return Err(HintError::Malformed);
    }
    let key = keys.verifier(kid).ok_or(HintError::UnknownKid)?;
    // The algorithm comes from the key, never from the token.
    if raw.alg.as_deref() != Some(key.alg_name) {
        return Err(HintError::AlgorithmMismatch);
    }
    let mut validation = Validation::new(key.alg);
    // RP-Initiated Logout 1.0 §2: an expired ID token is a valid hint.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    // The audience is a client id, any of them: the caller compares it
    // with the client the request names.
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["iss", "sub", "aud"]);
    validation.set_issuer(&[issuer]);
    let claims = jsonwebtoken::decode::<HintClaims>(token, &key.key, &validation)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => HintError::BadSignature,
                ErrorKind::InvalidIssuer => HintError::WrongIssuer,
                ErrorKind::InvalidAlgorithm => HintError::AlgorithmMismatch,
                ErrorKind::MissingRequiredClaim(_)
                | ErrorKind::InvalidClaimFormat(_)
                | ErrorKind::Json(_) => HintError::InvalidClaims,
                _ => HintError::Malformed,
            }
        })?
        .claims;
    // jsonwebtoken checked it already; this keeps the guarantee local.
    if claims.iss != issuer {
        return Err(HintError::WrongIssuer);
    }
    if claims.sub.is_empty() || claims.aud.is_empty() {
        return Err(HintError::InvalidClaims);
    }
    Ok(IdTokenHint {
        sub: claims.sub,
        aud: claims.aud,
        azp: claims.azp,
        exp: claims.exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;
    use crate::tokens::claims::{new_jti, sign_access, sign_id_token, AccessClaims, IdTokenClaims};
    use crate::tokens::keys::tests::material;
    use jsonwebtoken::{EncodingKey, Header};

    const ISS: &str = "https://auth.example";
    const NOW: u64 = 1_700_000_000;

    fn id_claims(exp: u64) -> IdTokenClaims {
        IdTokenClaims {
            iss: ISS.into(),
            sub: "user-1".into(),
            aud: "web".into(),
            exp,
            iat: exp - 900,
            auth_time: exp - 900,
            nonce: None,
            at_hash: String::new(),
            azp: "web".into(),
            preferred_username: Some("alice".into()),
        }
    }

    /// Ours, for every algorithm, expired or not: accepted, with its sub
    /// and client.
    #[test]
    fn an_id_token_of_ours_is_a_hint_even_expired() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let (_, m) = material(alg);
            let keys = CoreKeys::from_material(&m).unwrap();
            for exp in [NOW + 900, NOW - 86_400 * 30] {
                let jwt = sign_id_token(&keys, &id_claims(exp), "at", NOW).unwrap();
                let hint = verify_id_token_hint(&keys, &jwt, ISS).unwrap();
                assert_eq!(hint.sub, "user-1");
                assert_eq!(hint.aud, "web");
                assert_eq!(hint.exp, exp);
                assert!(hint.names_client("web"));
                assert!(!hint.names_client("spa"));
            }
        }
    }

    /// Another issuer, another key, a forged signature, an access token,
    /// `alg` swapped, garbage: refused, each for its reason.
    #[test]
    fn what_is_not_our_id_token_is_refused() {
        let (_, m) = material(Algorithm::EdDSA);
        let keys = CoreKeys::from_material(&m).unwrap();
        let (_, other_m) = material(Algorithm::EdDSA);
        let other = CoreKeys::from_material(&other_m).unwrap();
        let ours = sign_id_token(&keys, &id_claims(NOW + 900), "at", NOW).unwrap();

        assert_eq!(
            verify_id_token_hint(&keys, &ours, "https://evil.example"),
            Err(HintError::WrongIssuer)
        );
        let theirs = sign_id_token(&other, &id_claims(NOW + 900), "at", NOW).unwrap();
        assert_eq!(
            verify_id_token_hint(&keys, &theirs, ISS),
            Err(HintError::UnknownKid)
        );
        // The payload of another user under our header and signature.
        let mut parts: Vec<&str> = ours.split('.').collect();
        let mut claims = id_claims(NOW + 900);
        claims.sub = "admin".into();
        let evil = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        parts[1] = &evil;
        assert_eq!(
            verify_id_token_hint(&keys, &parts.join("."), ISS),
            Err(HintError::BadSignature)
        );
        // An access token is no ID token.
        let access = AccessClaims {
            iss: ISS.into(),
            sub: "user-1".into(),
            aud: "tokend".into(),
            exp: NOW + 900,
            iat: NOW,
            jti: new_jti(),
            client_id: "web".into(),
            scope: "openid".into(),
            username: None,
        };
        let at = sign_access(&keys, &access, NOW).unwrap();
        assert_eq!(
            verify_id_token_hint(&keys, &at, ISS),
            Err(HintError::NotIdToken)
        );
        // `alg: HS256` with our kid (the public key as an HMAC secret).
        let kid = jsonwebtoken::decode_header(&ours).unwrap().kid.unwrap();
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some("JWT".into());
        header.kid = Some(kid);
        let hs = jsonwebtoken::encode(
            &header,
            &id_claims(NOW + 900),
            &EncodingKey::from_secret(b"k").unwrap(),
        )
        .unwrap();
        assert_eq!(
            verify_id_token_hint(&keys, &hs, ISS),
            Err(HintError::AlgorithmMismatch)
        );
        for junk in ["", "a.b", "a.b.c.d", "!!.e30.AA", "e30.e30.AA"] {
            assert!(verify_id_token_hint(&keys, junk, ISS).is_err(), "{junk}");
        }
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            verify_id_token_hint(&keys, &huge, ISS),
            Err(HintError::TooLarge)
        );
    }
}
