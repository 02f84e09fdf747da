//! Authorization codes (RFC 6749 §4.1, RFC 7636, issue #16): issued by
//! `GET /authorize` after the user signed in, redeemed once at
//! `/oauth/token` with `grant_type=authorization_code`.
//!
//! A code is opaque: `tokend_ac_` followed by 32 random bytes (256 bits) in
//! base64url without padding, 53 characters. Like refresh tokens, Redis
//! sees only its SHA-256, so a dump of Redis gives nobody a usable code.
//!
//! # Key layout (under the configured prefix)
//!
//! | key | type | fields | expires |
//! |---|---|---|---|
//! | `{prefix}ac:{sha256 hex}` | hash | `g` the [`CodeGrant`] as JSON, `mac` its integrity tag | `oauth.code_ttl` (60 s) after issue |
//! | `{prefix}acu:{sha256 hex}` | hash | `at` redeemed at, `jti` / `exp` the access token issued, `fam` the refresh family issued, `rev` set by a second redemption | the marker TTL the caller gives (the client's access-token lifetime) |
//!
//! # Single use (RFC 6749 §4.1.2)
//!
//! Redemption is one Lua script: the record is deleted and the "used" marker
//! written in the same step, so of two racing redemptions exactly one gets
//! the grant. Once the tokens are issued, [`CodeStore::bind_issued`] writes
//! their `jti` and refresh family to the marker. A second redemption finds
//! the marker: it is refused, and what was issued from the code is revoked
//! (the family in the script itself; the access token by the caller, which
//! owns revocations, from the [`CodeError::Reused`] it gets). A second
//! redemption that lands between the first one and its `bind_issued` flags
//! the marker, and `bind_issued` answers [`Bound::Revoked`]: the first
//! redeemer revokes what it just issued.
//!
//! The refresh family is named by its key, `{prefix}rf:{family}` (field
//! `rev`, as `refresh/scripts/revoke.lua` writes it): a key name, not an
//! import of `refresh`.
//!
//! # Integrity
//!
//! The grant is tagged with HMAC-SHA256 under a key derived from the KEK
//! ([`CodeMac::PURPOSE`]), like refresh records (issue #13): someone who can
//! write to Redis but does not hold the KEK cannot mint a code for any user
//! or scope. A record whose tag does not verify is refused
//! ([`CodeError::Tampered`]).
//!
//! Owns: codes in Redis, their format, key names and scripts, and the PKCE
//! S256 check ([`pkce_s256_matches`]). Never imports: `handlers`, `http`,
//! `net`, `state`, `access`, `cores`, `store`, or any other service; of the
//! crate it uses the Redis client and the clock.

use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::redis::{RedisConn, RedisError, Reply, Script, Writes};

/// Prefix of every authorization code, so secret scanners can spot them.
pub const CODE_PREFIX: &str = "tokend_ac_";
/// Key infix of a code's record: `{prefix}ac:{sha256 hex}`.
pub const CODE_KEY_INFIX: &str = "ac:";
/// Key infix of a redeemed code's marker: `{prefix}acu:{sha256 hex}`.
pub const USED_KEY_INFIX: &str = "acu:";

/// Source: `scripts/issue.lua`.
const ISSUE_LUA: &str = include_str!("scripts/issue.lua");
/// Source: `scripts/redeem.lua`, whose header is the full contract.
const REDEEM_LUA: &str = include_str!("scripts/redeem.lua");
/// Source: `scripts/bind.lua`, whose header is the full contract.
const BIND_LUA: &str = include_str!("scripts/bind.lua");

/// What a code stands for: everything the token endpoint needs to check
/// the redemption and issue the tokens, fixed at `/authorize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    /// The client the code was issued to; only it may redeem it.
    pub client_id: String,
    /// The `redirect_uri` of the authorization request; the token request
    /// must repeat it exactly (RFC 6749 §4.1.3).
    pub redirect_uri: String,
    /// The PKCE `code_challenge` (S256, RFC 7636 §4.2).
    pub code_challenge: String,
    /// The granted scope, space-separated.
    pub scope: String,
    /// The OpenID Connect `nonce`, repeated in the id_token.
    pub nonce: Option<String>,
    /// The user's id.
    pub sub: String,
    pub username: String,
    /// When the user last typed their password (unix seconds): the
    /// id_token's `auth_time`.
    pub auth_time: u64,
    /// The browser session the code came from, if any.
    pub session: Option<String>,
}

