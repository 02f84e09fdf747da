//! Revocations: the check, the writes, the mirror, and their durable copy.
//!
//! - [`check_access`]: THE revocation check of an access token, for `access`
//!   (so `/validate`, introspection and the user API alike): the core's
//!   [`mirror`] when it is on and current, else one Redis round trip through
//!   a [`RevocationCheck`]. It says which path answered ([`Answered`]) so the
//!   caller counts the mirror's answers and fallbacks.
//! - [`RevocationCheck`]: "is this access token revoked?", answered from
//!   Redis.
//! - [`RedisRevocations`]: its implementation, one `MGET` round trip per
//!   check, pipelined with the other requests of the core; also the writes
//!   (revoke one token, "not before" mark for a user), each logged in the
//!   stream the mirrors follow.
//! - [`mirror`]: the in-memory revocation mirror (DESIGN §7,
//!   `redis.revocation_mirror`). Its verdict is `None` whenever it cannot
//!   vouch for being current, and [`check_access`] then asks Redis.
//! - [`durable`]: every revocation also written to PostgreSQL, and the
//!   re-seed of a Redis that lost its data.
//!
//! The Lua scripts are the `.lua` files of `scripts/`, loaded with
//! `include_str!`.
//!
//! Owns: revocation keys in Redis and revocation rows in PostgreSQL, the
//! order of the revocation check (mirror, then Redis), and the stream the
//! mirrors follow.
//!
//! Never imports: `handlers`, `http`, `net`, `state`, `access`, `cores`,
//! `ratelimit` or `identity`. Of the stores it imports `redis`; PostgreSQL
//! comes as a `postgres` client from its callers. It also uses the clock,
//! `refresh`'s family key names (for the re-seed) and the per-core counters
//! of `metrics` the mirror writes.
//!
//! Key layout (all under the configured prefix, e.g. `tokend:`):
//!
//! | key | value | expires |
//! |---|---|---|
//! | `{prefix}rev:at:{jti}` | `1` | when the token would have expired |
//! | `{prefix}nbf:{sub}` | unix seconds, decimal | after the longest token lifetime |
//! | `{prefix}revlog` | stream of revocation writes, for the mirrors | trimmed to ~100,000 entries |
//! | `{prefix}revlog:seq` | number of the last entry of `revlog` | never |

pub mod durable;
pub mod mirror;
mod progress;

use std::rc::Rc;

use crate::redis::{RedisConn, RedisError, Reply, Script, Writes};

/// Key infix of a revoked access token: `{prefix}rev:at:{jti}`.
pub const ACCESS_KEY_INFIX: &str = "rev:at:";
/// Key infix of a user's "not before" mark: `{prefix}nbf:{sub}`.
pub const NOT_BEFORE_KEY_INFIX: &str = "nbf:";

/// Is an access token revoked?
///
/// Implementations live on one core (`!Send` is fine: the future is awaited
/// on the core that owns the checker), hence `async fn` in the trait.
#[allow(async_fn_in_trait)] // no Send bound wanted: thread-per-core, per-core state.
pub trait RevocationCheck {
    /// True when the token `jti` of user `sub`, issued at `iat` (unix
    /// seconds), was revoked, either by itself or by a "not before" mark on
    /// its user. An `Err` means "cannot tell": the caller must fail closed
    /// (503), never accept the token.
    async fn is_revoked(&self, jti: &str, sub: &str, iat: u64) -> Result<bool, RedisError>;
}

/// Which path answered a revocation check (see [`check_access`]): what the
/// caller counts (`mirror_answers`, `mirror_fallbacks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// The mirror answered from memory: no Redis round trip.
    Mirror,
    /// The mirror is on but could not vouch for being current (not synced,
    /// lagging, or a token living longer than it answers for): Redis was
    /// asked.
    RedisAfterMirror,
    /// There is no mirror: Redis was asked.
    Redis,
}

/// The outcome of [`check_access`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// True when the token is revoked. An `Err` means "cannot tell": fail
    /// closed (503), never accept the token.
    pub revoked: Result<bool, RedisError>,
    /// Which path gave the answer.
    pub answered: Answered,
}

