//! Users: the `users` table and the blocking part of the password grant.
//!
//! Every function is synchronous and runs on the blocking pool (or in a CLI
//! command). Queries are always parameterised: a username is data, never SQL.
//! Ids travel as the text form of the uuid, timestamps as whole Unix seconds.
//!
//! Owns: the queries on `users` (create, look up, list, password changes and
//! rehashes, disabling; the "not before" mark only ever moves forward) and
//! the login decision ([`login`], [`LoginOutcome`]). Mirroring a mark into
//! Redis is the caller's job.
//!
//! Never imports: `handlers`, `http`, `net`, `state`, `cores`, `redis` or
//! another service: it takes a `postgres` client from its caller and the
//! [`Hasher`] from `passwords`.

use postgres::error::SqlState;
use postgres::{GenericClient, Row};

use super::passwords::{check_scope_token, check_username, Hasher, RuleError};

/// The columns of a [`User`], in the order [`user_from_row`] reads them.
macro_rules! user_columns {
    () => {
        "id::text, username, scopes, disabled, extract(epoch from not_before)::bigint"
    };
}

/// The unique index that makes usernames case-insensitively unique.
const USERNAME_KEY: &str = "users_username_lower_key";

/// A user, without the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The uuid primary key, as text; the `sub` of the user's tokens.
    pub id: String,
    /// The username as registered (case preserved; unique regardless of case).
    pub username: String,
    /// Scopes the user may be granted.
    pub scopes: Vec<String>,
    /// A disabled user cannot log in, and its tokens are void from `not_before`.
    pub disabled: bool,
    /// Unix seconds; every token issued before it is void (logout everywhere,
    /// password change, disable). Mirrored in Redis.
    pub not_before: Option<i64>,
}

/// Occurs when a user operation fails.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Occurs when a username or scope breaks a rule; the message is the rule.
    #[error(transparent)]
    Invalid(#[from] RuleError),
    /// Occurs when the username is taken, regardless of case ("Alice" and
    /// "alice" are the same user).
    #[error("username is already taken")]
    Taken,
    /// Occurs when PostgreSQL fails. Logged; clients see only `server_error`.
    #[error("PostgreSQL query failed: {0}")]
    Db(#[source] postgres::Error),
}

impl From<postgres::Error> for UserError {
    fn from(e: postgres::Error) -> Self {
        UserError::Db(e)
    }
}

/// The result of a password login.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum LoginOutcome {
    /// The password is right and the user is enabled.
    Ok(User),
    /// Unknown user, disabled user or wrong password: deliberately one
    /// variant, so that no caller can tell the cases apart (`invalid_grant`).
    Invalid,
}

/// Creates a user with an already hashed password (`phc`, from
/// [`Hasher::hash`]).
///
/// The username and scopes are checked first ([`UserError::Invalid`]); a
/// username that differs from an existing one only by case is
/// [`UserError::Taken`].
pub fn create(
    client: &mut impl GenericClient,
    username: &str,
    phc: &str,
    scopes: &[String],
) -> Result<User, UserError> {
    check_username(username)?;
    for scope in scopes {
        check_scope_token(scope)?;
    }
    let row = client
        .query_one(
            concat!(
                "INSERT INTO users (username, password_hash, scopes) VALUES ($1, $2, $3) RETURNING ",
                user_columns!()
            ),
            &[&username, &phc, &scopes],
        )
        .map_err(|e| {
            let taken = e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                && e.as_db_error().and_then(|d| d.constraint()) == Some(USERNAME_KEY);
            if taken {
                UserError::Taken
            } else {
                UserError::Db(e)
            }
        })?;
    Ok(user_from_row(&row)?)
}

/// Finds a user by username, ignoring case, with its password hash.
pub fn find_for_login(
    client: &mut impl GenericClient,
    username: &str,
) -> Result<Option<(User, String)>, UserError> {
    let row = client.query_opt(
        concat!(
            "SELECT ",
            user_columns!(),
            ", password_hash FROM users WHERE lower(username) = lower($1)"
        ),
        &[&username],
    )?;
    match row {
        Some(row) => Ok(Some((user_from_row(&row)?, row.try_get(5)?))),
        None => Ok(None),
    }
}

