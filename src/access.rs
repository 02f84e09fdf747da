//! The access-token check that `/validate`, introspection and the user API
//! share: verified-token cache → signature and claims → revocation (the
//! core's in-memory mirror when it is on and current, else one Redis round
//! trip).
//!
//! Owns: the order of those steps and what each failure means. Answers with
//! its own small [`AccessError`]; the handlers turn it into an OAuth error
//! in one place. Never imports `handlers`, `net`, `cores`, `router` or
//! `http`.

use std::convert::Infallible;
use std::rc::Rc;

use crate::clock::unix_now;
use crate::revocation::{self, Answered};
use crate::state::Core;
use crate::tokens::{self, TokenError, VerifiedToken};

/// Occurs when an access token may not be accepted. Small and `Copy`: the
/// validation path allocates nothing to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessError {
    /// Occurs when the token does not verify (signature, claims, expiry);
    /// carries the verifier's static description.
    Invalid(&'static str),
    /// Occurs when the token, or every token of its user, was revoked.
    Revoked,
    /// Occurs when the revocation store cannot tell: fail closed (never
    /// "valid", never a `401` that would log a user out).
    Unavailable,
}

/// Verifies `token` on this core: a cache hit costs one hash lookup and one
/// string comparison; a miss runs the signature and claim checks with the
/// core's own keys and caches the success. Revocation is NOT checked here.
pub fn verify_cached(core: &Core, token: &str, now: u64) -> Result<Rc<VerifiedToken>, TokenError> {
    match verify_raw(core, token.as_bytes(), now, |_| Ok::<_, Infallible>(token)) {
        Ok(v) => Ok(v),
        Err(Failure::Token(e)) => Err(e),
        Err(Failure::Form(never)) => match never {},
    }
}

/// [`verify_cached`] of bytes whose form is not checked yet: the cache is
/// looked up with them as they are, and `well_formed` runs only on a miss
/// (a value equal to a token that verified is well formed). The outcome is
/// that of `well_formed` then [`verify_cached`], for every input.
fn verify_raw<'t, E>(
    core: &Core,
    raw: &'t [u8],
    now: u64,
    well_formed: impl FnOnce(&'t [u8]) -> Result<&'t str, E>,
) -> Result<Rc<VerifiedToken>, Failure<E>> {
    // `keys()` first: a new key set empties the cache before we look.
    let keys = core.keys();
    if let Some(hit) = core.cached_verification(raw, now) {
        core.counters().verified_cache_hits.inc();
        return Ok(hit);
    }
    let token = well_formed(raw).map_err(Failure::Form)?;
    core.counters().verified_cache_misses.inc();
    match tokens::verify(&keys, token, core.expectations(), now) {
        Ok(v) => {
            let v = Rc::new(v);
            core.remember_verification(raw, v.clone());
            Ok(v)
        }
        Err(e) => {
            if e == TokenError::UnknownKid {
                core.request_key_reload();
            }
            Err(Failure::Token(e))
        }
    }
}

/// Why [`verify_raw`] refused.
enum Failure<E> {
    Form(E),
    Token(TokenError),
}

/// Why a bearer value was refused by [`check_bearer`]: its form, or the
/// access check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerFailure<E> {
    /// `well_formed` refused the value (on a cache miss).
    Form(E),
    /// The token is not accepted.
    Access(AccessError),
}

/// Verification plus the revocation check: what both `/validate` and
/// introspection need. Redis trouble is [`AccessError::Unavailable`].
pub async fn check_access_token(
    core: &Core,
    token: &str,
) -> Result<Rc<VerifiedToken>, AccessError> {
    match check_bearer(core, token.as_bytes(), |_| Ok::<_, Infallible>(token)).await {
        Ok(v) => Ok(v),
        Err(BearerFailure::Access(e)) => Err(e),
        Err(BearerFailure::Form(never)) => match never {},
    }
}

