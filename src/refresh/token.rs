//! The refresh token itself: its format (`tokend_rt_` and 256 random bits
//! in base64url), the SHA-256 that Redis stores instead of it, and the
//! family id that links a login's tokens.
//!
//! Owns: making, recognising and hashing tokens; [`FamilyId`]. Never
//! imports: anything of the crate.

use std::fmt;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Every refresh token starts with this.
pub const REFRESH_TOKEN_PREFIX: &str = "tokend_rt_";
/// Random bytes in a refresh token.
const TOKEN_RANDOM_BYTES: usize = 32;
/// base64url characters of [`TOKEN_RANDOM_BYTES`] without padding.
const TOKEN_RANDOM_CHARS: usize = 43;

/// A token family: 128 random bits, shown (and stored) as 32 lowercase hex
/// digits. `Copy`, so it fits in [`RefreshError`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FamilyId([u8; 16]);

impl FamilyId {
    /// A fresh random family id.
    pub fn random() -> FamilyId {
        let mut b = [0u8; 16];
        fill_random(&mut b);
        FamilyId(b)
    }

    /// Parses 32 hex digits (either case).
    pub fn parse_hex(s: &str) -> Option<FamilyId> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            b[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
        }
        Some(FamilyId(b))
    }

    /// The 32 lowercase hex digits (the Redis and PostgreSQL form).
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FamilyId({self})")
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// SHA-256 of the token, lowercase hex: the only form Redis stores.
pub fn token_hash_hex(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        use fmt::Write;
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Whether `token` has the shape of a token this module issues; anything
/// else is refused without a round trip.
pub(super) fn is_well_formed(token: &str) -> bool {
    token.len() == REFRESH_TOKEN_PREFIX.len() + TOKEN_RANDOM_CHARS
        && token.starts_with(REFRESH_TOKEN_PREFIX)
        && token.as_bytes()[REFRESH_TOKEN_PREFIX.len()..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// A fresh token: the prefix and 256 random bits.
pub(super) fn new_token() -> String {
    let mut b = [0u8; TOKEN_RANDOM_BYTES];
    fill_random(&mut b);
    let mut t = String::with_capacity(REFRESH_TOKEN_PREFIX.len() + TOKEN_RANDOM_CHARS);
    t.push_str(REFRESH_TOKEN_PREFIX);
    URL_SAFE_NO_PAD.encode_string(b, &mut t);
    t
}

fn fill_random(buf: &mut [u8]) {
    // aws-lc's `RAND_bytes` never reports failure: it returns 1 or aborts
    // the process when no entropy can be had (AWS-LC `rand.h`), so this
    // branch is unreachable; a predictable token would be a forgery, hence
    // the panic rather than a fallback.
    if SystemRandom::new().fill(buf).is_err() {
        panic!("system random number generator failed");
    }
}
