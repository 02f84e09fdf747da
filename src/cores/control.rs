//! The control thread: signals, sd_notify, the systemd watchdog, and the jobs
//! that keep the cores' shared state current — re-seeding Redis, pruning keys
//! and revocations, reloading keys and clients (on a timer, on SIGHUP, and,
//! rate-limited, when a core met an unknown `kid`). All of it off the cores:
//! these jobs block on PostgreSQL and Redis. And off the control loop too:
//! re-seeding runs on a thread of its own, the PostgreSQL jobs on another
//! ([`PgJobs`]), so that a store that stops answering never delays a signal
//! or a watchdog ping (systemd's `WatchdogSec=10s` would otherwise kill a
//! tokend whose database froze; every PostgreSQL wait is bounded too, see
//! `store::pg`).
//!
//! Owns: [`serve`] (start, then the control loop until SIGTERM/SIGINT), the
//! loop's decisions ([`Schedule`], [`signal_action`], the watchdog interval),
//! and the jobs. Part of the composition root: `main.rs` calls [`serve`];
//! `boot` runs the first re-seed ([`ensure_seeded`]) before the cores start.
//!
//! Never imports: the table forbids the composition root nothing, but the
//! control thread stays off the request path: no `net`, `handlers`, `access`,
//! `router` or `http`. It reaches the cores through [`Shared`] (published
//! snapshots, flags) and the [`Server`] handle only.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{ServeError, Server};
use crate::clock::unix_now;
use crate::config::Config;
use crate::redis::BlockingRedis;
use crate::revocation::durable;
use crate::state::Shared;

/// Least time between two key-set reloads caused by unknown `kid`s: a flood
/// of garbage tokens must not turn into a flood of PostgreSQL queries.
pub const UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// How often the control loop wakes to look at signals, flags and timers.
const TICK: Duration = Duration::from_millis(50);

/// Runs `tokend serve` once logging is set up: installs the signal
/// handlers, starts every core, then runs the control loop until SIGTERM or
/// SIGINT has drained the cores. `on_sighup` runs on each SIGHUP before the
/// keys and clients reload (the binary reloads its log level there).
pub fn serve(config: Config, mut on_sighup: impl FnMut()) -> Result<(), ServeError> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(ServeError::Signals)?;
    let server = Server::start(config)?;
    let cores = server.shared().core_count();
    let driver = server.shared().driver().name();
    tracing::info!(driver, cores, "tokend listening on http://{}", server.addr);
    // READY=1 comes from the control loop, once Redis has answered too.
    control_loop(server, &mut signals, &mut on_sighup);
    Ok(())
}

/// What a signal asks of the control loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignalAction {
    /// SIGTERM, SIGINT: drain and stop.
    Stop,
    /// SIGHUP: reload keys, clients and the log level.
    Reload,
}

/// The action for `signal`; `None` for a signal the loop ignores.
fn signal_action(signal: i32) -> Option<SignalAction> {
    match signal {
        SIGTERM | SIGINT => Some(SignalAction::Stop),
        SIGHUP => Some(SignalAction::Reload),
        _ => None,
    }
}

/// systemd's watchdog interval, as `sd_watchdog_enabled(3)` reads it:
/// `WATCHDOG_USEC`, and `WATCHDOG_PID` when set must be this process.
/// (`sd_notify::watchdog_enabled` also insists on `WATCHDOG_PID` being set.)
fn watchdog_interval() -> Option<Duration> {
    watchdog_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] from the two variables' values and this process's
