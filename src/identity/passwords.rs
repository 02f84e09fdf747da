//! Passwords (argon2id) and the input rules for usernames, passwords and scopes.
//!
//! Hashing and verifying are deliberately slow (that is their job), so every
//! function of [`Hasher`] runs on the blocking pool, never on a worker core.
//! The rule checks are cheap and may run anywhere.
//!
//! Owns: the argon2id parameters in use, the PHC strings (hash, verify,
//! whether to rehash), the dummy hash that gives unknown users a known user's
//! timing, and the input rules ([`RuleError`], [`MAX_USERNAME_CHARS`],
//! [`MAX_PASSWORD_BYTES`], [`parse_scope`]).
//!
//! Never imports: `handlers`, `http`, `net`, `state`, `cores`, `redis` or
//! another service; of the crate it reads only its `[passwords]`
//! configuration.

use std::hint::black_box;

use argon2::password_hash::{self, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;

use crate::config::PasswordsConfig;

/// Longest accepted username, in characters (all of them ASCII). Mirrors the
/// `CHECK` on `users.username` in `migrations/0001_init.sql`.
pub const MAX_USERNAME_CHARS: usize = 64;

/// Shortest accepted password, in bytes. NIST SP 800-63B §5.1.1.2 asks for at
/// least 8 characters; counting bytes is the same for ASCII and slightly more
/// lenient for other scripts.
pub const MIN_PASSWORD_BYTES: usize = 8;

/// Longest accepted password, in bytes. NIST SP 800-63B asks verifiers to
/// accept at least 64 characters; the cap only bounds the work and memory an
/// anonymous request can cause (argon2 pre-hashes the whole input).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Length of a 16-byte salt in the PHC string's unpadded base64; a stored
/// hash with a shorter salt is rehashed.
const SALT_B64_LEN: usize = 22;

/// Output length of our argon2id hashes, bytes (argon2's default, 256 bits).
const OUTPUT_LEN: usize = Params::DEFAULT_OUTPUT_LEN;

/// Occurs when an input breaks one of tokend's rules. `Display` is the rule,
/// phrased for whoever sent the input: it is sent to HTTP clients as
/// `error_description` and printed by the CLI, so it never echoes the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleError {
    /// Occurs when a username is empty or longer than 64 characters.
    UsernameLength,
    /// Occurs when a username has a character outside `A-Z a-z 0-9 . _ @ -`.
    UsernameCharacter,
    /// Occurs when a password is shorter than 8 bytes.
    PasswordTooShort,
    /// Occurs when a password is longer than 1024 bytes.
    PasswordTooLong,
    /// Occurs when a scope token is empty.
    ScopeEmpty,
    /// Occurs when a scope list has a leading, trailing or doubled space.
    ScopeSpacing,
    /// Occurs when a scope token has a character RFC 6749 §3.3 forbids.
    ScopeCharacter,
}

impl RuleError {
    /// The rule broken, as a `&'static str` (for `error_description`).
    pub fn as_str(self) -> &'static str {
        match self {
            RuleError::UsernameLength => "username must be 1 to 64 characters long",
            RuleError::UsernameCharacter => "username may contain only the letters A-Z and a-z, the digits 0-9 and the characters . _ @ -",
            RuleError::PasswordTooShort => "password must be at least 8 bytes long",
            RuleError::PasswordTooLong => "password must be at most 1024 bytes long",
            RuleError::ScopeEmpty => "scope token must not be empty",
            RuleError::ScopeSpacing => "scope tokens must be separated by single spaces, with no leading or trailing space",
            RuleError::ScopeCharacter => "scope token may contain only printable ASCII characters other than space, \" and \\ (RFC 6749 section 3.3)",
        }
    }
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for RuleError {}

