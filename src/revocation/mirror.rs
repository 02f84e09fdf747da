//! The in-memory revocation mirror (DESIGN §7), one per core.
//!
//! With `redis.revocation_mirror = true`, each core keeps the revocations
//! that can still matter in memory and answers the revocation check without
//! a network round trip. A validation then costs no Redis I/O at all: on this
//! machine the Redis round trip, in tokend's and in Redis's own CPU time,
//! was most of the gap between `/validate` and the HTTP ceiling (issue #4).
//!
//! # How it is fed
//!
//! Every revocation write appends an entry to the stream `{prefix}revlog` in
//! the same Lua script that writes the key, numbered by `{prefix}revlog:seq`
//! (an `INCR`, so consecutive): [`super::REVOKE_ACCESS_LUA`] and
//! [`super::SET_NOT_BEFORE_LUA`]. Each core's reader task, on a Redis
//! connection of its own:
//!
//! 1. **syncs**: one script reads the seeded marker, the sequence number and
//!    the stream's last id at one instant; then `SCAN` loads every
//!    `rev:at:*` key (with its `PTTL`) and every `nbf:*` mark;
//! 2. **follows**: `GET {prefix}seeded` and `XREAD BLOCK 250` from the last
//!    id, pipelined, in a loop. Entries are applied in order; each round
//!    that comes back proves the mirror held everything Redis held when the
//!    round was sent.
//!
//! It syncs again from scratch when an entry's number is not the next one (a
//! trimmed stream, or `FLUSHALL`: the counter restarts) or when the seeded
//! marker changed or vanished (Redis lost its data and was, or is about to
//! be, re-seeded from PostgreSQL; see `durable`).
//!
//! # When it answers
//!
//! [`Mirror::verdict`] answers only while the last round that came back was
//! sent less than `redis.mirror_max_lag` ago (default 1 s). Otherwise (not
//! synced yet, Redis down, reader stuck) it answers `None` and the caller
//! asks Redis directly, which fails closed (503) when Redis cannot answer.
//! Redis trouble therefore still never turns into a `200`: the mirror only
//! answers while Redis has just proven it holds nothing newer.
//!
//! Consistency: a revocation written through one node is applied by every
//! core of that node before the revoke request is answered
//! ([`wait_applied`]); other nodes see it when their readers receive the
//! entry, normally well under a millisecond on a LAN, and never later than
//! `mirror_max_lag` (after that a lagging node falls back to Redis).
//!
//! # What it holds
//!
//! - revoked `jti`s, until their Redis key expires (the token's `exp` plus
//!   the leeway);
//! - "not before" marks, while they can void an unexpired access token: up
//!   to `tokens.access_ttl + 60 s + tokens.leeway` after the mark (Redis
//!   keeps them longer, for refresh tokens). A token whose lifetime is longer
//!   than `tokens.access_ttl + 60 s` (a client with a longer access TTL,
//!   another node's setting) is checked in Redis.
//!
//! That is the revocations of the last access-token lifetime: small. Every
//! core holds its own copy (thread-per-core: nothing shared on the hot path).
//!
//! Owns: one core's copy of the revocations, its reader task (sync, follow),
//! its verdict, and the writes to its slot of the mirrors' progress.
//!
//! Never imports: `handlers`, `http`, `net`, `state`, `access`, `cores`,
//! `store` or another service; of the crate it uses the Redis client
//! (`redis`), the clock, and the per-core counters of `metrics` it writes
//! (`mirror_*`).

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::durable;
use super::{ACCESS_KEY_INFIX, NOT_BEFORE_KEY_INFIX};
use crate::clock::unix_now;
use crate::metrics::CoreCounters;
use crate::redis::{RedisConn, RedisError, Reply, Script};

pub use super::progress::{wait_applied, Progress, ProgressSlot};

/// Key suffix of the revocation stream: `{prefix}revlog`.
pub const STREAM_SUFFIX: &str = "revlog";
/// Key suffix of the stream's sequence counter: `{prefix}revlog:seq`.
pub const SEQ_SUFFIX: &str = "revlog:seq";
/// Approximate length the stream is trimmed to (`XADD MAXLEN ~`). A reader
/// more than this many entries behind notices the gap and syncs again.
pub const STREAM_MAXLEN: u64 = 100_000;

