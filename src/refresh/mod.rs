//! Refresh tokens in Redis: issue, atomic rotation with reuse detection,
//! revocation of a family, introspection (DESIGN §2 "Refresh", RFC 9700
//! §4.14, RFC 6749 §6).
//!
//! A refresh token is opaque: `tokend_rt_` followed by 32 random bytes in
//! base64url without padding (53 characters in all). Redis never sees the
//! token itself, only its SHA-256 (lowercase hex), so a dump of Redis gives
//! nobody a usable token.
//!
//! # Key layout (all under the configured prefix)
//!
//! | key | type | fields | expires |
//! |---|---|---|---|
//! | `{prefix}rt:{sha256 hex of token}` | hash | `fam` family id, `sub` user id, `usr` username (optional), `cid` client id, `scp` space-separated scope, `iat` issued at, `fst` family start, `used` used at (absent while unused) | `refresh_ttl` after issue (never extended) |
//! | `{prefix}rf:{family}` | hash | `fst` family start, `sub` user id, `rev` revoked at (absent while live) | `refresh_ttl` after the last issue or rotation (only ever extended) |
//! | `{prefix}nbf:{sub}` | string | the user's "not before" mark (see `revocation::RedisRevocations`) | |
//!
//! # Integrity (issue #13)
//!
//! Every record carries `mac`: an HMAC-SHA256 ([`RecordMac`], under a key
//! derived from the KEK, which Redis never sees) over the fields that decide
//! what a refresh gives: family, user, username, client, scope and family
//! start. They never change within a family (a rotation copies them, the
//! scope too), so a rotation copies the tag. A record whose tag does not
//! verify (written by someone who can write to Redis but does not hold the
//! KEK, or left from before tags existed) is refused as
//! [`RefreshError::Tampered`], its family revoked, and logged; introspection
//! reports it inactive. Without this, anyone able to write to Redis could
//! mint a record with `tokend:admin` scope and refresh it into an admin
//! access token.
//!
//! The family key outlives every token record of the family, so a record
//! whose family key is missing is refused (fail closed). A revoked family
//! keeps its key, with `rev` set, until its last token would have expired;
//! `revocation::durable` re-seeds exactly that state after Redis lost
//! its data.
//!
//! # Rotation rules (one Lua script, one round trip, atomic)
//!
//! In this order: unknown record → `Invalid`; record bound to another client
//! → `Invalid` (RFC 6749 §6), nothing changes; family missing or revoked →
//! `Invalid`; the user's not-before mark `>=` the family start (logout
//! everywhere, password change, disabled user) → `Invalid`; the record was
//! already used → within the grace period `Invalid` without revoking, else
//! the whole family is revoked and `Reused` is returned (theft: RFC 9700
//! §4.14.2); a requested scope that is not a subset of the record's →
//! `InvalidScope`, nothing changes; otherwise the record is marked used and
//! a new record of the same family is written.
//!
//! **Grace period.** `grace_secs = 0` disables it (the default, and what
//! RFC 9700 asks for). With `grace_secs > 0`, a used token presented again
//! at most `grace_secs` seconds after its use gets `Invalid` *without*
//! revoking the family: a client that lost the response to a rotation (a
//! network error, two tabs racing) does not lose its successor token. No new
//! token is re-issued in that case: handing out a second live successor
//! would fork the family, and the first successor may already be in use.
//!
//! **Scope.** A narrower scope may be requested (RFC 6749 §6); it is
//! returned as [`Rotated::granted_scope`] for the access token. The new
//! refresh token keeps the original scope, as RFC 6749 §6 requires ("MUST be
//! identical to that of the refresh token included by the client").
//!
//! **Lifetimes.** Each new token lives `ttl_secs`; the family key is
//! extended to at least `ttl_secs` on each rotation, so an active family
//! slides. The user's not-before check uses the family start (the time of
//! the original login), never the time of the last rotation.
//!
//! The scripts build the family and not-before key names from the prefix
//! (an argument): that is fine for a single Redis or Sentinel (DESIGN §7),
//! and not compatible with Redis Cluster. The scripts are the `.lua` files
//! of `scripts/`, loaded with `include_str!`.
//!
//! Owns: refresh-token records and families in Redis, their key names and
//! scripts, and the token's format ([`REFRESH_TOKEN_PREFIX`], the SHA-256
//! that Redis sees instead of the token).
//!
//! Never imports: `handlers`, `http`, `net`, `state`, `access`, `cores`,
//! `store`, `revocation`, `ratelimit` or `identity` (the not-before mark it
//! reads is a key name, `{prefix}nbf:{sub}`, not an import of `revocation`);
//! of the crate it uses the Redis client (`redis`) and the clock.

use std::rc::Rc;

use crate::clock::unix_now;
use crate::redis::{RedisConn, RedisError, Reply, Script, Writes};

mod mac;
mod token;

pub use mac::{RecordFields, RecordMac};
use token::{is_well_formed, new_token};
pub use token::{token_hash_hex, FamilyId, REFRESH_TOKEN_PREFIX};

/// Key infix of a refresh-token record: `{prefix}rt:{sha256 hex}`.
pub const REFRESH_KEY_INFIX: &str = "rt:";
/// Key infix of a token family: `{prefix}rf:{family}`.
pub const FAMILY_KEY_INFIX: &str = "rf:";
/// Field of the family hash that marks it revoked (value: unix seconds).
pub const FAMILY_REVOKED_FIELD: &str = "rev";

/// Issues a new family. KEYS[1] = record, KEYS[2] = family. ARGV = family
/// id, sub, client id, scope, now, ttl, has username ("1"/"0"), username.
///
/// Source: `scripts/issue.lua`, whose header is the full contract.
const ISSUE_LUA: &str = include_str!("scripts/issue.lua");

