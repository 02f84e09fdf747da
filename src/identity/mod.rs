//! Identity: users, OAuth clients and passwords.
//!
//! - [`passwords`]: argon2id hashing and verifying ([`Hasher`]), and the
//!   input rules for usernames, passwords and scopes ([`RuleError`]).
//! - [`users`]: the `users` table, and [`users::login`], the whole blocking
//!   part of the password grant.
//! - [`clients`]: the `oauth_clients` table, and the immutable
//!   [`ClientTable`] snapshot that authenticates clients on the event loop
//!   (given the client id and secret already decoded from the request).
//! - [`redirect_uris`]: the rules a client's registered redirect URIs
//!   follow (RFC 6749 §3.1.2, RFC 8252 §7).
//!
//! Everything that touches PostgreSQL or argon2 here is synchronous and runs
//! on the blocking pool, never on a worker core. The exceptions, cheap enough
//! for the event loop, are [`ClientTable::authenticate`] (one SHA-256) and
//! the rule checks. Never imports `http` or `handlers`.

pub mod clients;
pub mod passwords;
pub mod redirect_uris;
pub mod users;

pub use clients::{
    authenticate_remembered, ClientAuthError, ClientError, ClientRecord, ClientTable, GrantType,
    Lifetimes, NewClient, SecretMemo, UriKind,
};
pub use passwords::{Hasher, PasswordError, RuleError, Verified};
pub use users::{LoginOutcome, User, UserError};

/// Test support: cheap argon2. The database fixture is `crate::testing::TestDb`.
#[cfg(test)]
pub(crate) mod testdb {
    use super::Hasher;
    use crate::config::PasswordsConfig;

    /// argon2id with tiny parameters (m = `memory_kib`, t = 1, p = 1): fast
    /// enough for tests, same code path as production.
    pub(crate) fn cheap(memory_kib: u32) -> Hasher {
        Hasher::new(&PasswordsConfig {
            memory_kib,
            iterations: 1,
            parallelism: 1,
        })
        .expect("valid test parameters")
    }
}