/// Finds a user by id (the uuid as text). A string that is not a uuid finds
/// nobody, rather than failing the query.
pub fn find_by_id(client: &mut impl GenericClient, id: &str) -> Result<Option<User>, UserError> {
    if !is_uuid(id) {
        return Ok(None);
    }
    let row = client.query_opt(
        concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = CAST($1::text AS uuid)"
        ),
        &[&id],
    )?;
    row.as_ref()
        .map(user_from_row)
        .transpose()
        .map_err(Into::into)
}

/// Every user, ordered by username (ignoring case).
pub fn list(client: &mut impl GenericClient) -> Result<Vec<User>, UserError> {
    let rows = client.query(
        concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY lower(username)"
        ),
        &[],
    )?;
    rows.iter()
        .map(user_from_row)
        .collect::<Result<_, _>>()
        .map_err(Into::into)
}

/// Replaces the password hash of user `id` with `new_phc` (a rehash with
/// the current parameters after a successful login), but only if it is still
/// `old_phc`. Returns whether it was replaced.
///
/// The compare-and-set matters: a rehash racing with a password change must
/// not put the old password back.
pub fn update_hash(
    client: &mut impl GenericClient,
    id: &str,
    old_phc: &str,
    new_phc: &str,
) -> Result<bool, UserError> {
    if !is_uuid(id) {
        return Ok(false);
    }
    let n = client.execute(
        "UPDATE users SET password_hash = $3, updated_at = now() \
         WHERE id = CAST($1::text AS uuid) AND password_hash = $2",
        &[&id, &old_phc, &new_phc],
    )?;
    Ok(n == 1)
}

/// Sets a new password hash for user `id` and moves its "not before" mark to
/// `not_before` (Unix seconds), voiding every token issued earlier. `None`
/// when there is no such user.
///
/// The mark only moves forward (`GREATEST`): a late or clock-skewed call
/// must never bring back tokens that a later logout voided. The returned
/// user carries the mark in force, which is what to mirror in Redis.
pub fn set_password(
    client: &mut impl GenericClient,
    id: &str,
    phc: &str,
    not_before: i64,
) -> Result<Option<User>, UserError> {
    if !is_uuid(id) {
        return Ok(None);
    }
    let row = client.query_opt(
        concat!(
            "UPDATE users SET password_hash = $2, \
             not_before = GREATEST(not_before, to_timestamp($3::bigint)), updated_at = now() \
             WHERE id = CAST($1::text AS uuid) RETURNING ",
            user_columns!()
        ),
        &[&id, &phc, &not_before],
    )?;
    row.as_ref()
        .map(user_from_row)
        .transpose()
        .map_err(Into::into)
}

/// Disables the user `username` (ignoring case) and moves its "not before"
/// mark to `not_before` (Unix seconds, forward only as in
/// [`set_password`]). `None` when there is no such user.
pub fn disable(
    client: &mut impl GenericClient,
    username: &str,
    not_before: i64,
) -> Result<Option<User>, UserError> {
    let row = client.query_opt(
        concat!(
            "UPDATE users SET disabled = true, \
             not_before = GREATEST(not_before, to_timestamp($2::bigint)), updated_at = now() \
             WHERE lower(username) = lower($1) RETURNING ",
            user_columns!()
        ),
        &[&username, &not_before],
    )?;
    row.as_ref()
        .map(user_from_row)
        .transpose()
        .map_err(Into::into)
}