/// Why a code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Occurs when the code is malformed, unknown or expired. RFC 6749
    /// `invalid_grant`.
    #[error("the authorization code is invalid or expired")]
    Invalid,
    /// Occurs when the code was already redeemed: the refresh family issued
    /// from it is now revoked in Redis; the caller revokes the access token
    /// (`jti` until `access_exp`) and records both durably. `invalid_grant`.
    #[error("the authorization code was already used")]
    Reused {
        jti: Option<String>,
        access_exp: Option<u64>,
        family: Option<String>,
    },
    /// Occurs when the record's integrity tag is missing or wrong (written
    /// without the KEK). `invalid_grant`; logged by the store.
    #[error("an authorization code record failed its integrity check")]
    Tampered,
    /// Occurs when Redis could not answer: fail closed (503).
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// What [`CodeStore::bind_issued`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The tokens are bound to the code: a second redemption revokes them.
    Ok,
    /// The code was presented again meanwhile: the family is revoked; the
    /// caller revokes the access token it issued.
    Revoked,
}

/// The integrity tag of code records: HMAC-SHA256 under a key derived from
/// the KEK, lowercase hex.
pub struct CodeMac {
    key: aws_lc_rs::hmac::Key,
}

impl CodeMac {
    /// The HKDF purpose of the key: `Kek::derive(CodeMac::PURPOSE)`.
    pub const PURPOSE: &'static str = "tokend authorization-code mac v1";

    /// Tags under `key` (32 bytes, derived from the KEK).
    pub fn new(key: &[u8; 32]) -> CodeMac {
        CodeMac {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key),
        }
    }

    fn input(record_key: &str, grant_json: &str) -> Vec<u8> {
        // The record's key is covered too, so a valid record cannot be
        // copied under another code's key.
        let mut out = Vec::with_capacity(16 + record_key.len() + grant_json.len());
        out.extend_from_slice(b"tokend-ac-v1");
        out.extend_from_slice(&(record_key.len() as u32).to_be_bytes());
        out.extend_from_slice(record_key.as_bytes());
        out.extend_from_slice(grant_json.as_bytes());
        out
    }

    fn tag(&self, record_key: &str, grant_json: &str) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.key, &Self::input(record_key, grant_json));
        hex::encode(tag.as_ref())
    }

    fn verify(&self, record_key: &str, grant_json: &str, tag: &str) -> bool {
        let Ok(bytes) = hex::decode(tag) else {
            return false;
        };
        aws_lc_rs::hmac::verify(&self.key, &Self::input(record_key, grant_json), &bytes).is_ok()
    }
}

/// Authorization codes on one core's Redis connection.
pub struct CodeStore {
    conn: Rc<RedisConn>,
    /// Where redemptions are written: `conn`, or a connection whose writes
    /// replicas acknowledge (`redis.min_replicas_acked`), so that a failover
    /// cannot make a redeemed code redeemable again.
    writes: Writes,
    prefix: String,
    mac: CodeMac,
    issue: Script,
    redeem: Script,
    bind: Script,
}

impl CodeStore {
    /// Codes under `prefix` (`redis.prefix`), tagged with `mac`.
    pub fn new(conn: Rc<RedisConn>, prefix: String, mac: CodeMac) -> CodeStore {
        CodeStore {
            writes: Writes::unacked(conn.clone()),
            conn,
            prefix,
            mac,
            issue: Script::new(ISSUE_LUA),
            redeem: Script::new(REDEEM_LUA),
            bind: Script::new(BIND_LUA),
        }
    }

    /// This store, with redemptions written through `writes`.
    pub fn with_writes(self, writes: Writes) -> CodeStore {
        CodeStore { writes, ..self }
    }

    /// `{prefix}ac:{sha256 hex of code}`. Never log the code itself.
    pub fn record_key(&self, code: &str) -> String {
        [self.prefix.as_str(), CODE_KEY_INFIX, &sha256_hex(code)].concat()
    }

    /// `{prefix}acu:{sha256 hex of code}`.
    pub fn used_key(&self, code: &str) -> String {
        [self.prefix.as_str(), USED_KEY_INFIX, &sha256_hex(code)].concat()
    }

    /// Stores a new code for `grant`, living `ttl_secs` (at least 1).
    /// Returns the code, to send in the redirect. One round trip.
    pub async fn issue(&self, grant: &CodeGrant, ttl_secs: u64) -> Result<String, RedisError> {
        let code = new_code();
        let key = self.record_key(&code);
        // Serialising a struct of strings and integers cannot fail.
        let json = serde_json::to_string(grant).map_err(|_| RedisError::Protocol)?;
        let tag = self.mac.tag(&key, &json);
        let ttl = ttl_secs.max(1).to_string();
        self.writes
            .eval(&self.issue, &[key.as_str()], &[json.as_str(), &tag, &ttl])
            .await?;
        Ok(code)
    }

