//! Where blocking work runs: the bounded blocking pool, the PostgreSQL
//! connection pool it uses, and the migrations runner.
//!
//! - [`pool`]: [`BlockingPool`], threads behind a bounded queue for
//!   everything that may block (PostgreSQL, argon2); a full queue is refused
//!   at once ([`PoolError::Full`]).
//! - [`pg`]: [`PgPool`] and [`StoreError`], the `SELECT 1` check, and one-off
//!   connections for CLI commands; every wait bounded, an outage logged once
//!   and answered at once.
//! - [`deadline`]: tokend's own deadline on every wait for PostgreSQL's
//!   answer, on its side of the socket (a frozen server or network never
//!   delivers the server's `statement_timeout`), and TLS under it.
//! - [`pgtls`]: `sslmode` and `sslrootcert` of `database.url`, and the
//!   rustls configuration each mode asks for.
//! - [`probe`]: [`PgProbe`], the readiness check of PostgreSQL, on a thread
//!   and a connection of its own (never queued behind logins).
//! - [`migrate`]: the schema: `migrations/*.sql`, applied in order.
//!
//! Owns: the threads that may block, the connections to PostgreSQL and the
//! schema; not the queries: each service keeps its own SQL (`identity`,
//! `tokens::keys`, `revocation::durable`).
//!
//! Never imports: `handlers`, `http`, `net`, `router`, `state`, `access`,
//! `cores`, `redis` or any service (`tokens`, `revocation`, `refresh`,
//! `ratelimit`, `identity`): the services build on it, never the other way.
//! Of the crate it reads only `config`.

pub mod deadline;
pub mod migrate;
pub mod pg;
pub mod pgtls;
pub mod pool;
pub mod probe;

pub use pg::{PgConn, PgPool, StoreError};
pub use pool::{BlockingPool, PoolError};
pub use probe::{PgHealth, PgProbe, Probe};
