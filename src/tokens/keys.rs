//! Signing keys: generation, RFC 7638 `kid`s, public JWKs, sealing under the
//! key-encryption key, the `signing_keys` table, and the snapshots the cores
//! sign and verify with.
//!
//! Life of a key (DESIGN §4): [`rotate`] inserts a key whose `signs_from` lies
//! `publish_ahead` in the future, so it is published in JWKS (state
//! "pending") before it signs anything. When `signs_from` passes it signs
//! ("active") and the previous key stops signing (`retired_at` = the newer
//! key's `signs_from`, state "retired") but keeps verifying. [`prune`] deletes
//! it once every token it could have signed has expired.
//!
//! Who holds what:
//! - PostgreSQL: the public JWK and the private key sealed with AES-256-GCM
//!   under the [`Kek`], bound to its row by using the `kid` as AAD.
//! - [`KeyMaterial`]: one immutable snapshot per load, shared by every core
//!   through an `Arc`; private keys only for keys that may still sign.
//! - [`CoreKeys`]: each core's own parsed `jsonwebtoken` keys, so that no
//!   core ever touches another core's memory on the hot path (DESIGN rule 2).
//!
//! The clear private key never reaches a log, an error message or `Debug`
//! output: it lives in [`SecretBytes`] (redacted `Debug`, zeroed on drop),
//! and every error here names a `kid` or a file, never key bytes.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use postgres::GenericClient;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::config::{Algorithm, KeysConfig};

/// Length of the key-encryption key: AES-256.
pub const KEK_LEN: usize = 32;

/// AES-GCM tag length (128 bits).
const TAG_LEN: usize = 16;

/// `pg_advisory_xact_lock` key that serialises every writer of
/// `signing_keys` (initial key, rotation, pruning) across processes. The
/// value is the ASCII of "tokendky"; any constant works as long as nothing
/// else in the database uses it.
const KEYS_LOCK: i64 = 0x746f_6b65_6e64_6b79;

