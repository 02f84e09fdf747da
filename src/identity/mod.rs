//! Identity: users, OAuth clients and passwords.
//!
//! - [`passwords`]: argon2id hashing and verifying ([`Hasher`]), and the
//!   input rules for usernames, passwords and scopes ([`RuleError`]).
//! - [`users`]: the `users` table, and [`users::login`], the whole blocking
//!   part of the password grant.
//! - [`clients`]: the `oauth_clients` table, and the immutable
//!   [`ClientTable`] snapshot that authenticates clients on the event loop
//!   (given the client id and secret already decoded from the request).
//!
//! Everything that touches PostgreSQL or argon2 here is synchronous and runs
//! on the blocking pool, never on a worker core. The exceptions, cheap enough
//! for the event loop, are [`ClientTable::authenticate`] (one SHA-256) and
//! the rule checks. Never imports `http` or `handlers`.

pub mod clients;
pub mod passwords;
pub mod users;

pub use clients::{ClientAuthError, ClientError, ClientRecord, ClientTable, GrantType};
pub use passwords::{Hasher, PasswordError, RuleError, Verified};
pub use users::{LoginOutcome, User, UserError};

/// Test support: a throw-away PostgreSQL database per test, and cheap argon2.
#[cfg(test)]
pub(crate) mod testdb {
    use postgres::{Client, NoTls};
    use rand::Rng;

    use super::Hasher;
    use crate::config::PasswordsConfig;

    /// The local PostgreSQL of the test machine (trust authentication).
    const SERVER: &str = "host=127.0.0.1 port=5432 user=postgres";
    const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

    /// A fresh database with the schema applied, dropped (with `FORCE`, so
    /// open connections do not keep it alive) when the guard goes away. Each
    /// test gets its own, so tests run in parallel and leave nothing behind.
    pub(crate) struct TestDb {
        name: String,
        client: Option<Client>,
    }

    impl TestDb {
        pub(crate) fn new() -> TestDb {
            let name = format!("tokend_ident_test_{:016x}", rand::thread_rng().gen::<u64>());
            let mut admin = Client::connect(ADMIN, NoTls).expect("connect to PostgreSQL");
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .expect("create test database");
            // From here on the guard drops the database, even if a step fails.
            let mut db = TestDb { name, client: None };
            let mut client = Client::connect(&format!("{SERVER} dbname={}", db.name), NoTls)
                .expect("connect to the test database");
            client
                .batch_execute(include_str!("../../migrations/0001_init.sql"))
                .expect("apply migrations");
            db.client = Some(client);
            db
        }

        pub(crate) fn client(&mut self) -> &mut Client {
            self.client.as_mut().expect("client is set until drop")
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            drop(self.client.take());
            match Client::connect(ADMIN, NoTls) {
                Ok(mut admin) => {
                    if let Err(e) = admin.batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        self.name
                    )) {
                        eprintln!("cannot drop test database {}: {e}", self.name);
                    }
                }
                Err(e) => eprintln!("cannot drop test database {}: {e}", self.name),
            }
        }
    }

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
