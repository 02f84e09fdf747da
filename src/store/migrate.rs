//! The migrations runner: applies `migrations/NNNN_name.sql` in order, each
//! once and in its own transaction, recorded in `tokend_schema_migrations`.
//!
//! The SQL files are compiled into the binary, so an installed `tokend` needs
//! no source tree. A session-level advisory lock serialises runners, so two
//! nodes migrating at once is safe: the second waits, then finds nothing to
//! do. A migration edited after it was applied is refused (its SHA-256 is
//! recorded).
//!
//! Owns: the schema: the list of migrations ([`MIGRATIONS`]), their order and
//! checksums, and the `tokend_schema_migrations` table.
//!
//! Never imports: anything of the crate; above all no service, whose tables
//! it creates without knowing their queries.

use sha2::{Digest, Sha256};

/// Every migration, in order. A unit test checks that this list matches the
/// files in `migrations/`.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "0001_init.sql",
        include_str!("../../migrations/0001_init.sql"),
    ),
    (
        2,
        "0002_refresh_max_lifetime.sql",
        include_str!("../../migrations/0002_refresh_max_lifetime.sql"),
    ),
    (
        3,
        "0003_authorization_code_clients.sql",
        include_str!("../../migrations/0003_authorization_code_clients.sql"),
    ),
];

/// Advisory-lock key of the runner ("tokend" in ASCII).
const LOCK_KEY: i64 = 0x746f_6b65_6e64;

/// Occurs when the migrations cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Occurs when PostgreSQL fails a statement.
    #[error("migration {name} failed: {source}")]
    Failed {
        name: &'static str,
        #[source]
        source: postgres::Error,
    },
    /// Occurs when bookkeeping queries fail.
    #[error("cannot read or write the migrations table: {0}")]
    Table(#[from] postgres::Error),
    /// Occurs when an applied migration's file has changed since.
    #[error("migration {name} was changed after it was applied (checksum mismatch); add a new migration instead")]
    Changed { name: &'static str },
}

/// Applies the pending migrations. Returns the names of those applied now.
pub fn run(client: &mut postgres::Client) -> Result<Vec<&'static str>, MigrateError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])?;
    let result = apply(client);
    // Released on disconnect anyway; unlock explicitly for long-lived clients.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]);
    result
}

fn apply(client: &mut postgres::Client) -> Result<Vec<&'static str>, MigrateError> {
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS tokend_schema_migrations (
            version    integer     PRIMARY KEY,
            name       text        NOT NULL,
            sha256     bytea       NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )?;
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        let sum = Sha256::digest(sql.as_bytes()).to_vec();
        let row = client.query_opt(
            "SELECT sha256 FROM tokend_schema_migrations WHERE version = $1",
            &[&(version as i32)],
        )?;
        if let Some(row) = row {
            let recorded: Vec<u8> = row.get(0);
            if recorded != sum {
                return Err(MigrateError::Changed { name });
            }
            continue;
        }
        let mut tx = client.transaction()?;
        tx.batch_execute(sql)
            .map_err(|source| MigrateError::Failed { name, source })?;
        tx.execute(
            "INSERT INTO tokend_schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
            &[&(version as i32), &name, &sum],
        )?;
        tx.commit()?;
        tracing::info!(migration = name, "applied");
        applied.push(name);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_listed_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(|m| m.1.to_string()).collect();
        assert_eq!(
            files, listed,
            "migrations/ and store::migrate::MIGRATIONS differ"
        );
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.0 as usize, i + 1);
            assert!(m.1.starts_with(&format!("{:04}_", m.0)));
        }
    }
}
