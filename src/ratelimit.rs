//! Login rate limits: failed logins counted in Redis per username and per
//! client address, checked before argon2 runs (DESIGN §2 "Login").
//!
//! Checking before the password is verified also caps the CPU an attacker
//! can make tokend burn. Both counters live `limits.login_window` from their
//! first failure (Redis expiry does the clean-up); a successful login clears
//! the user's counter, never the address's (an attacker cycling through
//! usernames from one address is still counted). Password changes
//! (`/users/me/password`) are not rate-limited here: they need a valid
//! access token and verify the current password on the blocking pool.
//!
//! | key | value | expires |
//! |---|---|---|
//! | `{prefix}lf:u:{lowercased username}` | failed logins | `login_window` after the first |
//! | `{prefix}lf:ip:{client address}` | failed logins | `login_window` after the first |
//!
//! The scripts are the `.lua` files of `ratelimit/scripts/`.
//!
//! Owns: the failure counters, their keys and scripts, and the decision to
//! admit or block a login ([`Admission`]).
//!
//! Never imports: `handlers`, `http`, `net`, `state`, `access`, `cores`,
//! `store` or another service; of the crate it uses only the Redis client
//! (`redis`) and the limits of `config`.

use std::net::IpAddr;
use std::rc::Rc;

use crate::config::LimitsConfig;
use crate::redis::{RedisConn, RedisError, Reply, Script};

/// Checks both counters; the seconds left when one is at its limit, else 0.
///
/// Source: `ratelimit/scripts/check_login.lua`, whose header is the full
/// contract.
const CHECK_LOGIN_LUA: &str = include_str!("ratelimit/scripts/check_login.lua");

/// Counts one failure against every counter given.
///
/// Source: `ratelimit/scripts/record_failure.lua`.
const RECORD_FAILURE_LUA: &str = include_str!("ratelimit/scripts/record_failure.lua");

/// The two scripts, with their SHA1s.
struct Scripts {
    check: Script,
    record_failure: Script,
}

thread_local! {
    // Scripts are per core like everything else: the SHA1s are computed once
    // per thread, and a login takes a reference count, not a copy.
    static SCRIPTS: Rc<Scripts> = Rc::new(Scripts {
        check: Script::new(CHECK_LOGIN_LUA),
        record_failure: Script::new(RECORD_FAILURE_LUA),
    });
}

/// Whether a login attempt may go on to the password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Under both limits.
    Allowed,
    /// A counter is at its limit: `429` with `Retry-After: retry_after`
    /// (seconds, at least 1).
    Blocked { retry_after: u64 },
}

/// Why the limits could not be checked: either way the login is refused
/// (fail closed), never let through unchecked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Occurs when Redis cannot answer (down, timeout, error reply): the
    /// caller answers `503 temporarily_unavailable`.
    #[error("the rate-limit store is unavailable: {0}")]
    Store(#[from] RedisError),
    /// Occurs when the check script answers something other than a
    /// non-negative integer: the caller answers `500 server_error`.
    #[error("the rate-limit check answered an unexpected reply")]
    UnexpectedReply,
}

/// The rate limits of one login attempt: its two counters, on the core's
/// connection. Borrowed per request; allocates its two key names.
pub struct LoginLimits<'a> {
    conn: &'a RedisConn,
    scripts: Rc<Scripts>,
    /// `{prefix}lf:u:{lowercased username}`.
    user_key: String,
    /// `{prefix}lf:ip:{client address}`.
    ip_key: String,
    /// Failures allowed per user, per address, per window
    /// (`limits.login_failures_per_user`, `..._per_ip`).
    per_user: u32,
    per_ip: u32,
    /// `limits.login_window` in whole seconds, at least 1 (Redis refuses
    /// `EXPIRE 0` as a window).
    window_secs: u64,
}