/// The revocation check of the access token `jti` of user `sub`, issued at
/// `iat` and expiring at `exp` (unix seconds): `mirror` (the core's, when
/// `redis.revocation_mirror` is on) when it is current, else one round trip
/// through `redis` (the core's [`RedisRevocations`]).
///
/// The mirror is asked first because it costs no I/O; it answers `None`
/// whenever it cannot vouch for holding everything Redis holds, and then
/// Redis decides, so a mirror never turns Redis trouble into "valid".
pub async fn check_access<C: RevocationCheck>(
    mirror: Option<&mirror::Mirror>,
    redis: &C,
    jti: &str,
    sub: &str,
    iat: u64,
    exp: u64,
) -> Verdict {
    let Some(mirror) = mirror else {
        return Verdict {
            revoked: redis.is_revoked(jti, sub, iat).await,
            answered: Answered::Redis,
        };
    };
    match mirror.verdict(jti, sub, iat, exp) {
        Some(revoked) => Verdict {
            revoked: Ok(revoked),
            answered: Answered::Mirror,
        },
        None => Verdict {
            revoked: redis.is_revoked(jti, sub, iat).await,
            answered: Answered::RedisAfterMirror,
        },
    }
}

/// Revokes one access token and logs it for the mirrors.
///
/// Source: `scripts/revoke_access.lua`, whose header is the full contract.
pub const REVOKE_ACCESS_LUA: &str = include_str!("scripts/revoke_access.lua");

/// Sets a user's "not before" mark, never lowering a later one, and logs a
/// change for the mirrors.
///
/// Source: `scripts/set_not_before.lua`, whose header is the full contract.
pub const SET_NOT_BEFORE_LUA: &str = include_str!("scripts/set_not_before.lua");

/// The keys and arguments of [`SET_NOT_BEFORE_LUA`] for `sub`, for callers
/// that run it through another client (the CLI, the re-seed).
pub fn set_not_before_keys(prefix: &str, sub: &str) -> [String; 3] {
    let log = mirror::StreamKeys::new(prefix);
    [
        [prefix, NOT_BEFORE_KEY_INFIX, sub].concat(),
        log.seq,
        log.stream,
    ]
}

/// The revocation check and revocation writes, stored in Redis.
pub struct RedisRevocations {
    conn: Rc<RedisConn>,
    /// Where revocations and marks are written: `conn` itself, or a
    /// connection whose writes replicas acknowledge (`redis::Writes`).
    writes: Writes,
    /// Prefix of every key (`redis.prefix`), so deployments and test runs can
    /// share one Redis.
    prefix: String,
    set_not_before: Script,
    revoke_access: Script,
    /// `{prefix}revlog:seq` and `{prefix}revlog`: the mirrors' stream.
    log: mirror::StreamKeys,
    /// Also read `{prefix}seeded` in the same round trip and answer "cannot
    /// tell" while it is missing: Redis lost its data and the revocations
    /// have not been re-seeded from PostgreSQL yet (see `durable`).
    require_seed_marker: bool,
}

impl RedisRevocations {
    /// Like [`RedisRevocations::new`], but every check also requires the
    /// re-seed marker: what `tokend serve` uses, so that a Redis that lost
    /// its data answers "cannot tell" (503) until it holds every revocation
    /// again, never "valid".
    pub fn with_seed_marker(conn: Rc<RedisConn>, prefix: impl Into<String>) -> RedisRevocations {
        RedisRevocations {
            require_seed_marker: true,
            ..RedisRevocations::new(conn, prefix)
        }
    }

    /// Revocations under `prefix`, on the core's connection.
    pub fn new(conn: Rc<RedisConn>, prefix: impl Into<String>) -> RedisRevocations {
        let prefix = prefix.into();
        RedisRevocations {
            writes: Writes::unacked(conn.clone()),
            conn,
            log: mirror::StreamKeys::new(&prefix),
            prefix,
            set_not_before: Script::new(SET_NOT_BEFORE_LUA),
            revoke_access: Script::new(REVOKE_ACCESS_LUA),
            require_seed_marker: false,
        }
    }

    /// These revocations, written through `writes` (replicas acknowledge
    /// each: `redis.min_replicas_acked`); checks stay on the core's
    /// connection.
    pub fn with_writes(self, writes: Writes) -> RedisRevocations {
        RedisRevocations { writes, ..self }
    }

