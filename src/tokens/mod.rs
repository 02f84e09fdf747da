//! Access tokens: signing keys, claims, signing, verification and the
//! per-core verified-token cache.
//!
//! The path of a key, from the database to a verified request:
//!
//! - [`keys`]: split by concern: [`keys::kek`] seals private keys under the
//!   key-encryption key ([`keys::Kek`]); [`keys::jwk`] generates keys
//!   (Ed25519 by default, ES256, RS256), unwraps their DER and renders public
//!   JWKs with RFC 7638 `kid`s; [`keys::store`] holds the PostgreSQL
//!   functions (`ensure_initial_key`, `rotate`, `list`, `prune`, `load`);
//!   [`keys::snapshot`] holds the immutable [`keys::KeyMaterial`] shared
//!   across cores through an `Arc` and the per-core parsed
//!   [`keys::CoreKeys`].
//! - [`claims`]: RFC 9068 claims ([`claims::AccessClaims`]) and signing
//!   ([`claims::sign_access`]).
//! - [`verify`](mod@verify): the hot path: checks a bearer token with the
//!   key named by its `kid` (the algorithm comes from the key, never from
//!   the token) and pre-renders the forward-auth response headers.
//! - [`cache`]: the per-core verified-token cache, bounded, emptied when the
//!   key set changes.
//! - [`id_hint`]: the ID tokens relying parties send back to the logout
//!   endpoint as `id_token_hint`: ours, expired or not, and whose.
//!
//! Owns: access tokens end to end: their keys (the `signing_keys` table),
//! claims, signatures, verification and the per-core cache of verified ones;
//! the verification of ID tokens sent back as logout hints. The revocation
//! check, and the order of the steps, are `access`'s.
//!
//! Never imports: `handlers`, `http`, `net`, `router`, `state`, `access`,
//! `cores`, `redis` or another service; of the crate, only `config`
//! (algorithms, key settings). `keys::store` runs its SQL on a `postgres`
//! client its caller provides.

pub mod cache;
pub mod claims;
pub mod id_hint;
pub mod keys;
pub mod verify;

pub use cache::VerifiedCache;
pub use claims::{
    at_hash, new_jti, sign_access, sign_id_token, AccessClaims, IdTokenClaims, SignError,
};
pub use id_hint::{verify_id_token_hint, HintError, IdTokenHint};
pub use keys::{CoreKeys, Kek, KeyError, KeyInfo, KeyMaterial, KeyState};
pub use verify::{verify, Expectations, TokenError, VerifiedToken};
