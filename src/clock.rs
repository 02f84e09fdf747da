//! The one clock of the crate: whole seconds since the Unix epoch, as every
//! token claim (`iat`, `exp`, `nbf`) and every Redis expiry counts them.
//!
//! Owns: nothing but the reading. Never imports another module of the crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; 0 for a clock set before 1970 (nothing
/// verifies then, which fails closed).
///
/// Read straight from `clock_gettime(CLOCK_REALTIME_COARSE)` (the vDSO):
/// every `/validate` reads it, and `SystemTime::now()` then `duration_since`
/// cost ~130 instructions there, for std's out-of-line timespec
/// subtraction (callgrind, issue #15), against ~40 for the seconds field.
/// The coarse clock is the kernel's time at its last tick (1–4 ms ago):
/// reading it is a load from the vDSO page, where `CLOCK_REALTIME` reads
/// the CPU's time-stamp counter too; the three clock reads of a pipelined
/// `/validate` were ~10% of its time (perf, issue #15). Whole seconds a
/// tick late: a token is refused at most a tick after its `exp`, which no
/// client can tell from the network's own delay.
#[inline]
pub fn unix_now() -> u64 {
    let secs = clock_gettime(libc::CLOCK_REALTIME_COARSE).tv_sec;
    u64::try_from(secs).unwrap_or(0)
}

/// A monotonic reading in nanoseconds, for measuring how long something
/// took (the request latency histograms): [`elapsed_since`] of it is an
/// integer subtraction, where `Instant::elapsed` costs std's out-of-line
/// timespec subtraction and a second `Instant` (issue #15). The origin is
/// unspecified (the machine's boot); compare readings only.
#[inline]
pub fn monotonic_nanos() -> u64 {
    let ts = clock_gettime(libc::CLOCK_MONOTONIC);
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The time since `start`, a [`monotonic_nanos`] reading.
#[inline]
pub fn elapsed_since(start: u64) -> Duration {
    Duration::from_nanos(monotonic_nanos().saturating_sub(start))
}

#[inline]
fn clock_gettime(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` for the call's duration,
    // and the clocks used here exist on every Linux (the coarse ones since
    // 2.6.32); on a failure, which they cannot give, `ts` stays zero (the
    // epoch: nothing verifies).
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_agree_with_std() {
        // The coarse clock is at most a tick (a few ms) behind.
        let std_secs = since_epoch().as_secs();
        let ours = unix_now();
        assert!(
            ours + 1 >= std_secs && ours <= std_secs + 1,
            "{ours} vs {std_secs}"
        );
        let start = monotonic_nanos();
        let std_start = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let (ours, std) = (elapsed_since(start), std_start.elapsed());
        assert!(ours >= Duration::from_millis(20), "{ours:?}");
        assert!(
            ours.abs_diff(std) < Duration::from_millis(5),
            "{ours:?} vs {std:?}"
        );
    }
}