/// Rotates. KEYS[1] = presented record, KEYS[2] = new record. ARGV = prefix,
/// client id, now, grace, ttl, has requested scope ("1"/"0"), requested
/// scope (space-separated).
///
/// Source: `scripts/rotate.lua`, whose header is the full contract.
const ROTATE_LUA: &str = include_str!("scripts/rotate.lua");

/// Introspection. KEYS[1] = record; ARGV[1] = prefix. Nil unless the record
/// is active (unused, family live, not-before mark older than the family);
/// else `{family, sub, username or nil, client id, scope, iat, family
/// start, ttl}`.
///
/// Source: `scripts/lookup.lua`, whose header is the full contract.
const LOOKUP_LUA: &str = include_str!("scripts/lookup.lua");

/// Revokes the family of a record. KEYS[1] = record; ARGV = prefix, check
/// client ("1"/"0"), client id, now. Nil when the record is unknown or
/// bound to another client; else `{family, family ttl}`. The family key is
/// kept at least as long as the record.
///
/// Source: `scripts/revoke.lua`, whose header is the full contract.
const REVOKE_LUA: &str = include_str!("scripts/revoke.lua");

/// A revoked family: what the caller writes to PostgreSQL
/// (`revocation::durable::record_family_revocation`)
/// so that the revocation survives a Redis that loses its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyInfo {
    pub family: FamilyId,
    /// Unix seconds after which no token of the family can be valid anyway
    /// (the family key's expiry).
    pub expires_at: u64,
}

/// A refresh-token record (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub family: FamilyId,
    /// The user id.
    pub sub: String,
    pub username: Option<String>,
    /// The client the token is bound to (RFC 6749 §6).
    pub client_id: String,
    /// Space-separated scope granted to the family.
    pub scope: String,
    /// When this token was issued (unix seconds).
    pub issued_at: u64,
    /// When the family's first token was issued: the login time, compared
    /// with the user's not-before mark.
    pub family_start: u64,
    /// When this token expires (unix seconds).
    pub expires_at: u64,
}

/// A successful rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The new refresh token, to hand to the client.
    pub token: String,
    /// The new token's record: same family, user, client, original scope.
    pub record: RefreshRecord,
    /// The scope for the new access token: the requested one (a subset of
    /// the record's) or, if none was requested, the record's.
    pub granted_scope: String,
}

/// Why a refresh token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// Unknown, malformed, expired, bound to another client, of a revoked
    /// family, voided by the user's not-before mark, or a used token within
    /// the grace period. RFC 6749 `invalid_grant`.
    #[error("the refresh token is invalid, expired or revoked")]
    Invalid,
    /// An already used token was presented again outside the grace period:
    /// the whole family is now revoked in Redis. The caller logs it as
    /// likely theft and records the family revocation durably. Answered as
    /// `invalid_grant`.
    #[error("a used refresh token was presented again; its family {} is revoked", .0.family)]
    Reused(FamilyInfo),
    /// The record's integrity tag is missing or wrong: it was not written by
    /// tokend (someone wrote to Redis without the KEK). Its family is
    /// revoked in Redis; the caller logs it as tampering and records the
    /// revocation durably. Answered as `invalid_grant`.
    #[error("a refresh record failed its integrity check; its family {} is revoked", .0.family)]
    Tampered(FamilyInfo),
    /// The requested scope is wider than the token's. RFC 6749
    /// `invalid_scope`; the token is not consumed.
    #[error("the requested scope exceeds the scope granted to the refresh token")]
    InvalidScope,
    /// Redis could not answer: fail closed (503).
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// Refresh tokens on one core's Redis connection.
pub struct RefreshStore {
    conn: Rc<RedisConn>,
    /// Where rotations and family revocations are written: `conn` itself,
    /// or a connection whose writes replicas acknowledge (`redis::Writes`).
    writes: Writes,
    prefix: String,
    mac: RecordMac,
    issue: Script,
    rotate: Script,
    lookup: Script,
    revoke: Script,
}

impl RefreshStore {
    /// Refresh tokens under `prefix` (`redis.prefix`) on the core's
    /// connection, their records tagged and checked with `mac`.
    pub fn new(conn: Rc<RedisConn>, prefix: String, mac: RecordMac) -> RefreshStore {
        RefreshStore {
            writes: Writes::unacked(conn.clone()),
            conn,
            prefix,
            mac,
            issue: Script::new(ISSUE_LUA),
            rotate: Script::new(ROTATE_LUA),
            lookup: Script::new(LOOKUP_LUA),
            revoke: Script::new(REVOKE_LUA),
        }
    }

