//! Secrets at rest: the key-encryption key ([`Kek`]) and AES-256-GCM sealing
//! of private signing keys, with the `kid` as additional authenticated data
//! so a sealed key cannot be moved onto another row; and [`SecretBytes`],
//! the one holder of clear private-key bytes (redacted `Debug`, zeroed on
//! drop).
//!
//! Imports only `config` of the crate; never the database, `http` or
//! `handlers`.

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use zeroize::{Zeroize, Zeroizing};

use super::KeyError;
use crate::config::KeysConfig;

/// Length of the key-encryption key: AES-256.
pub const KEK_LEN: usize = 32;

/// AES-GCM tag length (128 bits).
const TAG_LEN: usize = 16;

/// Bytes of a clear private key (PKCS#8, or PKCS#1 for RSA once prepared for
/// `jsonwebtoken`). `Debug` is redacted and the bytes are zeroed on drop.
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub(super) fn new(bytes: Vec<u8>) -> Self {
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

    /// A 256-bit key for `purpose`, derived from this one with HKDF-SHA256
    /// (RFC 5869; salt `tokend`, info `purpose`): each use of the KEK beyond
    /// sealing signing keys gets a key of its own, and none reveals the KEK.
    /// Zeroed on drop.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        use aws_lc_rs::hkdf;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"tokend").extract(&self.0);
        let mut out = Zeroizing::new([0u8; 32]);
        // Cannot fail: 32 bytes is the hash's length, far below HKDF's limit
        // of 255 times it.
        prk.expand(&[purpose.as_bytes()], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out[..]))
            .expect("HKDF-SHA256 of 32 bytes");
        out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_are_fixed_per_purpose_and_differ_between_purposes() {
        let kek = Kek::from_bytes([7; KEK_LEN]);
        let a = kek.derive("refresh record mac v1");
        assert_eq!(
            *a,
            *Kek::from_bytes([7; KEK_LEN]).derive("refresh record mac v1")
        );
        assert_ne!(*a, *kek.derive("another purpose"));
        assert_ne!(
            *a,
            *Kek::from_bytes([8; KEK_LEN]).derive("refresh record mac v1")
        );
        assert_ne!(&a[..], &[7; 32][..], "not the KEK itself");
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
}
