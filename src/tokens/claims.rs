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

use super::keys::{CoreKeys, TokenKind};

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
    /// Occurs when the claims cannot be serialised.
    #[error("cannot serialise the token's claims: {0}")]
    Json(#[source] serde_json::Error),
    /// Occurs when aws-lc fails to sign (it reports no reason).
    #[error("cannot sign the token")]
    Sign,
}

/// The JWT of `claims`, signed with the key that signs at `now`: what
/// `jsonwebtoken::encode` makes with that key's header for `kind`, from the
/// key parsed once (see `keys::snapshot::PreparedSigner`).
fn sign_jwt<T: Serialize>(
    keys: &CoreKeys,
    kind: TokenKind,
    claims: &T,
    now: u64,
) -> Result<String, SignError> {
    let (signer, _) = keys
        .prepared_signer_at(now)
        .ok_or(SignError::NoSigningKey)?;
    let json = serde_json::to_vec(claims).map_err(SignError::Json)?;
    let header = signer.header_b64(kind);
    // header . claims . signature (86 base64url characters for Ed25519).
    let mut token = String::with_capacity(header.len() + json.len() * 4 / 3 + 96);
    token.push_str(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&json, &mut token);
    signer
        .append_signature(&mut token)
        .map_err(|_| SignError::Sign)?;
    Ok(token)
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
    sign_jwt(keys, TokenKind::Access, claims, now)
}

/// The claims of an OpenID Connect ID token (OpenID Connect Core §2,
/// §3.1.3.6). Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    /// The user id, as in the access token.
    pub sub: String,
    /// The client id.
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    /// When the user last typed their password.
    pub auth_time: u64,
    /// The authorization request's `nonce`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Left half of the access token's hash (§3.1.3.6); filled in by
    /// [`sign_id_token`] for the signing key's algorithm.
    #[serde(default)]
    pub at_hash: String,
    /// The client id (the authorized party).
    pub azp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
}

pub use super::keys::ID_TOKEN_TYP;

