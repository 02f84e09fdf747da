//! Browser sessions (issue #16 item 3): a session is what lets a second
//! `GET /authorize` sign the user in without a password (single sign-on).
//! `POST /login` creates one and sets its cookie; `GET`/`POST /authorize`
//! touches it (`handlers::authorize`).
//!
//! A session is named by an opaque cookie value: 32 random bytes, base64url
//! (43 characters). Redis sees only its SHA-256, so a dump of Redis gives
//! nobody a usable cookie.
//!
//! # Key layout (under the configured prefix)
//!
//! | key | type | fields | expires |
//! |---|---|---|---|
//! | `{prefix}ss:{sha256 hex}` | hash | `sub` user id, `usr` username, `at` when the user typed the password, `mac` integrity tag | the idle lifetime after the last use, never past the absolute lifetime from `at` |
//!
//! # Lifetimes and ends
//!
//! Each use ([`SessionStore::touch`], one Lua script) restarts the idle
//! lifetime, capped by the absolute one (counted from the sign-in, never
//! extended). A session ends when either runs out, when the user signs in
//! again ([`SessionStore::end`] of the old one), and when the user's "not
//! before" mark (`{prefix}nbf:{sub}`, set by logout everywhere, a password
//! change and a disable, DESIGN §2) is at or after the sign-in: the script
//! reads the mark in the same round trip and deletes the session. The mark
//! lives as long as the longest token lifetime, so the absolute lifetime
//! of sessions must not exceed it (the caller's configuration check).
//!
//! # Integrity
//!
//! The record is tagged with HMAC-SHA256 under a key derived from the KEK
//! ([`SessionMac::PURPOSE`]), over the record's key, user id, username and
//! sign-in time: someone who can write to Redis but lacks the KEK cannot
//! make a session for any user.
//!
//! # The cookie
//!
//! [`set_cookie`] writes `__Host-tokend_session` (`Path=/`, `HttpOnly`,
//! `Secure`, `SameSite=Lax`) when the public URL is https. Browsers refuse
//! a `__Host-` cookie without `Secure` (RFC 6265bis §4.1.3.2), so over
//! plain http (development) the cookie is `tokend_session`, without the
//! prefix and without `Secure`.
//!
//! Owns: browser sessions in Redis, their cookie's name, format and
//! attributes. Never imports: `handlers`, `http`, `net`, `state`,
//! `access`, `cores`, `store` or another service (the not-before mark is a
//! key name); of the crate it uses the Redis client.

use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::redis::{RedisConn, RedisError, Reply, Script};

/// Key infix of a session: `{prefix}ss:{sha256 hex}`.
pub const SESSION_KEY_INFIX: &str = "ss:";
/// The cookie's name over https.
pub const SECURE_COOKIE: &str = "__Host-tokend_session";
/// The cookie's name over plain http (development only).
pub const PLAIN_COOKIE: &str = "tokend_session";

/// Source: `scripts/create.lua`.
const CREATE_LUA: &str = include_str!("scripts/create.lua");
/// Source: `scripts/touch.lua`, whose header is the full contract.
const TOUCH_LUA: &str = include_str!("scripts/touch.lua");

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user id.
    pub sub: String,
    pub username: String,
    /// When the user last typed the password (unix seconds): `auth_time`,
    /// compared with `max_age`.
    pub auth_time: u64,
}

/// The two lifetimes of a session, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Since the last use.
    pub idle: u64,
    /// Since the sign-in.
    pub absolute: u64,
}

/// The integrity tag of session records.
pub struct SessionMac {
    key: aws_lc_rs::hmac::Key,
}

impl SessionMac {
    /// The HKDF purpose of the key: `Kek::derive(SessionMac::PURPOSE)`.
    pub const PURPOSE: &'static str = "tokend browser-session mac v1";

