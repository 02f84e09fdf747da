//! Codes against the shared test Redis, each test under its own prefix.

use std::time::Duration;

use super::*;
use crate::clock::unix_now;
use crate::redis::testutil::*;
use crate::redis::BlockingRedis;

async fn store(prefix: &str) -> CodeStore {
    let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
    assert!(conn.wait_connected(Duration::from_secs(5)).await);
    CodeStore::new(conn, prefix.to_owned(), CodeMac::new(&[5; 32]))
}

fn blocking() -> BlockingRedis {
    BlockingRedis::connect(&shared_target(), Duration::from_secs(2)).unwrap()
}

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        cleanup(&self.0);
    }
}

fn grant() -> CodeGrant {
    CodeGrant {
        client_id: "web".into(),
        redirect_uri: "https://app.example/cb".into(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        scope: "openid read".into(),
        nonce: Some("n-0S6_WzA2Mj".into()),
        sub: "user-1".into(),
        username: "alice".into(),
        auth_time: 1_700_000_000,
        session: Some("s1".into()),
    }
}

/// RFC 7636 Appendix B: the verifier and challenge of the RFC's example.
#[test]
fn pkce_s256_rfc7636_appendix_b() {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    assert!(is_valid_s256_challenge(challenge));
    assert!(pkce_s256_matches(verifier, challenge));
    assert!(!pkce_s256_matches(
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
        challenge
    ));
    // §4.1: 43 to 128 characters of the unreserved alphabet.
    assert!(!is_valid_verifier(&"a".repeat(42)));
    assert!(is_valid_verifier(&"a".repeat(43)));
    assert!(is_valid_verifier(&"a".repeat(128)));
    assert!(!is_valid_verifier(&"a".repeat(129)));
    assert!(is_valid_verifier(&format!("{}-._~", "a".repeat(40))));
    assert!(!is_valid_verifier(&format!("{}+", "a".repeat(43))));
    // `plain` (verifier == challenge) never matches an S256 challenge.
    assert!(!pkce_s256_matches(challenge, challenge));
    assert!(!is_valid_s256_challenge(&"a".repeat(44)));
    assert!(!is_valid_s256_challenge(&format!("{}=", "a".repeat(42))));
}

#[test]
fn code_shape() {
    let c = new_code();
    assert!(is_well_formed(&c), "{c}");
    assert_ne!(new_code(), c);
    assert!(!is_well_formed(&c[..52]));
    assert!(!is_well_formed(&c.replace(CODE_PREFIX, "tokend_rt_")));
}

/// A code is redeemed once, within its lifetime, and gives back its grant.
#[test]
fn a_code_is_redeemed_once() {
    on_both_drivers(|_| async {
        let prefix = random_prefix();
        let _g = Cleanup(prefix.clone());
        let s = store(&prefix).await;
        let now = unix_now();
        let code = s.issue(&grant(), 60).await.unwrap();
        // Redis holds the SHA-256, never the code.
        let mut b = blocking();
        let ttl = b
            .query(::redis::cmd("TTL").arg(s.record_key(&code)))
            .unwrap();
        assert!((1..=60).contains(&ttl.as_int().unwrap()), "{ttl:?}");
        assert!(!s.record_key(&code).contains(&code[CODE_PREFIX.len()..]));

        assert_eq!(s.redeem(&code, 900, now).await.unwrap(), grant());
        // The second time: refused, with nothing bound yet to revoke.
        assert_eq!(
            s.redeem(&code, 900, now).await,
            Err(CodeError::Reused {
                jti: None,
                access_exp: None,
                family: None
            })
        );
        assert_eq!(
            s.redeem("tokend_ac_nope", 900, now).await,
            Err(CodeError::Invalid)
        );
        let unknown = new_code();
        assert_eq!(s.redeem(&unknown, 900, now).await, Err(CodeError::Invalid));
    });
}

/// RFC 6749 §4.1.2: a code used twice revokes what was issued from it: the
/// refresh family in Redis, and the access token named for the caller.
#[test]
fn a_reused_code_revokes_what_it_gave() {
    on_both_drivers(|_| async {
        let prefix = random_prefix();
        let _g = Cleanup(prefix.clone());
        let s = store(&prefix).await;
        let now = unix_now();
        let mut b = blocking();
        let fkey = format!("{prefix}rf:00112233445566778899aabbccddeeff");
        b.query(::redis::cmd("HSET").arg(&fkey).arg("fst").arg(now))
            .unwrap();
        let code = s.issue(&grant(), 60).await.unwrap();
        s.redeem(&code, 900, now).await.unwrap();
        assert_eq!(
            s.bind_issued(
                &code,
                "jti-1",
                now + 900,
                Some("00112233445566778899aabbccddeeff"),
                now
            )
            .await
            .unwrap(),
            Bound::Ok
        );
        let rev = b.query(::redis::cmd("HGET").arg(&fkey).arg("rev")).unwrap();
        assert!(rev.is_nil());
        assert_eq!(
            s.redeem(&code, 900, now).await,
            Err(CodeError::Reused {
                jti: Some("jti-1".into()),
                access_exp: Some(now + 900),
                family: Some("00112233445566778899aabbccddeeff".into()),
            })
        );
        let rev = b.query(::redis::cmd("HGET").arg(&fkey).arg("rev")).unwrap();
        assert_eq!(rev.as_str(), Some(now.to_string().as_str()));
    });
}

/// A second redemption between the first one and its `bind_issued`: the
/// first redeemer learns it must revoke what it just issued.
#[test]
fn a_reuse_racing_the_first_redemption_is_caught_at_bind() {
    on_both_drivers(|_| async {
        let prefix = random_prefix();
        let _g = Cleanup(prefix.clone());
        let s = store(&prefix).await;
        let now = unix_now();
        let mut b = blocking();
        let fkey = format!("{prefix}rf:ffeeddccbbaa99887766554433221100");
        b.query(::redis::cmd("HSET").arg(&fkey).arg("fst").arg(now))
            .unwrap();
        let code = s.issue(&grant(), 60).await.unwrap();
        s.redeem(&code, 900, now).await.unwrap();
        assert!(matches!(
            s.redeem(&code, 900, now).await,
            Err(CodeError::Reused { jti: None, .. })
        ));
        assert_eq!(
            s.bind_issued(
                &code,
                "jti-2",
                now + 900,
                Some("ffeeddccbbaa99887766554433221100"),
                now
            )
            .await
            .unwrap(),
            Bound::Revoked
        );
        let rev = b.query(::redis::cmd("HGET").arg(&fkey).arg("rev")).unwrap();
        assert!(!rev.is_nil());
    });
}

/// An expired code is invalid (not "reused": it was never redeemed).
#[test]
fn an_expired_code_is_invalid() {
    on_both_drivers(|_| async {
        let prefix = random_prefix();
        let _g = Cleanup(prefix.clone());
        let s = store(&prefix).await;
        let code = s.issue(&grant(), 60).await.unwrap();
        let mut b = blocking();
        b.query(::redis::cmd("DEL").arg(s.record_key(&code)))
            .unwrap();
        assert_eq!(
            s.redeem(&code, 900, unix_now()).await,
            Err(CodeError::Invalid)
        );
    });
}

/// A record written without the KEK (or moved under another code's key)
/// is refused.
#[test]
fn a_tampered_record_is_refused() {
    on_both_drivers(|_| async {
        let prefix = random_prefix();
        let _g = Cleanup(prefix.clone());
        let s = store(&prefix).await;
        let mut b = blocking();
        // A forged grant with admin scope, tagged with some other key.
        let forged = new_code();
        let mut g = grant();
        g.scope = "tokend:admin".into();
        let json = serde_json::to_string(&g).unwrap();
        let tag = CodeMac::new(&[6; 32]).tag(&s.record_key(&forged), &json);
        b.query(
            ::redis::cmd("HSET")
                .arg(s.record_key(&forged))
                .arg("g")
                .arg(&json)
                .arg("mac")
                .arg(&tag),
        )
        .unwrap();
        assert_eq!(
            s.redeem(&forged, 900, unix_now()).await,
            Err(CodeError::Tampered)
        );
        // A genuine record copied under another code's key.
        let real = s.issue(&grant(), 60).await.unwrap();
        let fields = b
            .query(::redis::cmd("HGETALL").arg(s.record_key(&real)))
            .unwrap();
        let fields: Vec<String> = fields
            .into_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        let other = new_code();
        b.query(::redis::cmd("HSET").arg(s.record_key(&other)).arg(fields))
            .unwrap();
        assert_eq!(
            s.redeem(&other, 900, unix_now()).await,
            Err(CodeError::Tampered)
        );
        assert_eq!(s.redeem(&real, 900, unix_now()).await.unwrap(), grant());
    });
}
