//! The readiness check of PostgreSQL: `SELECT 1` on a connection of its own,
//! run by a thread of its own, its result shared by every core for a moment.
//!
//! Why not the blocking pool (issue #12): `/readyz` used to queue its check
//! there, so during a login storm a full queue (or every pooled connection
//! held by a login waiting for argon2) was reported as "postgresql
//! unreachable", and a load balancer would take a healthy node out exactly
//! when it is busiest. Readiness is about the database, not about the login
//! queue: this check shares neither the queue, nor the threads, nor the
//! connections with logins. A full queue has its own figure
//! (`tokend_blocking_rejected_total`).
//!
//! What it costs: one thread and one PostgreSQL connection per process, both
//! made on the first `/readyz`; at most one `SELECT 1` at a time, and none
//! while a result younger than the asker's `max_age` exists, so a flood of
//! `/readyz` costs the database nothing more. A check that hangs (a database
//! that accepts and never answers) is not waited for: the caller bounds its
//! wait (`handlers::health`), and asks again later; askers meanwhile join the
//! check in flight rather than queueing new ones.
//!
//! Owns: that thread, its connection and the last result. Never imports
//! anything above the stores (as [`crate::store`]); reads only its
//! `[database]` configuration.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use futures_channel::oneshot;

use crate::config::DatabaseConfig;

/// Most callers waiting for one check: bounds the waiters' list when the
/// check hangs and `/readyz` keeps coming (callers that gave up are removed
/// first). Far above what load balancers send.
const MAX_WAITERS: usize = 1024;

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgHealth {
    /// `SELECT 1` answered.
    Reachable,
    /// It did not; why, for the log (never carries the URL's password).
    Unreachable(String),
}

/// The answer to [`PgProbe::check`].
pub enum Probe {
    /// A result recent enough.
    Now(PgHealth),
    /// The result of the check in flight, when it comes; the caller bounds
    /// the wait. A dropped sender (the thread is gone) is an error.
    Later(oneshot::Receiver<PgHealth>),
}

/// The PostgreSQL readiness check; one per process, shared by the cores.
pub struct PgProbe {
    inner: Arc<Inner>,
}

struct Inner {
    config: DatabaseConfig,
    state: Mutex<State>,
    /// Wakes the thread when a caller waits.
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// When the last check finished, and what it found.
    last: Option<(Instant, PgHealth)>,
    /// Callers waiting for the next result (at most [`MAX_WAITERS`]).
    waiters: Vec<oneshot::Sender<PgHealth>>,
    started: bool,
    stop: bool,
}

impl PgProbe {
    /// A probe for the database of `config`; nothing runs (no thread, no
    /// connection) until the first [`PgProbe::check`].
    pub fn new(config: DatabaseConfig) -> PgProbe {
        PgProbe {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
        }
    }

    /// The last result if it finished within `max_age`, else a wait for the
    /// next one (which starts now unless one is in flight). Never blocks:
    /// the lock is held for a few instructions, by the cores and the probe
    /// thread only, never across the query.
    pub fn check(&self, max_age: std::time::Duration) -> Probe {
        let mut state = self.inner.lock();
        if let Some((at, health)) = &state.last {
            if at.elapsed() <= max_age {
                return Probe::Now(health.clone());
            }
        }
        state.waiters.retain(|w| !w.is_canceled());
        if state.waiters.len() >= MAX_WAITERS {
            return Probe::Now(PgHealth::Unreachable(format!(
                "{MAX_WAITERS} readiness checks are already waiting for PostgreSQL"
            )));
        }
        if !state.started {
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("tokend-readiness".into())
                .spawn(move || inner.run());
            if let Err(e) = spawned {
                return Probe::Now(PgHealth::Unreachable(format!(
                    "cannot start the readiness thread: {e}"
                )));
            }
            state.started = true;
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push(tx);
        self.inner.wake.notify_one();
        Probe::Later(rx)
    }
}

impl Drop for PgProbe {
    fn drop(&mut self) {
        self.inner.lock().stop = true;
        self.inner.wake.notify_one();
    }
}

impl Inner {
    /// The state, even if a thread panicked holding it (it holds plain
    /// values that are never left half-written).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The probe thread: one check per wake-up with waiters, until the
    /// probe is dropped. The connection is kept between checks and made
    /// again after any failure.
    fn run(&self) {
        let mut conn: Option<postgres::Client> = None;
        loop {
            {
                let mut state = self.lock();
                while !state.stop && state.waiters.is_empty() {
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                if state.stop {
                    return;
                }
            }
            let health = match select_one(&self.config, &mut conn) {
                Ok(()) => PgHealth::Reachable,
                Err(e) => {
                    conn = None;
                    PgHealth::Unreachable(e)
                }
            };
            let mut state = self.lock();
            for waiter in state.waiters.drain(..) {
                let _ = waiter.send(health.clone());
            }
            state.last = Some((Instant::now(), health));
        }
    }
}

/// `SELECT 1` on `conn`, connecting first when there is none.
fn select_one(config: &DatabaseConfig, conn: &mut Option<postgres::Client>) -> Result<(), String> {
    let client = match conn {
        Some(c) if !c.is_closed() => c,
        _ => conn.insert(super::pg::connect(config).map_err(|e| e.to_string())?),
    };
    client
        .simple_query("SELECT 1")
        .map(|_| ())
        .map_err(|e| format!("PostgreSQL query failed: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rt() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    /// Waits for a `Later` (10 s at most: a local `SELECT 1` takes
    /// milliseconds, a refused connection less).
    async fn answer(probe: Probe) -> PgHealth {
        match probe {
            Probe::Now(h) => h,
            Probe::Later(rx) => monoio::time::timeout(Duration::from_secs(10), rx)
                .await
                .expect("the probe answered within 10 s")
                .expect("the probe thread is alive"),
        }
    }

    #[test]
    fn a_reachable_database_is_checked_once_then_answered_from_the_result() {
        let config = DatabaseConfig {
            url: crate::testing::database_url(),
            ..DatabaseConfig::default()
        };
        let probe = PgProbe::new(config);
        rt().block_on(async move {
            let first = probe.check(Duration::from_secs(60));
            assert!(matches!(first, Probe::Later(_)), "no result yet");
            assert_eq!(answer(first).await, PgHealth::Reachable);
            // Within max_age: the result, without a query.
            assert!(matches!(
                probe.check(Duration::from_secs(60)),
                Probe::Now(PgHealth::Reachable)
            ));
            // Older than max_age: a new check, on the kept connection.
            let again = probe.check(Duration::ZERO);
            assert!(matches!(again, Probe::Later(_)));
            assert_eq!(answer(again).await, PgHealth::Reachable);
        });
    }

    #[test]
    fn an_unreachable_database_is_named_without_its_password() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let probe = PgProbe::new(DatabaseConfig {
            url: format!("postgres://app:hunter2@127.0.0.1:{closed}/tokend"),
            connect_timeout: Duration::from_secs(2),
            ..DatabaseConfig::default()
        });
        rt().block_on(async move {
            // Concurrent askers share one check.
            let (a, b) = (
                probe.check(Duration::from_secs(60)),
                probe.check(Duration::from_secs(60)),
            );
            let (a, b) = (answer(a).await, answer(b).await);
            assert_eq!(a, b);
            let PgHealth::Unreachable(why) = a else {
                panic!("nothing listens on port {closed}");
            };
            assert!(why.contains(&format!("127.0.0.1:{closed}")), "{why}");
            assert!(!why.contains("hunter2"), "{why}");
        });
    }
}
