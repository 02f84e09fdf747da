//! The `signing_keys` table: the first key, rotation, listing, pruning, and
//! loading every key that still verifies into a [`KeyMaterial`] snapshot,
//! checking each row (its `kid`, its JWK, its sealed private key).
//!
//! Blocking: call from the blocking pool or the control thread, never from
//! a core's event loop. Every writer serialises on one advisory lock.
//! Imports only `config` (algorithms) of the crate; never `http`,
//! `handlers`, `state` or `cores`.

use std::fmt;
use std::time::Duration;

use postgres::GenericClient;
use serde::Serialize;

use super::jwk::{
    alg_name, generate, parse_alg, public_jwk_from_pkcs8, signing_der, GeneratedKey, PublicJwk,
};
use super::kek::Kek;
use super::snapshot::{KeyEntry, KeyMaterial};
use super::KeyError;
use crate::config::Algorithm;

/// `pg_advisory_xact_lock` key that serialises every writer of
/// `signing_keys` (initial key, rotation, pruning) across processes. The
/// value is the ASCII of "tokendky"; any constant works as long as nothing
/// else in the database uses it.
const KEYS_LOCK: i64 = 0x746f_6b65_6e64_6b79;

/// Where a key is in its life, at the time of [`list`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published in JWKS, does not sign yet.
    Pending,
    /// Signs (or is the newest key whose time has come).
    Active,
    /// A newer key signs; this one still verifies until pruned.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `tokend keys list`. Times are unix seconds.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: Algorithm,
    pub created_at: i64,
    pub signs_from: i64,
    pub retired_at: Option<i64>,
    /// Set by [`prune`]: when the key stops verifying and is deleted.
    pub verify_until: Option<i64>,
    pub state: KeyState,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Inserts a generated key that signs from `now() + publish_ahead`, and
/// recomputes every key's `retired_at` as the `signs_from` of the next key.
fn insert_key(
    tx: &mut postgres::Transaction<'_>,
    kek: &Kek,
    key: &GeneratedKey,
    publish_ahead: Duration,
) -> Result<(), KeyError> {
    let jwk = serde_json::to_string(key.public_jwk()).map_err(|_| KeyError::BadKey {
        kid: key.kid().to_string(),
        reason: "cannot render JWK",
    })?;
    let sealed = kek.seal(key.kid(), key.pkcs8().expose())?;
    tx.execute(
        "INSERT INTO signing_keys (kid, algorithm, public_jwk, sealed_private_key, signs_from) \
         VALUES ($1, $2, $3::text::jsonb, $4, now() + make_interval(secs => $5))",
        &[
            &key.kid(),
            &alg_name(key.alg()),
            &jwk,
            &sealed,
            &secs(publish_ahead),
        ],
    )?;
    tx.execute(
        "UPDATE signing_keys k SET retired_at = \
           (SELECT min(o.signs_from) FROM signing_keys o WHERE o.signs_from > k.signs_from)",
        &[],
    )?;
    Ok(())
}

/// Creates a key that signs at once when the table has none; returns its
/// `kid`, or `None` when a key already existed. Safe when several processes
/// start at once: they serialise on a transaction-scoped advisory lock.
pub fn ensure_initial_key<C: GenericClient>(
    client: &mut C,
    kek: &Kek,
    alg: Algorithm,
) -> Result<Option<String>, KeyError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEYS_LOCK])?;
    let count: i64 = tx
        .query_one("SELECT count(*) FROM signing_keys", &[])?
        .get(0);
    if count > 0 {
        tx.commit()?;
        return Ok(None);
    }
    let key = generate(alg)?;
    insert_key(&mut tx, kek, &key, Duration::ZERO)?;
    tx.commit()?;
    tracing::info!(
        kid = key.kid(),
        alg = alg_name(alg),
        "created the first signing key"
    );
    Ok(Some(key.kid().to_string()))
}