/// How long one `XREAD` waits for new entries; also the mirror's heartbeat.
const BLOCK_MS: u64 = 250;
/// Entries read per round.
const READ_COUNT: usize = 1024;
/// Keys asked per `SCAN` step and per pipelined batch during a sync.
const SYNC_BATCH: usize = 1000;
/// Pause after a failed round or sync before the next attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Marks are kept this long beyond `access_ttl + leeway` (clock skew between
/// the node that issued a token and the one that set the mark).
const MARK_SLACK_SECS: u64 = 60;

/// Reads, at one instant: the seeded marker, the sequence number and the
/// stream's last id (`0-0` when there is no stream yet).
///
/// Source: `scripts/mirror_snapshot.lua`, whose header is the full contract.
const SNAPSHOT_LUA: &str = include_str!("scripts/mirror_snapshot.lua");

/// One core's mirror: the revocations, and how fresh they are.
pub struct Mirror {
    prefix: String,
    /// Longest token lifetime (`exp - iat`) the mirror answers for:
    /// `tokens.access_ttl + MARK_SLACK_SECS`, seconds. Longer-lived tokens
    /// are checked in Redis.
    lifetime_bound: u64,
    /// How long a mark is kept: `lifetime_bound + tokens.leeway`. A token
    /// the mark voids was issued at or before it, so it expires by
    /// `mark + lifetime_bound` and is refused by `+ leeway` at the latest.
    mark_keep: u64,
    max_lag: Duration,
    /// This core's metrics: full syncs and revocations held.
    counters: Arc<CoreCounters>,
    /// This core's place in the node's [`Progress`]: the last entry applied
    /// and whether the mirror is current, for [`wait_applied`].
    progress: ProgressSlot,
    state: RefCell<State>,
    /// Sent time of the last round that came back complete; `None` while
    /// not synced or after an error.
    confirmed: Cell<Option<u64>>,
}

#[derive(Default)]
struct State {
    /// Revoked `jti` → unix second after which its token is refused anyway.
    access: hashbrown::HashMap<Rc<str>, u64, ahash::RandomState>,
    /// `sub` → its "not before" mark (unix seconds).
    marks: hashbrown::HashMap<Rc<str>, u64, ahash::RandomState>,
    /// When entries may go: (unix second, is a mark, key), earliest first.
    /// An entry whose expiry moved later leaves a stale item here, skipped
    /// when popped. Expiring costs what expires, not what is held, so a
    /// large mirror never stalls the core's loop.
    expiry: BinaryHeap<Reverse<(u64, bool, Rc<str>)>>,
}

impl State {
    /// Revokes `jti` until `until` (never shortening an earlier revocation).
    fn revoke(&mut self, jti: &str, until: u64) {
        if let Some(key) = raise(&mut self.access, jti, until) {
            self.expiry.push(Reverse((until, false, key)));
        }
    }

    /// Sets `sub`'s mark (never lowering it), kept until `mark + bound`.
    fn mark(&mut self, sub: &str, mark: u64, bound: u64) {
        if let Some(key) = raise(&mut self.marks, sub, mark) {
            self.expiry
                .push(Reverse((mark.saturating_add(bound), true, key)));
        }
    }

    /// Drops the entries that expired before `now`.
    fn expire(&mut self, now: u64, bound: u64) {
        while let Some(Reverse((until, _, _))) = self.expiry.peek() {
            if *until >= now {
                break;
            }
            let Some(Reverse((_, is_mark, key))) = self.expiry.pop() else {
                break;
            };
            if is_mark {
                if self
                    .marks
                    .get(&*key)
                    .is_some_and(|m| m.saturating_add(bound) < now)
                {
                    self.marks.remove(&*key);
                }
            } else if self.access.get(&*key).is_some_and(|u| *u < now) {
                self.access.remove(&*key);
            }
        }
    }
}

