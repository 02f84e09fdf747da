//! The key set in memory: [`KeyMaterial`], one immutable snapshot per load
//! (every key that still verifies, the private keys of those that may still
//! sign, the rendered JWKS), shared by every core through an `Arc`; and
//! [`CoreKeys`], each core's own parsed keys (`jsonwebtoken`'s to verify,
//! aws-lc-rs key pairs to sign), so that no core touches another core's
//! memory on the hot path (DESIGN rule 2).
//!
//! Pure: no database, no clock (callers pass `now`). Imports only `config`
//! (algorithms) of the crate; never `http` or `handlers`.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use sha2::{Digest, Sha256};

use super::jwk::{alg_name, jwt_alg, render_jwks, signing_der, GeneratedKey, PublicJwk};
use super::kek::SecretBytes;
use super::KeyError;
use crate::config::Algorithm;

/// One key of a [`KeyMaterial`] snapshot.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub kid: String,
    pub alg: Algorithm,
    /// Unix seconds (rounded up) from which this key signs.
    pub signs_from: u64,
    /// Unix seconds (rounded up) from which a newer key signs instead.
    pub retired_at: Option<u64>,
    pub jwk: PublicJwk,
    /// Private key in the form `jsonwebtoken` signs with; `None` for keys
    /// that were already retired when loaded (they only verify).
    pub(super) private: Option<SecretBytes>,
}

impl KeyEntry {
    /// An entry for a key generated in this process (tests, tooling).
    pub fn from_generated(key: &GeneratedKey, signs_from: u64) -> Result<KeyEntry, KeyError> {
        let private = signing_der(key.alg(), key.pkcs8()).ok_or_else(|| KeyError::BadKey {
            kid: key.kid().to_string(),
            reason: "private key is not valid PKCS#8",
        })?;
        Ok(KeyEntry {
            kid: key.kid().to_string(),
            alg: key.alg(),
            signs_from,
            retired_at: None,
            jwk: key.public_jwk().clone(),
            private: Some(private),
        })
    }

    /// Whether this snapshot holds the private key.
    pub fn can_sign(&self) -> bool {
        self.private.is_some()
    }
}

/// An immutable snapshot of the key set: every key that still verifies, the
/// private keys of those that may still sign, and the rendered JWKS. Built
/// off the hot path (control thread) and shared with every core in an `Arc`.
///
/// A core compares [`KeyMaterial::generation`] with its
/// [`CoreKeys::generation`]; when they differ it rebuilds its `CoreKeys` and
/// clears its verified-token cache. A pending key starting to sign is not a
/// change of generation: both snapshots carry every key's `signs_from`, and
/// `signing_kid_at(now)` picks the right one without a reload.
pub struct KeyMaterial {
    /// Sorted by `signs_from`, then `kid`.
    keys: Vec<KeyEntry>,
    /// `{"keys":[…]}` with every key, pending ones included.
    jwks: Vec<u8>,
    generation: u64,
}

impl KeyMaterial {
    /// Builds a snapshot from entries (in any order).
    pub fn from_entries(mut keys: Vec<KeyEntry>) -> Result<KeyMaterial, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        keys.sort_by(|a, b| (a.signs_from, &a.kid).cmp(&(b.signs_from, &b.kid)));

        let jwks = render_jwks(keys.iter().map(|k| &k.jwk)).map_err(|_| KeyError::BadKey {
            kid: keys[0].kid.clone(),
            reason: "cannot render JWKS",
        })?;

        // Deterministic, so that a periodic reload of an unchanged key set
        // keeps the same generation and the cores keep their caches.
        let mut h = Sha256::new();
        for k in &keys {
            h.update(k.kid.as_bytes());
            h.update([0]);
            h.update(k.signs_from.to_le_bytes());
            h.update(k.retired_at.unwrap_or(0).to_le_bytes());
            h.update([u8::from(k.private.is_some())]);
        }
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Ok(KeyMaterial {
            keys,
            jwks,
            generation: u64::from_le_bytes(first),
        })
    }

    /// Changes whenever the key set changes; equal for equal key sets.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The JWKS document (`application/json`), ready to write.
    pub fn jwks(&self) -> &[u8] {
        &self.jwks
    }

    /// Every key, sorted by `signs_from`.
    pub fn keys(&self) -> &[KeyEntry] {
        &self.keys
    }

    /// The key that signs at `now` (unix seconds): the newest key whose
    /// `signs_from <= now`; when every key is still pending, the one that
    /// will sign first (it is already published).
    pub fn signing_kid_at(&self, now: u64) -> Option<&str> {
        let signers = self.keys.iter().filter(|k| k.private.is_some());
        signers
            .clone()
            .rfind(|k| k.signs_from <= now)
            .or_else(|| signers.clone().next())
            .map(|k| k.kid.as_str())
    }

    /// The earliest `signs_from` after `now`, if a pending key exists: when
    /// the signing key will change without a reload.
    pub fn next_change_after(&self, now: u64) -> Option<u64> {
        self.keys.iter().map(|k| k.signs_from).find(|&t| t > now)
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("generation", &self.generation)
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

// The snapshot crosses threads inside an `Arc` (DESIGN rule 2).
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<KeyMaterial>();
};

