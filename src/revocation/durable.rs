//! Revocations are never lost (DESIGN §2 "Revoke"): every revocation is also
//! a row in PostgreSQL, and a Redis that lost its data is re-seeded from
//! there.
//!
//! Everything here is synchronous: it runs on the blocking pool (the
//! `record_*` writes), on the control thread (`prune_expired`), or on the
//! control thread's seeder and once at start-up (the re-seeding), never on a
//! worker core.
//!
//! # What is stored
//!
//! - Table `revocations` (`migrations/0001_init.sql`): one row per revoked
//!   access-token `jti` (`kind = 'access'`) or refresh-token family
//!   (`kind = 'refresh_family'`, `token_id` = the family id in hex, as in
//!   [`refresh`](crate::refresh)), kept until `expires_at`, when the token
//!   would have expired anyway; [`prune_expired`] deletes the rest.
//! - `users.not_before`: the "not before" marks, mirrored in Redis as
//!   `{prefix}nbf:{sub}`.
//!
//! # The seeded marker
//!
//! `{prefix}seeded` ([`MARKER_SUFFIX`]) holds `"{unix seconds}:{random boot
//! id}"` of the re-seed that wrote it. It is written last by
//! [`reseed_blocking`], only when every revocation and mark was written, and
//! only if Redis did not lose its data again in the meantime (a
//! `{prefix}seeding` key, [`SEEDING_SUFFIX`], set at the start of the
//! re-seed, must still hold our id: a flush during the re-seed makes it fail
//! with [`ReseedError::Interrupted`], and the next attempt starts over).
//! The marker has no expiry: a Redis without it has lost its data (or never
//! had any: a first start is re-seeded the same way).
//!
//! # The window, and who closes it
//!
//! Between the moment Redis loses its data (restart without persistence,
//! `FLUSHALL`, failover to an empty replica) and the moment the marker is
//! set again, Redis says "not revoked" for everything. The validation path
//! must therefore refuse to answer "valid" while the marker is missing: it
//! adds `{prefix}seeded` as a third key to its `MGET` (same round trip) and
//! answers `503` (fail closed, as for "Redis unavailable") when it is nil.
//! Refresh needs no gate: the refresh records are lost with the rest, so a
//! rotation after a flush is `invalid_grant` anyway.
//!
//! The control thread's seeder closes the window: every second it calls
//! [`ensure_seeded`], which checks the marker and, when it is missing, loads
//! the active revocations and recent marks from PostgreSQL
//! ([`load_for_reseed`]), writes them, then sets the marker. Several nodes
//! may do it at once: the writes are idempotent and never lower a TTL or a
//! mark. At start-up, `cores` seeds once before the cores serve, and systemd
//! hears READY=1 only after a seed succeeded.
//!
//! Ordering contract for the writers: commit the PostgreSQL row *before* (or
//! at least not after) the Redis write. Then a flush that happens after the
//! Redis write is always followed by a load that sees the row. The writes
//! that cannot follow this rule are the family revocations: the one done
//! inside the rotation script on reuse detection, and `/oauth/revoke` of a
//! refresh token (the family is found through its Redis record). The caller
//! records each right after; a flush in between also loses the family's
//! records, so nothing of that family can be refreshed anyway.
//!
//! Limits: the marker detects the loss of *all* data. A Redis with
//! persistence that loses only its last second of writes keeps the marker;
//! with `appendfsync always` (or a synchronous replica) that cannot happen.
//!
//! Owns: the `revocations` table (its writes, pruning and loading), the
//! re-seed of Redis from PostgreSQL, and the `{prefix}seeded` /
//! `{prefix}seeding` markers.
//!
//! Never imports: `handlers`, `http`, `net`, `state`, `access`, `cores`,
//! `ratelimit` or `identity`. PostgreSQL comes as a `postgres` client from
//! the caller, Redis as a [`BlockingRedis`]; of the other services it knows
//! only `refresh`'s family key names, to re-seed revoked families.

use std::error::Error as StdError;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use postgres::GenericClient;

use super::ACCESS_KEY_INFIX;
use crate::redis::{BlockingRedis, RedisError, Reply};
use crate::refresh::{FAMILY_KEY_INFIX, FAMILY_REVOKED_FIELD};

/// Key suffix of the "Redis holds every revocation" marker:
/// `{prefix}seeded`. Validation treats its absence as "cannot tell" (503).
pub const MARKER_SUFFIX: &str = "seeded";
/// Key suffix of the re-seed in progress: `{prefix}seeding`.
pub const SEEDING_SUFFIX: &str = "seeding";
/// How long a `{prefix}seeding` key lives if its re-seed dies half-way.
const SEEDING_TTL_SECS: u64 = 3600;
/// Commands per pipelined write during a re-seed.
const RESEED_BATCH: usize = 512;

