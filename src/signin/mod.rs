//! Pending authorization requests (issue #16): what `GET /authorize`
//! checked, kept in Redis while the user fills in the sign-in page, and
//! taken back, once, when the form comes back to `POST /login`.
//!
//! The page carries the request's id and a CSRF token, both 256-bit random
//! values; the token is compared in constant time with the one stored here
//! before any password is looked at. A request lives
//! [`PENDING_TTL_SECS`] (the time a user may take to sign in) and is taken
//! with `GETDEL` when the sign-in succeeds, so a form cannot be replayed into
//! a second code.
//!
//! # Key layout (under the configured prefix)
//!
//! | key | type | value | expires |
//! |---|---|---|---|
//! | `{prefix}az:{id}` | string | the [`PendingAuthorization`] as JSON | [`PENDING_TTL_SECS`] after `GET /authorize` |
//!
//! What the record says is checked again when it is taken (the redirect
//! URI is still registered, the scope still allowed): someone who can write
//! to Redis cannot send a code to a URI of their own.
//!
//! Owns: pending authorization requests in Redis, their ids and CSRF
//! tokens. Never imports: `handlers`, `http`, `net`, `state`, `access`,
//! `cores`, `store` or another service; of the crate it uses the Redis
//! client.

use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::redis::{RedisConn, RedisError};

/// How long a sign-in page stays usable, seconds: 10 minutes to type a
/// username and password (and find them). Past it the form answers "this
/// sign-in request has expired" and the user starts again from the app.
pub const PENDING_TTL_SECS: u64 = 600;

/// Key infix of a pending request: `{prefix}az:{id}`.
pub const PENDING_KEY_INFIX: &str = "az:";

/// An authorization request that passed every check of `GET /authorize`,
/// waiting for the user to sign in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub client_id: String,
    /// The registered redirect URI the request named.
    pub redirect_uri: String,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The scope the client asked for (space-separated), within the
    /// client's; narrowed to the user's at sign-in.
    pub scope: String,
    /// The client's `state`, returned unchanged.
    pub state: Option<String>,
    /// The OpenID Connect `nonce`.
    pub nonce: Option<String>,
    /// The CSRF token the page carries (base64url of 32 random bytes).
    pub csrf: String,
}

/// Pending authorization requests on one core's Redis connection.
pub struct PendingStore {
    conn: Rc<RedisConn>,
    prefix: String,
}

/// A new random identifier: 32 bytes, base64url without padding (43
/// characters).
pub fn random_id() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Whether `id` has the shape [`random_id`] gives (checked before it goes
/// into a Redis key).
pub fn is_well_formed_id(id: &str) -> bool {
    id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether the presented CSRF token is the expected one, in constant time.
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

impl PendingStore {
    /// Pending requests under `prefix` (`redis.prefix`).
    pub fn new(conn: Rc<RedisConn>, prefix: String) -> PendingStore {
        PendingStore { conn, prefix }
    }

    fn key(&self, id: &str) -> String {
        [self.prefix.as_str(), PENDING_KEY_INFIX, id].concat()
    }

    /// Stores `pending` for [`PENDING_TTL_SECS`]; returns its id. One round
    /// trip.
    pub async fn put(&self, pending: &PendingAuthorization) -> Result<String, RedisError> {
        let id = random_id();
        let key = self.key(&id);
        let json = serde_json::to_vec(pending).map_err(|_| RedisError::Protocol)?;
        self.conn
            .query_with(|w| {
                w.command(5)
                    .arg(b"SET")
                    .arg(key.as_bytes())
                    .arg(&json)
                    .arg(b"EX")
                    .arg_u64(PENDING_TTL_SECS);
            })
            .await?;
        Ok(id)
    }

    /// The pending request `id`, if it is still there; leaves it in place
    /// (a failed sign-in shows the form again). One round trip.
    pub async fn get(&self, id: &str) -> Result<Option<PendingAuthorization>, RedisError> {
        self.read(b"GET", id).await
    }

    /// Takes the pending request `id` away (`GETDEL`): of two racing
    /// sign-ins with the same form, one gets it. One round trip.
    pub async fn take(&self, id: &str) -> Result<Option<PendingAuthorization>, RedisError> {
        self.read(b"GETDEL", id).await
    }

    async fn read(
        &self,
        command: &[u8],
        id: &str,
    ) -> Result<Option<PendingAuthorization>, RedisError> {
        if !is_well_formed_id(id) {
            return Ok(None);
        }
        let key = self.key(id);
        let reply = self
            .conn
            .query_with(|w| {
                w.command(2).arg(command).arg(key.as_bytes());
            })
            .await?;
        match reply.as_bytes() {
            None => Ok(None),
            // A record tokend did not write is as good as none.
            Some(json) => Ok(serde_json::from_slice(json).ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::redis::testutil::*;

    fn pending() -> PendingAuthorization {
        PendingAuthorization {
            client_id: "web".into(),
            redirect_uri: "https://app.example/cb".into(),
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            scope: "openid".into(),
            state: Some("xyz".into()),
            nonce: None,
            csrf: random_id(),
        }
    }

    #[test]
    fn ids_and_csrf() {
        let id = random_id();
        assert!(is_well_formed_id(&id), "{id}");
        assert!(!is_well_formed_id(&id[1..]));
        assert!(!is_well_formed_id(&format!("{}:", &id[1..])));
        assert!(csrf_matches(&id, &id.clone()));
        assert!(!csrf_matches(&id, &random_id()));
        assert!(!csrf_matches(&id, ""));
        assert!(!csrf_matches(&id, &id[1..]));
    }

    /// Put, read (left in place), take (gone after).
    #[test]
    fn put_get_take() {
        on_both_drivers(|_| async {
            let prefix = random_prefix();
            let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
            assert!(conn.wait_connected(Duration::from_secs(5)).await);
            let s = PendingStore::new(conn, prefix.clone());
            let p = pending();
            let id = s.put(&p).await.unwrap();
            assert_eq!(s.get(&id).await.unwrap(), Some(p.clone()));
            assert_eq!(s.get(&id).await.unwrap(), Some(p.clone()));
            assert_eq!(s.take(&id).await.unwrap(), Some(p));
            assert_eq!(s.take(&id).await.unwrap(), None);
            assert_eq!(s.get(&id).await.unwrap(), None);
            assert_eq!(s.get("not an id").await.unwrap(), None);
            cleanup(&prefix);
        });
    }
}