/// A verifying key of one core.
pub(crate) struct VerifyKey {
    pub(crate) alg: jsonwebtoken::Algorithm,
    /// The JOSE name of `alg`, compared with the token header's `alg`.
    pub(crate) alg_name: &'static str,
    pub(crate) key: DecodingKey,
}

/// A signing key of one core, with its JOSE headers prepared.
struct SignKey {
    signs_from: u64,
    key: EncodingKey,
    header: Header,
    prepared: PreparedSigner,
}

/// A signing key parsed once, with its headers rendered once.
///
/// `jsonwebtoken::encode` parses the private key for every token it signs
/// (its aws-lc signers are made from the key's bytes per call): for Ed25519
/// that is a PKCS#8 parse and the public key derived from the seed again,
/// a scalar multiplication, ~97,000 of the ~250,000 instructions a
/// `client_credentials` request cost (callgrind, issue #15). The same
/// aws-lc-rs key pairs are made here once per core and key; the token is
/// what `encode` makes (base64url of the header's and the claims' JSON,
/// the signature of the two joined by a dot), byte for byte (tested).
pub(crate) struct PreparedSigner {
    key: KeyPair,
    /// base64url of the access-token header's JSON (`typ: at+jwt`).
    access_header: String,
    /// base64url of the ID-token header's JSON (`typ: JWT`).
    id_header: String,
}

enum KeyPair {
    Ed25519(aws_lc_rs::signature::Ed25519KeyPair),
    EcdsaP256(aws_lc_rs::signature::EcdsaKeyPair),
    Rsa(aws_lc_rs::signature::RsaKeyPair),
}

/// Which header a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Access,
    Id,
}

impl PreparedSigner {
    /// `der` is what [`signing_der`] made: PKCS#8 for Ed25519 and P-256,
    /// PKCS#1 for RSA (the forms `jsonwebtoken`'s aws-lc signers take).
    fn new(alg: Algorithm, der: &[u8], header: &Header) -> Result<PreparedSigner, &'static str> {
        use aws_lc_rs::signature::{
            EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
        };
        let key = match alg {
            Algorithm::EdDSA => Ed25519KeyPair::from_pkcs8(der).map(KeyPair::Ed25519),
            Algorithm::ES256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                .map(KeyPair::EcdsaP256),
            Algorithm::RS256 => RsaKeyPair::from_der(der).map(KeyPair::Rsa),
        }
        .map_err(|_| "aws-lc cannot parse its private key")?;
        let b64_json = |h: &Header| {
            serde_json::to_vec(h)
                .map(|json| URL_SAFE_NO_PAD.encode(json))
                .map_err(|_| "its JOSE header cannot be serialised")
        };
        let mut id = header.clone();
        id.typ = Some(ID_TOKEN_TYP.to_string());
        Ok(PreparedSigner {
            key,
            access_header: b64_json(header)?,
            id_header: b64_json(&id)?,
        })
    }

    /// The base64url header of a token of `kind`.
    pub(crate) fn header_b64(&self, kind: TokenKind) -> &str {
        match kind {
            TokenKind::Access => &self.access_header,
            TokenKind::Id => &self.id_header,
        }
    }

    /// Signs `token` (the header and claims, joined by a dot), then
    /// appends a dot and base64url of the signature.
    pub(crate) fn append_signature(
        &self,
        token: &mut String,
    ) -> Result<(), aws_lc_rs::error::Unspecified> {
        use aws_lc_rs::rand::SystemRandom;
        let msg = token.as_bytes();
        let sig = match &self.key {
            KeyPair::Ed25519(k) => k.sign(msg).as_ref().to_vec(),
            KeyPair::EcdsaP256(k) => k.sign(&SystemRandom::new(), msg)?.as_ref().to_vec(),
            KeyPair::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    msg,
                    &mut sig,
                )?;
                sig
            }
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(sig, token);
        Ok(())
    }
}

/// One core's own parsed keys: lookups by `kid` are one hash-map probe with
/// a randomly seeded hasher (the `kid` comes from the attacker).
pub struct CoreKeys {
    generation: u64,
    verifiers: hashbrown::HashMap<Box<str>, VerifyKey, ahash::RandomState>,
    /// Keys that may sign, sorted by `signs_from`.
    signers: Vec<SignKey>,
}

impl fmt::Debug for CoreKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoreKeys")
            .field("generation", &self.generation)
            .field("kids", &self.verifiers.keys().collect::<Vec<_>>())
            .field("signers", &self.signers.len())
            .finish()
    }
}

/// The `typ` of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The `typ` of ID tokens.
pub const ID_TOKEN_TYP: &str = "JWT";

