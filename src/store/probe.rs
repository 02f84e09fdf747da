//! The readiness check of PostgreSQL: `SELECT 1` on a connection of its own,
//! run once a second by a thread of its own; `/readyz` reads the latest
//! result.
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
//! Why a result checked in the background rather than a check per
//! `/readyz`: the answer comes at once (load balancers and Kubernetes give
//! readiness a second or less), a flood of `/readyz` costs the database
//! nothing, and one slow `SELECT 1` on a loaded machine (measured: 2 s
//! stalls, a few in a thousand, during a login storm with the machine's two
//! CPUs saturated) does not fail readiness while the previous answer is
//! recent. What counts as unreachable: the last check failed (its error), or
//! the check in flight has had no answer for [`Timing::answer_timeout`]
//! (5 s): a database that accepts connections and never answers is reported
//! within that, and the thread stuck on it is not waited for.
//!
//! What it costs: one thread and one PostgreSQL connection per process, both
//! made at start-up (`cores::boot` asks a first time) or on the first
//! `/readyz`; one `SELECT 1` a second while readiness has been asked within
//! the last minute, none otherwise.
//!
//! Owns: that thread, its connection and the results. Never imports
//! anything above the stores (as [`crate::store`]); reads only its
//! `[database]` configuration.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::config::DatabaseConfig;

/// Most callers waiting for the first result: bounds the waiters' list
/// while the first check hangs and `/readyz` keeps coming (callers that gave
/// up are removed first). Far above what load balancers send.
const MAX_WAITERS: usize = 1024;

/// The probe's rhythm and patience.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Time between checks while readiness is asked.
    pub interval: Duration,
    /// A check with no answer for this long makes PostgreSQL unreachable;
    /// a result older than this is no longer answered.
    pub answer_timeout: Duration,
    /// Checks run while readiness was asked within this.
    pub asked_window: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            interval: Duration::from_secs(1),
            answer_timeout: Duration::from_secs(5),
            asked_window: Duration::from_secs(60),
        }
    }
}

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
    /// The latest result, or the verdict on a check that hangs.
    Now(PgHealth),
    /// No result yet (the first check is in flight): it, when it comes; the
    /// caller bounds the wait. A dropped sender (the thread is gone) is an
    /// error.
    Later(oneshot::Receiver<PgHealth>),
}

/// The PostgreSQL readiness check; one per process, shared by the cores.
pub struct PgProbe {
    inner: Arc<Inner>,
}

struct Inner {
    config: DatabaseConfig,
    timing: Timing,
    state: Mutex<State>,
    /// Wakes the thread when readiness is asked.
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// When the last check finished, and what it found.
    last: Option<(Instant, PgHealth)>,
    /// When the check in flight started.
    running_since: Option<Instant>,
    /// When readiness was last asked.
    asked: Option<Instant>,
    /// Callers waiting for a result (at most [`MAX_WAITERS`]).
    waiters: Vec<oneshot::Sender<PgHealth>>,
    started: bool,
    stop: bool,
}

impl PgProbe {
    /// A probe for the database of `config`; nothing runs (no thread, no
    /// connection) until the first [`PgProbe::check`].
    pub fn new(config: DatabaseConfig) -> PgProbe {
        PgProbe::with_timing(config, Timing::default())
    }