/// Marks a family revoked (KEYS[1] = family key; ARGV = revoked at, TTL):
/// keeps an earlier revocation time, only ever extends the TTL.
///
/// Source: `scripts/revoke_family.lua`, whose header is the full contract.
const REVOKE_FAMILY_LUA: &str = include_str!("scripts/revoke_family.lua");

/// Sets the marker if the re-seed was not interrupted. KEYS = seeding key,
/// marker key; ARGV[1] = our id. 1 when set, 0 when interrupted.
///
/// Source: `scripts/finish_reseed.lua`, whose header is the full contract.
const FINISH_LUA: &str = include_str!("scripts/finish_reseed.lua");

/// The kind of a durable revocation (`revocations.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationKind {
    /// An access token, by `jti`.
    Access,
    /// A refresh-token family, by family id (hex).
    RefreshFamily,
}

impl RevocationKind {
    /// The value in `revocations.kind`.
    pub fn as_sql(self) -> &'static str {
        match self {
            RevocationKind::Access => "access",
            RevocationKind::RefreshFamily => "refresh_family",
        }
    }

    fn from_sql(s: &str) -> Option<RevocationKind> {
        match s {
            "access" => Some(RevocationKind::Access),
            "refresh_family" => Some(RevocationKind::RefreshFamily),
            _ => None,
        }
    }
}

/// One row of `revocations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub kind: RevocationKind,
    /// The `jti`, or the family id in hex.
    pub token_id: String,
    /// Unix seconds (rounded up) when the token would have expired anyway.
    pub expires_at: u64,
}

/// What a re-seed writes, as loaded from PostgreSQL by [`load_for_reseed`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReseedInput {
    /// The active revocations ([`load_active`]).
    pub revocations: Vec<Revocation>,
    /// `(user id, mark)` ([`load_not_before_marks`]).
    pub marks: Vec<(String, u64)>,
}

/// What a re-seed wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReseedStats {
    pub access: usize,
    pub families: usize,
    pub marks: usize,
}

