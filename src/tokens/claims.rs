//! RFC 9068 access-token claims and signing.
//!
//! Owns: [`AccessClaims`] (what tokend puts in an access token), `jti`
//! generation ([`new_jti`]), and the refusal to sign a claim holding a
//! control character (which `verify` would refuse to render in a header).
//!
//! Never imports: anything of the crate outside `tokens` (the signing keys
//! come from [`super::keys`]): no `http`, `handlers`, `state` or store.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::keys::CoreKeys;

/// The claims of an access token (RFC 9068 §2.2). Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The user id for user tokens, the `client_id` for `client_credentials`.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    /// Unique token id; the revocation key.
    pub jti: String,
    pub client_id: String,
    /// Space-separated scopes (RFC 6749 §3.3).
    pub scope: String,
    /// The user's name, for user tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// Occurs when an access token cannot be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Occurs when the core holds no key that may sign (every loaded key was
    /// already retired when loaded): reload the key set.
    #[error("no signing key is loaded")]
    NoSigningKey,
    /// Occurs when a claim holds a control character; such a token would be
    /// refused by `verify` (header injection), so it is never signed.
    #[error("claim `{0}` contains a control character")]
    ControlCharacter(&'static str),
    /// Occurs when the JWT library fails to serialise or sign.
    #[error("cannot sign the access token: {0}")]
    Jwt(#[source] jsonwebtoken::errors::Error),
}

/// A fresh `jti`: 128 random bits from the system RNG, base64url without
/// padding (22 characters).
pub fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    // aws-lc's `RAND_bytes` never reports failure: it returns 1 or aborts
    // the process when no entropy can be had (documented in AWS-LC's
    // `rand.h`), so this error branch is unreachable; an all-zero jti
    // would collide, hence the panic rather than a silent fallback.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        panic!("system random number generator failed");
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `s` holds a byte `verify` refuses to render in a header: C0
/// controls (CR, LF, NUL, …) and DEL.
pub(crate) fn has_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// Signs `claims` with the key that signs at `now`: header `typ: at+jwt`,
/// the key's `kid` and `alg`.
pub fn sign_access(keys: &CoreKeys, claims: &AccessClaims, now: u64) -> Result<String, SignError> {
    for (name, value) in [
        ("iss", claims.iss.as_str()),
        ("sub", &claims.sub),
        ("aud", &claims.aud),
        ("jti", &claims.jti),
        ("client_id", &claims.client_id),
        ("scope", &claims.scope),
        ("username", claims.username.as_deref().unwrap_or("")),
    ] {
        if has_control(value) {
            return Err(SignError::ControlCharacter(name));
        }
    }
    let (key, header) = keys.signer_at(now).ok_or(SignError::NoSigningKey)?;
    jsonwebtoken::encode(header, claims, key).map_err(SignError::Jwt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;
    use crate::tokens::keys::tests::material;

    #[test]
    fn jti_is_128_bits_base64url() {
        let a = new_jti();
        assert_eq!(a.len(), 22);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(a, new_jti());
    }

    #[test]
    fn header_is_at_jwt_with_kid_and_alg() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let (key, m) = material(alg);
            let core = CoreKeys::from_material(&m).unwrap();
            let claims = AccessClaims {
                iss: "https://issuer".into(),
                sub: "u1".into(),
                aud: "tokend".into(),
                exp: 2_000_000_000,
                iat: 1_000_000_000,
                jti: new_jti(),
                client_id: "c".into(),
                scope: "a b".into(),
                username: None,
            };
            let token = sign_access(&core, &claims, 1_000_000_000).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            assert_eq!(header.kid.as_deref(), Some(key.kid()));
            assert_eq!(header.alg, crate::tokens::keys::jwt_alg(alg));
            let payload: serde_json::Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(token.split('.').nth(1).unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert!(payload.get("username").is_none());
        }
    }

    #[test]
    fn refuses_to_sign_control_characters() {
        let (_, m) = material(Algorithm::EdDSA);
        let core = CoreKeys::from_material(&m).unwrap();
        let claims = AccessClaims {
            iss: "i".into(),
            sub: "u1\r\nX-Auth-Subject: admin".into(),
            aud: "a".into(),
            exp: 2,
            iat: 1,
            jti: new_jti(),
            client_id: "c".into(),
            scope: String::new(),
            username: None,
        };
        assert!(matches!(
            sign_access(&core, &claims, 1),
            Err(SignError::ControlCharacter("sub"))
        ));
    }
}