/// Sets `map[key]` to `value` unless it already holds as much; returns the
/// key when the value went up (its expiry must be scheduled).
fn raise(
    map: &mut hashbrown::HashMap<Rc<str>, u64, ahash::RandomState>,
    key: &str,
    value: u64,
) -> Option<Rc<str>> {
    match map.get_key_value_mut(key) {
        Some((_, v)) if *v >= value => None,
        Some((k, v)) => {
            *v = value;
            Some(k.clone())
        }
        None => {
            let k: Rc<str> = key.into();
            map.insert(k.clone(), value);
            Some(k)
        }
    }
}

/// Where the reader is in the stream.
struct Position {
    marker: bytes::Bytes,
    last_id: String,
    last_seq: u64,
}

impl Mirror {
    /// An empty mirror that answers nothing until its reader ([`Mirror::run`])
    /// has synced. It publishes its progress in `progress`, this core's slot.
    pub fn new(
        prefix: impl Into<String>,
        access_ttl: Duration,
        leeway: Duration,
        max_lag: Duration,
        counters: Arc<CoreCounters>,
        progress: ProgressSlot,
    ) -> Rc<Mirror> {
        Rc::new(Mirror {
            prefix: prefix.into(),
            lifetime_bound: access_ttl.as_secs() + MARK_SLACK_SECS,
            mark_keep: access_ttl.as_secs() + MARK_SLACK_SECS + leeway.as_secs(),
            max_lag,
            counters,
            progress,
            state: RefCell::new(State::default()),
            confirmed: Cell::new(None),
        })
    }

    /// The revocation check from memory: `Some(revoked)`, or `None` when the
    /// mirror cannot vouch for being current (the caller asks Redis). Same
    /// rules as the Redis check: the `jti` is revoked, or the user's mark is
    /// at or after `iat`.
    #[inline]
    pub fn verdict(&self, jti: &str, sub: &str, iat: u64, exp: u64) -> Option<bool> {
        let confirmed = self.confirmed.get()?;
        // A `monotonic_nanos` reading and an integer subtraction: every
        // validation answered here runs this, and `Instant` arithmetic cost
        // ~70 instructions more (callgrind, issue #15).
        let lag = crate::clock::monotonic_nanos().saturating_sub(confirmed);
        if lag > self.max_lag.as_nanos() as u64
            || exp.saturating_sub(iat) > self.lifetime_bound
            || self.progress.behind_now()
        {
            return None;
        }
        let s = self.state.borrow();
        if s.access.contains_key(jti) {
            return Some(true);
        }
        Some(matches!(s.marks.get(sub), Some(&mark) if iat <= mark))
    }

    /// Whether the mirror answers now (tests, metrics).
    pub fn is_current(&self) -> bool {
        self.confirmed
            .get()
            .is_some_and(|t| crate::clock::elapsed_since(t) <= self.max_lag)
    }

    /// Revocations held: (revoked `jti`s, marks).
    pub fn len(&self) -> (usize, usize) {
        let s = self.state.borrow();
        (s.access.len(), s.marks.len())
    }