/// Why a re-seed did not complete. The marker is not set; try again later.
#[derive(Debug, thiserror::Error)]
pub enum ReseedError {
    /// Occurs when Redis fails a command or cannot be reached.
    #[error("cannot re-seed redis: {0}")]
    Redis(#[from] RedisError),
    /// Occurs when Redis lost its data again (or another node's re-seed
    /// took over) while this re-seed was writing; the next attempt starts
    /// over.
    #[error("redis lost its data again during the re-seed (or another node took over); retrying")]
    Interrupted,
    /// Occurs when the revocations cannot be read from PostgreSQL.
    #[error("cannot load the revocations from PostgreSQL: {0}")]
    Load(#[source] Box<dyn StdError + Send + Sync>),
}

/// Records a revoked access token until `expires_at_unix` (its `exp`).
/// Returns whether a row was added (false: already recorded). A repeated
/// revocation never shortens the recorded expiry.
pub fn record_access_revocation(
    c: &mut impl GenericClient,
    jti: &str,
    expires_at_unix: u64,
) -> Result<bool, postgres::Error> {
    record(c, RevocationKind::Access, jti, expires_at_unix)
}

/// Records a revoked refresh-token family (hex id, as in
/// [`FamilyInfo`](crate::refresh::FamilyInfo)) until `expires_at_unix`.
pub fn record_family_revocation(
    c: &mut impl GenericClient,
    family: &str,
    expires_at_unix: u64,
) -> Result<bool, postgres::Error> {
    record(c, RevocationKind::RefreshFamily, family, expires_at_unix)
}

fn record(
    c: &mut impl GenericClient,
    kind: RevocationKind,
    token_id: &str,
    expires_at: u64,
) -> Result<bool, postgres::Error> {
    // `xmax = 0` tells an inserted row from an updated one. The update only
    // ever moves the expiry later (a conflict with `DO NOTHING` semantics
    // otherwise: nothing else changes).
    let row = c.query_one(
        "INSERT INTO revocations (token_id, kind, expires_at) \
         VALUES ($1, $2, to_timestamp($3::bigint)) \
         ON CONFLICT (kind, token_id) DO UPDATE \
           SET expires_at = GREATEST(revocations.expires_at, EXCLUDED.expires_at) \
         RETURNING (xmax = 0)",
        &[&token_id, &kind.as_sql(), &to_i64(expires_at)],
    )?;
    row.try_get(0)
}

/// Deletes the revocations whose token has expired anyway. Returns how many.
pub fn prune_expired(c: &mut impl GenericClient) -> Result<u64, postgres::Error> {
    c.execute("DELETE FROM revocations WHERE expires_at <= now()", &[])
}

/// The revocations still in force at `now` (unix seconds).
pub fn load_active(
    c: &mut impl GenericClient,
    now: u64,
) -> Result<Vec<Revocation>, postgres::Error> {
    let rows = c.query(
        "SELECT kind, token_id, ceil(extract(epoch FROM expires_at))::bigint \
         FROM revocations WHERE expires_at > to_timestamp($1::bigint)",
        &[&to_i64(now)],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let kind: &str = row.try_get(0)?;
        let Some(kind) = RevocationKind::from_sql(kind) else {
            // The CHECK constraint makes this unreachable; skip, don't fail
            // the whole re-seed over one row.
            tracing::warn!("revocations: unknown kind {kind:?}, row skipped");
            continue;
        };
        let expires_at: i64 = row.try_get(2)?;
        out.push(Revocation {
            kind,
            token_id: row.try_get(1)?,
            expires_at: u64::try_from(expires_at).unwrap_or(0),
        });
    }
    Ok(out)
}

/// `(user id, mark)` of every user whose not-before mark (unix seconds,
/// rounded up) is later than `since_unix`. Pass `now - max(access_ttl,
/// refresh_ttl)`: an older mark voids no token still alive.
pub fn load_not_before_marks(
    c: &mut impl GenericClient,
    since_unix: u64,
) -> Result<Vec<(String, u64)>, postgres::Error> {
    let rows = c.query(
        "SELECT id::text, ceil(extract(epoch FROM not_before))::bigint \
         FROM users WHERE not_before > to_timestamp($1::bigint)",
        &[&to_i64(since_unix)],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mark: i64 = row.try_get(1)?;
        if let Ok(mark) = u64::try_from(mark) {
            out.push((row.try_get(0)?, mark));
        }
    }
    Ok(out)
}

/// What a re-seed needs from PostgreSQL: the active revocations and the
/// marks that can still void a live token (newer than `now -
/// max(access_ttl, refresh_ttl)`).
///
/// The TTLs are the longest any token can live: if clients may override
/// the refresh lifetime, pass the largest value in use.
pub fn load_for_reseed(
    c: &mut impl GenericClient,
    now: u64,
    access_ttl: u64,
    refresh_ttl: u64,
) -> Result<ReseedInput, postgres::Error> {
    let revocations = load_active(c, now)?;
    let marks = load_not_before_marks(c, now.saturating_sub(access_ttl.max(refresh_ttl)))?;
    Ok(ReseedInput { revocations, marks })
}

/// Whether `{prefix}seeded` exists. An `Err` means "cannot tell" (Redis
/// down): do not re-seed, try again later.
pub fn marker_present(redis: &mut BlockingRedis, prefix: &str) -> Result<bool, RedisError> {
    let reply = redis.query(redis::cmd("EXISTS").arg(marker_key(prefix)))?;
    match reply.as_int() {
        Some(n) => Ok(n > 0),
        None => Err(RedisError::Protocol),
    }
}

/// `{prefix}seeded`.
pub fn marker_key(prefix: &str) -> String {
    [prefix, MARKER_SUFFIX].concat()
}

/// The control thread's once-a-second step: if the marker is missing, loads
/// from PostgreSQL with `load` (called only then, with `now`) and re-seeds.
/// Returns `None` when the marker was present (nothing done), else what was
/// written.
///
/// ```ignore
/// let done = durable::ensure_seeded(&mut redis, prefix, access_ttl, refresh_ttl, now, |now| {
///     let mut pg = pool.get()?;
///     Ok(durable::load_for_reseed(&mut *pg, now, access_ttl, refresh_ttl)?)
/// })?;
/// ```
pub fn ensure_seeded<F>(
    redis: &mut BlockingRedis,
    prefix: &str,
    access_ttl: u64,
    refresh_ttl: u64,
    now: u64,
    load: F,
) -> Result<Option<ReseedStats>, ReseedError>
where
    F: FnOnce(u64) -> Result<ReseedInput, Box<dyn StdError + Send + Sync>>,
{
    if marker_present(redis, prefix)? {
        return Ok(None);
    }
    tracing::warn!(
        "redis: marker {prefix}{MARKER_SUFFIX} missing (data lost, or first start); \
         re-seeding revocations from PostgreSQL"
    );
    let input = load(now).map_err(ReseedError::Load)?;
    let stats = reseed_blocking(
        redis,
        prefix,
        &input.revocations,
        &input.marks,
        access_ttl,
        refresh_ttl,
        now,
    )?;
    tracing::info!(
        "redis: re-seeded {} access revocations, {} family revocations, {} not-before marks",
        stats.access,
        stats.families,
        stats.marks
    );
    Ok(Some(stats))
}

/// Writes every active revocation with its remaining lifetime and every
/// not-before mark (TTL `max(access_ttl, refresh_ttl)` minus its age, never
/// lowering a later mark), then sets the marker `{prefix}seeded` last.
///
/// - access: `SET {prefix}rev:at:{jti} 1 EX {expires_at - now}`;
/// - family: `HSET {prefix}rf:{family} rev {now}` (an existing revocation
///   time is kept), TTL `expires_at - now` (never lowered);
/// - mark: as [`RedisRevocations::set_not_before`](super::RedisRevocations::set_not_before).
///
/// Entries already expired at `now` are skipped. Blocking: control thread
/// only.
pub fn reseed_blocking(
    redis: &mut BlockingRedis,
    prefix: &str,
    revocations: &[Revocation],
    marks: &[(String, u64)],
    access_ttl: u64,
    refresh_ttl: u64,
    now: u64,
) -> Result<ReseedStats, ReseedError> {
    let id = format!("{now}:{}", random_hex());
    let seeding_key = [prefix, SEEDING_SUFFIX].concat();
    redis.query(
        redis::cmd("SET")
            .arg(&seeding_key)
            .arg(&id)
            .arg("EX")
            .arg(SEEDING_TTL_SECS),
    )?;
    let family_sha = load_script(redis, REVOKE_FAMILY_LUA)?;
    // The very script RedisRevocations::set_not_before runs: a re-seed never
    // lowers a later mark, only ever extends its TTL.
    let mark_sha = load_script(redis, super::SET_NOT_BEFORE_LUA)?;

    let mut stats = ReseedStats::default();
    let mut batch: Vec<redis::Cmd> = Vec::with_capacity(RESEED_BATCH);
    let now_s = now.to_string();
    for r in revocations {
        let left = r.expires_at.saturating_sub(now);
        if left == 0 {
            continue;
        }
        match r.kind {
            RevocationKind::Access => {
                let mut cmd = redis::cmd("SET");
                cmd.arg([prefix, ACCESS_KEY_INFIX, &r.token_id].concat())
                    .arg("1")
                    .arg("EX")
                    .arg(left);
                batch.push(cmd);
                stats.access += 1;
            }
            RevocationKind::RefreshFamily => {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(&family_sha)
                    .arg(1)
                    .arg([prefix, FAMILY_KEY_INFIX, &r.token_id].concat())
                    .arg(&now_s)
                    .arg(left);
                batch.push(cmd);
                stats.families += 1;
            }
        }
        flush_if_full(redis, &mut batch)?;
    }
    let longest = access_ttl.max(refresh_ttl);
    for (sub, mark) in marks {
        let Some(cmd) = mark_command(&mark_sha, prefix, sub, *mark, longest, now) else {
            continue;
        };
        batch.push(cmd);
        stats.marks += 1;
        flush_if_full(redis, &mut batch)?;
    }
    if !batch.is_empty() {
        redis.query_many(&batch)?;
    }
    debug_assert_eq!(
        FAMILY_REVOKED_FIELD, "rev",
        "REVOKE_FAMILY_LUA writes `rev`"
    );

    let finished = redis.query(
        redis::cmd("EVAL")
            .arg(FINISH_LUA)
            .arg(2)
            .arg(&seeding_key)
            .arg(marker_key(prefix))
            .arg(&id),
    )?;
    match finished.as_int() {
        Some(1) => Ok(stats),
        Some(_) => Err(ReseedError::Interrupted),
        None => Err(RedisError::Protocol.into()),
    }
}

/// Re-applies one access revocation only where Redis lacks it, logging it
/// for the mirrors then.
///
/// Source: `scripts/repair_access.lua`, whose header is the full contract.
const REPAIR_ACCESS_LUA: &str = include_str!("scripts/repair_access.lua");

/// What a reconciliation found missing in Redis and wrote back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileStats {
    /// Access revocations Redis lacked.
    pub access: usize,
    /// Not-before marks Redis lacked or held older (a later one is kept).
    pub marks: usize,
    /// Family revocations re-applied (Redis's answer does not say whether
    /// one was missing: the script keeps what it finds).
    pub families: usize,
}

impl ReconcileStats {
    /// Whether Redis lacked anything PostgreSQL holds.
    pub fn repaired_anything(&self) -> bool {
        self.access > 0 || self.marks > 0
    }
}

/// Reconciliation (issue #13): PostgreSQL is the source of truth for
/// revocations and marks. Re-applies every active revocation and every mark
/// that can still void a live token (`input`, from [`load_for_reseed`]) to
/// Redis, idempotently: what Redis holds is kept (a later mark, a longer
/// TTL), what it lacks is written and, for what validation's mirrors read,
/// logged to their stream. Repairs a write that reached PostgreSQL but not
/// Redis (the Redis write failed after the commit), and a Redis that lost
/// recent writes but kept its `seeded` marker (a failover to a replica that
/// had not received them, a restore from an older file). Leaves the marker
/// alone. Blocking: the control side's reconciliation job only.
pub fn reconcile_blocking(
    redis: &mut BlockingRedis,
    prefix: &str,
    input: &ReseedInput,
    access_ttl: u64,
    refresh_ttl: u64,
    now: u64,
) -> Result<ReconcileStats, RedisError> {
    let access_sha = load_script(redis, REPAIR_ACCESS_LUA)?;
    let family_sha = load_script(redis, REVOKE_FAMILY_LUA)?;
    let mark_sha = load_script(redis, super::SET_NOT_BEFORE_LUA)?;
    let log = super::mirror::StreamKeys::new(prefix);
    let now_s = now.to_string();
    /// What each pipelined command re-applies, to read its reply.
    #[derive(Clone, Copy)]
    enum Repair {
        Access,
        Family,
        Mark,
    }
    let mut stats = ReconcileStats::default();
    let mut batch: Vec<redis::Cmd> = Vec::with_capacity(RESEED_BATCH);
    let mut what: Vec<Repair> = Vec::with_capacity(RESEED_BATCH);
    let flush = |redis: &mut BlockingRedis,
                 batch: &mut Vec<redis::Cmd>,
                 what: &mut Vec<Repair>,
                 stats: &mut ReconcileStats|
     -> Result<(), RedisError> {
        if batch.is_empty() {
            return Ok(());
        }
        for (reply, repair) in redis.query_many(batch)?.iter().zip(what.iter()) {
            match repair {
                Repair::Access if reply.as_int() == Some(1) => stats.access += 1,
                Repair::Access => {}
                Repair::Family => stats.families += 1,
                // `{mark in force, sequence number or 0}`: a sequence number
                // means the mark changed, so Redis lacked it.
                Repair::Mark => {
                    let seq = reply.as_array().and_then(|r| r.get(1)?.as_int());
                    if seq.is_some_and(|seq| seq > 0) {
                        stats.marks += 1;
                    }
                }
            }
        }
        batch.clear();
        what.clear();
        Ok(())
    };
    for r in &input.revocations {
        let left = r.expires_at.saturating_sub(now);
        if left == 0 {
            continue;
        }
        let mut cmd = redis::cmd("EVALSHA");
        match r.kind {
            RevocationKind::Access => {
                cmd.arg(&access_sha)
                    .arg(3)
                    .arg([prefix, ACCESS_KEY_INFIX, &r.token_id].concat())
                    .arg(&log.seq)
                    .arg(&log.stream)
                    .arg(left)
                    .arg(&r.token_id)
                    .arg(super::mirror::STREAM_MAXLEN);
                what.push(Repair::Access);
            }
            RevocationKind::RefreshFamily => {
                cmd.arg(&family_sha)
                    .arg(1)
                    .arg([prefix, FAMILY_KEY_INFIX, &r.token_id].concat())
                    .arg(&now_s)
                    .arg(left);
                what.push(Repair::Family);
            }
        }
        batch.push(cmd);
        if batch.len() >= RESEED_BATCH {
            flush(redis, &mut batch, &mut what, &mut stats)?;
        }
    }
    let longest = access_ttl.max(refresh_ttl);
    for (sub, mark) in &input.marks {
        let Some(cmd) = mark_command(&mark_sha, prefix, sub, *mark, longest, now) else {
            continue;
        };
        batch.push(cmd);
        what.push(Repair::Mark);
        if batch.len() >= RESEED_BATCH {
            flush(redis, &mut batch, &mut what, &mut stats)?;
        }
    }
    flush(redis, &mut batch, &mut what, &mut stats)?;
    Ok(stats)
}

/// The `EVALSHA` of [`super::SET_NOT_BEFORE_LUA`] (loaded as `mark_sha`)
/// that re-applies `sub`'s `mark` with what is left of `longest` (seconds)
/// at `now`; `None` once nothing is left (the mark voids no live token).
fn mark_command(
    mark_sha: &str,
    prefix: &str,
    sub: &str,
    mark: u64,
    longest: u64,
    now: u64,
) -> Option<redis::Cmd> {
    let ttl = longest.saturating_sub(now.saturating_sub(mark));
    if ttl == 0 {
        return None;
    }
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(mark_sha)
        .arg(3)
        .arg(&super::set_not_before_keys(prefix, sub)[..])
        .arg(mark)
        .arg(ttl)
        .arg(sub)
        .arg(super::mirror::STREAM_MAXLEN);
    Some(cmd)
}

fn flush_if_full(redis: &mut BlockingRedis, batch: &mut Vec<redis::Cmd>) -> Result<(), RedisError> {
    if batch.len() >= RESEED_BATCH {
        redis.query_many(batch)?;
        batch.clear();
    }
    Ok(())
}

/// `SCRIPT LOAD`s `source`, returning its SHA1. Loaded at the start of every
/// re-seed, so the `EVALSHA`s that follow on the same connection find it
/// (a `SCRIPT FLUSH` in between would fail the re-seed, which is retried).
fn load_script(redis: &mut BlockingRedis, source: &str) -> Result<String, RedisError> {
    match redis.query(redis::cmd("SCRIPT").arg("LOAD").arg(source))? {
        Reply::Bulk(b) => String::from_utf8(b.to_vec()).map_err(|_| RedisError::Protocol),
        Reply::Simple(s) => Ok(s),
        _ => Err(RedisError::Protocol),
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    // aws-lc's `RAND_bytes` returns 1 or aborts the process (AWS-LC
    // `rand.h`); on the impossible failure a time-only id still works (it
    // only needs to differ between concurrent re-seeds).
    let _ = SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use postgres::Client;

    use super::super::{RedisRevocations, RevocationCheck};
    use super::*;
    use crate::clock::unix_now;
    use crate::redis::testutil::*;
    use crate::redis::RedisConn;
    use crate::refresh::RefreshStore;
    use crate::testing::TestDb;

    /// Deletes the prefix's keys, also when the test panics.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            cleanup(&self.0);
        }
    }