    /// This store, with rotations and family revocations written through
    /// `writes` (replicas acknowledge each: `redis.min_replicas_acked`).
    pub fn with_writes(self, writes: Writes) -> RefreshStore {
        RefreshStore { writes, ..self }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// After a record failed its integrity check: logs it as tampering,
    /// revokes its family in Redis, and says so.
    async fn tampered(&self, token: &str, family: FamilyId, now: u64, ttl: u64) -> RefreshError {
        tracing::warn!(
            family = %family.to_hex(),
            "refresh record failed its integrity check (written without the KEK: \
             tampering with Redis?); refused, its family revoked"
        );
        match self.revoke_family_of(token, None).await {
            Ok(Some(info)) => RefreshError::Tampered(info),
            Ok(None) => RefreshError::Tampered(FamilyInfo {
                family,
                expires_at: now.saturating_add(ttl),
            }),
            Err(e) => RefreshError::Redis(e),
        }
    }

    /// `{prefix}rt:{sha256 hex}` of `token`. For tests and logs of key
    /// names; never log the token.
    pub fn record_key(&self, token: &str) -> String {
        [
            self.prefix.as_str(),
            REFRESH_KEY_INFIX,
            &token_hash_hex(token),
        ]
        .concat()
    }

    /// `{prefix}rf:{family}`.
    pub fn family_key(&self, family: FamilyId) -> String {
        [self.prefix.as_str(), FAMILY_KEY_INFIX, &family.to_hex()].concat()
    }

    /// Issues the first token of a new family (at login). `scope` is
    /// space-separated; `now` is unix seconds; the token lives `ttl_secs`
    /// (0 is raised to 1: `EXPIRE 0` would delete the record at once).
    pub async fn issue(
        &self,
        sub: &str,
        username: Option<&str>,
        client_id: &str,
        scope: &str,
        ttl_secs: u64,
        now: u64,
    ) -> Result<(String, RefreshRecord), RedisError> {
        let ttl = ttl_secs.max(1);
        let token = new_token();
        let family = FamilyId::random();
        let key = self.record_key(&token);
        let fkey = self.family_key(family);
        let fam = family.to_hex();
        let now_s = now.to_string();
        let ttl_s = ttl.to_string();
        let tag = self.mac.tag(&RecordFields {
            family: &fam,
            sub,
            username,
            client_id,
            scope,
            family_start: now,
        });
        let args: [&str; 9] = [
            &fam,
            sub,
            client_id,
            scope,
            &now_s,
            &ttl_s,
            if username.is_some() { "1" } else { "0" },
            username.unwrap_or(""),
            &tag,
        ];
        self.conn
            .eval(&self.issue, &[key.as_str(), fkey.as_str()], &args)
            .await?;
        let record = RefreshRecord {
            family,
            sub: sub.to_owned(),
            username: username.map(str::to_owned),
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            issued_at: now,
            family_start: now,
            expires_at: now.saturating_add(ttl),
        };
        Ok((token, record))
    }

    /// Rotates `token` (grant `refresh_token`) for `client_id`: see the
    /// module documentation for the rules. `requested_scope` `None` or empty
    /// means "the scope originally granted" (RFC 6749 §6); a scope token that
    /// is not valid RFC 6749 §3.3 syntax is `InvalidScope`.
    /// `lifetime.family_max_secs` is the family's absolute lifetime from its
    /// login (0: none): past it the token is `Invalid`, and a new token never
    /// outlives it. One round trip.
    pub async fn rotate(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&[String]>,
        grace_secs: u64,
        lifetime: Lifetime,
        now: u64,
    ) -> Result<Rotated, RefreshError> {
        let (ttl_secs, max_lifetime_secs) = (lifetime.ttl_secs, lifetime.family_max_secs);
        if !is_well_formed(token) {
            return Err(RefreshError::Invalid);
        }
        let requested = match requested_scope {
            Some(list) if !list.is_empty() => Some(join_scope(list)?),
            _ => None,
        };
        let ttl = ttl_secs.max(1);
        let new_token = new_token();
        let key = self.record_key(token);
        let new_key = self.record_key(&new_token);
        let now_s = now.to_string();
        let grace_s = grace_secs.to_string();
        let ttl_s = ttl.to_string();
        let max_s = max_lifetime_secs.to_string();
        let args: [&str; 8] = [
            &self.prefix,
            client_id,
            &now_s,
            &grace_s,
            &ttl_s,
            if requested.is_some() { "1" } else { "0" },
            requested.as_deref().unwrap_or(""),
            &max_s,
        ];
        let reply = self
            .writes
            .eval(&self.rotate, &[key.as_str(), new_key.as_str()], &args)
            .await?;
        let items = reply.as_array().ok_or(RedisError::Protocol)?;
        match items.first().and_then(Reply::as_str) {
            Some("invalid") | Some("grace") => Err(RefreshError::Invalid),
            Some("scope") => Err(RefreshError::InvalidScope),
            Some("reused") => {
                let [_, fam, ttl] = items else {
                    return Err(RedisError::Protocol.into());
                };
                let family = parse_family(fam)?;
                let left = ttl.as_int().and_then(|t| u64::try_from(t).ok());
                Err(RefreshError::Reused(FamilyInfo {
                    family,
                    expires_at: now.saturating_add(left.unwrap_or(0)),
                }))
            }
            Some("ok") => {
                let [_, fam, sub, usr, scp, granted, fst, tag] = items else {
                    return Err(RedisError::Protocol.into());
                };
                let fields = RecordFields {
                    family: text_ref(fam)?,
                    sub: text_ref(sub)?,
                    username: opt_text_ref(usr)?,
                    client_id,
                    scope: text_ref(scp)?,
                    family_start: number(fst)?,
                };
                if !opt_text_ref(tag)?.is_some_and(|tag| self.mac.verify(&fields, tag)) {
                    let family = parse_family(fam)?;
                    return Err(self.tampered(token, family, now, ttl).await);
                }
                let record = RefreshRecord {
                    family: parse_family(fam)?,
                    sub: text(sub)?,
                    username: opt_text(usr)?,
                    client_id: client_id.to_owned(),
                    scope: text(scp)?,
                    issued_at: now,
                    family_start: number(fst)?,
                    expires_at: now.saturating_add(capped_ttl(
                        ttl,
                        number(fst)?,
                        max_lifetime_secs,
                        now,
                    )),
                };
                Ok(Rotated {
                    token: new_token,
                    record,
                    granted_scope: text(granted)?,
                })
            }
            _ => Err(RedisError::Protocol.into()),
        }
    }

    /// Revokes the family of `token` (RFC 7009, or logout of one session).
    /// With `Some(client_id)`, a token bound to another client is left alone
    /// (RFC 7009 §2.1) and `None` is returned; so is an unknown or malformed
    /// token. Idempotent: a family already revoked is reported again, so a
    /// retried call can still record it durably.
    pub async fn revoke_family_of(
        &self,
        token: &str,
        client_id: Option<&str>,
    ) -> Result<Option<FamilyInfo>, RedisError> {
        if !is_well_formed(token) {
            return Ok(None);
        }
        let key = self.record_key(token);
        let now = unix_now();
        let now_s = now.to_string();
        let args: [&str; 4] = [
            &self.prefix,
            if client_id.is_some() { "1" } else { "0" },
            client_id.unwrap_or(""),
            &now_s,
        ];
        let reply = self
            .writes
            .eval(&self.revoke, &[key.as_str()], &args)
            .await?;
        if reply.is_nil() {
            return Ok(None);
        }
        let [fam, ttl] = reply.as_array().ok_or(RedisError::Protocol)? else {
            return Err(RedisError::Protocol);
        };
        let left = ttl.as_int().and_then(|t| u64::try_from(t).ok());
        Ok(Some(FamilyInfo {
            family: parse_family(fam)?,
            expires_at: now.saturating_add(left.unwrap_or(0)),
        }))
    }

    /// The record of `token` if the token is active (RFC 7662): known,
    /// unused, its family live, and not voided by the user's not-before
    /// mark. One round trip; changes nothing.
    pub async fn lookup(&self, token: &str) -> Result<Option<RefreshRecord>, RedisError> {
        if !is_well_formed(token) {
            return Ok(None);
        }
        let key = self.record_key(token);
        let reply = self
            .conn
            .eval(&self.lookup, &[key.as_str()], &[self.prefix.as_str()])
            .await?;
        if reply.is_nil() {
            return Ok(None);
        }
        let [fam, sub, usr, cid, scp, iat, fst, tag, ttl] =
            reply.as_array().ok_or(RedisError::Protocol)?
        else {
            return Err(RedisError::Protocol);
        };
        let fields = RecordFields {
            family: text_ref(fam)?,
            sub: text_ref(sub)?,
            username: opt_text_ref(usr)?,
            client_id: text_ref(cid)?,
            scope: text_ref(scp)?,
            family_start: number(fst)?,
        };
        if !opt_text_ref(tag)?.is_some_and(|tag| self.mac.verify(&fields, tag)) {
            tracing::warn!(
                record = &key[self.prefix.len()..],
                "refresh record failed its integrity check (written without the KEK: \
                 tampering with Redis?); reported inactive"
            );
            return Ok(None);
        }
        let left = ttl.as_int().ok_or(RedisError::Protocol)?;
        // -1 (no expiry) never happens for records written here; -2 (gone
        // between the reads) cannot happen inside a script. Either way a
        // record without a positive TTL is not reported active.
        let Ok(left @ 1..) = u64::try_from(left) else {
            return Ok(None);
        };
        Ok(Some(RefreshRecord {
            family: parse_family(fam)?,
            sub: text(sub)?,
            username: opt_text(usr)?,
            client_id: text(cid)?,
            scope: text(scp)?,
            issued_at: number(iat)?,
            family_start: number(fst)?,
            expires_at: unix_now().saturating_add(left),
        }))
    }
}

/// Validates each scope token (RFC 6749 §3.3: `%x21 / %x23-5B / %x5D-7E`),
/// drops duplicates (first occurrence kept) and joins with spaces.
fn join_scope(list: &[String]) -> Result<String, RefreshError> {
    let mut out = String::new();
    let mut seen: Vec<&str> = Vec::with_capacity(list.len());
    for s in list {
        let ok = !s.is_empty()
            && s.bytes()
                .all(|c| c == 0x21 || (0x23..=0x5b).contains(&c) || (0x5d..=0x7e).contains(&c));
        if !ok {
            return Err(RefreshError::InvalidScope);
        }
        if seen.contains(&s.as_str()) {
            continue;
        }
        seen.push(s);
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(s);
    }
    Ok(out)
}

fn text(r: &Reply) -> Result<String, RedisError> {
    r.as_str().map(str::to_owned).ok_or(RedisError::Protocol)
}

fn opt_text(r: &Reply) -> Result<Option<String>, RedisError> {
    if r.is_nil() {
        Ok(None)
    } else {
        text(r).map(Some)
    }
}

fn text_ref(r: &Reply) -> Result<&str, RedisError> {
    r.as_str().ok_or(RedisError::Protocol)
}

fn opt_text_ref(r: &Reply) -> Result<Option<&str>, RedisError> {
    if r.is_nil() {
        Ok(None)
    } else {
        text_ref(r).map(Some)
    }
}

fn number(r: &Reply) -> Result<u64, RedisError> {
    r.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or(RedisError::Protocol)
}

fn parse_family(r: &Reply) -> Result<FamilyId, RedisError> {
    r.as_str()
        .and_then(FamilyId::parse_hex)
        .ok_or(RedisError::Protocol)
}

/// The lifetimes a rotation gives: the new token's own, and its family's
/// absolute one from the login (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// The refresh token's TTL (`tokens.refresh_ttl` or the client's).
    pub ttl_secs: u64,
    /// The family's absolute lifetime (`tokens.refresh_max_lifetime` or the
    /// client's); 0: none.
    pub family_max_secs: u64,
}