    /// A probe with its own rhythm (tests).
    pub fn with_timing(config: DatabaseConfig, timing: Timing) -> PgProbe {
        PgProbe {
            inner: Arc::new(Inner {
                config,
                timing,
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
        }
    }

    /// Whether PostgreSQL answers: unreachable when the check in flight has
    /// had no answer for `answer_timeout`, else the latest result if it is
    /// younger than that, else (no result yet) a wait for the next one.
    /// Never blocks: the lock is held for a few instructions, by the cores
    /// and the probe thread only, never across a query.
    pub fn check(&self) -> Probe {
        let timing = self.inner.timing;
        let mut state = self.inner.lock();
        state.asked = Some(Instant::now());
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
        self.inner.wake.notify_one();
        if let Some(since) = state.running_since {
            let waited = since.elapsed();
            if waited > timing.answer_timeout {
                return Probe::Now(PgHealth::Unreachable(format!(
                    "no answer to SELECT 1 for {} s",
                    waited.as_secs()
                )));
            }
        }
        if let Some((at, health)) = &state.last {
            if at.elapsed() <= timing.answer_timeout {
                return Probe::Now(health.clone());
            }
        }
        state.waiters.retain(|w| !w.is_canceled());
        if state.waiters.len() >= MAX_WAITERS {
            return Probe::Now(PgHealth::Unreachable(format!(
                "{MAX_WAITERS} readiness checks are already waiting for PostgreSQL"
            )));
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push(tx);
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

    /// The probe thread: a check when a caller waits, and one every
    /// `interval` while readiness was asked within `asked_window`, until the
    /// probe is dropped. The connection is kept between checks and made
    /// again after any failure.
    fn run(&self) {
        let t = self.timing;
        let mut conn: Option<postgres::Client> = None;
        loop {
            {
                let mut state = self.lock();
                loop {
                    if state.stop {
                        return;
                    }
                    let asked = state.asked.is_some_and(|a| a.elapsed() <= t.asked_window);
                    let since_last = state.last.as_ref().map(|(at, _)| at.elapsed());
                    let due = since_last.is_none_or(|s| s >= t.interval);
                    if !state.waiters.is_empty() || (asked && due) {
                        break;
                    }
                    state = if asked {
                        let rest = t.interval.saturating_sub(since_last.unwrap_or_default());
                        self.wake
                            .wait_timeout(state, rest.max(Duration::from_millis(1)))
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    } else {
                        self.wake.wait(state).unwrap_or_else(|p| p.into_inner())
                    };
                }
                state.running_since = Some(Instant::now());
            }
            let health = match select_one(&self.config, &mut conn) {
                Ok(()) => PgHealth::Reachable,
                Err(e) => {
                    conn = None;
                    PgHealth::Unreachable(e)
                }
            };
            let mut state = self.lock();
            state.running_since = None;
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

    /// Polls `done` every 5 ms for 10 s at most (generous: the conditions
    /// take milliseconds, on a loaded 2-CPU machine too).
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn finished_checks(probe: &PgProbe) -> Option<Instant> {
        probe.inner.lock().last.as_ref().map(|(at, _)| *at)
    }

    #[test]
    fn a_reachable_database_is_checked_in_the_background_and_answered_at_once() {
        let config = DatabaseConfig {
            url: crate::testing::database_url(),
            ..DatabaseConfig::default()
        };
        let probe = PgProbe::with_timing(
            config,
            Timing {
                interval: Duration::from_millis(50),
                ..Timing::default()
            },
        );
        rt().block_on(async move {
            let first = probe.check();
            assert!(matches!(first, Probe::Later(_)), "no result yet");
            assert_eq!(answer(first).await, PgHealth::Reachable);
            // The latest result, at once.
            assert!(matches!(probe.check(), Probe::Now(PgHealth::Reachable)));
            // Checked again in the background, on the kept connection.
            let before = finished_checks(&probe);
            until("a background check", || finished_checks(&probe) > before).await;
            assert!(matches!(probe.check(), Probe::Now(PgHealth::Reachable)));
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
            let (a, b) = (probe.check(), probe.check());
            let (a, b) = (answer(a).await, answer(b).await);
            assert_eq!(a, b);
            let PgHealth::Unreachable(why) = a else {
                panic!("nothing listens on port {closed}");
            };
            assert!(why.contains(&format!("127.0.0.1:{closed}")), "{why}");
            assert!(!why.contains("hunter2"), "{why}");
        });
    }

    /// A database that accepts connections and never answers: once the check
    /// has had no answer for `answer_timeout`, PostgreSQL is unreachable, at
    /// once, while the probe thread is still stuck on it.
    #[test]
    fn a_check_that_hangs_makes_the_database_unreachable_after_the_timeout() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let probe = PgProbe::with_timing(
            DatabaseConfig {
                url: format!("postgres://app@127.0.0.1:{port}/tokend"),
                ..DatabaseConfig::default()
            },
            Timing {
                answer_timeout: Duration::from_millis(300),
                ..Timing::default()
            },
        );
        rt().block_on(async move {
            let Probe::Later(first) = probe.check() else {
                panic!("no result yet");
            };
            // The first check hangs: its waiter gets nothing...
            assert!(
                monoio::time::timeout(Duration::from_millis(100), first)
                    .await
                    .is_err(),
                "a silent server answered"
            );
            // ...and past the answer timeout the verdict comes at once.
            until("the answer timeout", || {
                matches!(probe.check(), Probe::Now(PgHealth::Unreachable(_)))
            })
            .await;
            let Probe::Now(PgHealth::Unreachable(why)) = probe.check() else {
                unreachable!()
            };
            assert!(why.starts_with("no answer to SELECT 1 for"), "{why}");
        });
        drop(silent);
    }
}
