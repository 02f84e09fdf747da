//! Signing keys: generation, RFC 7638 `kid`s, public JWKs, sealing under the
//! key-encryption key, the `signing_keys` table, and the snapshots the cores
//! sign and verify with.
//!
//! The map, in the order a key travels:
//! - [`kek`]: the key-encryption key ([`Kek`]) and AES-256-GCM sealing of
//!   private keys at rest; [`SecretBytes`], the one holder of clear key bytes.
//! - [`jwk`]: key generation (Ed25519, P-256, RSA-2048), the PKCS#8 → PKCS#1
//!   DER unwrapping, public JWKs and their RFC 7638 thumbprints.
//! - [`store`]: the `signing_keys` table in PostgreSQL ([`ensure_initial_key`],
//!   [`rotate`], [`list`], [`prune`], [`load`]); blocking, never on a core.
//! - [`snapshot`]: the immutable [`KeyMaterial`] shared by every core and the
//!   rendered JWKS, and each core's own parsed [`CoreKeys`].
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
//!
//! Outside `tokens`, imports only `config` (algorithms, key settings); never
//! `http`, `handlers`, `net`, `state`, `cores` or another service.

use std::path::PathBuf;

pub mod jwk;
pub mod kek;
pub mod snapshot;
pub mod store;

pub use jwk::{alg_name, generate, jwt_alg, parse_alg, GeneratedKey, PublicJwk};
pub use kek::{Kek, SecretBytes, KEK_LEN};
pub(crate) use snapshot::TokenKind;
pub use snapshot::{CoreKeys, KeyEntry, KeyMaterial, ACCESS_TOKEN_TYP, ID_TOKEN_TYP};
pub use store::{ensure_initial_key, list, load, prune, rotate, KeyInfo, KeyState};

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

/// Test fixtures shared with the tests of `claims`, `verify` and `cache`.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Algorithm;

    /// A snapshot with one key of `alg` that signs from time 0.
    pub(crate) fn material(alg: Algorithm) -> (GeneratedKey, KeyMaterial) {
        let key = generate(alg).unwrap();
        let entry = KeyEntry::from_generated(&key, 0).unwrap();
        (key, KeyMaterial::from_entries(vec![entry]).unwrap())
    }
}