    /// The reader: syncs, then follows the stream, forever (the task ends
    /// with the core's event loop). `conn` must be this task's own
    /// connection: `XREAD BLOCK` holds it, and its timeout must exceed the
    /// block time (see [`reader_timeout`]).
    pub async fn run(self: Rc<Self>, conn: Rc<RedisConn>) {
        let keys = Keys::new(&self.prefix);
        let snapshot = Script::new(SNAPSHOT_LUA);
        let mut pos: Option<Position> = None;
        let mut last_sweep = 0u64;
        loop {
            if pos.is_none() {
                match self.sync(&conn, &keys, &snapshot).await {
                    Ok(p) => {
                        self.counters.mirror_resyncs.inc();
                        pos = Some(p);
                    }
                    Err(e) => {
                        self.lost(&e);
                        monoio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                }
            }
            let p = pos.as_mut().expect("synced above");
            let sent = crate::clock::monotonic_nanos();
            match self.follow(&conn, &keys, p).await {
                Ok(Round::Current) => {
                    self.confirmed.set(Some(sent));
                    self.progress.set_current(true);
                }
                Ok(Round::More) => {}
                Ok(Round::Resync(why)) => {
                    tracing::info!("revocation mirror: syncing again ({why})");
                    self.lost(&RedisError::Unavailable);
                    pos = None;
                }
                Err(e) => {
                    self.lost(&e);
                    monoio::time::sleep(RETRY_PAUSE).await;
                }
            }
            let now = unix_now();
            if now != last_sweep {
                last_sweep = now;
                self.sweep(now);
            }
        }
    }

    /// Stops answering until a round comes back again.
    fn lost(&self, e: &RedisError) {
        if self.confirmed.take().is_some() {
            tracing::debug!("revocation mirror: not current ({e})");
        }
        self.progress.set_current(false);
    }

    /// Loads everything from scratch.
    async fn sync(
        &self,
        conn: &RedisConn,
        keys: &Keys,
        snapshot: &Script,
    ) -> Result<Position, RedisError> {
        let snap = conn
            .eval(
                snapshot,
                &[
                    keys.marker.as_str(),
                    keys.log.seq.as_str(),
                    keys.log.stream.as_str(),
                ],
                &[] as &[&str],
            )
            .await?;
        let (marker, seq, last_id) = match snap.as_array() {
            Some([m, s, id]) => (m, s, id),
            _ => return Err(RedisError::Protocol),
        };
        // No marker: Redis lost its data and is not re-seeded yet.
        let marker = match marker {
            Reply::Bulk(b) => b.clone(),
            _ => return Err(RedisError::Unavailable),
        };
        let last_seq = if seq.is_nil() {
            0
        } else {
            seq.as_int()
                .and_then(|s| u64::try_from(s).ok())
                .ok_or(RedisError::Protocol)?
        };
        let last_id = last_id.as_str().ok_or(RedisError::Protocol)?.to_owned();

        let now = unix_now();
        let mut fresh = State::default();
        let access_pattern = glob_escape(&[self.prefix.as_str(), ACCESS_KEY_INFIX].concat()) + "*";
        for batch in scan(conn, &access_pattern).await?.chunks(SYNC_BATCH) {
            let cmds: Vec<redis::Cmd> = batch
                .iter()
                .map(|k| redis::cmd("PTTL").arg(k.as_slice()).clone())
                .collect();
            for (key, ttl) in batch.iter().zip(conn.query_many(&cmds).await?) {
                let jti = &key[self.prefix.len() + ACCESS_KEY_INFIX.len()..];
                let until = match ttl.as_int() {
                    Some(-2) => continue, // expired since the SCAN
                    Some(ms) if ms >= 0 => now + (ms as u64).div_ceil(1000) + 1,
                    // No expiry (written by hand?): keep it a full lifetime.
                    _ => now + self.mark_keep,
                };
                if let Ok(jti) = std::str::from_utf8(jti) {
                    fresh.revoke(jti, until);
                }
            }
        }
        let mark_pattern =
            glob_escape(&[self.prefix.as_str(), NOT_BEFORE_KEY_INFIX].concat()) + "*";
        for batch in scan(conn, &mark_pattern).await?.chunks(SYNC_BATCH) {
            let mut mget = redis::cmd("MGET");
            for k in batch {
                mget.arg(k.as_slice());
            }
            let values = conn
                .query(&mget)
                .await?
                .into_array()
                .ok_or(RedisError::Protocol)?;
            for (key, value) in batch.iter().zip(values) {
                let sub = &key[self.prefix.len() + NOT_BEFORE_KEY_INFIX.len()..];
                let Ok(sub) = std::str::from_utf8(sub) else {
                    continue;
                };
                if value.is_nil() {
                    continue;
                }
                // A mark that is not a number voids everything, as in Redis.
                let mark = value
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u64::MAX);
                fresh.mark(sub, mark, self.mark_keep);
            }
        }
        *self.state.borrow_mut() = fresh;
        self.publish_len();
        self.progress.set_applied(last_seq);
        Ok(Position {
            marker,
            last_id,
            last_seq,
        })
    }