/// A new token's lifetime: `ttl`, or what is left of its family's absolute
/// lifetime `max` (0: none) from `start`, whichever ends first (as
/// `rotate.lua` computes it).
fn capped_ttl(ttl: u64, start: u64, max: u64, now: u64) -> u64 {
    if max == 0 {
        return ttl;
    }
    ttl.min(start.saturating_add(max).saturating_sub(now))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::*;
    use crate::redis::testutil::*;
    use crate::redis::BlockingRedis;
    use crate::revocation::RedisRevocations;

    const TTL: u64 = 3600;
    /// A TTL of [`TTL`], no absolute family lifetime.
    const LIFE: Lifetime = Lifetime {
        ttl_secs: TTL,
        family_max_secs: 0,
    };

    async fn store(prefix: &str) -> RefreshStore {
        let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
        assert!(conn.wait_connected(Duration::from_secs(5)).await);
        RefreshStore::new(conn, prefix.to_owned(), RecordMac::new(&[9; 32]))
    }

    fn blocking() -> BlockingRedis {
        BlockingRedis::connect(&shared_target(), Duration::from_secs(2)).unwrap()
    }

    fn scopes(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    /// Deletes the prefix's keys even when the test panics.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            cleanup(&self.0);
        }
    }

    #[test]
    fn token_shape_and_hash() {
        let t = new_token();
        assert!(is_well_formed(&t), "{t}");
        assert_eq!(t.len(), 53);
        assert_ne!(new_token(), t);
        assert!(!is_well_formed("tokend_rt_short"));
        assert!(!is_well_formed(&t.replace("tokend_rt_", "tokend_xx_")));
        let mut bad = t.clone();
        bad.pop();
        bad.push('=');
        assert!(!is_well_formed(&bad));
        let h = token_hash_hex("abc");
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let f = FamilyId::random();
        assert_eq!(FamilyId::parse_hex(&f.to_hex()), Some(f));
        assert_eq!(f.to_hex().len(), 32);
        assert_eq!(FamilyId::parse_hex("zz"), None);
        assert_eq!(join_scope(&scopes(&["a", "b", "a"])).as_deref(), Ok("a b"));
        assert_eq!(
            join_scope(&scopes(&["a b"])),
            Err(RefreshError::InvalidScope)
        );
        assert_eq!(join_scope(&scopes(&[""])), Err(RefreshError::InvalidScope));
    }

    /// Issue #13: a family ends at its absolute lifetime however often it
    /// is rotated, and no token outlives it.
    #[test]
    fn a_family_ends_at_its_absolute_lifetime() {
        assert_eq!(capped_ttl(3600, 1000, 0, 1500), 3600);
        assert_eq!(capped_ttl(3600, 1000, 600, 1500), 100);
        assert_eq!(capped_ttl(50, 1000, 600, 1500), 50);
        on_both_drivers(|driver| async move {
            let prefix = random_prefix();
            let _g = Cleanup(prefix.clone());
            let s = store(&prefix).await;
            let now = unix_now();
            const MAX: u64 = 100;
            let (t1, _) = s
                .issue("user-1", None, "app", "read", TTL, now)
                .await
                .unwrap();
            // Within the lifetime: rotated, the new token's TTL cut to what
            // is left of the family's (90 s, not an hour).
            let r = s
                .rotate(
                    &t1,
                    "app",
                    None,
                    0,
                    Lifetime {
                        ttl_secs: TTL,
                        family_max_secs: MAX,
                    },
                    now + 10,
                )
                .await
                .unwrap();
            assert_eq!(r.record.expires_at, now + MAX, "{driver}");
            let ttl = blocking()
                .query(::redis::cmd("TTL").arg(s.record_key(&r.token)))
                .unwrap()
                .as_int()
                .unwrap();
            assert!((85..=90).contains(&ttl), "{driver}: {ttl}");
            // Past it: refused, although the token's own TTL has not run out
            // in this call's view.
            assert_eq!(
                s.rotate(
                    &r.token,
                    "app",
                    None,
                    0,
                    Lifetime {
                        ttl_secs: TTL,
                        family_max_secs: MAX
                    },
                    now + MAX
                )
                .await
                .err(),
                Some(RefreshError::Invalid),
                "{driver}"
            );
        });
    }

    /// Issue #13, finding 5: a record written to Redis without the KEK is
    /// refused, its family revoked, and introspection calls it inactive;
    /// records tokend wrote rotate as before.
    #[test]
    fn forged_records_are_refused_and_their_family_revoked() {
        on_both_drivers(|driver| async move {
            let prefix = random_prefix();
            let _g = Cleanup(prefix.clone());
            let s = store(&prefix).await;
            let now = unix_now();
            let mut c = blocking();
            // A genuine tag copied from another record, none, garbage.
            for variant in ["copied", "none", "garbage"] {
                let (genuine, rec) = s
                    .issue("user-1", Some("alice"), "app", "read", TTL, now)
                    .await
                    .unwrap();
                let tag = c
                    .query(::redis::cmd("HGET").arg(s.record_key(&genuine)).arg("mac"))
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned();
                // A record of alice's family with a wider scope, written by
                // someone who can write to Redis.
                let forged = new_token();
                let key = s.record_key(&forged);
                let (fam, now_s) = (rec.family.to_hex(), now.to_string());
                let mut hset = ::redis::cmd("HSET");
                hset.arg(&key)
                    .arg(&["fam", &fam, "sub", "user-1", "usr", "alice"])
                    .arg(&["cid", "app", "scp", "read tokend:admin"])
                    .arg(&["iat", &now_s, "fst", &now_s]);
                match variant {
                    "copied" => hset.arg("mac").arg(&tag),
                    "garbage" => hset.arg("mac").arg("00"),
                    _ => &mut hset,
                };
                c.query(&hset).unwrap();
                c.query(::redis::cmd("EXPIRE").arg(&key).arg(TTL)).unwrap();
                assert_eq!(s.lookup(&forged).await, Ok(None), "{driver}: {variant}");
                let refused = s.rotate(&forged, "app", None, 0, LIFE, now + 1).await;
                assert!(
                    matches!(refused, Err(RefreshError::Tampered(ref info)) if info.family == rec.family),
                    "{driver}: {variant}: {refused:?}"
                );
                // Its family is revoked: the genuine token is refused too.
                assert_eq!(
                    s.rotate(&genuine, "app", None, 0, LIFE, now + 2)
                        .await
                        .err(),
                    Some(RefreshError::Invalid),
                    "{driver}: {variant}"
                );
            }
            // Genuine records rotate, and the tag travels with them.
            let (t, _) = s
                .issue("user-2", None, "app", "read", TTL, now)
                .await
                .unwrap();
            let r = s
                .rotate(&t, "app", Some(&scopes(&[])), 0, LIFE, now + 1)
                .await
                .unwrap();
            let r2 = s
                .rotate(&r.token, "app", None, 0, LIFE, now + 2)
                .await
                .unwrap();
            assert!(s.lookup(&r2.token).await.unwrap().is_some(), "{driver}");
        });
    }

    #[test]
    fn the_tag_covers_every_field() {
        let mac = RecordMac::new(&[1; 32]);
        let base = RecordFields {
            family: "f",
            sub: "s",
            username: Some("u"),
            client_id: "c",
            scope: "read",
            family_start: 10,
        };
        let tag = mac.tag(&base);
        assert_eq!(tag.len(), 64);
        assert!(mac.verify(&base, &tag));
        assert!(mac.verify(&base, &tag.to_uppercase()));
        let variants = [
            RecordFields {
                family: "g",
                ..base
            },
            RecordFields { sub: "t", ..base },
            RecordFields {
                username: None,
                ..base
            },
            RecordFields {
                username: Some(""),
                ..base
            },
            RecordFields {
                client_id: "d",
                ..base
            },
            RecordFields {
                scope: "read tokend:admin",
                ..base
            },
            RecordFields {
                family_start: 11,
                ..base
            },
        ];
        for v in &variants {
            assert!(!mac.verify(v, &tag));
        }
        // Length prefixes: moving a byte between fields changes the tag.
        let shifted = RecordFields {
            family: "fs",
            sub: "",
            ..base
        };
        assert!(!mac.verify(
            &shifted,
            &mac.tag(&RecordFields {
                family: "f",
                sub: "s",
                ..shifted
            })
        ));
        assert!(!RecordMac::new(&[2; 32]).verify(&base, &tag));
        assert!(!mac.verify(&base, "zz"));
        assert!(!mac.verify(&base, ""));
    }

    #[test]
    fn issue_rotate_lookup() {
        on_both_drivers(|driver| async move {
            let prefix = random_prefix();
            let _g = Cleanup(prefix.clone());
            let s = store(&prefix).await;
            let now = unix_now();
            let (t1, rec) = s
                .issue("user-1", Some("alice"), "app", "read write", TTL, now)
                .await
                .unwrap();
            assert_eq!(rec.sub, "user-1");
            assert_eq!(rec.family_start, now);
            assert_eq!(rec.expires_at, now + TTL);

            // Only the hash is stored, never the token; TTLs are set.
            let mut c = blocking();
            let keys = c
                .query(::redis::cmd("KEYS").arg(format!("{prefix}*")))
                .unwrap();
            let keys: Vec<String> = keys
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(keys.len(), 2, "{keys:?}");
            assert!(keys.contains(&s.record_key(&t1)));
            assert!(keys.contains(&s.family_key(rec.family)));
            let secret = &t1[REFRESH_TOKEN_PREFIX.len()..];
            for k in &keys {
                assert!(!k.contains(secret));
                let ttl = c.query(::redis::cmd("TTL").arg(k)).unwrap();
                assert!((TTL - 5..=TTL).contains(&(ttl.as_int().unwrap() as u64)));
                let all = c.query(::redis::cmd("HGETALL").arg(k)).unwrap();
                for v in all.as_array().unwrap() {
                    assert!(!v.as_str().unwrap().contains(secret));
                }
            }

            // Introspection sees it; with a live expiry.
            let got = s.lookup(&t1).await.unwrap().unwrap();
            assert_eq!(got.family, rec.family);
            assert_eq!(got.username.as_deref(), Some("alice"));
            assert_eq!(got.client_id, "app");
            assert_eq!(got.scope, "read write");
            assert_eq!(got.issued_at, now);
            assert!(got.expires_at >= now + TTL - 5);
            assert_eq!(s.lookup("tokend_rt_nope").await, Ok(None));
            assert_eq!(s.lookup(&new_token()).await, Ok(None));

            // Wrong client: invalid, and the token is not consumed.
            assert_eq!(
                s.rotate(&t1, "other", None, 0, LIFE, now + 1).await,
                Err(RefreshError::Invalid)
            );
            // Wider scope: invalid_scope, not consumed.
            assert_eq!(
                s.rotate(
                    &t1,
                    "app",
                    Some(&scopes(&["read", "admin"])),
                    0,
                    LIFE,
                    now + 1
                )
                .await,
                Err(RefreshError::InvalidScope)
            );
            assert!(s.lookup(&t1).await.unwrap().is_some(), "{driver}");

            // Narrower scope: granted for the access token, the family keeps
            // the original scope.
            let r = s
                .rotate(&t1, "app", Some(&scopes(&["read"])), 0, LIFE, now + 10)
                .await
                .unwrap();
            assert_eq!(r.granted_scope, "read");
            assert_eq!(r.record.scope, "read write");
            assert_eq!(r.record.family, rec.family);
            assert_eq!(r.record.family_start, now);
            assert_eq!(r.record.issued_at, now + 10);
            assert_eq!(r.record.sub, "user-1");
            assert_eq!(r.record.username.as_deref(), Some("alice"));
            assert_ne!(r.token, t1);
            // The used token is no longer active; the new one is.
            assert_eq!(s.lookup(&t1).await, Ok(None));
            let got = s.lookup(&r.token).await.unwrap().unwrap();
            assert_eq!(got.issued_at, now + 10);
            assert_eq!(got.family_start, now);

            // No scope requested: the original; no username kept as None.
            let r2 = s
                .rotate(&r.token, "app", None, 0, LIFE, now + 20)
                .await
                .unwrap();
            assert_eq!(r2.granted_scope, "read write");
            let r3 = s
                .rotate(&r2.token, "app", Some(&[]), 0, LIFE, now + 30)
                .await
                .unwrap();
            assert_eq!(r3.granted_scope, "read write");

            let (t, rec) = s.issue("user-2", None, "app", "", TTL, now).await.unwrap();
            assert_eq!(rec.username, None);
            let r = s.rotate(&t, "app", None, 0, LIFE, now).await.unwrap();
            assert_eq!(r.record.username, None);
            assert_eq!(r.granted_scope, "");

            // Garbage and unknown tokens.
            assert_eq!(
                s.rotate("garbage", "app", None, 0, LIFE, now).await,
                Err(RefreshError::Invalid)
            );
            assert_eq!(
                s.rotate(&new_token(), "app", None, 0, LIFE, now).await,
                Err(RefreshError::Invalid)
            );
        });
    }

    #[test]
    fn reuse_revokes_the_family() {
        legacy(async {
            let prefix = random_prefix();
            let _g = Cleanup(prefix.clone());
            let s = store(&prefix).await;
            let now = unix_now();
            let (t1, rec) = s.issue("u", None, "app", "a", TTL, now).await.unwrap();
            let r = s.rotate(&t1, "app", None, 0, LIFE, now).await.unwrap();
            // Replay of the used token (same second, grace 0): theft.
            let e = s.rotate(&t1, "app", None, 0, LIFE, now).await.unwrap_err();
            let RefreshError::Reused(info) = e else {
                panic!("{e:?}")
            };
            assert_eq!(info.family, rec.family);
            assert!(info.expires_at >= now + TTL - 5, "{info:?}");
            // The successor is dead too, for rotation and introspection.
            assert_eq!(
                s.rotate(&r.token, "app", None, 0, LIFE, now).await,
                Err(RefreshError::Invalid)
            );
            assert_eq!(s.lookup(&r.token).await, Ok(None));
            // Another replay: already revoked, just invalid.
            assert_eq!(
                s.rotate(&t1, "app", None, 0, LIFE, now).await,
                Err(RefreshError::Invalid)
            );
            // A different client replaying the used token changes nothing
            // (it is refused before reuse detection), tested on a fresh family.
            let (t2, _) = s.issue("u", None, "app", "a", TTL, now).await.unwrap();
            let r2 = s.rotate(&t2, "app", None, 0, LIFE, now).await.unwrap();
            assert_eq!(
                s.rotate(&t2, "evil", None, 0, LIFE, now).await,
                Err(RefreshError::Invalid)
            );
            assert!(s.lookup(&r2.token).await.unwrap().is_some());
        });
    }

    #[test]
    fn grace_period_does_not_revoke() {
        legacy(async {
            let prefix = random_prefix();
            let _g = Cleanup(prefix.clone());
            let s = store(&prefix).await;
            let now = unix_now();
            let (t1, _) = s.issue("u", None, "app", "a", TTL, now).await.unwrap();
            let r = s.rotate(&t1, "app", None, 30, LIFE, now).await.unwrap();
            // Within the grace period: invalid, the family lives on.
            assert_eq!(
                s.rotate(&t1, "app", None, 30, LIFE, now + 30).await,
                Err(RefreshError::Invalid)
            );
            assert!(s.lookup(&r.token).await.unwrap().is_some());
            // After it: theft, the family is revoked.
            assert!(matches!(
                s.rotate(&t1, "app", None, 30, LIFE, now + 31).await,
                Err(RefreshError::Reused(_))
            ));
            assert_eq!(
                s.rotate(&r.token, "app", None, 30, LIFE, now + 31).await,
                Err(RefreshError::Invalid)
            );
        });
    }

    #[test]
    fn concurrent_presentations_within_grace() {
        legacy(async {
            let prefix = random_prefix();
            let _g = Cleanup(prefix.clone());
            let s = Rc::new(store(&prefix).await);
            let now = unix_now();
            let (t1, _) = s.issue("u", None, "app", "a", TTL, now).await.unwrap();
            let t1 = Rc::new(t1);
            let handles: Vec<_> = (0..20)
                .map(|_| {
                    let (s, t1) = (s.clone(), t1.clone());
                    monoio::spawn(async move { s.rotate(&t1, "app", None, 60, LIFE, now).await })
                })
                .collect();
            let mut winners = Vec::new();
            for h in handles {
                match h.await {
                    Ok(r) => winners.push(r),
                    Err(e) => assert_eq!(e, RefreshError::Invalid),
                }
            }
            assert_eq!(winners.len(), 1);
            // Nobody revoked the family: the winner's token still rotates.
            s.rotate(&winners[0].token, "app", None, 60, LIFE, now)
                .await
                .unwrap();
        });
    }

    #[test]
    fn concurrent_rotation_on_one_core() {
        on_both_drivers(|driver| async move {
            let prefix = random_prefix();
            let _g = Cleanup(prefix.clone());
            let s = Rc::new(store(&prefix).await);
            let now = unix_now();
            let (t1, _) = s.issue("u", None, "app", "a", TTL, now).await.unwrap();
            let t1 = Rc::new(t1);
            // One rotation of another family first, so that the rotation
            // script is in Redis's script cache: otherwise each call below
            // is EVALSHA + NOSCRIPT + EVAL, two commands instead of one
            // (regression: this test failed on a Redis that had not run the
            // script yet).
            let (warm, _) = s.issue("w", None, "app", "a", TTL, now).await.unwrap();
            s.rotate(&warm, "app", None, 0, LIFE, now).await.unwrap();
            let before = s.conn.stats();
            let handles: Vec<_> = (0..20)
                .map(|_| {
                    let (s, t1) = (s.clone(), t1.clone());
                    monoio::spawn(async move { s.rotate(&t1, "app", None, 0, LIFE, now).await })
                })
                .collect();
            let (mut ok, mut reused, mut invalid) = (Vec::new(), 0, 0);
            for h in handles {
                match h.await {
                    Ok(r) => ok.push(r),
                    Err(RefreshError::Reused(_)) => reused += 1,
                    Err(RefreshError::Invalid) => invalid += 1,
                    Err(e) => panic!("{driver}: {e:?}"),
                }
            }
            assert_eq!((ok.len(), reused, invalid), (1, 1, 18), "{driver}");
            // Pipelined: one script call each, fewer round trips than calls.
            let after = s.conn.stats();
            assert_eq!(after.commands - before.commands, 20, "{driver}");
            // The winner's new token is refused: the family was revoked.
            assert_eq!(
                s.rotate(&ok[0].token, "app", None, 0, LIFE, now).await,
                Err(RefreshError::Invalid)
            );
        });
    }

    #[test]
    fn concurrent_rotation_on_two_threads() {
        let prefix = random_prefix();
        let _g = Cleanup(prefix.clone());
        let now = unix_now();
        let (t1, _) = legacy(async {
            store(&prefix)
                .await
                .issue("u", None, "app", "a", TTL, now)
                .await
                .unwrap()
        });
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (prefix, t1, barrier) = (prefix.clone(), t1.clone(), barrier.clone());
                std::thread::spawn(move || {
                    legacy(async move {
                        let s = store(&prefix).await;
                        barrier.wait();
                        s.rotate(&t1, "app", None, 0, LIFE, now).await
                    })
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(ok.len(), 1, "{results:?}");
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(RefreshError::Reused(_)))),
            "{results:?}"
        );
        let winner = ok[0].token.clone();
        legacy(async {
            let s = store(&prefix).await;
            assert_eq!(
                s.rotate(&winner, "app", None, 0, LIFE, now).await,
                Err(RefreshError::Invalid)
            );
        });
    }

    #[test]
    fn not_before_mark_voids_the_family() {
        legacy(async {
            let prefix = random_prefix();
            let _g = Cleanup(prefix.clone());
            let s = store(&prefix).await;
            let rev = RedisRevocations::new(s.conn.clone(), prefix.clone());
            let now = unix_now();
            let (old, _) = s
                .issue("u", None, "app", "a", TTL, now - 100)
                .await
                .unwrap();
            let (same, _) = s.issue("u", None, "app", "a", TTL, now - 50).await.unwrap();
            let (newer, _) = s.issue("u", None, "app", "a", TTL, now - 49).await.unwrap();
            let (other, _) = s
                .issue("v", None, "app", "a", TTL, now - 100)
                .await
                .unwrap();
            // A rotation after the mark does not help a family started before.
            let r_old = s
                .rotate(&old, "app", None, 0, LIFE, now - 60)
                .await
                .unwrap();
            rev.set_not_before("u", now - 50, TTL).await.unwrap();
            for t in [&r_old.token, &same] {
                assert_eq!(s.lookup(t).await, Ok(None));
                assert_eq!(
                    s.rotate(t, "app", None, 0, LIFE, now).await,
                    Err(RefreshError::Invalid)
                );
            }
            assert!(s.lookup(&newer).await.unwrap().is_some());
            s.rotate(&newer, "app", None, 0, LIFE, now).await.unwrap();
            s.rotate(&other, "app", None, 0, LIFE, now).await.unwrap();
            // The refused tokens were not consumed as "used" nor revoked:
            // just void (a later mark cannot be undone anyway).
        });
    }

    #[test]
    fn revoke_family() {
        legacy(async {
            let prefix = random_prefix();
            let _g = Cleanup(prefix.clone());
            let s = store(&prefix).await;
            let now = unix_now();
            let (t1, rec) = s.issue("u", None, "app", "a", TTL, now).await.unwrap();
            let r = s.rotate(&t1, "app", None, 0, LIFE, now).await.unwrap();
            // Another client cannot revoke it; garbage is ignored.
            assert_eq!(s.revoke_family_of(&r.token, Some("other")).await, Ok(None));
            assert_eq!(s.revoke_family_of("junk", None).await, Ok(None));
            assert_eq!(s.revoke_family_of(&new_token(), None).await, Ok(None));
            assert!(s.lookup(&r.token).await.unwrap().is_some());
            // Revoking the old (used) token kills the whole family.
            let info = s.revoke_family_of(&t1, Some("app")).await.unwrap().unwrap();
            assert_eq!(info.family, rec.family);
            assert!(info.expires_at >= unix_now() + TTL - 5);
            assert_eq!(s.lookup(&r.token).await, Ok(None));
            assert_eq!(
                s.rotate(&r.token, "app", None, 0, LIFE, now).await,
                Err(RefreshError::Invalid)
            );
            // Idempotent, and without a client check.
            let again = s.revoke_family_of(&r.token, None).await.unwrap().unwrap();
            assert_eq!(again.family, rec.family);
            let mut c = blocking();
            let rev = c
                .query(
                    ::redis::cmd("HGET")
                        .arg(s.family_key(rec.family))
                        .arg(FAMILY_REVOKED_FIELD),
                )
                .unwrap();
            assert!(rev.as_int().unwrap() > 0);
        });
    }
}
