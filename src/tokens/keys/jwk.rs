//! Key generation and representation: Ed25519, P-256 and RSA-2048 key pairs
//! from aws-lc-rs, the PKCS#8 → PKCS#1 DER unwrapping `jsonwebtoken` needs
//! for RSA, public JWKs with their RFC 7638 thumbprints (the `kid`s), and
//! the JWKS document.
//!
//! Pure: no database, no clock. Imports only `config` (algorithms) of the
//! crate; never `http` or `handlers`.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::kek::SecretBytes;
use super::KeyError;
use crate::config::Algorithm;

/// The JOSE name of an algorithm (`alg`, and the `algorithm` column).
pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EdDSA => "EdDSA",
        Algorithm::ES256 => "ES256",
        Algorithm::RS256 => "RS256",
    }
}

/// Parses the `algorithm` column.
pub fn parse_alg(name: &str) -> Option<Algorithm> {
    match name {
        "EdDSA" => Some(Algorithm::EdDSA),
        "ES256" => Some(Algorithm::ES256),
        "RS256" => Some(Algorithm::RS256),
        _ => None,
    }
}

/// The `jsonwebtoken` algorithm of a key.
pub fn jwt_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
    }
}

/// A public JWK as published in JWKS: RFC 7517 / 7518 (`EC`, `RSA`) / 8037
/// (`OKP`), plus `kid`, `alg` and `use: "sig"`. It has no private members by
/// construction (no `d`, `p`, `q`, …), and unknown members are refused when
/// read back from the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicJwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

impl PublicJwk {
    /// The RFC 7638 JWK thumbprint: SHA-256 over the required members in
    /// lexicographic order without whitespace, base64url without padding.
    /// `None` when a required member is missing or `kty` is not one we use.
    pub fn thumbprint(&self) -> Option<String> {
        // serde_json escapes each value, so a hostile value from the database
        // cannot change the structure of the canonical form.
        let s = |v: &Option<String>| v.as_deref().and_then(|v| serde_json::to_string(v).ok());
        let canonical = match self.kty.as_str() {
            // RFC 7638 §3.2: EC: crv, kty, x, y
            "EC" => format!(
                r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
                s(&self.crv)?,
                s(&self.x)?,
                s(&self.y)?
            ),
            // RFC 7638 §3.2: RSA: e, kty, n
            "RSA" => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, s(&self.e)?, s(&self.n)?),
            // RFC 8037 §2: OKP: crv, kty, x
            "OKP" => format!(
                r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
                s(&self.crv)?,
                s(&self.x)?
            ),
            _ => return None,
        };
        Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
    }

    /// The members that identify the key (everything but `kid`, `alg`, `use`).
    pub(super) fn same_key_as(&self, other: &PublicJwk) -> bool {
        self.kty == other.kty
            && self.crv == other.crv
            && self.x == other.x
            && self.y == other.y
            && self.n == other.n
            && self.e == other.e
    }

    pub(super) fn decoding_key(
        &self,
        alg: Algorithm,
    ) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
        use jsonwebtoken::errors::ErrorKind;
        let missing = || jsonwebtoken::errors::Error::from(ErrorKind::InvalidKeyFormat);
        match alg {
            Algorithm::EdDSA => {
                DecodingKey::from_ed_components(self.x.as_deref().ok_or_else(missing)?)
            }
            Algorithm::ES256 => DecodingKey::from_ec_components(
                self.x.as_deref().ok_or_else(missing)?,
                self.y.as_deref().ok_or_else(missing)?,
            ),
            Algorithm::RS256 => DecodingKey::from_rsa_components(
                self.n.as_deref().ok_or_else(missing)?,
                self.e.as_deref().ok_or_else(missing)?,
            ),
        }
    }
}

/// Builds the public JWK (with its thumbprint as `kid`) of a PKCS#8 private
/// key, checking that the key parses for `alg`.
pub(super) fn public_jwk_from_pkcs8(alg: Algorithm, pkcs8: &[u8]) -> Option<PublicJwk> {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let mut jwk = PublicJwk {
        kty: String::new(),
        crv: None,
        x: None,
        y: None,
        n: None,
        e: None,
        kid: String::new(),
        alg: alg_name(alg).to_string(),
        use_: "sig".to_string(),
    };
    match alg {
        Algorithm::EdDSA => {
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8).ok()?;
            jwk.kty = "OKP".into();
            jwk.crv = Some("Ed25519".into());
            jwk.x = Some(b64(pair.public_key().as_ref()));
        }
        Algorithm::ES256 => {
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).ok()?;
            // Uncompressed SEC 1 point: 0x04 || x (32) || y (32).
            let point = pair.public_key().as_ref();
            if point.len() != 65 || point[0] != 4 {
                return None;
            }
            jwk.kty = "EC".into();
            jwk.crv = Some("P-256".into());
            jwk.x = Some(b64(&point[1..33]));
            jwk.y = Some(b64(&point[33..65]));
        }
        Algorithm::RS256 => {
            let pair = RsaKeyPair::from_pkcs8(pkcs8).ok()?;
            let public = pair.public_key();
            jwk.kty = "RSA".into();
            jwk.n = Some(b64(public.modulus().big_endian_without_leading_zero()));
            jwk.e = Some(b64(public.exponent().big_endian_without_leading_zero()));
        }
    }
    jwk.kid = jwk.thumbprint()?;
    Some(jwk)
}