    /// One round: the marker, and the entries after `pos`.
    async fn follow(
        &self,
        conn: &RedisConn,
        keys: &Keys,
        pos: &mut Position,
    ) -> Result<Round, RedisError> {
        // The first round after a sync catches up without blocking.
        let block = if self.confirmed.get().is_some() {
            BLOCK_MS
        } else {
            0
        };
        let mut xread = redis::cmd("XREAD");
        xread.arg("COUNT").arg(READ_COUNT);
        if block > 0 {
            xread.arg("BLOCK").arg(block);
        }
        xread.arg("STREAMS").arg(&keys.log.stream).arg(&pos.last_id);
        let replies = conn
            .query_many(&[redis::cmd("GET").arg(&keys.marker).clone(), xread])
            .await?;
        let [marker, read] = replies.as_slice() else {
            return Err(RedisError::Protocol);
        };
        match marker {
            Reply::Bulk(b) if *b == pos.marker => {}
            Reply::Bulk(_) => return Ok(Round::Resync("Redis was re-seeded")),
            _ => return Ok(Round::Resync("the seeded marker is missing")),
        }
        let entries = match read {
            Reply::Nil => return Ok(Round::Current),
            // [[stream, [[id, [field, value, …]], …]]]
            Reply::Array(streams) => match streams.as_slice() {
                [stream] => match stream.as_array() {
                    Some([_, entries]) => entries.as_array().ok_or(RedisError::Protocol)?,
                    _ => return Err(RedisError::Protocol),
                },
                [] => return Ok(Round::Current),
                _ => return Err(RedisError::Protocol),
            },
            _ => return Err(RedisError::Protocol),
        };
        let now = unix_now();
        {
            let mut state = self.state.borrow_mut();
            for entry in entries {
                let (id, fields) = match entry.as_array() {
                    Some([id, fields]) => (
                        id.as_str().ok_or(RedisError::Protocol)?,
                        fields.as_array().ok_or(RedisError::Protocol)?,
                    ),
                    _ => return Err(RedisError::Protocol),
                };
                let e = Entry::parse(fields).ok_or(RedisError::Protocol)?;
                if e.seq != pos.last_seq + 1 {
                    drop(state);
                    self.publish_len();
                    return Ok(Round::Resync(if e.seq <= pos.last_seq {
                        "the sequence restarted"
                    } else {
                        "entries were trimmed before they were read"
                    }));
                }
                e.apply(&mut state, now, self.mark_keep);
                pos.last_seq = e.seq;
                pos.last_id.clear();
                pos.last_id.push_str(id);
            }
        }
        self.publish_len();
        self.progress.set_applied(pos.last_seq);
        Ok(if entries.len() >= READ_COUNT {
            Round::More
        } else {
            Round::Current
        })
    }

    /// Drops what can no longer void an unexpired token.
    fn sweep(&self, now: u64) {
        self.state.borrow_mut().expire(now, self.mark_keep);
        self.publish_len();
    }

    fn publish_len(&self) {
        let (a, m) = self.len();
        self.counters.mirror_entries.set((a + m) as u64);
    }
}

/// What a round came to.
enum Round {
    /// Everything up to the moment the round was sent is applied.
    Current,
    /// A full batch: more entries wait.
    More,
    /// The mirror cannot follow on from here.
    Resync(&'static str),
}

/// One stream entry: `s` sequence number, `t` kind, `k` jti or sub, `v` TTL
/// seconds (`at`) or the mark in force (`nbf`).
struct Entry<'a> {
    seq: u64,
    kind: &'a [u8],
    key: &'a str,
    value: u64,
}

