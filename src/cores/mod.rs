//! The composition root: thread-per-core serving, put together from the
//! parts below it. One pinned thread per configured core, each running its
//! own monoio event loop with its own listener, caches and Redis connection;
//! the control thread handles signals, reloads and shutdown.
//!
//! - `boot`: start-up. Check the configuration, reach PostgreSQL and
//!   Redis, bind every listener (so a port conflict fails before anything
//!   runs), start the blocking pool, start the cores and wait until each
//!   reports it is serving. Only then is the service "ready".
//! - `accept`: one core's accept loop, its drain on shutdown, and its
//!   once-a-second ticker (`Date` header, watchdog heartbeat).
//! - `control`: the control thread: signals, sd_notify, the watchdog, the
//!   timed and requested reloads, and the jobs it runs (re-seed Redis,
//!   prune keys and revocations, reload keys and clients); [`serve`] runs
//!   it all.
//!
//! Owns: [`ServeError`], the one error of `tokend serve`, and [`Server`], the
//! handle of the running cores (their address, [`Server::shutdown`]).
//!
//! Never imports: no module is off limits to the composition root (its row in
//! `tests/it/layers.rs` names them all); the rule runs the other way: nothing
//! imports `cores` but `main.rs`.

mod accept;
mod boot;
mod control;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use futures_channel::oneshot;

use crate::state::Shared;
use crate::store;

pub use boot::resolve_cores;
pub use control::{serve, UNKNOWN_KID_RELOAD_INTERVAL};

/// Occurs when `tokend serve` cannot start or stops abnormally. Each message
/// names the part at fault, in one line.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Occurs when `server.cores` names cores this process may not run on.
    #[error("server.cores: {0}")]
    Cores(String),
    /// Occurs when the listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Occurs when PostgreSQL is unreachable at start.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Occurs when `redis.url` is invalid or Redis does not answer at start.
    #[error("redis: {0}")]
    Redis(String),
    /// Occurs when a core cannot build its runtime (e.g. io_uring refused).
    #[error("core {core}: {message}")]
    Core { core: usize, message: String },
    /// Occurs when signal handlers cannot be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// Occurs when the key-encryption key or the signing keys are unusable.
    #[error(transparent)]
    Keys(#[from] crate::tokens::KeyError),
    /// Occurs when the OAuth clients cannot be loaded.
    #[error("cannot load OAuth clients: {0}")]
    Clients(#[from] crate::identity::ClientError),
    /// Occurs when the argon2 parameters are refused.
    #[error("passwords: {0}")]
    Passwords(#[from] crate::identity::PasswordError),
}

/// A running server: its address, and the handle to stop it.
pub struct Server {
    pub addr: SocketAddr,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    pool_threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Server {
    /// What every core shares.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Graceful shutdown: every core stops accepting, answers what has
    /// arrived on each connection (up to `server.shutdown_timeout`; see
    /// `net::serve_connection`), closes idle connections; then the blocking
    /// pool drains.
    pub fn shutdown(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
        // The blocking threads are not joined: every request that waited on
        // them has been answered, and a core's tasks may still hold clones
        // of the pool handle. They end with the process.
        drop(self.pool_threads);
    }
}
