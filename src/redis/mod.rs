//! The Redis client: a per-core pipelined connection, and a blocking one.
//!
//! A store, like `store` is for PostgreSQL: it knows RESP and sockets, and
//! nothing of tokens, revocations or HTTP. The files follow the path of a
//! command:
//!
//! - `target`: `redis://` URL → [`RedisTarget`], and the
//!   `AUTH`/`SELECT`/`PING`/`ROLE` handshake.
//! - `sentinel`: [`Sentinels`], where the primary is when Redis Sentinel
//!   names it.
//! - `tls`: [`RedisTls`], for `rediss://`.
//! - `acked`: [`Writes`], the writes that must survive a failover, and the
//!   `WAIT` for their replicas (`redis.min_replicas_acked`).
//! - `conn`: [`RedisConn`], one per core, shared through `Rc`: callers
//!   queue commands (with [`CommandWriter`] straight into its write buffer,
//!   or as `redis::Cmd`s) and wait for their replies, matched in FIFO order;
//!   every command queued meanwhile goes out in one write. [`RedisStats`] are
//!   its counters, read by the metrics.
//! - `supervisor`: the connection's background task: connect, read, write,
//!   watch for a stalled Redis, reconnect with backoff.
//! - `resp`: the RESP2 decoder and the owned [`Reply`].
//! - `script`: [`Script`], a Lua script run by `EVALSHA` (the scripts are
//!   `.lua` files beside the services that own them).
//! - `error`: [`RedisError`], `Copy` and allocation-free.
//! - `blocking`: [`BlockingRedis`], a synchronous client for the CLI, the
//!   control thread and tests.
//!
//! Owns: connections to Redis. Never imports `handlers`, `http`, `net`,
//! `router`, `state`, `cores`, `access` or any service (`revocation`,
//! `refresh`, `ratelimit`, `tokens`, `identity`): the services build their
//! keys and scripts on top of this.

mod acked;
mod blocking;
mod conn;
mod error;
mod resp;
mod script;
mod sentinel;
mod supervisor;
mod target;
mod tls;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use self::acked::Writes;
pub use self::blocking::BlockingRedis;
pub use self::conn::{CommandWriter, RedisConn, RedisStats};
pub use self::error::{RedisError, ServerErrorCode};
/// The RESP2 decoder, public for the `resp` fuzz target (`fuzz/`) only:
/// nothing outside `redis` decodes replies.
pub use self::resp::decode_reply;
pub use self::resp::Reply;
pub use self::script::Script;
pub use self::sentinel::{ConnectError, LocateError, Sentinels};
pub use self::target::{RedisTarget, Role};
pub use self::tls::RedisTls;