impl<'a> Entry<'a> {
    fn parse(fields: &'a [Reply]) -> Option<Entry<'a>> {
        let (mut seq, mut kind, mut key, mut value) = (None, None, None, None);
        for pair in fields.chunks_exact(2) {
            match pair[0].as_bytes()? {
                b"s" => seq = pair[1].as_str()?.parse().ok(),
                b"t" => kind = pair[1].as_bytes(),
                b"k" => key = pair[1].as_str(),
                b"v" => value = pair[1].as_str()?.parse().ok(),
                _ => {}
            }
        }
        Some(Entry {
            seq: seq?,
            kind: kind?,
            key: key?,
            value: value?,
        })
    }

    fn apply(&self, s: &mut State, now: u64, bound: u64) {
        match self.kind {
            b"at" => s.revoke(self.key, now + self.value + 1),
            b"nbf" => s.mark(self.key, self.value, bound),
            // A kind from a newer tokend: cannot tell what it revokes.
            other => tracing::warn!(
                "revocation mirror: unknown entry kind {:?}, ignored",
                String::from_utf8_lossy(other)
            ),
        }
    }
}

/// The stream's two keys under `prefix`: one derivation for the writers
/// (the revocation scripts) and the readers.
pub struct StreamKeys {
    /// `{prefix}revlog:seq`.
    pub seq: String,
    /// `{prefix}revlog`.
    pub stream: String,
}

impl StreamKeys {
    pub fn new(prefix: &str) -> StreamKeys {
        StreamKeys {
            seq: [prefix, SEQ_SUFFIX].concat(),
            stream: [prefix, STREAM_SUFFIX].concat(),
        }
    }
}

/// The keys the reader uses.
struct Keys {
    marker: String,
    log: StreamKeys,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            marker: durable::marker_key(prefix),
            log: StreamKeys::new(prefix),
        }
    }
}

/// The timeout of the reader's connection: the block time plus the usual
/// command timeout.
pub fn reader_timeout(command_timeout: Duration) -> Duration {
    Duration::from_millis(BLOCK_MS) + command_timeout.max(Duration::from_millis(100))
}

/// Every key matching `pattern`.
async fn scan(conn: &RedisConn, pattern: &str) -> Result<Vec<Vec<u8>>, RedisError> {
    let mut cursor = b"0".to_vec();
    let mut keys = Vec::new();
    loop {
        let reply = conn
            .query(
                redis::cmd("SCAN")
                    .arg(cursor.as_slice())
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(SYNC_BATCH),
            )
            .await?;
        let (next, found) = match reply.as_array() {
            Some([next, found]) => (
                next.as_bytes().ok_or(RedisError::Protocol)?,
                found.as_array().ok_or(RedisError::Protocol)?,
            ),
            _ => return Err(RedisError::Protocol),
        };
        keys.extend(
            found
                .iter()
                .filter_map(|k| k.as_bytes().map(<[u8]>::to_vec)),
        );
        if next == b"0" {
            return Ok(keys);
        }
        cursor = next.to_vec();
    }
}