    /// Redeems `code`, once: the grant, or why not (see the module
    /// documentation). The "used" marker lives `marker_ttl_secs`: as long
    /// as an access token issued from the code can live, so that a second
    /// redemption can still revoke it. One round trip.
    pub async fn redeem(
        &self,
        code: &str,
        marker_ttl_secs: u64,
        now: u64,
    ) -> Result<CodeGrant, CodeError> {
        if !is_well_formed(code) {
            return Err(CodeError::Invalid);
        }
        let key = self.record_key(code);
        let used = self.used_key(code);
        let ttl = marker_ttl_secs.max(1).to_string();
        let now_s = now.to_string();
        let reply = self
            .writes
            .eval(
                &self.redeem,
                &[key.as_str(), used.as_str()],
                &[ttl.as_str(), &now_s, &self.prefix],
            )
            .await?;
        let items = reply.as_array().ok_or(RedisError::Protocol)?;
        match items.first().and_then(Reply::as_str) {
            Some("ok") => {
                let [_, json, tag] = items else {
                    return Err(RedisError::Protocol.into());
                };
                let json = json.as_str().ok_or(RedisError::Protocol)?;
                let tagged = tag
                    .as_str()
                    .is_some_and(|tag| self.mac.verify(&key, json, tag));
                if !tagged {
                    tracing::warn!(
                        record = &key[self.prefix.len()..],
                        "authorization code record failed its integrity check (written without \
                         the KEK: tampering with Redis?); refused"
                    );
                    return Err(CodeError::Tampered);
                }
                serde_json::from_str(json).map_err(|_| CodeError::Tampered)
            }
            Some("reused") => {
                let [_, jti, exp, fam] = items else {
                    return Err(RedisError::Protocol.into());
                };
                Err(CodeError::Reused {
                    jti: jti.as_str().map(str::to_owned),
                    access_exp: exp.as_str().and_then(|s| s.parse().ok()),
                    family: fam.as_str().map(str::to_owned),
                })
            }
            Some("invalid") => Err(CodeError::Invalid),
            _ => Err(RedisError::Protocol.into()),
        }
    }

    /// Binds the access token (`jti`, expiring at `access_exp`) and the
    /// refresh family (hex id) issued from `code` to its "used" marker.
    pub async fn bind_issued(
        &self,
        code: &str,
        jti: &str,
        access_exp: u64,
        family: Option<&str>,
        now: u64,
    ) -> Result<Bound, RedisError> {
        let used = self.used_key(code);
        let exp = access_exp.to_string();
        let now_s = now.to_string();
        let reply = self
            .writes
            .eval(
                &self.bind,
                &[used.as_str()],
                &[jti, &exp, family.unwrap_or(""), &self.prefix, &now_s],
            )
            .await?;
        match reply.as_str() {
            Some("ok") => Ok(Bound::Ok),
            Some("revoked") => Ok(Bound::Revoked),
            _ => Err(RedisError::Protocol),
        }
    }

    /// The connection this uses (tests).
    pub fn conn(&self) -> &Rc<RedisConn> {
        &self.conn
    }
}

/// A new code: [`CODE_PREFIX`] and 256 random bits, base64url.
fn new_code() -> String {
    let bytes: [u8; 32] = rand::random();
    let mut s = String::with_capacity(53);
    s.push_str(CODE_PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut s);
    s
}

/// Whether `code` has the shape of a code tokend issues (checked before
/// hashing anything an attacker sent).
fn is_well_formed(code: &str) -> bool {
    code.len() == 53
        && code.starts_with(CODE_PREFIX)
        && code[CODE_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Whether `s` is 43 to 128 characters of RFC 7636's unreserved alphabet
/// (`[A-Za-z0-9-._~]`): the shape of a `code_verifier` (§4.1).
pub fn is_valid_verifier(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether `s` has the shape of an S256 `code_challenge`: the base64url
/// (no padding) of a SHA-256, 43 characters (RFC 7636 §4.2).
pub fn is_valid_s256_challenge(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 §4.6: whether `BASE64URL(SHA256(verifier)) == challenge`,
/// compared in constant time. A malformed verifier never matches.
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    use subtle::ConstantTimeEq;
    if !is_valid_verifier(verifier) {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

#[cfg(test)]
mod tests;
