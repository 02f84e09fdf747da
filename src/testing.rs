//! Test support shared by the unit tests (`cfg(test)`) and the integration
//! tests (`tests/it`, through the `test-support` feature that the crate's
//! dev-dependency on itself turns on): the one PostgreSQL fixture and the
//! `TOKEND_TEST_*` settings.
//!
//! Every test connects through `TOKEND_TEST_DATABASE_URL` and
//! `TOKEND_TEST_REDIS_URL` (the defaults suit a development machine;
//! `scripts/test.sh` sets both to the password-authenticated role that
//! `scripts/services.sh` creates). Nothing here assumes trust authentication.
//!
//! Owns: test databases and their template. Never imports anything of the
//! crate but the migrations runner.

use std::sync::OnceLock;
use std::time::Duration;

/// Admin connection URL; tests create and drop their databases through it.
/// `TOKEND_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn database_url() -> String {
    std::env::var("TOKEND_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis the tests use, each under its own key prefix.
/// `TOKEND_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`.
pub fn redis_url() -> String {
    std::env::var("TOKEND_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A random lowercase name part (12 letters): database names, key prefixes.
pub fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..12)
        .map(|_| (b'a' + rng.gen_range(0..26)) as char)
        .collect()
}

/// `url` with its database name replaced by `db`.
pub fn url_with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    format!("{base}/{db}{query}")
}

fn admin() -> postgres::Client {
    postgres::Client::connect(&database_url(), postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "connect to PostgreSQL as the test admin ({}): {e}; \
             set TOKEND_TEST_DATABASE_URL or run scripts/test.sh",
            crate::config::redact_url(&database_url())
        )
    })
}

/// The template database, migrated once per set of migrations with the
/// real runner (`store::migrate::run`), created under an advisory lock so
/// that parallel test binaries agree on it.
fn template() -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (_, name, sql) in crate::store::migrate::MIGRATIONS {
            h.update(name.as_bytes());
            h.update(sql.as_bytes());
        }
        let sum = h.finalize();
        let mut c = admin();
        // One template per role: the tables of a clone belong to whoever
        // migrated the template, and the tests' role must own them (a
        // template made by `postgres` is unusable for the `tokend` role that
        // scripts/test.sh uses).
        let role: String = c
            .query_one("SELECT current_user::text", &[])
            .expect("current_user")
            .get(0);
        let role: String = role.chars().filter(|ch| ch.is_ascii_alphanumeric()).collect();
        let family = format!("tokend_tpl_{role}_");
        let name = format!(
            "{family}{:02x}{:02x}{:02x}{:02x}",
            sum[0], sum[1], sum[2], sum[3]
        );
        c.execute("SELECT pg_advisory_lock(7316451)", &[])
            .expect("advisory lock");
        let exists = c
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .expect("look up the template")
            .is_some();
        if !exists {
            // Templates of older migration sets are of no use any more.
            let stale = c
                .query(
                    "SELECT datname FROM pg_database WHERE starts_with(datname, $2) AND datname <> $1",
                    &[&name, &family],
                )
                .expect("list old templates");
            for row in stale {
                let old: String = row.get(0);
                let _ = c.batch_execute(&format!("ALTER DATABASE {old} IS_TEMPLATE false"));
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {old} WITH (FORCE)"));
            }
            let tmp = format!("{name}_tmp_{}", random_suffix());
            c.batch_execute(&format!("CREATE DATABASE {tmp}"))
                .expect("create the template");
            {
                let mut db = postgres::Client::connect(
                    &url_with_db(&database_url(), &tmp),
                    postgres::NoTls,
                )
                .expect("connect to the template");
                crate::store::migrate::run(&mut db).expect("migrate the template");
            }
            c.batch_execute(&format!("ALTER DATABASE {tmp} RENAME TO {name}"))
                .expect("rename the template");
            // Any role with CREATEDB may clone a template database.
            c.batch_execute(&format!("ALTER DATABASE {name} IS_TEMPLATE true"))
                .expect("mark the template");
        }
        c.execute("SELECT pg_advisory_unlock(7316451)", &[])
            .expect("advisory unlock");
        name
    })
}

/// A fresh database with every migration applied (cloned from the
/// template), dropped with `FORCE` when the value goes away, also when the
/// test panics. Each test gets its own, so tests run in parallel and leave
/// nothing behind.
pub struct TestDb {
    /// The database's name (`tokend_t_<random>`).
    pub name: String,
    /// A URL that reaches it, with the test admin's credentials.
    pub url: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        let tpl = template();
        let name = format!("tokend_t_{}", random_suffix());
        let mut c = admin();
        // CREATE DATABASE … TEMPLATE fails while anyone is connected to the
        // template; nobody should be, but ride out autovacuum for up to ~5 s.
        let mut tries = 0;
        loop {
            match c.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {tpl}")) {
                Ok(()) => break,
                Err(_) if tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("create test database: {e}"),
            }
        }
        let url = url_with_db(&database_url(), &name);
        TestDb { name, url }
    }

    /// An empty database (no migrations applied), for tests of the
    /// migrations runner itself; named and dropped like any other.
    pub fn empty() -> TestDb {
        let name = format!("tokend_t_{}", random_suffix());
        admin()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("create test database: {e}"));
        let url = url_with_db(&database_url(), &name);
        TestDb { name, url }
    }

    /// A new connection to the test database.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to test database {}: {e}", self.name))
    }
}

impl Default for TestDb {
    fn default() -> Self {
        TestDb::new()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match postgres::Client::connect(&database_url(), postgres::NoTls) {
            Ok(mut c) => {
                if let Err(e) = c.batch_execute(&format!(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_db_replaces_only_the_database() {
        assert_eq!(
            url_with_db("postgres://u:p@h:5432/postgres", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(url_with_db("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            url_with_db("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }

    #[test]
    fn a_test_database_has_every_migration() {
        let db = TestDb::new();
        let mut c = db.client();
        let applied: i64 = c
            .query_one("SELECT count(*) FROM tokend_schema_migrations", &[])
            .unwrap()
            .get(0);
        assert_eq!(applied as usize, crate::store::migrate::MIGRATIONS.len());
    }

    #[test]
    fn an_empty_test_database_has_no_tables_and_goes_away() {
        let db = TestDb::empty();
        let name = db.name.clone();
        let tables: i64 = db
            .client()
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(tables, 0);
        drop(db);
        let left = admin()
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .unwrap();
        assert!(left.is_none(), "{name} was not dropped");
    }
}