impl<'a> LoginLimits<'a> {
    /// The limits of a login of `username` from `ip`, under `prefix`
    /// (`redis.prefix`). The username is counted case-insensitively.
    pub fn new(
        conn: &'a RedisConn,
        prefix: &str,
        limits: &LimitsConfig,
        username: &str,
        ip: IpAddr,
    ) -> LoginLimits<'a> {
        LoginLimits {
            conn,
            scripts: SCRIPTS.with(Rc::clone),
            user_key: format!("{prefix}lf:u:{}", username.to_lowercase()),
            ip_key: format!("{prefix}lf:ip:{ip}"),
            per_user: limits.login_failures_per_user,
            per_ip: limits.login_failures_per_ip,
            window_secs: limits.login_window.as_secs().max(1),
        }
    }

    /// Checks both counters (one round trip), before the password is
    /// verified.
    pub async fn check(&self) -> Result<Admission, LimitError> {
        let reply = self
            .conn
            .eval(
                &self.scripts.check,
                &[self.user_key.as_str(), self.ip_key.as_str()],
                &[self.per_user, self.per_ip],
            )
            .await?;
        match reply {
            Reply::Int(0) => Ok(Admission::Allowed),
            Reply::Int(secs) if secs > 0 => Ok(Admission::Blocked {
                retry_after: secs.unsigned_abs(),
            }),
            _ => Err(LimitError::UnexpectedReply),
        }
    }

    /// Counts a failed login (wrong password, unknown or disabled user)
    /// against both counters.
    pub async fn record_failure(&self) -> Result<(), RedisError> {
        self.conn
            .eval(
                &self.scripts.record_failure,
                &[self.user_key.as_str(), self.ip_key.as_str()],
                &[self.window_secs],
            )
            .await
            .map(|_| ())
    }

    /// After a successful login: clears the user's counter (not the
    /// address's).
    pub async fn record_success(&self) -> Result<(), RedisError> {
        self.conn
            .query(redis::cmd("DEL").arg(&self.user_key))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::redis::testutil::*;
    use crate::redis::BlockingRedis;

    fn limits(per_user: u32, per_ip: u32) -> LimitsConfig {
        LimitsConfig {
            login_failures_per_user: per_user,
            login_failures_per_ip: per_ip,
            login_window: Duration::from_secs(60),
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn failures_block_then_success_clears_the_user() {
        on_both_drivers(|driver| async move {
            let prefix = random_prefix();
            let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
            assert!(conn.wait_connected(Duration::from_secs(5)).await);
            let limits = limits(3, 5);
            let ip: IpAddr = [192, 0, 2, 1].into();
            let alice = LoginLimits::new(&conn, &prefix, &limits, "Alice", ip);
            assert_eq!(alice.check().await, Ok(Admission::Allowed), "{driver}");

            // Three failures: the user is blocked for the rest of the window.
            for _ in 0..3 {
                alice.record_failure().await.unwrap();
            }
            let Ok(Admission::Blocked { retry_after }) = alice.check().await else {
                panic!("{driver}: not blocked");
            };
            assert!((1..=60).contains(&retry_after), "{retry_after}");
            // Counted case-insensitively, under the documented keys.
            let same = LoginLimits::new(&conn, &prefix, &limits, "ALICE", ip);
            assert!(matches!(same.check().await, Ok(Admission::Blocked { .. })));
            let mut side =
                BlockingRedis::connect(&shared_target(), Duration::from_secs(2)).unwrap();
            let get = |side: &mut BlockingRedis, key: String| {
                side.query(redis::cmd("GET").arg(key)).unwrap().as_int()
            };
            assert_eq!(get(&mut side, format!("{prefix}lf:u:alice")), Some(3));
            assert_eq!(get(&mut side, format!("{prefix}lf:ip:192.0.2.1")), Some(3));
            let ttl = side
                .query(redis::cmd("TTL").arg(format!("{prefix}lf:u:alice")))
                .unwrap();
            assert!((1..=60).contains(&ttl.as_int().unwrap()), "{ttl:?}");

            // A success clears the user's counter, not the address's.
            alice.record_success().await.unwrap();
            assert_eq!(alice.check().await, Ok(Admission::Allowed));
            assert_eq!(get(&mut side, format!("{prefix}lf:u:alice")), None);
            assert_eq!(get(&mut side, format!("{prefix}lf:ip:192.0.2.1")), Some(3));

            // The address's limit blocks every username from it.
            let bob = LoginLimits::new(&conn, &prefix, &limits, "bob", ip);
            bob.record_failure().await.unwrap();
            bob.record_failure().await.unwrap();
            let carol = LoginLimits::new(&conn, &prefix, &limits, "carol", ip);
            assert!(matches!(carol.check().await, Ok(Admission::Blocked { .. })));
            let elsewhere =
                LoginLimits::new(&conn, &prefix, &limits, "carol", [192, 0, 2, 2].into());
            assert_eq!(elsewhere.check().await, Ok(Admission::Allowed));
            cleanup(&prefix);
        });
    }

    #[test]
    fn redis_down_fails_closed() {
        legacy(async {
            let target =
                crate::redis::RedisTarget::parse(&format!("redis://127.0.0.1:{}", free_port()))
                    .unwrap();
            let conn = RedisConn::new(target, Duration::from_secs(5));
            let l = LoginLimits::new(&conn, "p:", &limits(3, 5), "u", [192, 0, 2, 1].into());
            assert_eq!(
                l.check().await,
                Err(LimitError::Store(RedisError::Unavailable))
            );
        });
    }
}
