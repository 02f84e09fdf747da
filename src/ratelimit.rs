//! Login rate limits: password attempts counted in Redis per username and
//! per client address, admitted before argon2 runs (DESIGN §2 "Login").
//!
//! An attempt is counted in the same Redis script that checks the limits
//! ([`LoginLimits::admit`]), before the password is verified: concurrent
//! wrong passwords cannot all pass a check made before any of them was
//! counted, so a burst gets exactly the limit, never as many guesses as the
//! blocking queue holds (issue #13). Admitting before the password is
//! verified also caps the CPU an attacker can make tokend burn. Then:
//! - a wrong password (unknown or disabled user alike) stays counted;
//! - a success clears the user's counter and takes the attempt back from
//!   the address's (an attacker cycling through usernames from one address
//!   stays counted);
//! - an attempt whose password was never verified (the blocking queue full,
//!   PostgreSQL failing) is taken back from both: it was no guess.
//!
//! Both counters live `limits.login_window` from their first attempt (Redis
//! expiry does the clean-up). The password grant and the password change
//! (`/users/me/password`, whose `current_password` is a guess as well) count
//! against the same counters. The address is the client's as
//! `server.trusted_proxies` says (`http::client_ip`), so that behind a
//! reverse proxy one attacker does not lock out every user.
//!
//! | key | value | expires |
//! |---|---|---|
//! | `{prefix}lf:u:{lowercased username}` | attempts not yet succeeded | `login_window` after the first |
//! | `{prefix}lf:ip:{client address}` | failed attempts | `login_window` after the first |
//!
//! The scripts are the `.lua` files of `ratelimit/scripts/`.
//!
//! Owns: the attempt counters, their keys and scripts, and the decision to
//! admit or block an attempt ([`Admission`]).
//!
//! Never imports: `handlers`, `http`, `net`, `state`, `access`, `cores`,
//! `store` or another service; of the crate it uses only the Redis client
//! (`redis`) and the limits of `config`.

use std::net::IpAddr;
use std::rc::Rc;

use crate::config::LimitsConfig;
use crate::redis::{RedisConn, RedisError, Reply, Script};

/// Checks both counters and counts the attempt; the seconds left when one
/// is at its limit, else 0.
///
/// Source: `ratelimit/scripts/admit_login.lua`, whose header is the full
/// contract.
const ADMIT_LUA: &str = include_str!("ratelimit/scripts/admit_login.lua");

/// Clears the user's counter and takes the attempt back from the address's.
///
/// Source: `ratelimit/scripts/login_succeeded.lua`.
const SUCCEEDED_LUA: &str = include_str!("ratelimit/scripts/login_succeeded.lua");

/// Takes an attempt back from both counters.
///
/// Source: `ratelimit/scripts/not_attempted.lua`.
const NOT_ATTEMPTED_LUA: &str = include_str!("ratelimit/scripts/not_attempted.lua");

/// The three scripts, with their SHA1s.
struct Scripts {
    admit: Script,
    succeeded: Script,
    not_attempted: Script,
}

