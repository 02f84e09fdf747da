//! The one clock of the crate: whole seconds since the Unix epoch, as every
//! token claim (`iat`, `exp`, `nbf`) and every Redis expiry counts them.
//!
//! Owns: nothing but the reading. Never imports another module of the crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; 0 for a clock set before 1970 (nothing
/// verifies then, which fails closed).
#[inline]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