impl CoreKeys {
    /// Parses the core's own copies of every key of `material`.
    pub fn from_material(material: &KeyMaterial) -> Result<CoreKeys, KeyError> {
        let mut verifiers = hashbrown::HashMap::with_capacity_and_hasher(
            material.keys.len(),
            ahash::RandomState::new(),
        );
        let mut signers = Vec::new();
        for k in &material.keys {
            let jwt_err = |source| KeyError::Jwt {
                kid: k.kid.clone(),
                source,
            };
            let alg = jwt_alg(k.alg);
            let key = k.jwk.decoding_key(k.alg).map_err(jwt_err)?;
            verifiers.insert(
                k.kid.clone().into_boxed_str(),
                VerifyKey {
                    alg,
                    alg_name: alg_name(k.alg),
                    key,
                },
            );
            if let Some(private) = &k.private {
                let der = private.expose();
                let key = match k.alg {
                    Algorithm::EdDSA => EncodingKey::from_ed_der(der),
                    Algorithm::ES256 => EncodingKey::from_ec_der(der),
                    Algorithm::RS256 => EncodingKey::from_rsa_der(der),
                };
                let mut header = Header::new(alg);
                header.typ = Some(ACCESS_TOKEN_TYP.to_string());
                header.kid = Some(k.kid.clone());
                let prepared = PreparedSigner::new(k.alg, der, &header).map_err(|reason| {
                    KeyError::BadKey {
                        kid: k.kid.clone(),
                        reason,
                    }
                })?;
                signers.push(SignKey {
                    signs_from: k.signs_from,
                    key,
                    header,
                    prepared,
                });
            }
        }
        Ok(CoreKeys {
            generation: material.generation,
            verifiers,
            signers,
        })
    }

    /// The generation of the [`KeyMaterial`] these keys came from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The verifying key for `kid`, if known.
    pub(crate) fn verifier(&self, kid: &str) -> Option<&VerifyKey> {
        self.verifiers.get(kid)
    }

    fn sign_key_at(&self, now: u64) -> Option<&SignKey> {
        self.signers
            .iter()
            .rfind(|s| s.signs_from <= now)
            .or_else(|| self.signers.first())
    }

    /// The key and header to sign with at `now` (same rule as
    /// [`KeyMaterial::signing_kid_at`]).
    pub(crate) fn signer_at(&self, now: u64) -> Option<(&EncodingKey, &Header)> {
        self.sign_key_at(now).map(|s| (&s.key, &s.header))
    }

    /// The parsed key that signs at `now` (the one [`CoreKeys::signer_at`]
    /// names), and its algorithm.
    pub(crate) fn prepared_signer_at(
        &self,
        now: u64,
    ) -> Option<(&PreparedSigner, jsonwebtoken::Algorithm)> {
        self.sign_key_at(now).map(|s| (&s.prepared, s.header.alg))
    }

    /// The `kid` that signs at `now`.
    pub fn signing_kid_at(&self, now: u64) -> Option<&str> {
        self.signer_at(now).and_then(|(_, h)| h.kid.as_deref())
    }

    /// Whether `kid` is known.
    pub fn knows(&self, kid: &str) -> bool {
        self.verifiers.contains_key(kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::keys::generate;

    #[test]
    fn signing_key_follows_signs_from() {
        let a = generate(Algorithm::EdDSA).unwrap();
        let b = generate(Algorithm::ES256).unwrap();
        let mut ea = KeyEntry::from_generated(&a, 100).unwrap();
        ea.retired_at = Some(200);
        let eb = KeyEntry::from_generated(&b, 200).unwrap();
        let m = KeyMaterial::from_entries(vec![eb.clone(), ea.clone()]).unwrap();
        assert_eq!(m.signing_kid_at(50), Some(a.kid()));
        assert_eq!(m.signing_kid_at(150), Some(a.kid()));
        assert_eq!(m.signing_kid_at(200), Some(b.kid()));
        assert_eq!(m.next_change_after(150), Some(200));
        let core = CoreKeys::from_material(&m).unwrap();
        assert_eq!(core.signing_kid_at(199), Some(a.kid()));
        assert_eq!(core.signing_kid_at(201), Some(b.kid()));
        assert!(core.knows(a.kid()) && core.knows(b.kid()));

        // JWKS carries both, the pending one included, and no private parts.
        let jwks: serde_json::Value = serde_json::from_slice(m.jwks()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert!(!String::from_utf8_lossy(m.jwks()).contains("\"d\""));

        // Same set, same generation; another set, another generation.
        let again = KeyMaterial::from_entries(vec![ea.clone(), eb]).unwrap();
        assert_eq!(again.generation(), m.generation());
        let only_a = KeyMaterial::from_entries(vec![ea]).unwrap();
        assert_ne!(only_a.generation(), m.generation());
        assert!(KeyMaterial::from_entries(vec![]).is_err());
    }
}