/// Adds a key that is published now and signs from `now + publish_ahead`;
/// the current key stops signing at that moment. Returns the new `kid`.
///
/// `publish_ahead` should exceed the key-set reload interval of every node
/// (plus clock skew), so every node has the public key before the first
/// token signed with it arrives.
pub fn rotate<C: GenericClient>(
    client: &mut C,
    kek: &Kek,
    alg: Algorithm,
    publish_ahead: Duration,
) -> Result<String, KeyError> {
    let key = generate(alg)?;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEYS_LOCK])?;
    insert_key(&mut tx, kek, &key, publish_ahead)?;
    tx.commit()?;
    tracing::info!(
        kid = key.kid(),
        alg = alg_name(alg),
        "rotated in a signing key"
    );
    Ok(key.kid().to_string())
}

/// Every key, oldest `signs_from` first, with its state at the database's
/// `now()`.
pub fn list<C: GenericClient>(client: &mut C) -> Result<Vec<KeyInfo>, KeyError> {
    let rows = client.query(
        "SELECT kid, algorithm, \
           floor(extract(epoch FROM created_at))::int8, \
           ceil(extract(epoch FROM signs_from))::int8, \
           ceil(extract(epoch FROM retired_at))::int8, \
           ceil(extract(epoch FROM verify_until))::int8, \
           CASE WHEN signs_from > now() THEN 'pending' \
                WHEN retired_at IS NOT NULL AND retired_at <= now() THEN 'retired' \
                ELSE 'active' END \
         FROM signing_keys ORDER BY signs_from, kid",
        &[],
    )?;
    rows.iter()
        .map(|row| {
            let kid: String = row.get(0);
            let alg_text: &str = row.get(1);
            let alg = parse_alg(alg_text).ok_or_else(|| KeyError::BadKey {
                kid: kid.clone(),
                reason: "unknown algorithm",
            })?;
            let state = match row.get::<_, &str>(6) {
                "pending" => KeyState::Pending,
                "retired" => KeyState::Retired,
                _ => KeyState::Active,
            };
            Ok(KeyInfo {
                alg,
                created_at: row.get(2),
                signs_from: row.get(3),
                retired_at: row.get(4),
                verify_until: row.get(5),
                state,
                kid,
            })
        })
        .collect()
}

/// Deletes the keys that stopped signing more than `access_ttl` ago (every
/// token they signed has expired) and returns their `kid`s; stamps
/// `verify_until` on the retired keys that remain.
///
/// `access_ttl` must be the longest access-token lifetime in use (per-client
/// overrides included) plus the verification leeway, or tokens still valid
/// would stop verifying.
pub fn prune<C: GenericClient>(
    client: &mut C,
    access_ttl: Duration,
) -> Result<Vec<String>, KeyError> {
    let ttl = secs(access_ttl);
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEYS_LOCK])?;
    tx.execute(
        "UPDATE signing_keys SET verify_until = retired_at + make_interval(secs => $1) \
         WHERE retired_at IS NOT NULL",
        &[&ttl],
    )?;
    let rows = tx.query(
        "DELETE FROM signing_keys \
         WHERE retired_at IS NOT NULL AND retired_at + make_interval(secs => $1) < now() \
         RETURNING kid",
        &[&ttl],
    )?;
    tx.commit()?;
    let kids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for kid in &kids {
        tracing::info!(kid = kid.as_str(), "pruned a signing key");
    }
    Ok(kids)
}