/// Occurs when a signing key cannot be configured, generated, sealed, stored
/// or loaded. Messages name a setting, a file or a `kid`, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Occurs when neither `keys.kek` nor `keys.kek_file` is set.
    #[error("no key-encryption key: set keys.kek_file or TOKEND_KEYS_KEK")]
    NoKek,
    /// Occurs when both `keys.kek` and `keys.kek_file` are set, so it is
    /// unclear which one sealed the stored keys.
    #[error("both keys.kek and keys.kek_file are set: set only one")]
    KekConflict,
    /// Occurs when the key-encryption key file cannot be read.
    #[error("cannot read key-encryption key file {path}: {source}")]
    KekFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Occurs when the key-encryption key is not base64.
    #[error(
        "{what} is not valid base64 (expected 32 random bytes, e.g. `openssl rand -base64 32`)"
    )]
    KekBase64 { what: String },
    /// Occurs when the key-encryption key decodes to the wrong length.
    #[error("{what} must be 32 bytes of base64, got {got} bytes")]
    KekLength { what: String, got: usize },
    /// Occurs when the crypto library fails to generate a key or randomness.
    #[error("cannot generate a {0} key")]
    Generate(&'static str),
    /// Occurs when sealing a private key fails.
    #[error("cannot seal the private key of {kid}")]
    Seal { kid: String },
    /// Occurs when a sealed private key does not open: the key-encryption key
    /// is not the one that sealed it, or the row was altered or moved.
    #[error(
        "cannot unseal the private key of {kid}: wrong key-encryption key, or the row was altered"
    )]
    Unseal { kid: String },
    /// Occurs when a stored key row is inconsistent (bad algorithm, JWK that
    /// does not match its `kid` or its private key, …).
    #[error("signing key {kid} is invalid: {reason}")]
    BadKey { kid: String, reason: &'static str },
    /// Occurs when the table holds no key that still verifies.
    #[error("no signing keys in the database: start `tokend serve` once or rotate a key in")]
    NoKeys,
    /// Occurs when a key cannot be turned into a `jsonwebtoken` key.
    #[error("signing key {kid} cannot be used: {source}")]
    Jwt {
        kid: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// Occurs when PostgreSQL fails.
    #[error("database error on signing_keys: {0}")]
    Db(#[from] postgres::Error),
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

/// Bytes of a clear private key (PKCS#8, or PKCS#1 for RSA once prepared for
/// `jsonwebtoken`). `Debug` is redacted and the bytes are zeroed on drop.
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// The clear bytes. Callers must not log or persist them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

/// The key-encryption key (AES-256) that seals private signing keys at rest.
/// `Debug` prints `Kek(<redacted>)`; the bytes are zeroed on drop.
#[derive(Clone)]
pub struct Kek([u8; KEK_LEN]);

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

impl Drop for Kek {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Kek {
    /// Reads the key from `keys.kek` (base64, usually from `TOKEND_KEYS_KEK`)
    /// or from the file `keys.kek_file` (base64, surrounding whitespace
    /// ignored). Exactly one of the two must be set.
    pub fn from_config(cfg: &KeysConfig) -> Result<Kek, KeyError> {
        match (&cfg.kek, &cfg.kek_file) {
            (Some(_), Some(_)) => Err(KeyError::KekConflict),
            (None, None) => Err(KeyError::NoKek),
            (Some(text), None) => Kek::from_base64(text, || "keys.kek".to_string()),
            (None, Some(path)) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                    KeyError::KekFile {
                        path: path.clone(),
                        source,
                    }
                })?);
                warn_if_readable_by_others(path);
                Kek::from_base64(&text, || format!("keys.kek_file {}", path.display()))
            }
        }
    }

    /// A key from raw bytes (tests, tooling).
    pub fn from_bytes(bytes: [u8; KEK_LEN]) -> Kek {
        Kek(bytes)
    }

    /// A fresh random key (for `tokend keys` tooling and tests).
    pub fn generate() -> Result<Kek, KeyError> {
        let mut bytes = [0u8; KEK_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Generate("key-encryption"))?;
        Ok(Kek(bytes))
    }

    /// The key as standard base64, for writing a new `kek_file`.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0))
    }

    fn from_base64(text: &str, what: impl Fn() -> String) -> Result<Kek, KeyError> {
        let text = text.trim();
        let decoded = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| KeyError::KekBase64 { what: what() })?;
        let bytes: [u8; KEK_LEN] =
            decoded
                .as_slice()
                .try_into()
                .map_err(|_| KeyError::KekLength {
                    what: what(),
                    got: decoded.len(),
                })?;
        Ok(Kek(bytes))
    }

    fn aead_key(&self) -> Result<LessSafeKey, ()> {
        UnboundKey::new(&AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| ())
    }

    /// Seals `clear` with AES-256-GCM under a fresh random 96-bit nonce, with
    /// the `kid` as additional authenticated data so a sealed key cannot be
    /// moved onto another row. Output: nonce || ciphertext || tag.
    pub fn seal(&self, kid: &str, clear: &[u8]) -> Result<Vec<u8>, KeyError> {
        let fail = || KeyError::Seal {
            kid: kid.to_string(),
        };
        let key = self.aead_key().map_err(|_| fail())?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| fail())?;
        // The clear copy is zeroed if sealing fails half-way.
        let mut buf = Zeroizing::new(Vec::with_capacity(clear.len() + TAG_LEN));
        buf.extend_from_slice(clear);
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(kid.as_bytes()),
            &mut *buf,
        )
        .map_err(|_| fail())?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens what [`Kek::seal`] produced for the same `kid`.
    pub fn unseal(&self, kid: &str, sealed: &[u8]) -> Result<SecretBytes, KeyError> {
        let fail = || KeyError::Unseal {
            kid: kid.to_string(),
        };
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(fail());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let key = self.aead_key().map_err(|_| fail())?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let clear_len = key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| fail())?
            .len();
        buf.truncate(clear_len);
        Ok(SecretBytes(buf))
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "key-encryption key file is readable by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &std::path::Path) {}

