//! The per-core verified-token cache: a bearer token seen before is
//! answered with one hash lookup and one string comparison, without any
//! base64, JSON or signature work.
//!
//! Owned by one core (`&mut self`, `Rc`): no locks, no atomics. Only
//! successful verifications may be inserted — that is the caller's job;
//! failures are never cached, so a token that failed because a key was
//! missing succeeds once the key set is reloaded. The cache must be
//! [`clear`](VerifiedCache::clear)ed when the core's key set changes
//! (a removed key must stop verifying at once).
//!
//! Owns: one core's verified tokens, at most `capacity` of them, their expiry
//! on lookup and the eviction policy.
//!
//! Never imports: anything of the crate outside `tokens`: no `revocation`,
//! `state` or `access`. A cached token is only verified; the revocation check
//! is the caller's, on every hit.

use std::hash::{Hash, Hasher};
use std::rc::Rc;

use super::verify::VerifiedToken;

/// How many bytes at a token's end its hash covers: one `u128`, about 94
/// bits of signature (16 base64url characters).
const HASHED_TAIL: usize = 16;

/// A cached token: its whole bytes, compared whole, but hashed by their
/// last [`HASHED_TAIL`] bytes only. Those are signature bytes (a JWT ends
/// in its signature), which nobody can choose without the key, and only
/// tokens that verified are stored: an attacker can neither make stored
/// tokens collide nor store tokens of their own, so lookups of anything
/// they send probe honest chains. Hashing 485 bytes with ahash's portable
/// fallback cost ~420 instructions a lookup (callgrind, issue #15); the
/// length and the last 32 bytes ~77; one `u128` about 20 fewer.
struct Key(Box<[u8]>);

/// A lookup by borrowed bytes, hashed as [`Key`] hashes.
struct Lookup<'a>(&'a [u8]);

#[inline]
fn hash_token<H: Hasher>(token: &[u8], state: &mut H) {
    let tail = match token.last_chunk::<HASHED_TAIL>() {
        Some(tail) => *tail,
        // Shorter than any JWT: looked up, never stored.
        None => {
            let mut tail = [0; HASHED_TAIL];
            tail[HASHED_TAIL - token.len()..].copy_from_slice(token);
            tail
        }
    };
    state.write_u128(u128::from_le_bytes(tail));
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_token(&self.0, state)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.0 == other.0
    }
}

impl Eq for Key {}

impl Hash for Lookup<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_token(self.0, state)
    }
}

impl hashbrown::Equivalent<Key> for Lookup<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self.0 == *key.0
    }
}

/// Bounded map from the full token to its verification.
///
/// Eviction policy: when an insert finds the cache full, it first drops
/// every expired entry; if fewer than 1/8 of the slots came free, it evicts
/// entries in the map's iteration order until 1/8 are free. Iteration order
/// follows the randomly seeded hash, so this is effectively random
/// eviction, which an attacker cannot steer; and since one O(capacity)
/// sweep frees capacity/8 slots, an insert costs O(1) amortised. The map
/// never holds more than `capacity` entries.
pub struct VerifiedCache {
    /// Keys own the full token (≤ `MAX_TOKEN_LEN` bytes, and only tokens we
    /// signed get here). The hasher is ahash with a random per-process seed
    /// (see [`Key`] for what it hashes).
    map: hashbrown::HashMap<Key, Rc<VerifiedToken>, ahash::RandomState>,
    /// Most entries held; bounds memory per core (roughly capacity × token
    /// size). 0 disables the cache.
    capacity: usize,
    /// The latest `now` passed to `get`: the clock used to drop expired
    /// entries on insert (an insert always follows a `get` miss).
    now: u64,
}

impl VerifiedCache {
    /// A cache holding at most `capacity` tokens (0 disables caching).
    pub fn new(capacity: usize) -> VerifiedCache {
        VerifiedCache {
            // Grows on demand up to `capacity`; an idle core stays small.
            map: hashbrown::HashMap::with_capacity_and_hasher(
                capacity.min(1024),
                ahash::RandomState::new(),
            ),
            capacity,
            now: 0,
        }
    }

    /// The verification of `token`, if cached and not expired at `now`
    /// (unix seconds). An entry whose `exp <= now` is removed and misses.
    /// `token` may be any bytes: only a token that verified can hit.
    pub fn get(&mut self, token: &[u8], now: u64) -> Option<Rc<VerifiedToken>> {
        self.now = self.now.max(now);
        let entry = self.map.get(&Lookup(token))?;
        if entry.exp > now {
            return Some(Rc::clone(entry));
        }
        self.map.remove(&Lookup(token));
        None
    }

