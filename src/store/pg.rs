//! The PostgreSQL pool (`r2d2` + `r2d2_postgres`), the `SELECT 1` check, and
//! one-off connections for CLI commands. Used from the blocking pool, at
//! start-up, on the control thread and by CLI commands: a worker core's event
//! loop never calls it.
//!
//! Owns: how tokend connects to PostgreSQL (URL, connect timeout,
//! `application_name`, pool size) and [`StoreError`], whose messages never
//! carry the URL's password.
//!
//! Never imports: `handlers`, `http`, `net`, `state`, `cores`, `redis` or any
//! service; of the crate it reads only its `[database]` configuration.

use std::time::Duration;

use r2d2_postgres::postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;

use crate::config::{redact_url, DatabaseConfig};

/// A pool of PostgreSQL connections.
pub type PgPool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// Occurs when PostgreSQL cannot be reached or a query fails. Logged with its
/// source; clients only ever see `server_error` / `temporarily_unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Occurs when `database.url` does not parse.
    #[error("database.url is not a valid PostgreSQL URL ({url}): {source}")]
    Url {
        url: String,
        #[source]
        source: postgres::Error,
    },
    /// Occurs when no connection could be had within `database.connect_timeout`.
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: r2d2::Error,
    },
    /// Occurs when a direct connection (CLI commands) cannot be made.
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: postgres::Error,
    },
    /// Occurs when a query fails.
    #[error("PostgreSQL query failed: {0}")]
    Query(#[from] postgres::Error),
}

/// Builds the pool without connecting (connections are made on first use).
pub fn pool(config: &DatabaseConfig, size: u32) -> Result<PgPool, StoreError> {
    let pg_config: postgres::Config = config.url.parse().map_err(|source| StoreError::Url {
        url: redact_url(&config.url),
        source,
    })?;
    let mut pg_config = pg_config;
    pg_config.connect_timeout(config.connect_timeout);
    pg_config.application_name("tokend");
    let manager = PostgresConnectionManager::new(pg_config, NoTls);
    Ok(r2d2::Pool::builder()
        .max_size(size.max(1))
        .min_idle(Some(0))
        .connection_timeout(config.connect_timeout)
        .error_handler(Box::new(r2d2::LoggingErrorHandler))
        .build_unchecked(manager))
}

/// `SELECT 1` within `timeout`: the readiness check and the start-up check.
/// Blocking: call it from the blocking pool or the CLI.
pub fn ping(pool: &PgPool, url: &str, timeout: Duration) -> Result<(), StoreError> {
    let mut conn = pool
        .get_timeout(timeout)
        .map_err(|source| StoreError::Connect {
            url: redact_url(url),
            source,
        })?;
    conn.simple_query("SELECT 1")?;
    Ok(())
}

/// One connection, outside any pool: for CLI commands.
pub fn connect(config: &DatabaseConfig) -> Result<postgres::Client, StoreError> {
    let mut pg_config: postgres::Config = config.url.parse().map_err(|source| StoreError::Url {
        url: redact_url(&config.url),
        source,
    })?;
    pg_config.connect_timeout(config.connect_timeout);
    pg_config.application_name("tokend");
    pg_config
        .connect(NoTls)
        .map_err(|source| StoreError::Unreachable {
            url: redact_url(&config.url),
            source,
        })
}