/// `at_hash` of `access_token` for a key of algorithm `alg` (OpenID Connect
/// Core §3.1.3.6): base64url of the left half of the hash that goes with
/// `alg`: SHA-256 for ES256 and RS256, SHA-512 for EdDSA with Ed25519
/// (OpenID Connect Core errata set 2; what `openidconnect` and other
/// relying parties check).
pub fn at_hash(alg: jsonwebtoken::Algorithm, access_token: &str) -> String {
    use sha2::{Digest, Sha256, Sha512};
    let digest: Vec<u8> = match alg {
        jsonwebtoken::Algorithm::EdDSA => Sha512::digest(access_token.as_bytes()).to_vec(),
        jsonwebtoken::Algorithm::ES384 | jsonwebtoken::Algorithm::RS384 => {
            sha2::Sha384::digest(access_token.as_bytes()).to_vec()
        }
        jsonwebtoken::Algorithm::RS512 => Sha512::digest(access_token.as_bytes()).to_vec(),
        _ => Sha256::digest(access_token.as_bytes()).to_vec(),
    };
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// Signs an ID token for `access_token` with the key that signs at `now`
/// (the one that signed the access token): header `typ: JWT`, the key's
/// `kid` and `alg`; `at_hash` is computed for that algorithm.
pub fn sign_id_token(
    keys: &CoreKeys,
    claims: &IdTokenClaims,
    access_token: &str,
    now: u64,
) -> Result<String, SignError> {
    let (_, alg) = keys
        .prepared_signer_at(now)
        .ok_or(SignError::NoSigningKey)?;
    let claims = IdTokenClaims {
        at_hash: at_hash(alg, access_token),
        ..claims.clone()
    };
    sign_jwt(keys, TokenKind::Id, &claims, now)
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

    /// Claims of a user token (`username` given) or a client's.
    fn sample_claims(username: Option<&str>) -> AccessClaims {
        AccessClaims {
            iss: "https://issuer".into(),
            sub: "u1".into(),
            aud: "tokend".into(),
            exp: 2_000_000_000,
            iat: 1_000_000_000,
            jti: new_jti(),
            client_id: "c".into(),
            scope: "a b".into(),
            username: username.map(Into::into),
        }
    }

    #[test]
    fn header_is_at_jwt_with_kid_and_alg() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let (key, m) = material(alg);
            let core = CoreKeys::from_material(&m).unwrap();
            let claims = sample_claims(None);
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

    /// The key parsed once makes the token `jsonwebtoken::encode` makes:
    /// byte for byte for the deterministic signatures (Ed25519, RSA
    /// PKCS#1 v1.5), and one that verifies with the key for ECDSA; the ID
    /// token's header is the access token's with `typ: JWT`.
    #[test]
    fn prepared_signing_is_jsonwebtoken_encode() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let (_, m) = material(alg);
            let core = CoreKeys::from_material(&m).unwrap();
            let claims = sample_claims(Some("ada"));
            let now = 1_000_000_000;
            let ours = sign_access(&core, &claims, now).unwrap();
            let (key, header) = core.signer_at(now).unwrap();
            let theirs = jsonwebtoken::encode(header, &claims, key).unwrap();
            let mut id_header = header.clone();
            id_header.typ = Some(ID_TOKEN_TYP.into());
            let ours_id = sign_jwt(&core, TokenKind::Id, &claims, now).unwrap();
            let theirs_id = jsonwebtoken::encode(&id_header, &claims, key).unwrap();
            if alg == Algorithm::ES256 {
                let signed = |t: &str| t.rsplit_once('.').unwrap().0.to_string();
                assert_eq!(signed(&ours), signed(&theirs));
                assert_eq!(signed(&ours_id), signed(&theirs_id));
                let verifier = core.verifier(header.kid.as_deref().unwrap()).unwrap();
                let mut v = jsonwebtoken::Validation::new(header.alg);
                v.set_audience(&["tokend"]);
                for t in [&ours, &ours_id] {
                    jsonwebtoken::decode::<AccessClaims>(t, &verifier.key, &v).unwrap();
                }
            } else {
                assert_eq!(ours, theirs, "{alg:?}");
                assert_eq!(ours_id, theirs_id, "{alg:?}");
            }
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

    /// OpenID Connect Core §3.1.3.6: the left half of the hash for the
    /// key's algorithm; the ID token says `typ: JWT`, carries the signing
    /// key's `kid`, and verifies with it.
    #[test]
    fn id_tokens_carry_at_hash_for_their_algorithm() {
        use sha2::{Digest, Sha256, Sha512};
        let token = "an access token";
        let half = |d: &[u8]| URL_SAFE_NO_PAD.encode(&d[..d.len() / 2]);
        assert_eq!(
            at_hash(jsonwebtoken::Algorithm::EdDSA, token),
            half(&Sha512::digest(token))
        );
        assert_eq!(
            at_hash(jsonwebtoken::Algorithm::ES256, token),
            half(&Sha256::digest(token))
        );
        assert_eq!(at_hash(jsonwebtoken::Algorithm::RS256, token).len(), 22);
        assert_eq!(at_hash(jsonwebtoken::Algorithm::EdDSA, token).len(), 43);
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let (_, m) = material(alg);
            let core = CoreKeys::from_material(&m).unwrap();
            let claims = IdTokenClaims {
                iss: "https://issuer".into(),
                sub: "u1".into(),
                aud: "web".into(),
                exp: 2_000_000_000,
                iat: 1_000,
                auth_time: 999,
                nonce: Some("n".into()),
                at_hash: String::new(),
                azp: "web".into(),
                preferred_username: Some("alice".into()),
            };
            let jwt = sign_id_token(&core, &claims, token, 1_000).unwrap();
            let header = jsonwebtoken::decode_header(&jwt).unwrap();
            assert_eq!(header.typ.as_deref(), Some("JWT"));
            assert_eq!(header.kid.as_deref(), core.signing_kid_at(1_000));
            let key = core.verifier(header.kid.as_deref().unwrap()).unwrap();
            let mut v = jsonwebtoken::Validation::new(header.alg);
            v.set_audience(&["web"]);
            let got = jsonwebtoken::decode::<IdTokenClaims>(&jwt, &key.key, &v)
                .unwrap()
                .claims;
            assert_eq!(got.at_hash, at_hash(header.alg, token));
            assert_eq!(
                got,
                IdTokenClaims {
                    at_hash: got.at_hash.clone(),
                    ..claims
                }
            );
        }
    }
}
