//! Where blocking work runs: the bounded blocking pool, the PostgreSQL
//! connection pool it uses, and the migrations runner.

pub mod migrate;
pub mod pg;
pub mod pool;

pub use pg::{PgPool, StoreError};
pub use pool::{BlockingPool, PoolError};