// ---------------------------------------------------------------------------
// Algorithms, JWKs, thumbprints
// ---------------------------------------------------------------------------

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
    fn same_key_as(&self, other: &PublicJwk) -> bool {
        self.kty == other.kty
            && self.crv == other.crv
            && self.x == other.x
            && self.y == other.y
            && self.n == other.n
            && self.e == other.e
    }

    fn decoding_key(&self, alg: Algorithm) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
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
fn public_jwk_from_pkcs8(alg: Algorithm, pkcs8: &[u8]) -> Option<PublicJwk> {
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
fn signing_der(alg: Algorithm, pkcs8: &SecretBytes) -> Option<SecretBytes> {
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

// ---------------------------------------------------------------------------
// Snapshots: KeyMaterial (shared) and CoreKeys (per core)
// ---------------------------------------------------------------------------

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
    private: Option<SecretBytes>,
}

impl KeyEntry {
    /// An entry for a key generated in this process (tests, tooling).
    pub fn from_generated(key: &GeneratedKey, signs_from: u64) -> Result<KeyEntry, KeyError> {
        let private = signing_der(key.alg, &key.pkcs8).ok_or_else(|| KeyError::BadKey {
            kid: key.kid().to_string(),
            reason: "private key is not valid PKCS#8",
        })?;
        Ok(KeyEntry {
            kid: key.kid().to_string(),
            alg: key.alg,
            signs_from,
            retired_at: None,
            jwk: key.jwk.clone(),
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

        #[derive(Serialize)]
        struct Jwks<'a> {
            keys: Vec<&'a PublicJwk>,
        }
        let jwks = serde_json::to_vec(&Jwks {
            keys: keys.iter().map(|k| &k.jwk).collect(),
        })
        .map_err(|_| KeyError::BadKey {
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

/// A signing key of one core, with its JOSE header prepared.
struct SignKey {
    signs_from: u64,
    key: EncodingKey,
    header: Header,
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
                signers.push(SignKey {
                    signs_from: k.signs_from,
                    key,
                    header,
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

    /// The key and header to sign with at `now` (same rule as
    /// [`KeyMaterial::signing_kid_at`]).
    pub(crate) fn signer_at(&self, now: u64) -> Option<(&EncodingKey, &Header)> {
        self.signers
            .iter()
            .rfind(|s| s.signs_from <= now)
            .or_else(|| self.signers.first())
            .map(|s| (&s.key, &s.header))
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

// ---------------------------------------------------------------------------
// PostgreSQL (blocking: call from the blocking pool or the control thread)
// ---------------------------------------------------------------------------

/// Where a key is in its life, at the time of [`list`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published in JWKS, does not sign yet.
    Pending,
    /// Signs (or is the newest key whose time has come).
    Active,
    /// A newer key signs; this one still verifies until pruned.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `tokend keys list`. Times are unix seconds.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: Algorithm,
    pub created_at: i64,
    pub signs_from: i64,
    pub retired_at: Option<i64>,
    /// Set by [`prune`]: when the key stops verifying and is deleted.
    pub verify_until: Option<i64>,
    pub state: KeyState,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Inserts a generated key that signs from `now() + publish_ahead`, and
/// recomputes every key's `retired_at` as the `signs_from` of the next key.
fn insert_key(
    tx: &mut postgres::Transaction<'_>,
    kek: &Kek,
    key: &GeneratedKey,
    publish_ahead: Duration,
) -> Result<(), KeyError> {
    let jwk = serde_json::to_string(&key.jwk).map_err(|_| KeyError::BadKey {
        kid: key.kid().to_string(),
        reason: "cannot render JWK",
    })?;
    let sealed = kek.seal(key.kid(), key.pkcs8.expose())?;
    tx.execute(
        "INSERT INTO signing_keys (kid, algorithm, public_jwk, sealed_private_key, signs_from) \
         VALUES ($1, $2, $3::text::jsonb, $4, now() + make_interval(secs => $5))",
        &[
            &key.kid(),
            &alg_name(key.alg),
            &jwk,
            &sealed,
            &secs(publish_ahead),
        ],
    )?;
    tx.execute(
        "UPDATE signing_keys k SET retired_at = \
           (SELECT min(o.signs_from) FROM signing_keys o WHERE o.signs_from > k.signs_from)",
        &[],
    )?;
    Ok(())
}

/// Creates a key that signs at once when the table has none; returns its
/// `kid`, or `None` when a key already existed. Safe when several processes
/// start at once: they serialise on a transaction-scoped advisory lock.
pub fn ensure_initial_key<C: GenericClient>(
    client: &mut C,
    kek: &Kek,
    alg: Algorithm,
) -> Result<Option<String>, KeyError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEYS_LOCK])?;
    let count: i64 = tx
        .query_one("SELECT count(*) FROM signing_keys", &[])?
        .get(0);
    if count > 0 {
        tx.commit()?;
        return Ok(None);
    }
    let key = generate(alg)?;
    insert_key(&mut tx, kek, &key, Duration::ZERO)?;
    tx.commit()?;
    tracing::info!(
        kid = key.kid(),
        alg = alg_name(alg),
        "created the first signing key"
    );
    Ok(Some(key.kid().to_string()))
}

/// Adds a key that is published now and signs from `now + publish_ahead`;
/// the current key stops signing at that moment. Returns the new `kid`.
///
/// `publish_ahead` should exceed the key-set reload interval of every node
/// (plus clock skew), so every node has the public key before the first
/// token signed with it arrives.
pub fn rotate<C: GenericClient>(
    client: &mut C,
    kek: &Kek,
    alg: Algorithm,
    publish_ahead: Duration,
) -> Result<String, KeyError> {
    let key = generate(alg)?;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEYS_LOCK])?;
    insert_key(&mut tx, kek, &key, publish_ahead)?;
    tx.commit()?;
    tracing::info!(
        kid = key.kid(),
        alg = alg_name(alg),
        "rotated in a signing key"
    );
    Ok(key.kid().to_string())
}

/// Every key, oldest `signs_from` first, with its state at the database's
/// `now()`.
pub fn list<C: GenericClient>(client: &mut C) -> Result<Vec<KeyInfo>, KeyError> {
    let rows = client.query(
        "SELECT kid, algorithm, \
           floor(extract(epoch FROM created_at))::int8, \
           ceil(extract(epoch FROM signs_from))::int8, \
           ceil(extract(epoch FROM retired_at))::int8, \
           ceil(extract(epoch FROM verify_until))::int8, \
           CASE WHEN signs_from > now() THEN 'pending' \
                WHEN retired_at IS NOT NULL AND retired_at <= now() THEN 'retired' \
                ELSE 'active' END \
         FROM signing_keys ORDER BY signs_from, kid",
        &[],
    )?;
    rows.iter()
        .map(|row| {
            let kid: String = row.get(0);
            let alg_text: &str = row.get(1);
            let alg = parse_alg(alg_text).ok_or_else(|| KeyError::BadKey {
                kid: kid.clone(),
                reason: "unknown algorithm",
            })?;
            let state = match row.get::<_, &str>(6) {
                "pending" => KeyState::Pending,
                "retired" => KeyState::Retired,
                _ => KeyState::Active,
            };
            Ok(KeyInfo {
                alg,
                created_at: row.get(2),
                signs_from: row.get(3),
                retired_at: row.get(4),
                verify_until: row.get(5),
                state,
                kid,
            })
        })
        .collect()
}

/// Deletes the keys that stopped signing more than `access_ttl` ago (every
/// token they signed has expired) and returns their `kid`s; stamps
/// `verify_until` on the retired keys that remain.
///
/// `access_ttl` must be the longest access-token lifetime in use (per-client
/// overrides included) plus the verification leeway, or tokens still valid
/// would stop verifying.
pub fn prune<C: GenericClient>(
    client: &mut C,
    access_ttl: Duration,
) -> Result<Vec<String>, KeyError> {
    let ttl = secs(access_ttl);
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEYS_LOCK])?;
    tx.execute(
        "UPDATE signing_keys SET verify_until = retired_at + make_interval(secs => $1) \
         WHERE retired_at IS NOT NULL",
        &[&ttl],
    )?;
    let rows = tx.query(
        "DELETE FROM signing_keys \
         WHERE retired_at IS NOT NULL AND retired_at + make_interval(secs => $1) < now() \
         RETURNING kid",
        &[&ttl],
    )?;
    tx.commit()?;
    let kids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for kid in &kids {
        tracing::info!(kid = kid.as_str(), "pruned a signing key");
    }
    Ok(kids)
}

/// Loads every key that still verifies into a snapshot. Private keys are
/// unsealed only for keys that may still sign (not retired at the
/// database's `now()`); each row is checked: its `kid` is the thumbprint of
/// its JWK, and its private key matches its JWK.
pub fn load<C: GenericClient>(client: &mut C, kek: &Kek) -> Result<KeyMaterial, KeyError> {
    let rows = client.query(
        "SELECT kid, algorithm, public_jwk::text, sealed_private_key, \
           ceil(extract(epoch FROM signs_from))::int8, \
           ceil(extract(epoch FROM retired_at))::int8, \
           (retired_at IS NULL OR retired_at > now()) \
         FROM signing_keys \
         WHERE verify_until IS NULL OR verify_until > now() \
         ORDER BY signs_from, kid",
        &[],
    )?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        let kid: String = row.get(0);
        let bad = |reason| KeyError::BadKey {
            kid: kid.clone(),
            reason,
        };
        let alg = parse_alg(row.get(1)).ok_or_else(|| bad("unknown algorithm"))?;
        let jwk: PublicJwk =
            serde_json::from_str(row.get(2)).map_err(|_| bad("public_jwk is not a public JWK"))?;
        if jwk.kid != kid || jwk.thumbprint().as_deref() != Some(kid.as_str()) {
            return Err(bad("kid is not the RFC 7638 thumbprint of public_jwk"));
        }
        if jwk.alg != alg_name(alg) || jwk.use_ != "sig" {
            return Err(bad("public_jwk alg/use do not match the row"));
        }
        let may_sign: bool = row.get(6);
        let private = if may_sign {
            let pkcs8 = kek.unseal(&kid, row.get(3))?;
            let derived = public_jwk_from_pkcs8(alg, pkcs8.expose())
                .ok_or_else(|| bad("private key does not parse"))?;
            if !derived.same_key_as(&jwk) {
                return Err(bad("private key does not match public_jwk"));
            }
            Some(signing_der(alg, &pkcs8).ok_or_else(|| bad("private key does not parse"))?)
        } else {
            None
        };
        let signs_from: i64 = row.get(4);
        let retired_at: Option<i64> = row.get(5);
        entries.push(KeyEntry {
            alg,
            signs_from: u64::try_from(signs_from).unwrap_or(0),
            retired_at: retired_at.map(|t| u64::try_from(t).unwrap_or(0)),
            jwk,
            private,
            kid,
        });
    }
    KeyMaterial::from_entries(entries)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A snapshot with one key of `alg` that signs from time 0.
    pub(crate) fn material(alg: Algorithm) -> (GeneratedKey, KeyMaterial) {
        let key = generate(alg).unwrap();
        let entry = KeyEntry::from_generated(&key, 0).unwrap();
        (key, KeyMaterial::from_entries(vec![entry]).unwrap())
    }

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

    #[test]
    fn sealing_round_trip_and_binding() {
        let kek = Kek::generate().unwrap();
        let clear = b"private key bytes";
        let sealed = kek.seal("kid-a", clear).unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + clear.len() + TAG_LEN);
        assert!(!sealed.windows(clear.len()).any(|w| w == clear));
        assert_eq!(kek.unseal("kid-a", &sealed).unwrap().expose(), clear);
        // Fresh nonce every time.
        assert_ne!(kek.seal("kid-a", clear).unwrap(), sealed);
        // Wrong KEK.
        let other = Kek::generate().unwrap();
        assert!(matches!(
            other.unseal("kid-a", &sealed),
            Err(KeyError::Unseal { .. })
        ));
        // Wrong AAD: the sealed key moved onto another row.
        assert!(matches!(
            kek.unseal("kid-b", &sealed),
            Err(KeyError::Unseal { .. })
        ));
        // Tampered and truncated.
        let mut bad = sealed.clone();
        bad[NONCE_LEN] ^= 1;
        assert!(kek.unseal("kid-a", &bad).is_err());
        assert!(kek.unseal("kid-a", &sealed[..10]).is_err());
    }

    #[test]
    fn kek_from_config() {
        let mut cfg = KeysConfig::default();
        let err = Kek::from_config(&cfg).unwrap_err().to_string();
        assert_eq!(
            err,
            "no key-encryption key: set keys.kek_file or TOKEND_KEYS_KEK"
        );

        cfg.kek = Some(STANDARD.encode([7u8; 16]));
        let err = Kek::from_config(&cfg).unwrap_err().to_string();
        assert_eq!(err, "keys.kek must be 32 bytes of base64, got 16 bytes");

        cfg.kek = Some("not base64 at all!".into());
        let err = Kek::from_config(&cfg).unwrap_err().to_string();
        assert!(err.starts_with("keys.kek is not valid base64"), "{err}");
        assert!(!err.contains("at all"));

        cfg.kek = Some(format!("  {}\n", STANDARD.encode([7u8; 32])));
        let kek = Kek::from_config(&cfg).unwrap();
        assert_eq!(format!("{kek:?}"), "Kek(<redacted>)");
        assert_eq!(kek.0, [7u8; 32]);

        let dir = std::env::temp_dir().join(format!("tokend-kek-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kek");
        std::fs::write(&path, format!("{}\n", STANDARD.encode([9u8; 32]))).unwrap();
        cfg.kek = None;
        cfg.kek_file = Some(path.clone());
        assert_eq!(Kek::from_config(&cfg).unwrap().0, [9u8; 32]);

        cfg.kek = Some(STANDARD.encode([7u8; 32]));
        assert!(matches!(Kek::from_config(&cfg), Err(KeyError::KekConflict)));

        cfg.kek = None;
        cfg.kek_file = Some(dir.join("missing"));
        let err = Kek::from_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        assert!(
            err.starts_with("cannot read key-encryption key file"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

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

    // ----- PostgreSQL (real server at 127.0.0.1:5432, user postgres) -----

    const PG: &str = "host=127.0.0.1 port=5432 user=postgres";

    /// A fresh database with the schema applied, dropped on drop (even when
    /// the test fails).
    struct TestDb {
        name: String,
    }

    impl TestDb {
        fn new() -> TestDb {
            let mut suffix = [0u8; 6];
            SystemRandom::new().fill(&mut suffix).unwrap();
            let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
            let name = format!("tokend_keys_test_{hex}");
            let mut admin =
                postgres::Client::connect(&format!("{PG} dbname=postgres"), postgres::NoTls)
                    .unwrap();
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
            let db = TestDb { name };
            db.client()
                .batch_execute(include_str!("../../migrations/0001_init.sql"))
                .unwrap();
            db
        }

        fn client(&self) -> postgres::Client {
            postgres::Client::connect(&format!("{PG} dbname={}", self.name), postgres::NoTls)
                .unwrap()
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            if let Ok(mut admin) =
                postgres::Client::connect(&format!("{PG} dbname=postgres"), postgres::NoTls)
            {
                let _ = admin.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }

    fn unix_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn sign_and_verify(core: &CoreKeys, now: u64) -> Result<(), crate::tokens::TokenError> {
        let claims = crate::tokens::AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp: now + 60,
            iat: now,
            jti: crate::tokens::new_jti(),
            client_id: "c".into(),
            scope: String::new(),
            username: None,
        };
        let token = crate::tokens::sign_access(core, &claims, now).unwrap();
        let expect = crate::tokens::Expectations::new("i", "a", 0);
        crate::tokens::verify(core, &token, &expect, now).map(|_| ())
    }

    #[test]
    fn pg_key_lifecycle() {
        let db = TestDb::new();
        let mut c = db.client();
        let kek = Kek::generate().unwrap();

        // The first call creates a key, the second does nothing.
        let a = ensure_initial_key(&mut c, &kek, Algorithm::EdDSA)
            .unwrap()
            .unwrap();
        assert_eq!(
            ensure_initial_key(&mut c, &kek, Algorithm::EdDSA).unwrap(),
            None
        );
        let keys = list(&mut c).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (keys[0].kid.as_str(), keys[0].state),
            (a.as_str(), KeyState::Active)
        );

        // The sealed row holds no part of the clear PKCS#8.
        let m = load(&mut c, &kek).unwrap();
        let clear = m.keys()[0].private.as_ref().unwrap().expose().to_vec();
        let sealed: Vec<u8> = c
            .query_one("SELECT sealed_private_key FROM signing_keys", &[])
            .unwrap()
            .get(0);
        assert!(!sealed
            .windows(16)
            .any(|w| clear.windows(16).any(|c| c == w)));
        let jwk_text: String = c
            .query_one("SELECT public_jwk::text FROM signing_keys", &[])
            .unwrap()
            .get(0);
        assert!(!jwk_text.contains("\"d\""));

        // Rotate with an hour of publication ahead: pending, A still signs.
        let now = unix_now();
        let b = rotate(&mut c, &kek, Algorithm::ES256, Duration::from_secs(3600)).unwrap();
        let keys = list(&mut c).unwrap();
        let states: Vec<_> = keys.iter().map(|k| (k.kid.as_str(), k.state)).collect();
        assert_eq!(
            states,
            [
                (a.as_str(), KeyState::Active),
                (b.as_str(), KeyState::Pending)
            ]
        );
        assert_eq!(keys[0].retired_at, Some(keys[1].signs_from));
        let m = load(&mut c, &kek).unwrap();
        assert_eq!(m.signing_kid_at(now), Some(a.as_str()));
        assert_eq!(m.signing_kid_at(now + 3700), Some(b.as_str()));
        let jwks: serde_json::Value = serde_json::from_slice(m.jwks()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        let core = CoreKeys::from_material(&m).unwrap();
        sign_and_verify(&core, now).unwrap();
        sign_and_verify(&core, now + 3700).unwrap();
        let gen_ab = m.generation();
        assert_eq!(load(&mut c, &kek).unwrap().generation(), gen_ab);

        // Rotate an RSA key in at once: A retires, C signs, B stays pending.
        let cc = rotate(&mut c, &kek, Algorithm::RS256, Duration::ZERO).unwrap();
        let keys = list(&mut c).unwrap();
        let states: Vec<_> = keys.iter().map(|k| (k.kid.as_str(), k.state)).collect();
        assert_eq!(
            states,
            [
                (a.as_str(), KeyState::Retired),
                (cc.as_str(), KeyState::Active),
                (b.as_str(), KeyState::Pending)
            ]
        );
        let m = load(&mut c, &kek).unwrap();
        assert_ne!(m.generation(), gen_ab);
        // Found by kid, not by position: A and C may share a signs_from
        // second, and then the order is the kids' (this flaked as `keys()[0]`).
        assert!(
            !m.keys().iter().find(|k| k.kid == a).unwrap().can_sign(),
            "a retired key is loaded without its private key"
        );
        let now = unix_now();
        assert_eq!(m.signing_kid_at(now + 1), Some(cc.as_str()));
        let core = CoreKeys::from_material(&m).unwrap();
        sign_and_verify(&core, now + 1).unwrap();

        // Prune: nothing while A's tokens may live; A once they cannot.
        assert!(prune(&mut c, Duration::from_secs(3600)).unwrap().is_empty());
        let keys = list(&mut c).unwrap();
        assert!(keys[0].verify_until.is_some());
        assert_eq!(prune(&mut c, Duration::ZERO).unwrap(), vec![a.clone()]);
        let keys = list(&mut c).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(load(&mut c, &kek)
            .unwrap()
            .keys()
            .iter()
            .all(|k| k.kid != a));

        // A wrong KEK does not open the keys.
        let wrong = Kek::generate().unwrap();
        assert!(matches!(load(&mut c, &wrong), Err(KeyError::Unseal { .. })));

        // A sealed key moved onto another row does not open (AAD = kid).
        c.execute(
            "UPDATE signing_keys SET sealed_private_key = \
               (SELECT sealed_private_key FROM signing_keys WHERE kid = $1) WHERE kid = $2",
            &[&b, &cc],
        )
        .unwrap();
        let err = load(&mut c, &kek).unwrap_err();
        assert!(
            matches!(&err, KeyError::Unseal { kid } if *kid == cc),
            "{err}"
        );
        // The error names the kid, not key bytes.
        assert!(err.to_string().contains(&cc));
    }

    #[test]
    fn pg_concurrent_ensure_creates_one_key() {
        let db = TestDb::new();
        let kek = Kek::generate().unwrap();
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<Option<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let mut c = db.client();
                    let (kek, barrier) = (&kek, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        ensure_initial_key(&mut c, kek, Algorithm::EdDSA).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|r| r.is_some()).count(), 1);
        assert_eq!(list(&mut db.client()).unwrap().len(), 1);
    }

    #[test]
    fn pg_load_refuses_a_tampered_public_key() {
        let db = TestDb::new();
        let mut c = db.client();
        let kek = Kek::generate().unwrap();
        ensure_initial_key(&mut c, &kek, Algorithm::EdDSA).unwrap();
        let other = generate(Algorithm::EdDSA).unwrap();
        // Swap in another public key under the same kid.
        c.execute(
            "UPDATE signing_keys SET public_jwk = jsonb_set(public_jwk, '{x}', to_jsonb($1::text))",
            &[&other.public_jwk().x.clone().unwrap()],
        )
        .unwrap();
        let err = load(&mut c, &kek).unwrap_err();
        assert!(matches!(err, KeyError::BadKey { .. }), "{err}");
        // An empty table is an error, not an empty key set.
        c.execute("DELETE FROM signing_keys", &[]).unwrap();
        assert!(matches!(load(&mut c, &kek), Err(KeyError::NoKeys)));
    }
}