/// Loads every key that still verifies into a snapshot. Private keys are
/// unsealed only for keys that may still sign (not retired at the
/// database's `now()`); each row is checked: its `kid` is the thumbprint of
/// its JWK, and its private key matches its JWK.
pub fn load<C: GenericClient>(client: &mut C, kek: &Kek) -> Result<KeyMaterial, KeyError> {
    let rows = client.query(
        "SELECT kid, algorithm, public_jwk::text, sealed_private_key, \
           ceil(extract(epoch FROM signs_from))::int8, \
           ceil(extract(epoch FROM retired_at))::int8, \
           (retired_at IS NULL OR retired_at > now()) \
         FROM signing_keys \
         WHERE verify_until IS NULL OR verify_until > now() \
         ORDER BY signs_from, kid",
        &[],
    )?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        let kid: String = row.get(0);
        let bad = |reason| KeyError::BadKey {
            kid: kid.clone(),
            reason,
        };
        let alg = parse_alg(row.get(1)).ok_or_else(|| bad("unknown algorithm"))?;
        let jwk: PublicJwk =
            serde_json::from_str(row.get(2)).map_err(|_| bad("public_jwk is not a public JWK"))?;
        if jwk.kid != kid || jwk.thumbprint().as_deref() != Some(kid.as_str()) {
            return Err(bad("kid is not the RFC 7638 thumbprint of public_jwk"));
        }
        if jwk.alg != alg_name(alg) || jwk.use_ != "sig" {
            return Err(bad("public_jwk alg/use do not match the row"));
        }
        let may_sign: bool = row.get(6);
        let private = if may_sign {
            let pkcs8 = kek.unseal(&kid, row.get(3))?;
            let derived = public_jwk_from_pkcs8(alg, pkcs8.expose())
                .ok_or_else(|| bad("private key does not parse"))?;
            if !derived.same_key_as(&jwk) {
                return Err(bad("private key does not match public_jwk"));
            }
            Some(signing_der(alg, &pkcs8).ok_or_else(|| bad("private key does not parse"))?)
        } else {
            None
        };
        let signs_from: i64 = row.get(4);
        let retired_at: Option<i64> = row.get(5);
        entries.push(KeyEntry {
            alg,
            signs_from: u64::try_from(signs_from).unwrap_or(0),
            retired_at: retired_at.map(|t| u64::try_from(t).unwrap_or(0)),
            jwk,
            private,
            kid,
        });
    }
    KeyMaterial::from_entries(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::unix_now;
    use crate::testing::TestDb;
    use crate::tokens::keys::CoreKeys;

    fn sign_and_verify(core: &CoreKeys, now: u64) -> Result<(), crate::tokens::TokenError> {
        let claims = crate::tokens::AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp: now + 60,
            iat: now,
            jti: crate::tokens::new_jti(),
            client_id: "c".into(),
            scope: String::new(),
            username: None,
        };
        let token = crate::tokens::sign_access(core, &claims, now).unwrap();
        let expect = crate::tokens::Expectations::new("i", "a", 0);
        crate::tokens::verify(core, &token, &expect, now).map(|_| ())
    }

    #[test]
    fn pg_key_lifecycle() {
        let db = TestDb::new();
        let mut c = db.client();
        let kek = Kek::generate().unwrap();

        // The first call creates a key, the second does nothing.
        let a = ensure_initial_key(&mut c, &kek, Algorithm::EdDSA)
            .unwrap()
            .unwrap();
        assert_eq!(
            ensure_initial_key(&mut c, &kek, Algorithm::EdDSA).unwrap(),
            None
        );
        let keys = list(&mut c).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (keys[0].kid.as_str(), keys[0].state),
            (a.as_str(), KeyState::Active)
        );

        // The sealed row holds no part of the clear PKCS#8.
        let m = load(&mut c, &kek).unwrap();
        let clear = m.keys()[0].private.as_ref().unwrap().expose().to_vec();
        let sealed: Vec<u8> = c
            .query_one("SELECT sealed_private_key FROM signing_keys", &[])
            .unwrap()
            .get(0);
        assert!(!sealed
            .windows(16)
            .any(|w| clear.windows(16).any(|c| c == w)));
        let jwk_text: String = c
            .query_one("SELECT public_jwk::text FROM signing_keys", &[])
            .unwrap()
            .get(0);
        assert!(!jwk_text.contains("\"d\""));

        // Rotate with an hour of publication ahead: pending, A still signs.
        let now = unix_now();
        let b = rotate(&mut c, &kek, Algorithm::ES256, Duration::from_secs(3600)).unwrap();
        let keys = list(&mut c).unwrap();
        let states: Vec<_> = keys.iter().map(|k| (k.kid.as_str(), k.state)).collect();
        assert_eq!(
            states,
            [
                (a.as_str(), KeyState::Active),
                (b.as_str(), KeyState::Pending)
            ]
        );
        assert_eq!(keys[0].retired_at, Some(keys[1].signs_from));
        let m = load(&mut c, &kek).unwrap();
        assert_eq!(m.signing_kid_at(now), Some(a.as_str()));
        assert_eq!(m.signing_kid_at(now + 3700), Some(b.as_str()));
        let jwks: serde_json::Value = serde_json::from_slice(m.jwks()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        let core = CoreKeys::from_material(&m).unwrap();
        sign_and_verify(&core, now).unwrap();
        sign_and_verify(&core, now + 3700).unwrap();
        let gen_ab = m.generation();
        assert_eq!(load(&mut c, &kek).unwrap().generation(), gen_ab);

        // Rotate an RSA key in at once: A retires, C signs, B stays pending.
        let cc = rotate(&mut c, &kek, Algorithm::RS256, Duration::ZERO).unwrap();
        let keys = list(&mut c).unwrap();
        let states: Vec<_> = keys.iter().map(|k| (k.kid.as_str(), k.state)).collect();
        assert_eq!(
            states,
            [
                (a.as_str(), KeyState::Retired),
                (cc.as_str(), KeyState::Active),
                (b.as_str(), KeyState::Pending)
            ]
        );
        let m = load(&mut c, &kek).unwrap();
        assert_ne!(m.generation(), gen_ab);
        // Found by kid, not by position: A and C may share a signs_from
        // second, and then the order is the kids' (this flaked as `keys()[0]`).
        assert!(
            !m.keys().iter().find(|k| k.kid == a).unwrap().can_sign(),
            "a retired key is loaded without its private key"
        );
        let now = unix_now();
        assert_eq!(m.signing_kid_at(now + 1), Some(cc.as_str()));
        let core = CoreKeys::from_material(&m).unwrap();
        sign_and_verify(&core, now + 1).unwrap();

        // Prune: nothing while A's tokens may live; A once they cannot.
        assert!(prune(&mut c, Duration::from_secs(3600)).unwrap().is_empty());
        let keys = list(&mut c).unwrap();
        assert!(keys[0].verify_until.is_some());
        assert_eq!(prune(&mut c, Duration::ZERO).unwrap(), vec![a.clone()]);
        let keys = list(&mut c).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(load(&mut c, &kek)
            .unwrap()
            .keys()
            .iter()
            .all(|k| k.kid != a));

        // A wrong KEK does not open the keys.
        let wrong = Kek::generate().unwrap();
        assert!(matches!(load(&mut c, &wrong), Err(KeyError::Unseal { .. })));

        // A sealed key moved onto another row does not open (AAD = kid).
        c.execute(
            "UPDATE signing_keys SET sealed_private_key = \
               (SELECT sealed_private_key FROM signing_keys WHERE kid = $1) WHERE kid = $2",
            &[&b, &cc],
        )
        .unwrap();
        let err = load(&mut c, &kek).unwrap_err();
        assert!(
            matches!(&err, KeyError::Unseal { kid } if *kid == cc),
            "{err}"
        );
        // The error names the kid, not key bytes.
        assert!(err.to_string().contains(&cc));
    }

    #[test]
    fn pg_concurrent_ensure_creates_one_key() {
        let db = TestDb::new();
        let kek = Kek::generate().unwrap();
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<Option<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let mut c = db.client();
                    let (kek, barrier) = (&kek, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        ensure_initial_key(&mut c, kek, Algorithm::EdDSA).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|r| r.is_some()).count(), 1);
        assert_eq!(list(&mut db.client()).unwrap().len(), 1);
    }

    #[test]
    fn pg_load_refuses_a_tampered_public_key() {
        let db = TestDb::new();
        let mut c = db.client();
        let kek = Kek::generate().unwrap();
        ensure_initial_key(&mut c, &kek, Algorithm::EdDSA).unwrap();
        let other = generate(Algorithm::EdDSA).unwrap();
        // Swap in another public key under the same kid.
        c.execute(
            "UPDATE signing_keys SET public_jwk = jsonb_set(public_jwk, '{x}', to_jsonb($1::text))",
            &[&other.public_jwk().x.clone().unwrap()],
        )
        .unwrap();
        let err = load(&mut c, &kek).unwrap_err();
        assert!(matches!(err, KeyError::BadKey { .. }), "{err}");
        // An empty table is an error, not an empty key set.
        c.execute("DELETE FROM signing_keys", &[]).unwrap();
        assert!(matches!(load(&mut c, &kek), Err(KeyError::NoKeys)));
    }
}