/// The whole blocking part of the password grant: look the user up, verify
/// the password, and upgrade the stored hash when the parameters changed.
///
/// An unknown username, a username that breaks the rules, a disabled user
/// and a wrong password all give [`LoginOutcome::Invalid`] after the same
/// argon2 work (the first three verify against [`Hasher::verify_dummy`]), so
/// neither the answer nor its timing tells which usernames exist. The one
/// PostgreSQL round trip is the same in every case; its small variations are
/// dwarfed by argon2's tens of milliseconds.
///
/// Only a PostgreSQL failure is an error. A failed rehash is logged and the
/// login still succeeds: the old hash keeps working and the next login
/// retries.
pub fn login(
    client: &mut impl GenericClient,
    hasher: &Hasher,
    username: &str,
    password: &str,
) -> Result<LoginOutcome, UserError> {
    if check_username(username).is_err() {
        // No such user can exist (the schema has the same rule); skip the
        // query but not the argon2 cost.
        hasher.verify_dummy(password);
        return Ok(LoginOutcome::Invalid);
    }
    let (user, phc) = match find_for_login(client, username)? {
        Some((user, phc)) if !user.disabled => (user, phc),
        _ => {
            hasher.verify_dummy(password);
            return Ok(LoginOutcome::Invalid);
        }
    };
    let verified = hasher.verify(&phc, password);
    if !verified.ok {
        return Ok(LoginOutcome::Invalid);
    }
    if verified.needs_rehash {
        rehash(client, hasher, &user.id, &phc, password);
    }
    Ok(LoginOutcome::Ok(user))
}

/// Stores a hash of `password` made with the current parameters; failures
/// are logged, not returned (see [`login`]).
fn rehash(client: &mut impl GenericClient, hasher: &Hasher, id: &str, old: &str, password: &str) {
    let new = match hasher.hash(password) {
        Ok(new) => new,
        Err(error) => {
            tracing::warn!(%error, user_id = id, "cannot rehash password at login");
            return;
        }
    };
    match update_hash(client, id, old, &new) {
        Ok(true) => tracing::debug!(
            user_id = id,
            "password rehashed with the current parameters"
        ),
        Ok(false) => tracing::debug!(user_id = id, "password changed meanwhile; rehash skipped"),
        Err(error) => tracing::warn!(%error, user_id = id, "cannot store rehashed password"),
    }
}

/// Reads the columns of [`user_columns!`] (in that order) from `row`.
fn user_from_row(row: &Row) -> Result<User, postgres::Error> {
    Ok(User {
        id: row.try_get(0)?,
        username: row.try_get(1)?,
        scopes: row.try_get(2)?,
        disabled: row.try_get(3)?,
        not_before: row.try_get(4)?,
    })
}