    fn blocking() -> BlockingRedis {
        BlockingRedis::connect(&shared_target(), Duration::from_secs(2)).unwrap()
    }

    fn ttl(c: &mut BlockingRedis, key: &str) -> i64 {
        c.query(redis::cmd("TTL").arg(key))
            .unwrap()
            .as_int()
            .unwrap()
    }

    fn add_user(c: &mut Client, name: &str, not_before: Option<u64>) -> String {
        let row = c
            .query_one(
                "INSERT INTO users (username, password_hash, not_before) \
                 VALUES ($1, '$argon2id$x', to_timestamp($2::bigint)) RETURNING id::text",
                &[&name, &not_before.map(to_i64)],
            )
            .unwrap();
        row.get(0)
    }

    /// Reconciliation writes back what Redis lacks, logs only that for the
    /// mirrors, and finds nothing to do the second time.
    #[test]
    fn reconcile_writes_back_only_what_redis_lacks() {
        let db = TestDb::new();
        let mut pg = db.client();
        let prefix = random_prefix();
        let _g = Cleanup(prefix.clone());
        let now = unix_now();
        let (access_ttl, refresh_ttl) = (900, 7200);
        record_access_revocation(&mut pg, "jti-1", now + 600).unwrap();
        record_family_revocation(&mut pg, "fam-1", now + 3600).unwrap();
        let alice = add_user(&mut pg, "alice", Some(now - 10));
        let mut r = blocking();
        let stream_len = |r: &mut BlockingRedis| {
            r.query(redis::cmd("XLEN").arg(format!("{prefix}revlog")))
                .unwrap()
                .as_int()
                .unwrap()
        };
        let input = load_for_reseed(&mut pg, now, access_ttl, refresh_ttl).unwrap();
        let first =
            reconcile_blocking(&mut r, &prefix, &input, access_ttl, refresh_ttl, now).unwrap();
        assert_eq!((first.access, first.marks, first.families), (1, 1, 1));
        assert!(first.repaired_anything());
        assert_eq!(
            stream_len(&mut r),
            2,
            "the access revocation and the mark, logged"
        );
        let left = ttl(&mut r, &format!("{prefix}rev:at:jti-1"));
        assert!((590..=600).contains(&left), "{left}");
        let mark_ttl = ttl(&mut r, &format!("{prefix}nbf:{alice}"));
        assert!((7180..=7190).contains(&mark_ttl), "{mark_ttl}");
        // Nothing lacking: nothing written to the stream.
        let again =
            reconcile_blocking(&mut r, &prefix, &input, access_ttl, refresh_ttl, now).unwrap();
        assert_eq!((again.access, again.marks), (0, 0));
        assert!(!again.repaired_anything());
        assert_eq!(stream_len(&mut r), 2);
        // The marker is not reconciliation's business.
        assert!(!marker_present(&mut r, &prefix).unwrap());
    }