/// Checks a username: 1 to 64 characters from `A-Z a-z 0-9 . _ @ -`.
///
/// The same rule is a `CHECK` constraint in the schema; checking here first
/// gives the caller a precise message instead of a database error. Anything
/// else (spaces, quotes, `;`, non-ASCII letters) is refused, which also keeps
/// look-alike Unicode usernames out.
pub fn check_username(username: &str) -> Result<(), RuleError> {
    // The allowed characters are all ASCII, so a byte length over the limit
    // can only be a long name or a name with bad characters; count characters
    // to tell the two apart.
    let chars = username.chars().count();
    if chars == 0 || chars > MAX_USERNAME_CHARS {
        return Err(RuleError::UsernameLength);
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-');
    if username.bytes().all(allowed) {
        Ok(())
    } else {
        Err(RuleError::UsernameCharacter)
    }
}

/// Checks a new password: 8 to 1024 bytes, nothing else.
///
/// Following NIST SP 800-63B §5.1.1.2 there are no composition rules (no
/// "one digit, one symbol"): they push people to predictable patterns without
/// adding strength. Every character, spaces and Unicode included, is allowed.
pub fn check_password(password: &str) -> Result<(), RuleError> {
    match password.len() {
        n if n < MIN_PASSWORD_BYTES => Err(RuleError::PasswordTooShort),
        n if n > MAX_PASSWORD_BYTES => Err(RuleError::PasswordTooLong),
        _ => Ok(()),
    }
}

/// Checks one scope token, RFC 6749 §3.3:
/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn check_scope_token(token: &str) -> Result<(), RuleError> {
    if token.is_empty() {
        return Err(RuleError::ScopeEmpty);
    }
    let allowed = |b: u8| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E);
    if token.bytes().all(allowed) {
        Ok(())
    } else {
        Err(RuleError::ScopeCharacter)
    }
}

/// Parses a scope list, RFC 6749 §3.3: `scope-token *( SP scope-token )`.
///
/// The empty string is the empty list (an empty `scope` parameter means the
/// same as an absent one). Duplicates are dropped, keeping the first
/// occurrence, since the RFC says the order does not matter and a set is
/// what every consumer wants.
pub fn parse_scope(scope: &str) -> Result<Vec<String>, RuleError> {
    let mut out: Vec<String> = Vec::new();
    if scope.is_empty() {
        return Ok(out);
    }
    for token in scope.split(' ') {
        if token.is_empty() {
            return Err(RuleError::ScopeSpacing);
        }
        check_scope_token(token)?;
        if !out.iter().any(|t| t == token) {
            out.push(token.to_string());
        }
    }
    Ok(out)
}

/// Occurs when argon2 cannot be set up or cannot hash.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Occurs when the `[passwords]` parameters are out of argon2's range.
    #[error("invalid argon2 parameters in [passwords]: {0}")]
    Params(#[source] argon2::Error),
    /// Occurs when argon2 fails to hash (it should not with valid parameters).
    #[error("argon2 hashing failed: {0}")]
    Hash(#[source] password_hash::Error),
}

/// The result of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Verified {
    /// The password matches the stored hash.
    pub ok: bool,
    /// The stored hash was made with another algorithm, version or
    /// parameters than the configured ones; when `ok`, the caller should store
    /// a fresh [`Hasher::hash`] of the password.
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords with argon2id (version 0x13) and the
/// configured parameters. Cheap to share (`Send + Sync`); one per process.
pub struct Hasher {
    /// argon2id v0x13 with the configured m/t/p; `'static` because no pepper
    /// (secret key) is used.
    argon2: Argon2<'static>,
    /// The configured parameters, compared with a stored hash's to decide
    /// whether it needs rehashing.
    params: Params,
    /// A hash of a random password made at construction with the current
    /// parameters, verified against when the user is unknown or disabled.
    ///
    /// Threat model: username enumeration by timing. Without it, a login for
    /// an unknown username would answer in microseconds and one for a known
    /// username in tens of milliseconds (the argon2 cost), so an attacker
    /// could list valid usernames and then focus password guessing on them.
    /// Verifying against this dummy gives both cases the same argon2 cost.
    dummy_phc: String,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// Sets up argon2id with `config`'s parameters and makes the dummy hash
    /// (which costs one hash: call it once at start-up, on the blocking pool
    /// or before the cores start).
    pub fn new(config: &PasswordsConfig) -> Result<Hasher, PasswordError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            Some(OUTPUT_LEN),
        )
        .map_err(PasswordError::Params)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut hasher = Hasher {
            argon2,
            params,
            dummy_phc: String::new(),
        };
        // The dummy password is random so that no password ever matches it,
        // and nobody can learn one from the source.
        let mut random = [0u8; 32];
        OsRng.fill_bytes(&mut random);
        let dummy_password: String = random.iter().map(|b| format!("{b:02x}")).collect();
        hasher.dummy_phc = hasher.hash(&dummy_password)?;
        Ok(hasher)
    }

    /// Hashes `password` into a PHC string
    /// (`$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>`) with a fresh 16-byte
    /// random salt from the operating system.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        // `SaltString::generate` draws `Salt::RECOMMENDED_LENGTH` (16) bytes.
        let salt = SaltString::generate(&mut OsRng);
        self.argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(PasswordError::Hash)
    }

    /// Checks `password` against the stored PHC string `phc`.
    ///
    /// The stored hash's own algorithm and parameters are used to verify, so
    /// hashes made before a parameter change keep working; `needs_rehash`
    /// says they should be replaced. A string that does not parse, or names
    /// an algorithm other than argon2, is a failed verify (logged as a
    /// warning, without the hash), never a panic.
    pub fn verify(&self, phc: &str, password: &str) -> Verified {
        let parsed = match PasswordHash::new(phc) {
            Ok(p) => p,
            Err(e) => {
                unparsable_hash(&e);
                return Verified {
                    ok: false,
                    needs_rehash: false,
                };
            }
        };
        let ok = match self.argon2.verify_password(password.as_bytes(), &parsed) {
            Ok(()) => true,
            Err(password_hash::Error::Password) => false,
            Err(e) => {
                unparsable_hash(&e);
                false
            }
        };
        Verified {
            ok,
            needs_rehash: self.is_outdated(&parsed),
        }
    }

    /// Spends the same argon2 time as a [`Hasher::verify`] of a hash made
    /// with the current parameters, and learns nothing. Call it when the
    /// user is unknown or disabled, so that those cases cannot be told apart
    /// from a wrong password by timing (see [`Hasher`]'s `dummy_phc`).
    pub fn verify_dummy(&self, password: &str) {
        let _ = black_box(self.verify(black_box(&self.dummy_phc), password));
    }

    /// Whether a stored hash differs from what [`Hasher::hash`] makes now.
    fn is_outdated(&self, parsed: &PasswordHash<'_>) -> bool {
        if parsed.algorithm != Algorithm::Argon2id.ident()
            || parsed.version != Some(Version::V0x13.into())
        {
            return true;
        }
        let Ok(stored) = Params::try_from(parsed) else {
            return true;
        };
        stored.m_cost() != self.params.m_cost()
            || stored.t_cost() != self.params.t_cost()
            || stored.p_cost() != self.params.p_cost()
            || stored.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN) != OUTPUT_LEN
            || !stored.keyid().is_empty()
            || !stored.data().is_empty()
            || parsed.salt.is_none_or(|s| s.len() < SALT_B64_LEN)
    }
}