/// id: `None` when unset, unparsable, zero, or meant for another process.
fn watchdog_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok()?;
    if let Some(pid) = pid {
        if pid.parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// When the control loop does what. Pure decisions on the `Instant`s it is
/// given, so that they can be tested without waiting; each `*_due` method
/// also records that the thing is being done.
#[derive(Debug)]
struct Schedule {
    /// `keys.reload_interval`: the timed reload and prunes.
    reload_every: Duration,
    next_reload: Instant,
    /// Last reload caused by an unknown `kid` (at most one per
    /// [`UNKNOWN_KID_RELOAD_INTERVAL`]).
    last_kid_reload: Option<Instant>,
    /// Half systemd's watchdog interval, when the watchdog is on.
    ping_every: Option<Duration>,
    next_ping: Instant,
    ready_sent: bool,
}

impl Schedule {
    /// The schedule of a loop starting at `now`: the first timed reload one
    /// `reload_every` later, the first watchdog ping at once. With systemd's
    /// watchdog (WatchdogSec=) on, pings go at half its interval.
    fn new(now: Instant, reload_every: Duration, watchdog: Option<Duration>) -> Schedule {
        Schedule {
            reload_every,
            next_reload: now + reload_every,
            last_kid_reload: None,
            ping_every: watchdog.map(|d| d / 2),
            next_ping: now,
            ready_sent: false,
        }
    }

    /// True once: the first time Redis is ready (READY=1 is sent once).
    fn ready_due(&mut self, redis_ready: bool) -> bool {
        if self.ready_sent || !redis_ready {
            return false;
        }
        self.ready_sent = true;
        true
    }

    /// Whether READY=1 was sent (a reload ends with READY=1 again only then).
    fn ready_sent(&self) -> bool {
        self.ready_sent
    }

    /// Whether the timed reload is due at `now`; the next one is then one
    /// interval after `now`.
    fn reload_due(&mut self, now: Instant) -> bool {
        if now < self.next_reload {
            return false;
        }
        self.next_reload = now + self.reload_every;
        true
    }

    /// The ping period when a watchdog ping is due at `now` (the next is
    /// one period later); `None` otherwise or without a watchdog.
    fn ping_due(&mut self, now: Instant) -> Option<Duration> {
        let every = self.ping_every?;
        if now < self.next_ping {
            return None;
        }
        self.next_ping = now + every;
        Some(every)
    }

    /// Whether a core's request for a key reload (`requested`) is served
    /// at `now`: at most once per [`UNKNOWN_KID_RELOAD_INTERVAL`]. A request
    /// refused here is dropped; a core asks again at its next unknown `kid`.
    fn kid_reload_due(&mut self, now: Instant, requested: bool) -> bool {
        let allowed = self
            .last_kid_reload
            .is_none_or(|t| now.duration_since(t) >= UNKNOWN_KID_RELOAD_INTERVAL);
        if !(requested && allowed) {
            return false;
        }
        self.last_kid_reload = Some(now);
        true
    }
}

/// The control thread: signals, and key-set / client reloads — on a timer,
/// on SIGHUP, and (rate-limited) when a core met an unknown `kid`. All of it
/// off the cores.
fn control_loop(server: Server, signals: &mut Signals, on_sighup: &mut dyn FnMut()) {
    let shared = server.shared().clone();
    let mut schedule = Schedule::new(
        Instant::now(),
        shared.config().keys.reload_interval,
        watchdog_interval(),
    );
    spawn_seeder(&shared);
    let jobs = PgJobs::start(&shared);
    loop {
        for signal in signals.pending() {
            match signal_action(signal) {
                Some(SignalAction::Stop) => {
                    tracing::info!("shutting down: finishing requests in flight");
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                    server.shutdown();
                    tracing::info!("stopped");
                    return;
                }
                Some(SignalAction::Reload) => {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                    tracing::info!("SIGHUP: reloading keys, clients and the log level");
                    on_sighup();
                    // READY=1 again once the reload is done (or has failed),
                    // from the jobs thread.
                    let ready_after = schedule.ready_sent();
                    jobs.ask(|p| {
                        p.reload = Some("SIGHUP");
                        p.ready_after |= ready_after;
                    });
                }
                None => {}
            }
        }
        let now = Instant::now();
        if schedule.ready_due(shared.redis_ready()) {
            // Every core is serving, PostgreSQL answered at start and Redis
            // now answers and holds every revocation.
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            tracing::info!("ready");
        }
        if schedule.reload_due(now) {
            jobs.ask(|p| {
                p.reload.get_or_insert("timer");
                p.prune = true;
            });
        }
        if let Some(every) = schedule.ping_due(now) {
            if all_cores_alive(&shared, every * 2) {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            } else {
                tracing::error!("a core's event loop is stuck: not feeding the systemd watchdog");
            }
        }
        if schedule.kid_reload_due(now, shared.take_key_reload_request()) {
            jobs.ask(|p| {
                p.reload.get_or_insert("unknown kid");
            });
        }
        std::thread::sleep(TICK);
    }
}

/// What the control loop has asked of the PostgreSQL jobs and they have not
/// started yet. Requests coalesce: however many come while a job runs (a
/// frozen database makes each take up to its bounds), one of each runs next.
#[derive(Debug, Default, PartialEq, Eq)]
struct PendingJobs {
    /// Reload keys and clients, for this reason (the first asked, but
    /// SIGHUP's wins: an operator waits for it).
    reload: Option<&'static str>,
    /// Prune expired revocations and retired keys.
    prune: bool,
    /// Send READY=1 after the reload (a SIGHUP's RELOADING=1 is pending).
    ready_after: bool,
}

/// The thread that runs the control jobs that need PostgreSQL (reloads and
/// prunes), so that the control loop never waits for PostgreSQL: it only
/// asks ([`PgJobs::ask`]), which takes a lock held for no longer than a
/// swap. Runs the jobs in the loop itself if the thread cannot start.
struct PgJobs {
    shared: Arc<Shared>,
    pending: Arc<(Mutex<PendingJobs>, Condvar)>,
    /// False when the thread could not be started.
    threaded: bool,
}

impl PgJobs {
    fn start(shared: &Arc<Shared>) -> PgJobs {
        let pending: Arc<(Mutex<PendingJobs>, Condvar)> = Arc::default();
        let (s, p) = (shared.clone(), pending.clone());
        let spawned = std::thread::Builder::new()
            .name("tokend-pg-jobs".into())
            .spawn(move || loop {
                let jobs = {
                    let (lock, wake) = &*p;
                    let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                    while *guard == PendingJobs::default() {
                        guard = wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                    }
                    std::mem::take(&mut *guard)
                };
                run_jobs(&s, jobs);
            });
        if let Err(e) = &spawned {
            tracing::error!(
                "cannot start the PostgreSQL jobs thread, running them in the control loop: {e}"
            );
        }
        PgJobs {
            shared: shared.clone(),
            pending,
            threaded: spawned.is_ok(),
        }
    }

    /// Adds to what the jobs thread has to do, and wakes it.
    fn ask(&self, f: impl FnOnce(&mut PendingJobs)) {
        let (lock, wake) = &*self.pending;
        if !self.threaded {
            let mut jobs = PendingJobs::default();
            f(&mut jobs);
            run_jobs(&self.shared, jobs);
            return;
        }
        f(&mut lock.lock().unwrap_or_else(|e| e.into_inner()));
        wake.notify_one();
    }
}

/// Runs what was asked: the reload (then READY=1 when a SIGHUP asked for
/// it), then the prunes.
fn run_jobs(shared: &Shared, jobs: PendingJobs) {
    if let Some(why) = jobs.reload {
        // During a PostgreSQL outage (logged once by the pool) a reload
        // fails at once; reloads are rare enough to log every other failure.
        if let Err(e) = reload_published(shared) {
            if !shared.pg().is_down() {
                tracing::error!("reload ({why}) failed, keeping the current keys and clients: {e}");
            }
        }
    }
    if jobs.ready_after {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }
    if jobs.prune {
        prune_revocations(shared);
        prune_keys(shared);
    }
}

/// True while every core's event loop ticked within `within`: what the
/// systemd watchdog is fed on. A stuck core stops the pings, and systemd
/// restarts tokend.
fn all_cores_alive(shared: &Shared, within: Duration) -> bool {
    cores_alive(shared.heartbeats(), unix_now(), within)
}

/// Whether every heartbeat (unix seconds) is within `within` of `now`, with
/// at least two seconds of slack: heartbeats come once a second, in whole
/// seconds.
fn cores_alive(heartbeats: impl IntoIterator<Item = u64>, now: u64, within: Duration) -> bool {
    let slack = within.as_secs().max(2);
    heartbeats
        .into_iter()
        .all(|beat| now.saturating_sub(beat) <= slack)
}

/// Re-seeding talks to Redis and PostgreSQL and may wait on either: its own
/// thread, so that signals are always handled at once.
///
/// It also reconciles (see [`reconcile`]) every `redis.reconcile_interval`,
/// and at once whenever its connection reaches a different primary than the
/// last one it reconciled (issue #14): after a Sentinel failover the new
/// primary may lack the writes the old one had not yet replicated, and
/// PostgreSQL's copy of the revocations and marks is written back within
/// about a second of the promotion.
fn spawn_seeder(shared: &std::sync::Arc<Shared>) {
    let shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("tokend-seeder".into())
        .spawn(move || {
            let mut conn: Option<BlockingRedis> = None;
            let mut reconciled = std::time::Instant::now();
            let mut reconciled_primary: Option<String> = None;
            loop {
                let seeded = ensure_seeded(&shared, &mut conn);
                let primary = conn.as_ref().map(|c| c.peer().to_owned());
                let moved = seeded && primary.is_some() && primary != reconciled_primary;
                if moved {
                    if let (Some(old), Some(new)) = (&reconciled_primary, &primary) {
                        tracing::warn!(
                            "redis: the primary is now {new} (was {old}); re-applying the revocations PostgreSQL holds"
                        );
                    }
                }
                if moved
                    || (seeded && reconciled.elapsed() >= shared.config().redis.reconcile_interval)
                {
                    reconciled = std::time::Instant::now();
                    if reconcile(&shared, &mut conn) {
                        reconciled_primary = primary;
                    }
                }
                // While Redis (or its primary) is not reachable, look again
                // sooner: a failover's new primary is found within this.
                let pause = if seeded { 1000 } else { 250 };
                std::thread::sleep(Duration::from_millis(pause));
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the re-seeding thread: {e}");
    }
}

/// Re-applies what PostgreSQL holds (the revocations and marks that can
/// still void a live token) to Redis, writing back what Redis lacks
/// (`durable::reconcile_blocking`); every `redis.reconcile_interval`, on the
/// seeder thread. Redis or PostgreSQL trouble: logged (PostgreSQL's through
/// the pool's rate limit), retried at the next interval. True when it ran
/// to the end.
fn reconcile(shared: &Shared, redis: &mut Option<BlockingRedis>) -> bool {
    let Some(conn) = redis.as_mut() else {
        return false;
    };
    let config = shared.config();
    let longest = shared.client_table().longest_lifetimes(&config.tokens);
    let (access, refresh) = (longest.access.as_secs(), longest.refresh.as_secs());
    let now = unix_now();
    let pg = shared.pg();
    let input = match pg.get() {
        Ok(mut c) => {
            durable::load_for_reseed(&mut *c, now, access, refresh).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    let input = match input {
        Ok(input) => input,
        Err(e) => {
            pg.log_failure("reconciliation: cannot read revocations", &e);
            return false;
        }
    };
    match durable::reconcile_blocking(conn, &config.redis.prefix, &input, access, refresh, now) {
        Ok(stats) if stats.repaired_anything() => {
            tracing::warn!(
                access = stats.access,
                marks = stats.marks,
                "reconciliation: Redis lacked revocations that PostgreSQL holds; written back"
            );
            true
        }
        Ok(stats) => {
            tracing::debug!(
                access = input.revocations.len(),
                marks = input.marks.len(),
                families = stats.families,
                "reconciliation: Redis holds every revocation"
            );
            true
        }
        Err(e) => {
            tracing::warn!("reconciliation failed, will retry: {e}");
            *redis = None;
            false
        }
    }
}

/// Makes sure Redis holds every revocation: when the marker key is missing
/// (first start, or Redis lost its data), re-seeds Redis from PostgreSQL,
/// then sets the marker. Until then validation answers 503. Blocking: the
/// seeder thread calls it about once a second (and start-up once).
pub(super) fn ensure_seeded(shared: &Shared, redis: &mut Option<BlockingRedis>) -> bool {
    // After a failover that left the old primary running, the sentinels
    // name the new one before the old one is demoted: follow them.
    if let Some(conn) = redis.as_ref() {
        if !conn.is_current_primary(shared.redis_target(), Duration::from_secs(1)) {
            *redis = None;
        }
    }
    if redis.is_none() {
        // Tried every 250 ms while Redis is down: the cause at debug level
        // only, since the cores' connections already log each outage once.
        match BlockingRedis::connect_explained(shared.redis_target(), Duration::from_secs(2)) {
            Ok(r) => *redis = Some(r),
            Err(e) => {
                // Redis down: the cores already fail closed.
                tracing::debug!(
                    "re-seeding: cannot connect to {}: {e}",
                    shared.redis_target()
                );
                return false;
            }
        }
    }
    let Some(conn) = redis.as_mut() else {
        return false;
    };
    let config = shared.config();
    // The longest lifetimes of every client's tokens: a mark re-seeded with
    // a shorter one would be forgotten while a token it voids still lives.
    let longest = shared.client_table().longest_lifetimes(&config.tokens);
    let (access, refresh) = (longest.access.as_secs(), longest.refresh.as_secs());
    let pg = shared.pg().clone();
    let result = durable::ensure_seeded(
        conn,
        &config.redis.prefix,
        access,
        refresh,
        unix_now(),
        |now| {
            let mut c = pg.get()?;
            Ok(durable::load_for_reseed(&mut *c, now, access, refresh)?)
        },
    );
    match result {
        Ok(_) => {
            shared.mark_redis_ready();
            true
        }
        Err(e) => {
            // Retried every second: rate-limited, and quiet during a
            // PostgreSQL outage (logged once by the pool).
            shared
                .pg()
                .log_failure("re-seeding Redis failed, will retry", &e);
            // Reconnect next time: the connection may be what failed.
            *redis = None;
            false
        }
    }
}

/// Deletes signing keys that stopped signing longer ago than any token
/// they signed can live (safe from several nodes at once: the key
/// functions take an advisory lock).
fn prune_keys(shared: &Shared) {
    let longest = shared
        .client_table()
        .longest_lifetimes(&shared.config().tokens);
    let pg = shared.pg();
    match pg.get() {
        Ok(mut c) => match crate::tokens::keys::prune(&mut *c, longest.access) {
            Ok(pruned) => {
                for kid in pruned {
                    tracing::info!(kid, "pruned a retired signing key");
                }
            }
            Err(e) => pg.log_failure("cannot prune signing keys", &e),
        },
        Err(e) => pg.log_failure("cannot prune signing keys", &e),
    }
}

/// Deletes durable revocations whose tokens have expired anyway.
fn prune_revocations(shared: &Shared) {
    let pg = shared.pg();
    match pg.get() {
        Ok(mut c) => match durable::prune_expired(&mut *c) {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned expired revocations"),
            Err(e) => pg.log_failure("cannot prune expired revocations", &e),
        },
        Err(e) => pg.log_failure("cannot prune expired revocations", &e),
    }
}

/// Reloads the key set and the clients from PostgreSQL and publishes them.
/// Blocking: the PostgreSQL jobs thread calls it, never a core or the
/// control loop.
fn reload_published(shared: &Shared) -> Result<(), ServeError> {
    let mut conn = shared.pg().get().map_err(ServeError::Store)?;
    let material = crate::tokens::keys::load(&mut *conn, shared.kek())?;
    if material.generation() != shared.key_material().generation() {
        tracing::info!("key set changed; publishing to every core");
    }
    shared.publish_keys(material);
    let clients = crate::identity::clients::load_all(&mut *conn)?;
    shared.publish_clients(clients);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn signals_map_to_stop_reload_or_nothing() {
        assert_eq!(signal_action(SIGTERM), Some(SignalAction::Stop));
        assert_eq!(signal_action(SIGINT), Some(SignalAction::Stop));
        assert_eq!(signal_action(SIGHUP), Some(SignalAction::Reload));
        assert_eq!(signal_action(signal_hook::consts::SIGUSR1), None);
    }

    #[test]
    fn watchdog_needs_a_positive_usec() {
        assert_eq!(watchdog_from(None, None, 1), None);
        assert_eq!(watchdog_from(Some("0"), None, 1), None);
        assert_eq!(watchdog_from(Some("-5"), None, 1), None);
        assert_eq!(watchdog_from(Some("soon"), None, 1), None);
        assert_eq!(
            watchdog_from(Some("30000000"), None, 1),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn watchdog_pid_when_set_must_be_this_process() {
        assert_eq!(
            watchdog_from(Some("2000000"), Some("42"), 42),
            Some(Duration::from_secs(2))
        );
        assert_eq!(watchdog_from(Some("2000000"), Some("43"), 42), None);
        assert_eq!(watchdog_from(Some("2000000"), Some("x"), 42), None);
    }

    #[test]
    fn ready_is_due_once_and_only_after_redis() {
        let mut s = Schedule::new(Instant::now(), HOUR, None);
        assert!(!s.ready_due(false));
        assert!(!s.ready_sent());
        assert!(s.ready_due(true));
        assert!(s.ready_sent());
        assert!(!s.ready_due(true), "READY=1 is sent once");
    }

    #[test]
    fn the_timed_reload_comes_one_interval_after_the_last() {
        let t0 = Instant::now();
        let every = Duration::from_secs(30);
        let mut s = Schedule::new(t0, every, None);
        assert!(!s.reload_due(t0));
        assert!(!s.reload_due(t0 + every - Duration::from_millis(1)));
        // Late (the loop was busy): the next one counts from now.
        let late = t0 + every + Duration::from_secs(5);
        assert!(s.reload_due(late));
        assert!(!s.reload_due(late + every - Duration::from_millis(1)));
        assert!(s.reload_due(late + every));
    }

    #[test]
    fn no_watchdog_no_pings() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, HOUR, None);
        assert_eq!(s.ping_due(t0), None);
        assert_eq!(s.ping_due(t0 + HOUR), None);
    }

    #[test]
    fn watchdog_pings_at_once_then_every_half_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, HOUR, Some(Duration::from_secs(10)));
        let half = Duration::from_secs(5);
        assert_eq!(s.ping_due(t0), Some(half));
        assert_eq!(s.ping_due(t0 + Duration::from_secs(4)), None);
        assert_eq!(s.ping_due(t0 + half), Some(half));
        assert_eq!(s.ping_due(t0 + half), None);
    }

    #[test]
    fn unknown_kid_reloads_are_rate_limited_and_dropped_meanwhile() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, HOUR, None);
        assert!(!s.kid_reload_due(t0, false), "nothing asked");
        assert!(s.kid_reload_due(t0, true));
        assert!(!s.kid_reload_due(t0 + Duration::from_secs(1), true));
        assert!(!s.kid_reload_due(
            t0 + UNKNOWN_KID_RELOAD_INTERVAL - Duration::from_millis(1),
            true
        ));
        assert!(!s.kid_reload_due(t0 + UNKNOWN_KID_RELOAD_INTERVAL, false));
        assert!(s.kid_reload_due(t0 + UNKNOWN_KID_RELOAD_INTERVAL, true));
    }

    #[test]
    fn cores_are_alive_while_every_heartbeat_is_recent() {
        let within = Duration::from_secs(10);
        assert!(cores_alive([100, 95, 90], 100, within));
        assert!(!cores_alive([100, 89], 100, within), "one core is stuck");
        assert!(cores_alive(std::iter::empty(), 100, within));
        // Whole-second heartbeats: at least two seconds of slack.
        assert!(cores_alive([98], 100, Duration::from_millis(500)));
        assert!(!cores_alive([97], 100, Duration::from_millis(500)));
        // A heartbeat from a clock that stepped back is not "old".
        assert!(cores_alive([105], 100, within));
    }
}