    #[test]
    fn record_load_prune() {
        let db = TestDb::new();
        let mut pg = db.client();
        let c = &mut pg;
        let now = unix_now();
        assert!(record_access_revocation(c, "j1", now + 600).unwrap());
        // Idempotent; never shortens the expiry, may lengthen it.
        assert!(!record_access_revocation(c, "j1", now + 60).unwrap());
        assert!(!record_access_revocation(c, "j1", now + 900).unwrap());
        assert!(record_family_revocation(c, "f1", now + 3600).unwrap());
        // Same id, different kind: another row.
        assert!(record_family_revocation(c, "j1", now + 60).unwrap());
        assert!(record_access_revocation(c, "old", now - 10).unwrap());

        let mut active = load_active(c, now).unwrap();
        active.sort_by(|a, b| {
            (a.token_id.as_str(), a.kind.as_sql()).cmp(&(&b.token_id, b.kind.as_sql()))
        });
        assert_eq!(
            active,
            vec![
                Revocation {
                    kind: RevocationKind::RefreshFamily,
                    token_id: "f1".into(),
                    expires_at: now + 3600
                },
                Revocation {
                    kind: RevocationKind::Access,
                    token_id: "j1".into(),
                    expires_at: now + 900
                },
                Revocation {
                    kind: RevocationKind::RefreshFamily,
                    token_id: "j1".into(),
                    expires_at: now + 60
                },
            ]
        );
        assert_eq!(prune_expired(c).unwrap(), 1);
        assert_eq!(prune_expired(c).unwrap(), 0);
        let n: i64 = c
            .query_one("SELECT count(*) FROM revocations", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 3);

        // Marks: only those newer than `since`.
        let a = add_user(c, "alice", Some(now - 100));
        let _b = add_user(c, "bob", Some(now - 100_000));
        let _c = add_user(c, "carol", None);
        let marks = load_not_before_marks(c, now - 1000).unwrap();
        assert_eq!(marks, vec![(a.clone(), now - 100)]);
        let input = load_for_reseed(c, now, 900, 1000).unwrap();
        assert_eq!(input.revocations.len(), 3);
        assert_eq!(input.marks, vec![(a, now - 100)]);
    }