    /// The connection this uses.
    pub fn conn(&self) -> &Rc<RedisConn> {
        &self.conn
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}rev:at:{jti}`. Allocates: for logs, tests and cold paths.
    pub fn access_key(&self, jti: &str) -> String {
        [self.prefix.as_str(), ACCESS_KEY_INFIX, jti].concat()
    }

    /// `{prefix}nbf:{sub}`. Allocates: for logs, tests and cold paths.
    pub fn not_before_key(&self, sub: &str) -> String {
        [self.prefix.as_str(), NOT_BEFORE_KEY_INFIX, sub].concat()
    }

    /// Marks the access token `jti` revoked for `ttl_secs` (its remaining
    /// lifetime: Redis expiry does the clean-up). A `ttl_secs` of 0 means the
    /// token has already expired, so nothing is written.
    pub async fn revoke_access(&self, jti: &str, ttl_secs: u64) -> Result<(), RedisError> {
        self.revoke_access_logged(jti, ttl_secs).await.map(|_| ())
    }

    /// [`RedisRevocations::revoke_access`], returning the sequence number of
    /// the stream entry the mirrors apply (0: nothing written), for
    /// [`mirror::wait_applied`].
    pub async fn revoke_access_logged(&self, jti: &str, ttl_secs: u64) -> Result<u64, RedisError> {
        if ttl_secs == 0 {
            return Ok(0);
        }
        let key = self.access_key(jti);
        let reply = self
            .writes
            .eval(
                &self.revoke_access,
                &[
                    key.as_str(),
                    self.log.seq.as_str(),
                    self.log.stream.as_str(),
                ],
                &[
                    ttl_secs.to_string().as_str(),
                    jti,
                    &mirror::STREAM_MAXLEN.to_string(),
                ],
            )
            .await?;
        reply
            .as_int()
            .and_then(|s| u64::try_from(s).ok())
            .ok_or(RedisError::Protocol)
    }

    /// Voids every token of `sub` issued at or before `unix_secs` (logout
    /// everywhere, password change, disabled user), for `ttl_secs` (at least
    /// the longest lifetime of a token issued before the mark; 0 is raised
    /// to 1 because Redis refuses `EX 0`). Never lowers a later existing
    /// mark. Returns the mark in force afterwards.
    pub async fn set_not_before(
        &self,
        sub: &str,
        unix_secs: u64,
        ttl_secs: u64,
    ) -> Result<u64, RedisError> {
        self.set_not_before_logged(sub, unix_secs, ttl_secs)
            .await
            .map(|(mark, _)| mark)
    }

    /// [`RedisRevocations::set_not_before`], returning `(mark in force,
    /// sequence number of the stream entry or 0)`.
    pub async fn set_not_before_logged(
        &self,
        sub: &str,
        unix_secs: u64,
        ttl_secs: u64,
    ) -> Result<(u64, u64), RedisError> {
        let key = self.not_before_key(sub);
        let ttl = ttl_secs.max(1);
        let reply = self
            .writes
            .eval(
                &self.set_not_before,
                &[
                    key.as_str(),
                    self.log.seq.as_str(),
                    self.log.stream.as_str(),
                ],
                &[
                    unix_secs.to_string().as_str(),
                    &ttl.to_string(),
                    sub,
                    &mirror::STREAM_MAXLEN.to_string(),
                ],
            )
            .await?;
        parse_mark_reply(&reply).ok_or(RedisError::Protocol)
    }

    /// The user's "not before" mark, if any (cold path: admin, tests).
    pub async fn not_before(&self, sub: &str) -> Result<Option<u64>, RedisError> {
        let p = self.prefix.as_bytes();
        let reply = self
            .conn
            .query_with(|w| {
                w.command(2).arg(b"GET").arg_parts(&[
                    p,
                    NOT_BEFORE_KEY_INFIX.as_bytes(),
                    sub.as_bytes(),
                ]);
            })
            .await?;
        if reply.is_nil() {
            return Ok(None);
        }
        parse_mark(&reply).map(Some).ok_or(RedisError::Protocol)
    }
}

impl RevocationCheck for RedisRevocations {
    /// One round trip: `MGET {prefix}rev:at:{jti} {prefix}nbf:{sub}`, encoded
    /// straight into the connection's write buffer (no key formatting).
    async fn is_revoked(&self, jti: &str, sub: &str, iat: u64) -> Result<bool, RedisError> {
        let p = self.prefix.as_bytes();
        let reply = self
            .conn
            .query_with(|w| {
                let w = w
                    .command(if self.require_seed_marker { 4 } else { 3 })
                    .arg(b"MGET")
                    .arg_parts(&[p, ACCESS_KEY_INFIX.as_bytes(), jti.as_bytes()])
                    .arg_parts(&[p, NOT_BEFORE_KEY_INFIX.as_bytes(), sub.as_bytes()]);
                if self.require_seed_marker {
                    w.arg_parts(&[p, durable::MARKER_SUFFIX.as_bytes()]);
                }
            })
            .await?;
        decide(&reply, iat)
    }
}

/// The verdict from the `MGET` reply `[revoked jti marker, not-before mark]`.
///
/// Revoked when the `jti` marker exists, or when the user's mark is present
/// and `iat <= mark`. The `<=` is conservative on purpose: `iat` and the mark
/// have one-second resolution, so a token issued in the same second as a
/// logout-everywhere cannot be told apart from one issued just before it, and
/// is voided too. (A client that logs in again within that same second gets a
/// token that is already void and must log in once more.)
///
/// A mark that is not a number cannot be trusted either way: fail closed
/// (revoked), and log it.
fn decide(reply: &Reply, iat: u64) -> Result<bool, RedisError> {
    let (jti_marker, mark) = match reply.as_array().ok_or(RedisError::Protocol)? {
        [j, m] => (j, m),
        // The re-seed marker is missing: Redis lost its data; cannot tell.
        [_, _, seeded] if seeded.is_nil() => return Err(RedisError::Unavailable),
        [j, m, _] => (j, m),
        _ => return Err(RedisError::Protocol),
    };
    if !jti_marker.is_nil() {
        return Ok(true);
    }
    if mark.is_nil() {
        return Ok(false);
    }
    match parse_mark(mark) {
        Some(mark) => Ok(iat <= mark),
        None => {
            tracing::warn!("revocation: a not-before mark is not a number ({mark:?}); treating the token as revoked");
            Ok(true)
        }
    }
}

/// `{mark, seq}` as [`SET_NOT_BEFORE_LUA`] returns it.
pub fn parse_mark_reply(reply: &Reply) -> Option<(u64, u64)> {
    match reply.as_array()? {
        [mark, seq] => Some((
            u64::try_from(mark.as_int()?).ok()?,
            u64::try_from(seq.as_int()?).ok()?,
        )),
        _ => None,
    }
}

fn parse_mark(reply: &Reply) -> Option<u64> {
    reply.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::metrics::CoreCounters;
    use crate::redis::testutil::*;
    use crate::redis::{BlockingRedis, RedisTarget};

    fn mget(a: Reply, b: Reply) -> Reply {
        Reply::Array(vec![a, b])
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(bytes::Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn decide_semantics() {
        // Nothing stored: valid.
        assert_eq!(decide(&mget(Reply::Nil, Reply::Nil), 100), Ok(false));
        // jti revoked: revoked whatever the mark.
        assert_eq!(decide(&mget(bulk("1"), Reply::Nil), 100), Ok(true));
        assert_eq!(decide(&mget(bulk("1"), bulk("50")), 100), Ok(true));
        // Mark: issued before or in the same second is void, after is valid.
        assert_eq!(decide(&mget(Reply::Nil, bulk("100")), 99), Ok(true));
        assert_eq!(decide(&mget(Reply::Nil, bulk("100")), 100), Ok(true));
        assert_eq!(decide(&mget(Reply::Nil, bulk("100")), 101), Ok(false));
        // A corrupt mark fails closed.
        assert_eq!(decide(&mget(Reply::Nil, bulk("soon")), 101), Ok(true));
        // Wrong shapes are protocol errors, never "not revoked".
        assert_eq!(decide(&Reply::Nil, 1), Err(RedisError::Protocol));
        assert_eq!(
            decide(&Reply::Array(vec![Reply::Nil]), 1),
            Err(RedisError::Protocol)
        );
    }

    #[test]
    fn key_names() {
        legacy(async {
            let conn = RedisConn::new(shared_target(), Duration::from_secs(1));
            let rev = RedisRevocations::new(conn, "p:");
            assert_eq!(rev.access_key("j1"), "p:rev:at:j1");
            assert_eq!(rev.not_before_key("alice"), "p:nbf:alice");
        });
    }

    #[test]
    fn revocation_against_redis() {
        on_both_drivers(|driver| async move {
            let prefix = random_prefix();
            let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
            assert!(
                conn.wait_connected(Duration::from_secs(5)).await,
                "{driver}"
            );
            let rev = RedisRevocations::new(conn.clone(), prefix.clone());

            assert_eq!(rev.is_revoked("jti-1", "alice", 1_000).await, Ok(false));

            // One token revoked; the user's other tokens stay valid.
            rev.revoke_access("jti-1", 60).await.unwrap();
            assert_eq!(rev.is_revoked("jti-1", "alice", 1_000).await, Ok(true));
            assert_eq!(rev.is_revoked("jti-2", "alice", 1_000).await, Ok(false));
            let mut c = BlockingRedis::connect(&shared_target(), Duration::from_secs(2)).unwrap();
            let ttl = c
                .query(::redis::cmd("TTL").arg(rev.access_key("jti-1")))
                .unwrap();
            assert!((1..=60).contains(&ttl.as_int().unwrap()), "{ttl:?}");

            // Already expired: nothing written.
            rev.revoke_access("jti-old", 0).await.unwrap();
            let exists = c
                .query(::redis::cmd("EXISTS").arg(rev.access_key("jti-old")))
                .unwrap();
            assert_eq!(exists.as_int(), Some(0));

            // Logout everywhere at t=2000: tokens issued up to and including
            // that second are void, later ones valid; other users untouched.
            assert_eq!(rev.set_not_before("alice", 2_000, 120).await, Ok(2_000));
            assert_eq!(rev.is_revoked("jti-2", "alice", 1_999).await, Ok(true));
            assert_eq!(rev.is_revoked("jti-2", "alice", 2_000).await, Ok(true));
            assert_eq!(rev.is_revoked("jti-3", "alice", 2_001).await, Ok(false));
            assert_eq!(rev.is_revoked("jti-4", "bob", 1_500).await, Ok(false));
            assert_eq!(rev.not_before("alice").await, Ok(Some(2_000)));
            assert_eq!(rev.not_before("bob").await, Ok(None));

            // An earlier mark never lowers a later one (but may extend its TTL).
            assert_eq!(rev.set_not_before("alice", 1_500, 600).await, Ok(2_000));
            assert_eq!(rev.is_revoked("jti-2", "alice", 1_800).await, Ok(true));
            let ttl = c
                .query(::redis::cmd("TTL").arg(rev.not_before_key("alice")))
                .unwrap();
            assert!(ttl.as_int().unwrap() > 120, "ttl extended: {ttl:?}");
            // A later mark raises it.
            assert_eq!(rev.set_not_before("alice", 3_000, 120).await, Ok(3_000));
            assert_eq!(rev.is_revoked("jti-3", "alice", 2_001).await, Ok(true));

            // A corrupt mark fails closed, and the next mark repairs it.
            c.query(
                ::redis::cmd("SET")
                    .arg(rev.not_before_key("carol"))
                    .arg("garbage")
                    .arg("EX")
                    .arg(60),
            )
            .unwrap();
            assert_eq!(rev.is_revoked("jti-5", "carol", 5_000).await, Ok(true));
            assert_eq!(rev.set_not_before("carol", 10, 60).await, Ok(10));
            assert_eq!(rev.is_revoked("jti-5", "carol", 5_000).await, Ok(false));

            // The check is one round trip.
            let before = conn.stats();
            rev.is_revoked("jti-1", "alice", 1).await.unwrap();
            let after = conn.stats();
            assert_eq!(after.commands - before.commands, 1);
            assert_eq!(after.round_trips - before.round_trips, 1);
            cleanup(&prefix);
        });
    }

    #[test]
    fn many_concurrent_checks_are_batched() {
        on_both_drivers(|driver| async move {
            let prefix = random_prefix();
            let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
            assert!(conn.wait_connected(Duration::from_secs(5)).await);
            let rev = Rc::new(RedisRevocations::new(conn.clone(), prefix.clone()));
            for i in (0..200).step_by(2) {
                rev.revoke_access(&format!("j{i}"), 60).await.unwrap();
            }
            let before = conn.stats();
            let handles: Vec<_> = (0..200)
                .map(|i| {
                    let rev = rev.clone();
                    monoio::spawn(
                        async move { (i, rev.is_revoked(&format!("j{i}"), "u", 1).await) },
                    )
                })
                .collect();
            for h in handles {
                let (i, r) = h.await;
                assert_eq!(r, Ok(i % 2 == 0), "{driver} j{i}");
            }
            let after = conn.stats();
            assert_eq!(after.commands - before.commands, 200);
            assert!(
                after.round_trips - before.round_trips < 200,
                "{driver}: {after:?}"
            );
            cleanup(&prefix);
        });
    }

    /// The mirror first when it is current, else Redis; the path is
    /// reported for the caller's counters.
    #[test]
    fn check_asks_the_mirror_first_then_redis() {
        legacy(async {
            let prefix = random_prefix();
            let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
            assert!(conn.wait_connected(Duration::from_secs(5)).await);
            let rev = RedisRevocations::new(conn.clone(), prefix.clone());
            rev.revoke_access("gone", 60).await.unwrap();
            let verdict = |revoked, answered| Verdict { revoked, answered };

            // No mirror: Redis.
            assert_eq!(
                check_access(None, &rev, "gone", "u", 100, 200).await,
                verdict(Ok(true), Answered::Redis)
            );
            // A mirror not synced yet: Redis, as a fallback.
            let m = mirror::Mirror::new(
                prefix.clone(),
                Duration::from_secs(900),
                Duration::ZERO,
                Duration::from_secs(1),
                Arc::new(CoreCounters::default()),
                mirror::Progress::new(1).slot(0),
            );
            assert_eq!(
                check_access(Some(&m), &rev, "gone", "u", 100, 200).await,
                verdict(Ok(true), Answered::RedisAfterMirror)
            );
            // ... which fails closed when Redis cannot answer.
            let down = RedisTarget::parse(&format!("redis://127.0.0.1:{}", free_port())).unwrap();
            let rev_down =
                RedisRevocations::new(RedisConn::new(down, Duration::from_secs(5)), prefix.clone());
            assert_eq!(
                check_access(Some(&m), &rev_down, "gone", "u", 100, 200).await,
                verdict(Err(RedisError::Unavailable), Answered::RedisAfterMirror)
            );

            // Synced (the seeded marker is there, its reader runs): the
            // mirror answers, without a round trip.
            conn.query(
                redis::cmd("SET")
                    .arg(durable::marker_key(&prefix))
                    .arg("1:x"),
            )
            .await
            .unwrap();
            let reader = RedisConn::new(
                shared_target(),
                mirror::reader_timeout(Duration::from_millis(100)),
            );
            monoio::spawn(m.clone().run(reader));
            until("the mirror is current", Duration::from_secs(5), || {
                m.is_current()
            })
            .await;
            let before = conn.stats();
            assert_eq!(
                check_access(Some(&m), &rev, "gone", "u", 100, 200).await,
                verdict(Ok(true), Answered::Mirror)
            );
            assert_eq!(
                check_access(Some(&m), &rev, "kept", "u", 100, 200).await,
                verdict(Ok(false), Answered::Mirror)
            );
            assert_eq!(conn.stats().commands, before.commands);
            // A token living longer than the mirror answers for: Redis.
            assert_eq!(
                check_access(Some(&m), &rev, "gone", "u", 100, 100 + 10_000).await,
                verdict(Ok(true), Answered::RedisAfterMirror)
            );
            cleanup(&prefix);
        });
    }

    #[test]
    fn redis_down_fails_closed() {
        legacy(async {
            let target = RedisTarget::parse(&format!("redis://127.0.0.1:{}", free_port())).unwrap();
            let rev = RedisRevocations::new(RedisConn::new(target, Duration::from_secs(5)), "p:");
            let t = Instant::now();
            assert_eq!(
                rev.is_revoked("j", "u", 1).await,
                Err(RedisError::Unavailable)
            );
            // Unavailable (not Timeout) proves it did not wait for the 5 s
            // timeout; the bound only catches a call that blocks on
            // something else, and is generous so that a loaded 2-CPU
            // machine descheduling the test thread cannot fail it.
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        });
    }
}