/// Logs a stored hash we cannot use. Never logs the hash: it is an offline
/// cracking target.
#[cold]
fn unparsable_hash(error: &password_hash::Error) {
    tracing::warn!(%error, "stored password hash is not a usable argon2 PHC string; login refused");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::identity::testdb::cheap;

    #[test]
    fn username_rule() {
        assert_eq!(check_username(""), Err(RuleError::UsernameLength));
        assert_eq!(check_username("a"), Ok(()));
        assert_eq!(check_username(&"a".repeat(64)), Ok(()));
        assert_eq!(
            check_username(&"a".repeat(65)),
            Err(RuleError::UsernameLength)
        );
        assert_eq!(check_username("Alice.B_c@d-e9"), Ok(()));
        for bad in [
            "a b",
            "a'; DROP TABLE users;--",
            "o'brien",
            "tab\there",
            "nul\0",
            "émile",
            "раша",
            "a/b",
            "a+b",
            "a%b",
        ] {
            assert_eq!(
                check_username(bad),
                Err(RuleError::UsernameCharacter),
                "{bad:?}"
            );
        }
        // 64 two-byte characters: within the length, refused for the characters.
        assert_eq!(
            check_username(&"é".repeat(64)),
            Err(RuleError::UsernameCharacter)
        );
        assert_eq!(
            check_username(&"é".repeat(65)),
            Err(RuleError::UsernameLength)
        );
        assert!(RuleError::UsernameCharacter.to_string().contains(". _ @ -"));
    }

    #[test]
    fn password_rule() {
        assert_eq!(check_password(""), Err(RuleError::PasswordTooShort));
        assert_eq!(
            check_password(&"p".repeat(7)),
            Err(RuleError::PasswordTooShort)
        );
        assert_eq!(check_password(&"p".repeat(8)), Ok(()));
        assert_eq!(check_password(&"p".repeat(1024)), Ok(()));
        assert_eq!(
            check_password(&"p".repeat(1025)),
            Err(RuleError::PasswordTooLong)
        );
        // No composition rules: all lowercase, spaces and Unicode are fine.
        assert_eq!(check_password("correct horse battery staple"), Ok(()));
        assert_eq!(check_password("пароль-пароль"), Ok(()));
        // Bytes, not characters: 3 × 3-byte characters = 9 bytes.
        assert_eq!(check_password("密码密"), Ok(()));
        assert_eq!(check_password("密码"), Err(RuleError::PasswordTooShort));
    }

    #[test]
    fn scope_rules() {
        assert_eq!(check_scope_token("read"), Ok(()));
        assert_eq!(check_scope_token("api:write/all!#[]{}~"), Ok(()));
        assert_eq!(check_scope_token(""), Err(RuleError::ScopeEmpty));
        for bad in ["a b", "a\"b", "a\\b", "é", "a\tb", "\x7f"] {
            assert_eq!(
                check_scope_token(bad),
                Err(RuleError::ScopeCharacter),
                "{bad:?}"
            );
        }
        assert_eq!(parse_scope(""), Ok(vec![]));
        assert_eq!(
            parse_scope("read write read"),
            Ok(vec!["read".to_string(), "write".to_string()])
        );
        assert_eq!(parse_scope("read  write"), Err(RuleError::ScopeSpacing));
        assert_eq!(parse_scope(" read"), Err(RuleError::ScopeSpacing));
        assert_eq!(parse_scope("read "), Err(RuleError::ScopeSpacing));
        assert_eq!(parse_scope("read wr\"ite"), Err(RuleError::ScopeCharacter));
    }

    #[test]
    fn hash_and_verify() {
        let h = cheap(64);
        let phc = h.hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        let salt_b64 = phc.split('$').nth(4).unwrap();
        assert_eq!(salt_b64.len(), 22, "16-byte salt");
        assert_ne!(phc, h.hash("correct horse").unwrap(), "salts differ");
        assert_eq!(
            h.verify(&phc, "correct horse"),
            Verified {
                ok: true,
                needs_rehash: false
            }
        );
        assert!(!h.verify(&phc, "correct horsE").ok);
        assert!(!h.verify(&phc, "").ok);
    }

    #[test]
    fn needs_rehash_on_other_params_or_algorithm() {
        let old = cheap(64);
        let new = cheap(128);
        let phc = old.hash("pw-pw-pw-pw").unwrap();
        assert_eq!(
            new.verify(&phc, "pw-pw-pw-pw"),
            Verified {
                ok: true,
                needs_rehash: true
            }
        );
        // argon2i and argon2d still verify, but are replaced.
        for alg in [Algorithm::Argon2i, Algorithm::Argon2d] {
            let other = Argon2::new(alg, Version::V0x13, Params::new(64, 1, 1, None).unwrap());
            let salt = SaltString::generate(&mut OsRng);
            let phc = other
                .hash_password(b"pw-pw-pw-pw", &salt)
                .unwrap()
                .to_string();
            let v = old.verify(&phc, "pw-pw-pw-pw");
            assert!(v.ok && v.needs_rehash, "{alg:?}");
        }
        // Version 0x10.
        let v10 = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x10,
            Params::new(64, 1, 1, None).unwrap(),
        );
        let phc = v10
            .hash_password(b"pw-pw-pw-pw", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        let v = old.verify(&phc, "pw-pw-pw-pw");
        assert!(v.ok && v.needs_rehash);
    }

    #[test]
    fn broken_hashes_fail_without_panic() {
        let h = cheap(64);
        for phc in [
            "",
            "not a hash",
            "$argon2id$",
            "$argon2id$v=19$m=64,t=1,p=1$",
            "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$!!!!",
            "$argon2id$v=19$m=0,t=0,p=0$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
            "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        ] {
            assert!(!h.verify(phc, "whatever-pw").ok, "{phc:?}");
        }
    }

    #[test]
    fn bad_params_are_an_error() {
        let e = Hasher::new(&PasswordsConfig {
            memory_kib: 1,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap_err();
        assert!(matches!(e, PasswordError::Params(_)), "{e}");
    }

    fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v[v.len() / 2]
    }

    /// CPU time this thread has used: unlike wall time, it does not count
    /// the time other processes (a parallel test run) held the CPU.
    fn thread_cpu_time() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// The dummy verify must cost what a real verify costs with the default
    /// (production) parameters, or unknown usernames show in the timing.
    /// Measured in thread CPU time, so a busy machine does not make it flaky.
    #[test]
    fn dummy_verify_costs_like_a_real_one() {
        let h = Hasher::new(&PasswordsConfig::default()).unwrap();
        let phc = h.hash("a real password").unwrap();
        let (mut real, mut dummy) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            let t = thread_cpu_time();
            let _ = h.verify(&phc, "a wrong password");
            real.push(thread_cpu_time() - t);
            let t = thread_cpu_time();
            h.verify_dummy("a wrong password");
            dummy.push(thread_cpu_time() - t);
        }
        let (real, dummy) = (median(real), median(dummy));
        assert!(
            dummy * 2 > real && real * 2 > dummy,
            "real {real:?} vs dummy {dummy:?}"
        );
        // And it is not trivially cheap: argon2 actually ran.
        assert!(dummy > Duration::from_millis(1), "{dummy:?}");
    }
}