    #[test]
    fn flush_then_reseed() {
        let db = TestDb::new();
        let mut pg = db.client();
        let prefix = random_prefix();
        let _g = Cleanup(prefix.clone());
        let now = unix_now();
        let (access_ttl, refresh_ttl) = (900, 7200);

        // A live refresh family, revoked (Redis first here only because the
        // test wants the family id; production records PostgreSQL first).
        let (token, family) = legacy(async {
            let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
            assert!(conn.wait_connected(Duration::from_secs(5)).await);
            let s = RefreshStore::new(
                conn,
                prefix.clone(),
                crate::refresh::RecordMac::new(&[9; 32]),
            );
            let (t, _) = s
                .issue("u1", None, "app", "a", refresh_ttl, now)
                .await
                .unwrap();
            let info = s.revoke_family_of(&t, None).await.unwrap().unwrap();
            (t, info)
        });
        let c = &mut pg;
        record_family_revocation(c, &family.family.to_hex(), family.expires_at).unwrap();
        record_access_revocation(c, "jti-live", now + 300).unwrap();
        record_access_revocation(c, "jti-dead", now - 5).unwrap();
        let alice = add_user(c, "alice", Some(now - 60));
        let bob = add_user(c, "bob", Some(now - 10 * refresh_ttl));

        let mut r = blocking();
        let mut pg_load = |now: u64| -> Result<_, Box<dyn StdError + Send + Sync>> {
            Ok(load_for_reseed(&mut pg, now, access_ttl, refresh_ttl)?)
        };
        // First start: no marker → seeded.
        assert!(!marker_present(&mut r, &prefix).unwrap());
        let stats = ensure_seeded(&mut r, &prefix, access_ttl, refresh_ttl, now, &mut pg_load)
            .unwrap()
            .unwrap();
        assert_eq!(
            stats,
            ReseedStats {
                access: 1,
                families: 1,
                marks: 1
            }
        );
        assert!(marker_present(&mut r, &prefix).unwrap());
        // Marker present: nothing to do, the loader is not called.
        assert_eq!(
            ensure_seeded(&mut r, &prefix, access_ttl, refresh_ttl, now, |_| {
                panic!("must not load")
            })
            .unwrap(),
            None
        );

        // Redis loses our data (only our prefix: the Redis is shared).
        cleanup(&prefix);
        assert!(!marker_present(&mut r, &prefix).unwrap());
        let stats = ensure_seeded(&mut r, &prefix, access_ttl, refresh_ttl, now, &mut pg_load)
            .unwrap()
            .unwrap();
        assert_eq!((stats.access, stats.families, stats.marks), (1, 1, 1));
        assert!(marker_present(&mut r, &prefix).unwrap());
        // The seeding key is gone; the marker has no expiry.
        let exists = r
            .query(redis::cmd("EXISTS").arg(format!("{prefix}{SEEDING_SUFFIX}")))
            .unwrap();
        assert_eq!(exists.as_int(), Some(0));
        assert_eq!(ttl(&mut r, &marker_key(&prefix)), -1);

        // Sane TTLs.
        let t = ttl(&mut r, &format!("{prefix}rev:at:jti-live"));
        assert!((290..=300).contains(&t), "{t}");
        assert_eq!(ttl(&mut r, &format!("{prefix}rev:at:jti-dead")), -2);
        let fkey = format!("{prefix}rf:{}", family.family);
        let t = ttl(&mut r, &fkey);
        // `family.expires_at` comes from revoke_family_of's own clock read,
        // which may fall a second after the test's `now`: up to +1.
        assert!(
            (refresh_ttl as i64 - 10..=refresh_ttl as i64 + 1).contains(&t),
            "{t}"
        );
        let rev = r
            .query(redis::cmd("HGET").arg(&fkey).arg(FAMILY_REVOKED_FIELD))
            .unwrap();
        assert_eq!(rev.as_int(), Some(now as i64));
        let t = ttl(&mut r, &format!("{prefix}nbf:{alice}"));
        assert!(
            (refresh_ttl as i64 - 70..=refresh_ttl as i64 - 60).contains(&t),
            "{t}"
        );
        assert_eq!(ttl(&mut r, &format!("{prefix}nbf:{bob}")), -2);

        // The re-seeded state is what the readers understand.
        legacy(async {
            let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
            assert!(conn.wait_connected(Duration::from_secs(5)).await);
            let rev = RedisRevocations::new(conn.clone(), prefix.clone());
            assert_eq!(rev.is_revoked("jti-live", "x", now).await, Ok(true));
            assert_eq!(rev.is_revoked("jti-dead", "x", now).await, Ok(false));
            assert_eq!(rev.is_revoked("j", &alice, now - 60).await, Ok(true));
            assert_eq!(rev.is_revoked("j", &alice, now - 59).await, Ok(false));
            assert_eq!(rev.not_before(&alice).await, Ok(Some(now - 60)));
            let s = RefreshStore::new(
                conn,
                prefix.clone(),
                crate::refresh::RecordMac::new(&[9; 32]),
            );
            assert_eq!(s.lookup(&token).await, Ok(None));
        });

        // Lost again; a later mark was set meanwhile (after the load): the
        // re-seed never lowers it.
        cleanup(&prefix);
        r.query(
            redis::cmd("SET")
                .arg(format!("{prefix}nbf:{alice}"))
                .arg(now + 5)
                .arg("EX")
                .arg(60),
        )
        .unwrap();
        ensure_seeded(&mut r, &prefix, access_ttl, refresh_ttl, now, &mut pg_load)
            .unwrap()
            .unwrap();
        let mark = r
            .query(redis::cmd("GET").arg(format!("{prefix}nbf:{alice}")))
            .unwrap();
        assert_eq!(mark.as_int(), Some(now as i64 + 5));
        // ...and its TTL was extended to cover the re-seeded mark's.
        let t = ttl(&mut r, &format!("{prefix}nbf:{alice}"));
        assert!(t > 60, "{t}");

        // Prune removes the expired row; a re-seed never wrote it anyway.
        assert_eq!(prune_expired(&mut pg).unwrap(), 1);
    }