thread_local! {
    // Scripts are per core like everything else: the SHA1s are computed once
    // per thread, and a login takes a reference count, not a copy.
    static SCRIPTS: Rc<Scripts> = Rc::new(Scripts {
        admit: Script::new(ADMIT_LUA),
        succeeded: Script::new(SUCCEEDED_LUA),
        not_attempted: Script::new(NOT_ATTEMPTED_LUA),
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

    /// Admits the attempt and counts it against both counters, in one round
    /// trip and one atomic script, before the password is verified; or
    /// blocks it, counting nothing.
    pub async fn admit(&self) -> Result<Admission, LimitError> {
        let reply = self
            .conn
            .eval(
                &self.scripts.admit,
                &[self.user_key.as_str(), self.ip_key.as_str()],
                &[
                    u64::from(self.per_user),
                    u64::from(self.per_ip),
                    self.window_secs,
                ],
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

    /// After the password was right: clears the user's counter, and takes
    /// the attempt back from the address's.
    pub async fn succeeded(&self) -> Result<(), RedisError> {
        self.run(&self.scripts.succeeded).await
    }

    /// After an admitted attempt whose password was never verified (the
    /// blocking queue was full, the database failed): takes it back from
    /// both counters.
    pub async fn not_attempted(&self) -> Result<(), RedisError> {
        self.run(&self.scripts.not_attempted).await
    }

    async fn run(&self, script: &Script) -> Result<(), RedisError> {
        self.conn
            .eval(
                script,
                &[self.user_key.as_str(), self.ip_key.as_str()],
                &[] as &[u64],
            )
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
    fn attempts_are_counted_when_admitted_and_success_takes_them_back() {
        on_both_drivers(|driver| async move {
            let prefix = random_prefix();
            let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
            assert!(conn.wait_connected(Duration::from_secs(5)).await);
            let limits = limits(3, 5);
            let ip: IpAddr = [192, 0, 2, 1].into();
            let alice = LoginLimits::new(&conn, &prefix, &limits, "Alice", ip);
            let mut side =
                BlockingRedis::connect(&shared_target(), Duration::from_secs(2)).unwrap();
            let get = |side: &mut BlockingRedis, key: String| {
                side.query(redis::cmd("GET").arg(key)).unwrap().as_int()
            };

            // Three attempts admitted (and counted as they are admitted),
            // the fourth blocked for the rest of the window, uncounted.
            for _ in 0..3 {
                assert_eq!(alice.admit().await, Ok(Admission::Allowed), "{driver}");
            }
            let Ok(Admission::Blocked { retry_after }) = alice.admit().await else {
                panic!("{driver}: not blocked");
            };
            assert!((1..=60).contains(&retry_after), "{retry_after}");
            // Counted case-insensitively, under the documented keys.
            let same = LoginLimits::new(&conn, &prefix, &limits, "ALICE", ip);
            assert!(matches!(same.admit().await, Ok(Admission::Blocked { .. })));
            assert_eq!(get(&mut side, format!("{prefix}lf:u:alice")), Some(3));
            assert_eq!(get(&mut side, format!("{prefix}lf:ip:192.0.2.1")), Some(3));
            let ttl = side
                .query(redis::cmd("TTL").arg(format!("{prefix}lf:u:alice")))
                .unwrap();
            assert!((1..=60).contains(&ttl.as_int().unwrap()), "{ttl:?}");

            // A success clears the user's counter and takes one attempt back
            // from the address's.
            alice.succeeded().await.unwrap();
            assert_eq!(get(&mut side, format!("{prefix}lf:u:alice")), None);
            assert_eq!(get(&mut side, format!("{prefix}lf:ip:192.0.2.1")), Some(2));

            // An attempt never verified is taken back from both.
            assert_eq!(alice.admit().await, Ok(Admission::Allowed));
            alice.not_attempted().await.unwrap();
            assert_eq!(get(&mut side, format!("{prefix}lf:u:alice")), None);
            assert_eq!(get(&mut side, format!("{prefix}lf:ip:192.0.2.1")), Some(2));

            // The address's limit blocks every username from it.
            for name in ["bob", "carol", "dave"] {
                let l = LoginLimits::new(&conn, &prefix, &limits, name, ip);
                assert_eq!(l.admit().await, Ok(Admission::Allowed), "{name}");
            }
            let erin = LoginLimits::new(&conn, &prefix, &limits, "erin", ip);
            assert!(matches!(erin.admit().await, Ok(Admission::Blocked { .. })));
            let elsewhere =
                LoginLimits::new(&conn, &prefix, &limits, "erin", [192, 0, 2, 2].into());
            assert_eq!(elsewhere.admit().await, Ok(Admission::Allowed));
            cleanup(&prefix);
        });
    }

    /// Polls every future until all are done; their outputs in order.
    async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
        let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
        let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
                if out.is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *out = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        outputs.into_iter().map(Option::unwrap).collect()
    }

    /// Issue #13: the limit holds for concurrent attempts. Fifty attempts in
    /// flight at once on one connection (pipelined, as a core sends them)
    /// are admitted exactly as many times as the limit allows.
    #[test]
    fn concurrent_attempts_get_exactly_the_limit() {
        on_both_drivers(|driver| async move {
            let prefix = random_prefix();
            let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
            assert!(conn.wait_connected(Duration::from_secs(5)).await);
            let limits = limits(5, 1000);
            let attempts: Vec<_> = (0..50)
                .map(|_| LoginLimits::new(&conn, &prefix, &limits, "alice", [192, 0, 2, 1].into()))
                .collect();
            let answers = join_all(attempts.iter().map(|a| a.admit()).collect()).await;
            let admitted = answers
                .iter()
                .filter(|a| **a == Ok(Admission::Allowed))
                .count();
            assert_eq!(admitted, 5, "{driver}: {answers:?}");
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
                l.admit().await,
                Err(LimitError::Store(RedisError::Unavailable))
            );
        });
    }
}