/// Whether `s` has the textual shape of a uuid (8-4-4-4-12 hex digits), so
/// that casting it in SQL cannot fail.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::testdb::cheap;
    use crate::testing::TestDb;

    fn scopes(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn create_and_find() {
        let db = TestDb::new();
        let mut pg = db.client();
        let h = cheap(64);
        let phc = h.hash("password-1").unwrap();
        let u = create(&mut pg, "Alice", &phc, &scopes(&["read", "write"])).unwrap();
        assert!(is_uuid(&u.id), "{}", u.id);
        assert_eq!(u.username, "Alice");
        assert_eq!(u.scopes, scopes(&["read", "write"]));
        assert!(!u.disabled);
        assert_eq!(u.not_before, None);

        let (found, stored) = find_for_login(&mut pg, "aLiCe").unwrap().unwrap();
        assert_eq!(found, u);
        assert_eq!(stored, phc);
        assert_eq!(find_by_id(&mut pg, &u.id).unwrap(), Some(u.clone()));
        assert_eq!(
            find_by_id(&mut pg, "00000000-0000-0000-0000-000000000000").unwrap(),
            None
        );
        assert_eq!(find_by_id(&mut pg, "not-a-uuid").unwrap(), None);
        assert_eq!(find_by_id(&mut pg, "' OR 1=1 --").unwrap(), None);
        assert!(find_for_login(&mut pg, "bob").unwrap().is_none());

        create(&mut pg, "bob", &phc, &[]).unwrap();
        let names: Vec<String> = list(&mut pg)
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect();
        assert_eq!(names, ["Alice", "bob"]);
    }

    #[test]
    fn usernames_are_unique_regardless_of_case() {
        let db = TestDb::new();
        let mut pg = db.client();
        let phc = cheap(64).hash("password-1").unwrap();
        create(&mut pg, "Alice", &phc, &[]).unwrap();
        for dup in ["alice", "ALICE", "Alice"] {
            let e = create(&mut pg, dup, &phc, &[]).unwrap_err();
            assert!(matches!(e, UserError::Taken), "{dup}: {e}");
            assert_eq!(e.to_string(), "username is already taken");
        }
        assert_eq!(list(&mut pg).unwrap().len(), 1);
    }

    #[test]
    fn bad_input_is_refused_before_sql() {
        let db = TestDb::new();
        let mut pg = db.client();
        let phc = cheap(64).hash("password-1").unwrap();
        let e = create(&mut pg, "a'; DROP TABLE users;--", &phc, &[]).unwrap_err();
        assert!(
            matches!(e, UserError::Invalid(RuleError::UsernameCharacter)),
            "{e}"
        );
        let e = create(&mut pg, "", &phc, &[]).unwrap_err();
        assert!(matches!(e, UserError::Invalid(RuleError::UsernameLength)));
        let e = create(&mut pg, "carol", &phc, &scopes(&["a b"])).unwrap_err();
        assert!(matches!(e, UserError::Invalid(RuleError::ScopeCharacter)));
        // The table is still there and empty.
        assert!(list(&mut pg).unwrap().is_empty());
        // A hash that is not argon2id breaks the schema's CHECK: a Db error.
        let e = create(&mut pg, "carol", "$2b$12$abc", &[]).unwrap_err();
        assert!(matches!(e, UserError::Db(_)), "{e}");
    }

    #[test]
    fn sql_metacharacters_are_data() {
        let db = TestDb::new();
        let mut pg = db.client();
        let h = cheap(64);
        let phc = h.hash("password-1").unwrap();
        // Allowed characters only, but SQL-ish: round-trips as data.
        let name = "o.brien--@x_y.-";
        let u = create(&mut pg, name, &phc, &scopes(&["it's", "a;b", "--x"])).unwrap();
        assert_eq!(u.username, name);
        assert_eq!(u.scopes, scopes(&["it's", "a;b", "--x"]));
        let (found, _) = find_for_login(&mut pg, name).unwrap().unwrap();
        assert_eq!(found, u);
        // Lookups with quotes find nobody and break nothing.
        for probe in [
            "o'brien",
            "' OR '1'='1",
            "x'; DROP TABLE users;--",
            "%",
            "_",
        ] {
            assert!(find_for_login(&mut pg, probe).unwrap().is_none(), "{probe}");
            assert!(disable(&mut pg, probe, 1).unwrap().is_none(), "{probe}");
            assert_eq!(
                login(&mut pg, &h, probe, "password-1").unwrap(),
                LoginOutcome::Invalid
            );
        }
        assert_eq!(list(&mut pg).unwrap(), vec![u]);
    }

    #[test]
    fn login_outcomes() {
        let db = TestDb::new();
        let mut pg = db.client();
        let h = cheap(64);
        let phc = h.hash("right password").unwrap();
        let u = create(&mut pg, "dave", &phc, &scopes(&["read"])).unwrap();

        assert_eq!(
            login(&mut pg, &h, "dave", "right password").unwrap(),
            LoginOutcome::Ok(u.clone())
        );
        assert_eq!(
            login(&mut pg, &h, "DAVE", "right password").unwrap(),
            LoginOutcome::Ok(u.clone())
        );
        assert_eq!(
            login(&mut pg, &h, "dave", "wrong password").unwrap(),
            LoginOutcome::Invalid
        );
        assert_eq!(
            login(&mut pg, &h, "nobody", "right password").unwrap(),
            LoginOutcome::Invalid
        );
        assert_eq!(
            login(&mut pg, &h, "", "right password").unwrap(),
            LoginOutcome::Invalid
        );

        let disabled = disable(&mut pg, "Dave", 1_700_000_000).unwrap().unwrap();
        assert!(disabled.disabled);
        assert_eq!(disabled.not_before, Some(1_700_000_000));
        assert_eq!(
            login(&mut pg, &h, "dave", "right password").unwrap(),
            LoginOutcome::Invalid
        );
        assert!(disable(&mut pg, "nobody", 1).unwrap().is_none());
        // The mark never moves backwards.
        let again = disable(&mut pg, "dave", 1_600_000_000).unwrap().unwrap();
        assert_eq!(again.not_before, Some(1_700_000_000));
    }

    #[test]
    fn login_rehashes_when_params_change() {
        let db = TestDb::new();
        let mut pg = db.client();
        let old = cheap(64);
        let new = cheap(128);
        let phc = old.hash("right password").unwrap();
        let u = create(&mut pg, "erin", &phc, &[]).unwrap();

        // A wrong password never rehashes.
        assert_eq!(
            login(&mut pg, &new, "erin", "wrong password").unwrap(),
            LoginOutcome::Invalid
        );
        assert_eq!(find_for_login(&mut pg, "erin").unwrap().unwrap().1, phc);

        assert_eq!(
            login(&mut pg, &new, "erin", "right password").unwrap(),
            LoginOutcome::Ok(u)
        );
        let (_, stored) = find_for_login(&mut pg, "erin").unwrap().unwrap();
        assert_ne!(stored, phc);
        assert!(
            stored.starts_with("$argon2id$v=19$m=128,t=1,p=1$"),
            "{stored}"
        );
        let v = new.verify(&stored, "right password");
        assert!(v.ok && !v.needs_rehash);
        // The old hasher still accepts it (and would want to rehash back).
        assert!(old.verify(&stored, "right password").ok);
    }

    #[test]
    fn update_hash_is_compare_and_set() {
        let db = TestDb::new();
        let mut pg = db.client();
        let h = cheap(64);
        let first = h.hash("password-1").unwrap();
        let second = h.hash("password-2").unwrap();
        let third = h.hash("password-3").unwrap();
        let u = create(&mut pg, "frank", &first, &[]).unwrap();
        assert!(update_hash(&mut pg, &u.id, &first, &second).unwrap());
        // A stale rehash (of `first`) does not overwrite `second`.
        assert!(!update_hash(&mut pg, &u.id, &first, &third).unwrap());
        assert_eq!(find_for_login(&mut pg, "frank").unwrap().unwrap().1, second);
        assert!(!update_hash(&mut pg, "nope", &second, &third).unwrap());
    }

    #[test]
    fn set_password_moves_not_before() {
        let db = TestDb::new();
        let mut pg = db.client();
        let h = cheap(64);
        let u = create(&mut pg, "grace", &h.hash("password-1").unwrap(), &[]).unwrap();
        let new = h.hash("password-2").unwrap();
        let after = set_password(&mut pg, &u.id, &new, 1_800_000_000)
            .unwrap()
            .unwrap();
        assert_eq!(after.not_before, Some(1_800_000_000));
        assert!(!after.disabled);
        assert_eq!(
            login(&mut pg, &h, "grace", "password-1").unwrap(),
            LoginOutcome::Invalid
        );
        assert_eq!(
            login(&mut pg, &h, "grace", "password-2").unwrap(),
            LoginOutcome::Ok(after)
        );
        assert!(
            set_password(&mut pg, "00000000-0000-0000-0000-000000000000", &new, 1)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn uuid_shape() {
        assert!(is_uuid("0b8f3c1e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"));
        assert!(is_uuid("0B8F3C1E-4A5B-4C6D-8E9F-0A1B2C3D4E5F"));
        assert!(!is_uuid("0b8f3c1e4a5b4c6d8e9f0a1b2c3d4e5f"));
        assert!(!is_uuid("0b8f3c1e-4a5b-4c6d-8e9f-0a1b2c3d4e5g"));
        assert!(!is_uuid(""));
    }
}