    #[test]
    fn interrupted_reseed_does_not_set_the_marker() {
        let prefix = random_prefix();
        let _g = Cleanup(prefix.clone());
        let mut r = blocking();
        let now = unix_now();
        let revs = vec![Revocation {
            kind: RevocationKind::Access,
            token_id: "j".into(),
            expires_at: now + 100,
        }];
        let id_key = format!("{prefix}{SEEDING_SUFFIX}");
        // The happy path sets the marker.
        reseed_blocking(&mut r, &prefix, &revs, &[], 60, 60, now).unwrap();
        assert!(marker_present(&mut r, &prefix).unwrap());
        r.query(redis::cmd("DEL").arg(marker_key(&prefix))).unwrap();
        // A flush during the writes (seeding key gone), or another node's
        // re-seed that started later (its id in the seeding key): the
        // finish step refuses to set the marker.
        let finish = |r: &mut BlockingRedis| {
            r.query(
                redis::cmd("EVAL")
                    .arg(FINISH_LUA)
                    .arg(2)
                    .arg(&id_key)
                    .arg(marker_key(&prefix))
                    .arg("my-id"),
            )
            .unwrap()
            .as_int()
        };
        assert_eq!(finish(&mut r), Some(0));
        r.query(redis::cmd("SET").arg(&id_key).arg("someone-else"))
            .unwrap();
        assert_eq!(finish(&mut r), Some(0));
        assert!(!marker_present(&mut r, &prefix).unwrap());
        r.query(redis::cmd("SET").arg(&id_key).arg("my-id"))
            .unwrap();
        assert_eq!(finish(&mut r), Some(1));
        assert!(marker_present(&mut r, &prefix).unwrap());
    }
}