/// `s` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::RedisRevocations;
    use super::*;
    use crate::redis::testutil::*;

    #[test]
    fn syncs_follows_the_stream_and_syncs_again_on_a_gap() {
        on_both_drivers(|driver| async move {
            let prefix = random_prefix();
            let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
            assert!(
                conn.wait_connected(Duration::from_secs(5)).await,
                "{driver}"
            );
            let rev = RedisRevocations::new(conn.clone(), prefix.clone());
            let marker = durable::marker_key(&prefix);
            let set = |k: &str, v: &str| redis::cmd("SET").arg(k).arg(v).clone();
            conn.query(&set(&marker, "1:boot-a")).await.unwrap();
            // Written before the mirror starts: loaded by the sync.
            rev.revoke_access("early", 60).await.unwrap();
            // Marks are recent: the mirror drops those older than an
            // access-token lifetime.
            let t = unix_now();
            rev.set_not_before("alice", t - 100, 600).await.unwrap();
            // Enough keys for several SCAN steps and PTTL batches.
            let bulk: Vec<redis::Cmd> = (0..2_500)
                .map(|i| {
                    redis::cmd("SET")
                        .arg(rev.access_key(&format!("bulk-{i}")))
                        .arg("1")
                        .arg("EX")
                        .arg(60)
                        .clone()
                })
                .collect();
            conn.query_many(&bulk).await.unwrap();

            let counters = Arc::new(CoreCounters::default());
            let progress = Progress::new(1);
            let m = Mirror::new(
                prefix.clone(),
                Duration::from_secs(900),
                Duration::ZERO,
                Duration::from_secs(1),
                counters.clone(),
                progress.slot(0),
            );
            let reader =
                RedisConn::new(shared_target(), reader_timeout(Duration::from_millis(100)));
            monoio::spawn(m.clone().run(reader));
            until("current", Duration::from_secs(5), || m.is_current()).await;
            assert_eq!(m.verdict("early", "bob", 100, 200), Some(true), "{driver}");
            assert_eq!(m.verdict("other", "alice", t - 101, t + 500), Some(true));
            assert_eq!(m.verdict("other", "alice", t - 99, t + 500), Some(false));
            assert_eq!(m.len(), (2_501, 1));
            assert_eq!(m.verdict("bulk-2499", "bob", 100, 200), Some(true));

            // Written after: applied from the stream, and wait_applied
            // returns once it is.
            let seq = rev.revoke_access_logged("late", 60).await.unwrap();
            assert!(seq > 0);
            wait_applied(&progress, seq, Duration::from_secs(1)).await;
            assert_eq!(m.verdict("late", "bob", 100, 200), Some(true));
            let (mark, seq) = rev.set_not_before_logged("bob", t - 50, 600).await.unwrap();
            assert_eq!(mark, t - 50);
            wait_applied(&progress, seq, Duration::from_secs(1)).await;
            assert_eq!(m.verdict("other", "bob", t - 51, t + 500), Some(true));
            // A mark that does not move writes no entry.
            assert_eq!(
                rev.set_not_before_logged("bob", 10, 600).await,
                Ok((t - 50, 0))
            );

            // An entry out of sequence (a trimmed stream, a restarted
            // counter): sync again from the keys, which never held "ghost".
            let syncs = counters.mirror_resyncs.get();
            conn.query(
                redis::cmd("XADD")
                    .arg(format!("{prefix}{STREAM_SUFFIX}"))
                    .arg("*")
                    .arg(&["s", "999999", "t", "at", "k", "ghost", "v", "60"][..]),
            )
            .await
            .unwrap();
            until("synced again", Duration::from_secs(5), || {
                counters.mirror_resyncs.get() > syncs && m.is_current()
            })
            .await;
            assert_eq!(m.verdict("ghost", "carol", 100, 200), Some(false));
            assert_eq!(m.verdict("late", "carol", 100, 200), Some(true));

            // A re-seed (the marker changed): sync again.
            let syncs = counters.mirror_resyncs.get();
            conn.query(&set(&marker, "2:boot-b")).await.unwrap();
            until("synced after the re-seed", Duration::from_secs(5), || {
                counters.mirror_resyncs.get() > syncs && m.is_current()
            })
            .await;
            // The marker gone (Redis lost its data): no answer until it is
            // back.
            conn.query(redis::cmd("DEL").arg(&marker)).await.unwrap();
            until("not current", Duration::from_secs(1), || !m.is_current()).await;
            assert_eq!(m.verdict("x", "carol", 100, 200), None);
            assert_eq!(progress.current_cores(), 0);
            conn.query(&set(&marker, "3:boot-c")).await.unwrap();
            until("current again", Duration::from_secs(5), || m.is_current()).await;
            assert_eq!(m.verdict("late", "carol", 100, 200), Some(true));
            cleanup(&prefix);
        });
    }

    #[test]
    fn stops_answering_when_redis_goes_away() {
        legacy(async {
            let mut server = PrivateRedis::start(&[]);
            let prefix = "p:";
            let conn = RedisConn::new(server.target(), Duration::from_secs(2));
            assert!(conn.wait_connected(Duration::from_secs(5)).await);
            conn.query(
                redis::cmd("SET")
                    .arg(durable::marker_key(prefix))
                    .arg("1:x"),
            )
            .await
            .unwrap();
            let m = Mirror::new(
                prefix,
                Duration::from_secs(900),
                Duration::ZERO,
                Duration::from_secs(1),
                Arc::new(CoreCounters::default()),
                Progress::new(1).slot(0),
            );
            let reader =
                RedisConn::new(server.target(), reader_timeout(Duration::from_millis(100)));
            monoio::spawn(m.clone().run(reader));
            until("current", Duration::from_secs(5), || m.is_current()).await;
            server.kill();
            until("not current", Duration::from_millis(500), || {
                !m.is_current()
            })
            .await;
            assert_eq!(m.verdict("j", "u", 100, 200), None);
        });
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(bytes::Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn glob_escaping() {
        assert_eq!(glob_escape("tokend:"), "tokend:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn entries_parse_and_apply() {
        let fields = [
            bulk("s"),
            bulk("7"),
            bulk("t"),
            bulk("at"),
            bulk("k"),
            bulk("jti-1"),
            bulk("v"),
            bulk("30"),
        ];
        let e = Entry::parse(&fields).unwrap();
        assert_eq!(
            (e.seq, e.kind, e.key, e.value),
            (7, &b"at"[..], "jti-1", 30)
        );
        let mut s = State::default();
        e.apply(&mut s, 1_000, 960);
        assert_eq!(s.access.get("jti-1"), Some(&1_031));

        // A mark never goes down.
        let mark = |v: &str| {
            [
                bulk("s"),
                bulk("8"),
                bulk("t"),
                bulk("nbf"),
                bulk("k"),
                bulk("u"),
                bulk("v"),
                bulk(v),
            ]
        };
        Entry::parse(&mark("500"))
            .unwrap()
            .apply(&mut s, 1_000, 960);
        Entry::parse(&mark("400"))
            .unwrap()
            .apply(&mut s, 1_000, 960);
        assert_eq!(s.marks.get("u"), Some(&500));

        // Expiry: a revocation extended later survives its first expiry
        // time; a raised mark lives from the new mark.
        let mut s = State::default();
        s.revoke("j", 100);
        s.revoke("j", 200);
        s.revoke("j", 150); // never shortened
        s.mark("u", 1_000, 50);
        s.mark("u", 1_100, 50);
        s.expire(160, 50);
        assert_eq!(s.access.get("j"), Some(&200));
        s.expire(1_120, 50);
        assert_eq!((s.access.len(), s.marks.get("u")), (0, Some(&1_100)));
        s.expire(1_151, 50);
        assert!(s.marks.is_empty() && s.expiry.is_empty());

        // Missing fields are a protocol error, not an empty revocation.
        assert!(Entry::parse(&fields[..6]).is_none());
    }

    #[test]
    fn verdicts() {
        let counters = Arc::new(CoreCounters::default());
        let m = Mirror::new(
            "p:",
            Duration::from_secs(900),
            Duration::from_secs(30),
            Duration::from_secs(1),
            counters,
            Progress::new(1).slot(0),
        );
        // Not synced: no answer.
        assert_eq!(m.verdict("j", "u", 100, 1_000), None);
        {
            let mut s = m.state.borrow_mut();
            s.revoke("revoked", u64::MAX);
            s.mark("alice", 2_000, 990);
        }
        m.confirmed.set(Some(crate::clock::monotonic_nanos()));
        assert_eq!(m.verdict("j", "bob", 100, 1_000), Some(false));
        assert_eq!(m.verdict("revoked", "bob", 100, 1_000), Some(true));
        assert_eq!(m.verdict("j", "alice", 1_999, 2_900), Some(true));
        assert_eq!(m.verdict("j", "alice", 2_000, 2_900), Some(true));
        assert_eq!(m.verdict("j", "alice", 2_001, 2_901), Some(false));
        // access_ttl 900 + 60 s: longer-lived tokens are checked in Redis.
        assert_eq!(m.verdict("j", "alice", 2_001, 2_001 + 960), Some(false));
        assert_eq!(m.verdict("j", "alice", 2_001, 2_001 + 961), None);
        // Stale: ask Redis.
        m.confirmed
            .set(Some(crate::clock::monotonic_nanos() - 1_500_000_000));
        assert_eq!(m.verdict("j", "bob", 100, 1_000), None);

        // The sweep keeps what can still void a token.
        m.confirmed.set(Some(crate::clock::monotonic_nanos()));
        m.state.borrow_mut().revoke("old", 5_000);
        m.sweep(5_001);
        assert_eq!(m.verdict("old", "bob", 4_000, 4_100), Some(false));
        // alice's mark (2,000) + 990 s bound < 5,001: gone.
        assert_eq!(m.len(), (1, 0));
    }
}