    /// Tags under `key` (32 bytes, derived from the KEK).
    pub fn new(key: &[u8; 32]) -> SessionMac {
        SessionMac {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key),
        }
    }

    fn input(record_key: &str, sub: &str, username: &str, auth_time: u64) -> Vec<u8> {
        let at = auth_time.to_string();
        let mut out = Vec::with_capacity(64 + record_key.len() + sub.len() + username.len());
        out.extend_from_slice(b"tokend-ss-v1");
        for field in [record_key, sub, username, at.as_str()] {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }

    fn tag(&self, record_key: &str, sub: &str, username: &str, auth_time: u64) -> String {
        let tag = aws_lc_rs::hmac::sign(
            &self.key,
            &Self::input(record_key, sub, username, auth_time),
        );
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    fn verify(&self, record_key: &str, s: &Session, tag: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(tag) else {
            return false;
        };
        aws_lc_rs::hmac::verify(
            &self.key,
            &Self::input(record_key, &s.sub, &s.username, s.auth_time),
            &bytes,
        )
        .is_ok()
    }
}

/// Browser sessions on one core's Redis connection.
pub struct SessionStore {
    conn: Rc<RedisConn>,
    prefix: String,
    mac: SessionMac,
    create: Script,
    touch: Script,
}

impl SessionStore {
    /// Sessions under `prefix` (`redis.prefix`), tagged with `mac`.
    pub fn new(conn: Rc<RedisConn>, prefix: String, mac: SessionMac) -> SessionStore {
        SessionStore {
            conn,
            prefix,
            mac,
            create: Script::new(CREATE_LUA),
            touch: Script::new(TOUCH_LUA),
        }
    }

    /// `{prefix}ss:{sha256 hex of the cookie value}`.
    pub fn record_key(&self, id: &str) -> String {
        let digest = Sha256::digest(id.as_bytes());
        let mut key = String::with_capacity(self.prefix.len() + 3 + 64);
        key.push_str(&self.prefix);
        key.push_str(SESSION_KEY_INFIX);
        key.push_str(&hex::encode(digest));
        key
    }

    /// Starts a session for `session`'s user, signed in at
    /// `session.auth_time`; returns the cookie value. One round trip.
    pub async fn create(
        &self,
        session: &Session,
        lifetimes: Lifetimes,
        now: u64,
    ) -> Result<String, RedisError> {
        let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let key = self.record_key(&id);
        let tag = self
            .mac
            .tag(&key, &session.sub, &session.username, session.auth_time);
        let left = session
            .auth_time
            .saturating_add(lifetimes.absolute)
            .saturating_sub(now);
        let ttl = lifetimes.idle.min(left).max(1).to_string();
        let at = session.auth_time.to_string();
        self.conn
            .eval(
                &self.create,
                &[key.as_str()],
                &[
                    session.sub.as_str(),
                    session.username.as_str(),
                    &at,
                    &tag,
                    &ttl,
                ],
            )
            .await?;
        Ok(id)
    }

    /// The session named by the cookie value `id`, if it is still valid,
    /// its idle lifetime restarted (see the module documentation). One
    /// round trip.
    pub async fn touch(
        &self,
        id: &str,
        lifetimes: Lifetimes,
        now: u64,
    ) -> Result<Option<Session>, RedisError> {
        if !is_well_formed(id) {
            return Ok(None);
        }
        let key = self.record_key(id);
        let reply = self
            .conn
            .eval(
                &self.touch,
                &[key.as_str()],
                &[
                    self.prefix.as_str(),
                    &now.to_string(),
                    &lifetimes.idle.to_string(),
                    &lifetimes.absolute.to_string(),
                ],
            )
            .await?;
        if reply.is_nil() {
            return Ok(None);
        }
        let [sub, usr, at, tag] = reply.as_array().ok_or(RedisError::Protocol)? else {
            return Err(RedisError::Protocol);
        };
        let text = |r: &Reply| r.as_str().map(str::to_owned).ok_or(RedisError::Protocol);
        let session = Session {
            sub: text(sub)?,
            username: text(usr)?,
            auth_time: text(at)?.parse().map_err(|_| RedisError::Protocol)?,
        };
        if !tag
            .as_str()
            .is_some_and(|t| self.mac.verify(&key, &session, t))
        {
            tracing::warn!(
                record = &key[self.prefix.len()..],
                "browser session failed its integrity check (written without the KEK: \
                 tampering with Redis?); ignored"
            );
            return Ok(None);
        }
        Ok(Some(session))
    }

    /// Ends the session `id` (a new sign-in replaces it). One round trip.
    pub async fn end(&self, id: &str) -> Result<(), RedisError> {
        if !is_well_formed(id) {
            return Ok(());
        }
        let key = self.record_key(id);
        self.conn
            .query_with(|w| {
                w.command(2).arg(b"DEL").arg(key.as_bytes());
            })
            .await
            .map(|_| ())
    }
}

/// Whether `id` has the shape of a cookie value tokend gives.
fn is_well_formed(id: &str) -> bool {
    id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The cookie's name: [`SECURE_COOKIE`] when the public URL is https, else
/// [`PLAIN_COOKIE`].
pub fn cookie_name(https: bool) -> &'static str {
    if https {
        SECURE_COOKIE
    } else {
        PLAIN_COOKIE
    }
}

/// The `Set-Cookie` header line (with CRLF) that gives the browser the
/// session `id` for `max_age` seconds (0: removes it).
pub fn set_cookie(id: &str, https: bool, max_age: u64) -> String {
    format!(
        "Set-Cookie: {}={id}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}\r\n",
        cookie_name(https),
        if https { "; Secure" } else { "" }
    )
}

/// The value of the session cookie in a `Cookie` header (RFC 6265 §4.2:
/// `name=value` pairs separated by `; `), if there is one. The last one
/// wins when a name repeats.
pub fn find_cookie(header: &[u8], https: bool) -> Option<&str> {
    let name = cookie_name(https).as_bytes();
    let mut found = None;
    for pair in header.split(|&b| b == b';') {
        let pair = pair.trim_ascii();
        if let Some(value) = pair.strip_prefix(name).and_then(|r| r.strip_prefix(b"=")) {
            found = std::str::from_utf8(value).ok();
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::unix_now;
    use crate::redis::testutil::*;
    use crate::redis::BlockingRedis;

    const LIFE: Lifetimes = Lifetimes {
        idle: 3600,
        absolute: 86400,
    };

    async fn store(prefix: &str) -> SessionStore {
        let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
        assert!(conn.wait_connected(Duration::from_secs(5)).await);
        SessionStore::new(conn, prefix.to_owned(), SessionMac::new(&[3; 32]))
    }

    fn alice(at: u64) -> Session {
        Session {
            sub: "user-1".into(),
            username: "alice".into(),
            auth_time: at,
        }
    }

    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            cleanup(&self.0);
        }
    }

    #[test]
    fn cookies() {
        assert_eq!(
            set_cookie("abc", true, 60),
            "Set-Cookie: __Host-tokend_session=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure\r\n"
        );
        assert_eq!(
            set_cookie("abc", false, 0),
            "Set-Cookie: tokend_session=abc; Path=/; Max-Age=0; HttpOnly; SameSite=Lax\r\n"
        );
        assert_eq!(
            find_cookie(b"a=1; __Host-tokend_session=xyz; b=2", true),
            Some("xyz")
        );
        assert_eq!(find_cookie(b"__Host-tokend_session=xyz", false), None);
        assert_eq!(
            find_cookie(b"tokend_session=p;tokend_session=q", false),
            Some("q")
        );
        assert_eq!(find_cookie(b"x__Host-tokend_session=xyz", true), None);
        assert_eq!(find_cookie(b"", true), None);
    }

    /// A session is found while both lifetimes last, its idle one restarted
    /// by each use; ending it, or a not-before mark at or after the sign-in
    /// (logout everywhere, password change, disable), ends it for good.
    #[test]
    fn sessions_live_until_a_lifetime_or_a_mark_ends_them() {
        on_both_drivers(|_| async {
            let prefix = random_prefix();
            let _g = Cleanup(prefix.clone());
            let s = store(&prefix).await;
            let now = unix_now();
            let mut b = BlockingRedis::connect(&shared_target(), Duration::from_secs(2)).unwrap();

            let id = s.create(&alice(now), LIFE, now).await.unwrap();
            assert_eq!(id.len(), 43);
            assert!(!s.record_key(&id).contains(&id));
            assert_eq!(s.touch(&id, LIFE, now).await.unwrap(), Some(alice(now)));
            let ttl = b.query(::redis::cmd("TTL").arg(s.record_key(&id))).unwrap();
            assert!((3590..=3600).contains(&ttl.as_int().unwrap()), "{ttl:?}");
            // Near the absolute end, the TTL is what is left of it.
            let late = now + 86400 - 100;
            assert!(s.touch(&id, LIFE, late).await.unwrap().is_some());
            let ttl = b.query(::redis::cmd("TTL").arg(s.record_key(&id))).unwrap();
            assert!(ttl.as_int().unwrap() <= 100, "{ttl:?}");
            // Past it: gone.
            assert_eq!(s.touch(&id, LIFE, now + 86400).await.unwrap(), None);
            assert_eq!(s.touch(&id, LIFE, now).await.unwrap(), None);

            // The user's not-before mark at the sign-in's second ends it.
            let id = s.create(&alice(now), LIFE, now).await.unwrap();
            b.query(
                ::redis::cmd("SET")
                    .arg(format!("{prefix}nbf:user-1"))
                    .arg(now - 1),
            )
            .unwrap();
            assert!(s.touch(&id, LIFE, now).await.unwrap().is_some());
            b.query(
                ::redis::cmd("SET")
                    .arg(format!("{prefix}nbf:user-1"))
                    .arg(now),
            )
            .unwrap();
            assert_eq!(s.touch(&id, LIFE, now).await.unwrap(), None);
            // A sign-in after the mark starts a session that lives.
            let id = s.create(&alice(now + 1), LIFE, now + 1).await.unwrap();
            assert!(s.touch(&id, LIFE, now + 1).await.unwrap().is_some());
            s.end(&id).await.unwrap();
            assert_eq!(s.touch(&id, LIFE, now + 1).await.unwrap(), None);
            assert_eq!(s.touch("not a session", LIFE, now).await.unwrap(), None);
        });
    }

    /// A record written without the KEK, or copied under another cookie's
    /// key, is no session.
    #[test]
    fn a_tampered_session_is_ignored() {
        on_both_drivers(|_| async {
            let prefix = random_prefix();
            let _g = Cleanup(prefix.clone());
            let s = store(&prefix).await;
            let now = unix_now();
            let mut b = BlockingRedis::connect(&shared_target(), Duration::from_secs(2)).unwrap();
            let real = s.create(&alice(now), LIFE, now).await.unwrap();
            let forged = URL_SAFE_NO_PAD.encode([1u8; 32]);
            let fields = b
                .query(::redis::cmd("HGETALL").arg(s.record_key(&real)))
                .unwrap();
            let fields: Vec<String> = fields
                .into_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect();
            b.query(::redis::cmd("HSET").arg(s.record_key(&forged)).arg(fields))
                .unwrap();
            assert_eq!(s.touch(&forged, LIFE, now).await.unwrap(), None);
            b.query(
                ::redis::cmd("HSET")
                    .arg(s.record_key(&real))
                    .arg("sub")
                    .arg("admin-id"),
            )
            .unwrap();
            assert_eq!(s.touch(&real, LIFE, now).await.unwrap(), None);
        });
    }
}