/// A freshly generated key pair: its public JWK and its clear PKCS#8.
pub struct GeneratedKey {
    alg: Algorithm,
    jwk: PublicJwk,
    pkcs8: SecretBytes,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("alg", &self.alg)
            .field("kid", &self.jwk.kid)
            .field("pkcs8", &self.pkcs8)
            .finish()
    }
}

impl GeneratedKey {
    /// The RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    pub fn public_jwk(&self) -> &PublicJwk {
        &self.jwk
    }

    /// The clear PKCS#8 private key.
    pub fn pkcs8(&self) -> &SecretBytes {
        &self.pkcs8
    }
}

/// Generates a key pair with aws-lc-rs: Ed25519, P-256 or RSA-2048.
pub fn generate(alg: Algorithm) -> Result<GeneratedKey, KeyError> {
    let rng = SystemRandom::new();
    let name = alg_name(alg);
    let pkcs8 = match alg {
        Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| KeyError::Generate(name))?
            .as_ref()
            .to_vec(),
        Algorithm::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Generate(name))?
            .as_ref()
            .to_vec(),
        Algorithm::RS256 => RsaKeyPair::generate(KeySize::Rsa2048)
            .and_then(|pair| pair.as_der())
            .map_err(|_| KeyError::Generate(name))?
            .as_ref()
            .to_vec(),
    };
    let pkcs8 = SecretBytes::new(pkcs8);
    let jwk = public_jwk_from_pkcs8(alg, pkcs8.expose()).ok_or(KeyError::Generate(name))?;
    Ok(GeneratedKey { alg, jwk, pkcs8 })
}

/// Turns a PKCS#8 key into the bytes `jsonwebtoken`'s aws-lc backend signs
/// with: PKCS#8 for Ed25519 and P-256, the inner PKCS#1 `RSAPrivateKey` for
/// RSA (its RSA signer calls `RsaKeyPair::from_der`, which wants RFC 8017).
pub(super) fn signing_der(alg: Algorithm, pkcs8: &SecretBytes) -> Option<SecretBytes> {
    match alg {
        Algorithm::EdDSA | Algorithm::ES256 => Some(pkcs8.clone()),
        Algorithm::RS256 => pkcs8_inner_key(pkcs8.expose()).map(|k| SecretBytes::new(k.to_vec())),
    }
}

/// Reads one DER TLV: (tag, contents, rest). `None` on any malformation.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(n)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// RFC 5208: PrivateKeyInfo ::= SEQUENCE { version INTEGER,
/// privateKeyAlgorithm AlgorithmIdentifier, privateKey OCTET STRING, … }.
/// Returns the contents of `privateKey`.
fn pkcs8_inner_key(pkcs8: &[u8]) -> Option<&[u8]> {
    let (0x30, seq, _) = der_tlv(pkcs8)? else {
        return None;
    };
    let (0x02, _, rest) = der_tlv(seq)? else {
        return None;
    };
    let (0x30, _, rest) = der_tlv(rest)? else {
        return None;
    };
    let (0x04, key, _) = der_tlv(rest)? else {
        return None;
    };
    Some(key)
}

/// Renders the JWKS document, `{"keys":[…]}` (RFC 7517 §5), in the order
/// given.
pub(super) fn render_jwks<'a>(
    keys: impl Iterator<Item = &'a PublicJwk>,
) -> serde_json::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Jwks<'a> {
        keys: Vec<&'a PublicJwk>,
    }
    serde_json::to_vec(&Jwks {
        keys: keys.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1
        let jwk = PublicJwk {
            kty: "RSA".into(),
            crv: None,
            x: None,
            y: None,
            n: Some(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into(),
            ),
            e: Some("AQAB".into()),
            kid: "2011-04-29".into(),
            alg: "RS256".into(),
            use_: "sig".into(),
        };
        assert_eq!(
            jwk.thumbprint().as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn generated_jwks_have_public_members_only() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let key = generate(alg).unwrap();
            let v: serde_json::Value = serde_json::to_value(key.public_jwk()).unwrap();
            let obj = v.as_object().unwrap();
            for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
                assert!(!obj.contains_key(private), "{alg:?} JWK has {private}");
            }
            assert_eq!(obj["use"], "sig");
            assert_eq!(obj["alg"], alg_name(alg));
            assert_eq!(obj["kid"], key.kid());
            assert_eq!(key.public_jwk().thumbprint().as_deref(), Some(key.kid()));
            let expect: &[&str] = match alg {
                Algorithm::EdDSA => &["kty", "crv", "x"],
                Algorithm::ES256 => &["kty", "crv", "x", "y"],
                Algorithm::RS256 => &["kty", "n", "e"],
            };
            for m in expect {
                assert!(obj.contains_key(*m), "{alg:?} JWK lacks {m}");
            }
            assert_eq!(obj.len(), expect.len() + 3);
            // Debug output never shows the private key.
            let dbg = format!("{key:?}");
            assert!(dbg.contains("<redacted>"));
        }
    }

    #[test]
    fn rsa_pkcs8_unwraps_to_pkcs1() {
        let key = generate(Algorithm::RS256).unwrap();
        let der = signing_der(Algorithm::RS256, key.pkcs8()).unwrap();
        assert!(aws_lc_rs::signature::RsaKeyPair::from_der(der.expose()).is_ok());
        assert!(pkcs8_inner_key(&[0x30, 0x82, 0xff]).is_none());
        assert!(pkcs8_inner_key(&[]).is_none());
    }
}
