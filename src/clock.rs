//! The one clock of the crate: whole seconds since the Unix epoch, as every
//! token claim (`iat`, `exp`, `nbf`) and every Redis expiry counts them.
//!
//! Owns: nothing but the reading. Never imports another module of the crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; 0 for a clock set before 1970 (nothing
/// verifies then, which fails closed).
#[inline]
pub fn unix_now() -> u64 {
    since_epoch().as_secs()
}

/// The time since the Unix epoch, to the nanosecond, for what needs the
/// fraction too (the `Date` header's once-a-second ticker); zero for a clock
/// set before 1970.
#[inline]
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