/// [`check_access_token`] of a bearer value whose form `well_formed`
/// checks only when the verified-token cache misses (see [`verify_raw`]):
/// what `/validate` runs, where the form check of a 485-byte token cost
/// more than the cached verification itself (issue #15).
pub async fn check_bearer<'t, E>(
    core: &Core,
    raw: &'t [u8],
    well_formed: impl FnOnce(&'t [u8]) -> Result<&'t str, E>,
) -> Result<Rc<VerifiedToken>, BearerFailure<E>> {
    let now = unix_now();
    let v = verify_raw(core, raw, now, well_formed).map_err(|f| match f {
        Failure::Form(e) => BearerFailure::Form(e),
        Failure::Token(e) => BearerFailure::Access(AccessError::Invalid(e.description())),
    })?;
    let verdict = revocation::check_access(
        core.mirror().map(|m| &**m),
        core.revocations(),
        &v.jti,
        &v.sub,
        v.iat,
        v.exp,
    )
    .await;
    match verdict.answered {
        Answered::Mirror => core.counters().mirror_answers.inc(),
        Answered::RedisAfterMirror => core.counters().mirror_fallbacks.inc(),
        Answered::Redis => {}
    }
    match verdict.revoked {
        Ok(false) => Ok(v),
        Ok(true) => Err(BearerFailure::Access(AccessError::Revoked)),
        Err(_) => Err(BearerFailure::Access(AccessError::Unavailable)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::state::{shared_for_tests, Shared};
    use crate::tokens::keys::{generate, KeyEntry};
    use crate::tokens::{AccessClaims, CoreKeys, KeyMaterial};

    /// Runs `f` with core 0 of a fresh `Shared` whose Redis keys live under
    /// a prefix of their own, on a monoio runtime; deletes those keys after.
    fn with_core<F, Fut>(f: F)
    where
        F: FnOnce(Rc<Core>, Arc<Shared>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut config = Config::default();
        config.redis.prefix = format!("tokend-test:{}:", crate::testing::random_suffix());
        let prefix = config.redis.prefix.clone();
        let shared = Arc::new(shared_for_tests(config, 1));
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(async move {
                let core = Core::new(0, shared.clone()).unwrap();
                f(core.clone(), shared).await;
                let keys = core
                    .redis()
                    .query(::redis::cmd("KEYS").arg(format!("{prefix}*")))
                    .await
                    .ok()
                    .and_then(|r| r.into_array())
                    .unwrap_or_default();
                for key in keys.iter().filter_map(|k| k.as_bytes()) {
                    let _ = core.redis().query(::redis::cmd("DEL").arg(key)).await;
                }
            });
    }

    fn claims(core: &Core, now: u64) -> AccessClaims {
        AccessClaims {
            iss: core.issuer().to_owned(),
            sub: "u1".into(),
            aud: core.tokens_config().audience.clone(),
            exp: now + 60,
            iat: now,
            jti: crate::tokens::new_jti(),
            client_id: "c".into(),
            scope: "read".into(),
            username: Some("alice".into()),
        }
    }

    fn signed(core: &Core, now: u64) -> String {
        crate::tokens::sign_access(&core.keys(), &claims(core, now), now).unwrap()
    }

    #[test]
    fn a_miss_verifies_and_caches_then_a_hit_answers() {
        with_core(|core, _| async move {
            let now = unix_now();
            let token = signed(&core, now);
            let first = verify_cached(&core, &token, now).unwrap();
            assert_eq!(core.counters().verified_cache_misses.get(), 1);
            assert_eq!(core.counters().verified_cache_hits.get(), 0);
            let second = verify_cached(&core, &token, now).unwrap();
            assert!(Rc::ptr_eq(&first, &second), "answered from the cache");
            assert_eq!(core.counters().verified_cache_hits.get(), 1);
            assert_eq!(second.sub, "u1");
        });
    }

    #[test]
    fn a_failure_is_not_cached() {
        with_core(|core, shared| async move {
            let now = unix_now();
            assert!(verify_cached(&core, "not.a.jwt", now).is_err());
            assert!(verify_cached(&core, "not.a.jwt", now).is_err());
            assert_eq!(core.counters().verified_cache_misses.get(), 2);
            assert_eq!(core.counters().verified_cache_hits.get(), 0);
            assert!(!shared.take_key_reload_request(), "garbage asks no reload");
        });
    }

    #[test]
    fn an_unknown_kid_asks_the_control_thread_for_a_reload() {
        with_core(|core, shared| async move {
            let now = unix_now();
            let key = generate(crate::config::Algorithm::EdDSA).unwrap();
            let other = CoreKeys::from_material(
                &KeyMaterial::from_entries(vec![KeyEntry::from_generated(&key, 0).unwrap()])
                    .unwrap(),
            )
            .unwrap();
            let token = crate::tokens::sign_access(&other, &claims(&core, now), now).unwrap();
            assert_eq!(
                verify_cached(&core, &token, now).unwrap_err(),
                TokenError::UnknownKid
            );
            assert!(shared.take_key_reload_request());
        });
    }

    #[test]
    fn an_invalid_token_carries_the_verifier_description() {
        with_core(|core, _| async move {
            let e = check_access_token(&core, "not.a.jwt").await.unwrap_err();
            let AccessError::Invalid(description) = e else {
                panic!("expected Invalid, got {e:?}");
            };
            assert!(!description.is_empty());
        });
    }

    #[test]
    fn the_revocation_check_fails_closed_then_answers_from_redis() {
        with_core(|core, _| async move {
            assert!(
                core.redis().wait_connected(Duration::from_secs(5)).await,
                "Redis at TOKEND_TEST_REDIS_URL must answer"
            );
            let now = unix_now();
            let token = signed(&core, now);
            // No seed marker under this prefix: Redis cannot vouch for
            // holding every revocation, so the answer is "cannot tell".
            assert_eq!(
                check_access_token(&core, &token).await.unwrap_err(),
                AccessError::Unavailable
            );
            let prefix = &core.config().redis.prefix;
            let marker = [prefix.as_str(), crate::revocation::durable::MARKER_SUFFIX].concat();
            core.redis()
                .query(::redis::cmd("SET").arg(&marker).arg("1"))
                .await
                .unwrap();
            let v = check_access_token(&core, &token).await.unwrap();
            core.revocations()
                .revoke_access_logged(&v.jti, 60)
                .await
                .unwrap();
            assert_eq!(
                check_access_token(&core, &token).await.unwrap_err(),
                AccessError::Revoked
            );
        });
    }
}