    /// Caches a successful verification of `token`. Never insert a failure.
    /// Tokens already expired (by the clock of the last `get`) are ignored.
    pub fn insert(&mut self, token: &[u8], verified: Rc<VerifiedToken>) {
        if self.capacity == 0 || verified.exp <= self.now {
            return;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(&Lookup(token)) {
            self.make_room();
        }
        self.map.insert(Key(token.into()), verified);
    }

    /// Drops expired entries, then evicts until 1/8 of the slots are free.
    #[cold]
    fn make_room(&mut self) {
        let now = self.now;
        self.map.retain(|_, v| v.exp > now);
        let target = self.capacity - (self.capacity / 8).max(1);
        let mut excess = self.map.len().saturating_sub(target);
        if excess > 0 {
            self.map.retain(|_, _| {
                if excess > 0 {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    /// Forgets everything (the key set changed). Keeps the allocation.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens: they are bearer credentials.
        f.debug_struct("VerifiedCache")
            .field("len", &self.map.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;
    use crate::tokens::claims::{new_jti, sign_access, AccessClaims};
    use crate::tokens::keys::tests::material;
    use crate::tokens::keys::CoreKeys;
    use crate::tokens::verify::{verify, Expectations};

    /// A real verified token expiring at `exp`, and its string.
    fn verified(core: &CoreKeys, exp: u64) -> (String, Rc<VerifiedToken>) {
        let claims = AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp,
            iat: 1,
            jti: new_jti(),
            client_id: "c".into(),
            scope: "x".into(),
            username: None,
        };
        let token = sign_access(core, &claims, 1).unwrap();
        let v = verify(core, &token, &Expectations::new("i", "a", 0), 1).unwrap();
        (token, Rc::new(v))
    }

    fn core() -> CoreKeys {
        CoreKeys::from_material(&material(Algorithm::EdDSA).1).unwrap()
    }

    #[test]
    fn hit_miss_and_expiry() {
        let core = core();
        let mut cache = VerifiedCache::new(16);
        let (token, v) = verified(&core, 100);
        assert!(cache.get(token.as_bytes(), 10).is_none());
        cache.insert(token.as_bytes(), Rc::clone(&v));
        assert_eq!(cache.get(token.as_bytes(), 10).as_deref(), Some(&*v));
        assert_eq!(cache.get(token.as_bytes(), 99).as_deref(), Some(&*v));
        // A prefix or a longer string is another key.
        assert!(cache
            .get(&token.as_bytes()[..token.len() - 1], 10)
            .is_none());
        assert!(cache.get(format!("{token}x").as_bytes(), 10).is_none());
        // Same length and the same hashed tail, another token: a miss.
        let mut other = token.clone().into_bytes();
        other[0] ^= 1;
        assert!(cache.get(&other, 10).is_none());
        // exp <= now: removed, and a miss.
        assert!(cache.get(token.as_bytes(), 100).is_none());
        assert_eq!(cache.len(), 0);
        // Already expired by the last clock seen: not stored.
        cache.insert(token.as_bytes(), v);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn bounded_and_prefers_dropping_expired() {
        let core = core();
        let mut cache = VerifiedCache::new(8);
        let tokens: Vec<_> = (0..4)
            .map(|_| verified(&core, 50))
            .chain((0..4).map(|_| verified(&core, 1000)))
            .collect();
        for (t, v) in &tokens {
            cache.insert(t.as_bytes(), Rc::clone(v));
        }
        assert_eq!(cache.len(), 8);
        // Time passes: the first four expire; a new insert drops only them.
        assert!(cache.get(b"nothing", 60).is_none());
        let (t, v) = verified(&core, 1000);
        cache.insert(t.as_bytes(), v);
        assert_eq!(cache.len(), 5);
        for (t, _) in &tokens[4..] {
            assert!(cache.get(t.as_bytes(), 60).is_some());
        }

        // Many live tokens: never more than capacity.
        for _ in 0..100 {
            let (t, v) = verified(&core, 1000);
            cache.insert(t.as_bytes(), v);
            assert!(cache.len() <= 8);
            assert!(
                cache.get(t.as_bytes(), 60).is_some(),
                "the newest entry is kept"
            );
        }
    }

    #[test]
    fn clear_and_disabled() {
        let core = core();
        let mut cache = VerifiedCache::new(4);
        let (t, v) = verified(&core, 1000);
        cache.insert(t.as_bytes(), Rc::clone(&v));
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert!(cache.is_empty());
        assert!(cache.get(t.as_bytes(), 1).is_none());

        let mut off = VerifiedCache::new(0);
        off.insert(t.as_bytes(), v);
        assert!(off.is_empty());
        assert!(!format!("{cache:?}").contains(&t));
    }
}
