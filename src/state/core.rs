//! [`Core`]: one core's context, owned by its thread and handed to every
//! connection and handler of that core as `&Core` / `Rc<Core>`.
//!
//! Owns: the core's Redis connection, revocation and refresh stores, its
//! parsed keys and verified-token cache, its copy of the client table, its
//! `Date` cache, coarse clock and counters, and its connection and drain
//! accounting.
//! Everything else is reached through accessors that say what the caller
//! needs, never through public fields. Never imports `cores`, `net`,
//! `handlers`, `router` or request types.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use super::shared::Shared;
use crate::codes::{CodeMac, CodeStore};
use crate::config::{Config, Driver, TokensConfig};
use crate::http::{DateCache, Limits};
use crate::identity::{ClientTable, Hasher, SecretMemo};
use crate::metrics::{CoreCounters, SharedHistogram};
use crate::redis::{RedisConn, Writes};
use crate::refresh::{RecordMac, RefreshStore};
use crate::revocation::mirror::{self, Mirror, Progress};
use crate::revocation::RedisRevocations;
use crate::sessions::{SessionMac, SessionStore};
use crate::signin::SigninMac;
use crate::store::{BlockingPool, PgPool, PgProbe};
use crate::tokens::{CoreKeys, Expectations, KeyError, KeyMaterial, VerifiedCache, VerifiedToken};

/// One core's state. Owned by its thread (`Rc`), never shared.
pub struct Core {
    id: usize,
    shared: Arc<Shared>,
    date: DateCache,
    redis: Rc<RedisConn>,
    counters: Arc<CoreCounters>,
    /// The revocation check (one Redis round trip) and revocation writes.
    revocations: RedisRevocations,
    /// The in-memory revocation mirror, when `redis.revocation_mirror` is
    /// on; asked before `revocations` (see `revocation::mirror`).
    mirror: Option<Rc<Mirror>>,
    /// Refresh tokens (rotation in one Lua script).
    refresh: RefreshStore,
    /// Authorization codes (issue #16).
    codes: CodeStore,
    /// Seals the authorization requests the sign-in page carries (issue #16).
    signin: SigninMac,
    /// Browser sessions (single sign-on, issue #16).
    sessions: SessionStore,
    /// What a valid token must say (issuer, audience, leeway).
    expect: Expectations,
    /// This core's own parsed keys, and the published version they came from.
    keys: RefCell<Rc<CoreKeys>>,
    keys_version: Cell<u64>,
    /// Positive verifications, until each token's `exp`; emptied when the
    /// key set changes. Bounded by `tokens.verified_cache_size`.
    cache: RefCell<VerifiedCache>,
    /// This core's own copy of the published client table (an `Rc`: the
    /// reference count every request touches stays in this core's cache,
    /// issue #15).
    clients: RefCell<Rc<ClientTable>>,
    clients_version: Cell<u64>,
    /// The secrets this core's clients last authenticated with (see
    /// [`SecretMemo`]).
    secret_memo: RefCell<SecretMemo>,
    /// Open connections on this core; bounded by `server.max_connections_per_core`.
    open: Cell<usize>,
    /// Requests being handled now; shutdown waits for this to reach zero.
    in_flight: Cell<usize>,
    /// Connections accepted whose first request has not arrived yet: a
    /// draining core gives them a short grace to send it, so a client that
    /// connected just before SIGTERM still gets its answer.
    fresh: Cell<usize>,
    /// Connections that have answered everything they will answer and are
    /// closing gracefully (their FIN sent, discarding what the client still
    /// sends): a drain does not wait for them.
    closing: Cell<usize>,
    shutting_down: Cell<bool>,
    /// When the drain began (`None` while serving).
    drain_started: Cell<Option<Instant>>,
    /// The time, read once a second by the core's ticker (see
    /// [`Core::coarse_now`]).
    coarse_now: Cell<Instant>,
    /// The task waker of every open connection, registered once per
    /// connection (not per request), so that the drain can wake the ones
    /// waiting quietly for a request. At most `max_connections_per_core`.
    conn_wakers: RefCell<Wakers>,
}

/// A slab of wakers: a slot per registered connection, reused after it
/// closes.
#[derive(Default)]
struct Wakers {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Core {
    /// Core `index`'s context: parses the published key set, opens the
    /// core's Redis connection (in the background: it must be called on the
    /// core's monoio runtime, with timers) and its stores, and the mirror
    /// when `redis.revocation_mirror` is on (its reader is not started:
    /// see [`Core::mirror`]).
    pub fn new(index: usize, shared: Arc<Shared>) -> Result<Rc<Core>, KeyError> {
        let keys = CoreKeys::from_material(&shared.key_material())?;
        let config = shared.config();
        let redis = RedisConn::new(shared.redis_target().clone(), config.redis.timeout);
        // Writes replicas must acknowledge get a connection of their own:
        // `WAIT` blocks the connection it is sent on (see `redis::acked`).
        let writes = match config.redis.min_replicas_acked {
            0 => Writes::unacked(redis.clone()),
            n => Writes::acked(shared.redis_target().clone(), config.redis.timeout, n),
        };
        let tokens = &config.tokens;
        let expect = Expectations::new(
            shared.issuer().to_owned(),
            tokens.audience.clone(),
            tokens.leeway.as_secs(),
        );
        let counters = shared.counters()[index].clone();
        let mirror = config.redis.revocation_mirror.then(|| {
            Mirror::new(
                config.redis.prefix.clone(),
                tokens.access_ttl,
                tokens.leeway,
                config.redis.mirror_max_lag,
                counters.clone(),
                shared.mirror_progress().slot(index),
            )
        });
        Ok(Rc::new(Core {
            id: index,
            mirror,
            revocations: RedisRevocations::with_seed_marker(
                redis.clone(),
                config.redis.prefix.clone(),
            )
            .with_writes(writes.clone()),
            refresh: RefreshStore::new(
                redis.clone(),
                config.redis.prefix.clone(),
                // Records are tagged under a key derived from the KEK, which
                // Redis never sees (issue #13).
                RecordMac::new(&shared.kek().derive(RecordMac::PURPOSE)),
            )
            .with_writes(writes.clone()),
            codes: CodeStore::new(
                redis.clone(),
                config.redis.prefix.clone(),
                CodeMac::new(&shared.kek().derive(CodeMac::PURPOSE)),
            )
            .with_writes(writes),
            signin: SigninMac::new(&shared.kek().derive(SigninMac::PURPOSE)),
            sessions: SessionStore::new(
                redis.clone(),
                config.redis.prefix.clone(),
                SessionMac::new(&shared.kek().derive(SessionMac::PURPOSE)),
            ),
            expect,
            keys: RefCell::new(Rc::new(keys)),
            keys_version: Cell::new(shared.keys_version()),
            cache: RefCell::new(VerifiedCache::new(tokens.verified_cache_size)),
            clients: RefCell::new(Rc::new(ClientTable::clone(&shared.client_table()))),
            clients_version: Cell::new(shared.clients_version()),
            secret_memo: RefCell::new(SecretMemo::default()),
            counters,
            date: DateCache::default(),
            redis,
            open: Cell::new(0),
            in_flight: Cell::new(0),
            fresh: Cell::new(0),
            closing: Cell::new(0),
            shutting_down: Cell::new(false),
            drain_started: Cell::new(None),
            coarse_now: Cell::new(Instant::now()),
            conn_wakers: RefCell::new(Wakers::default()),
            shared,
        }))
    }

    /// This core's index (0-based), for logs.
    #[inline]
    pub fn id(&self) -> usize {
        self.id
    }

    /// The checked configuration. Prefer a narrower accessor where one
    /// exists.
    #[inline]
    pub fn config(&self) -> &Config {
        self.shared.config()
    }

    /// `[tokens]`: lifetimes, audience, leeway.
    #[inline]
    pub fn tokens_config(&self) -> &TokensConfig {
        &self.shared.config().tokens
    }

    /// The request limits of `[limits]`, for the parser.
    #[inline]
    pub fn limits(&self) -> Limits {
        self.shared.limits()
    }

    /// The driver this core runs (never `Auto`).
    #[inline]
    pub fn driver(&self) -> Driver {
        self.shared.driver()
    }

    /// The PostgreSQL pool: clone it into a blocking-pool job, never use it
    /// on the core.
    #[inline]
    pub fn pg(&self) -> &PgPool {
        self.shared.pg()
    }

    /// The readiness check of PostgreSQL (its own thread and connection).
    #[inline]
    pub fn pg_probe(&self) -> &PgProbe {
        self.shared.pg_probe()
    }

    /// The blocking pool (bounded queue) for PostgreSQL and argon2.
    #[inline]
    pub fn pool(&self) -> &BlockingPool {
        self.shared.pool()
    }

    /// argon2id with the configured parameters: clone it into a
    /// blocking-pool job.
    #[inline]
    pub fn hasher(&self) -> &Arc<Hasher> {
        self.shared.hasher()
    }

    /// Time of each login verification on the blocking pool.
    #[inline]
    pub fn argon2_timing(&self) -> &Arc<SharedHistogram> {
        self.shared.argon2_timing()
    }

    /// `iss` of the tokens this deployment issues.
    #[inline]
    pub fn issuer(&self) -> &str {
        self.shared.issuer()
    }

    /// Base URL of this deployment, for discovery documents.
    #[inline]
    pub fn public_url(&self) -> &str {
        self.shared.public_url()
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.shared.uptime()
    }

    /// What a valid token must say (issuer, audience, leeway).
    #[inline]
    pub fn expectations(&self) -> &Expectations {
        &self.expect
    }

    /// The core's `Date` header cache.
    #[inline]
    pub fn date(&self) -> &DateCache {
        &self.date
    }

    /// The core's pipelined Redis connection.
    #[inline]
    pub fn redis(&self) -> &Rc<RedisConn> {
        &self.redis
    }

    /// This core's counters (only this core writes them).
    #[inline]
    pub fn counters(&self) -> &CoreCounters {
        &self.counters
    }

    /// Proof of life for the systemd watchdog: this core's event loop
    /// turned at `unix_secs` (the once-a-second ticker calls it).
    #[inline]
    pub fn beat(&self, unix_secs: u64) {
        self.shared.beat(self.id, unix_secs);
    }

    /// Every core's counters, by core index: what a metrics scrape sums.
    pub fn all_counters(&self) -> &[Arc<CoreCounters>] {
        self.shared.counters()
    }

    /// How far every core's revocation mirror got, read-only here: what
    /// a metrics scrape counts (only each core's mirror writes its slot).
    pub fn mirror_progress(&self) -> &Progress {
        self.shared.mirror_progress()
    }

    /// The revocation check (one Redis round trip) and revocation writes.
    #[inline]
    pub fn revocations(&self) -> &RedisRevocations {
        &self.revocations
    }

    /// The in-memory revocation mirror, when `redis.revocation_mirror` is
    /// on. Whoever starts the core runs its reader.
    #[inline]
    pub fn mirror(&self) -> Option<&Rc<Mirror>> {
        self.mirror.as_ref()
    }

    /// Refresh tokens (rotation in one Lua script).
    #[inline]
    pub fn refresh_tokens(&self) -> &RefreshStore {
        &self.refresh
    }

    /// Authorization codes (single use, in one Lua script).
    #[inline]
    pub fn codes(&self) -> &CodeStore {
        &self.codes
    }

    /// The seal of the authorization requests the sign-in page carries.
    #[inline]
    pub fn signin_mac(&self) -> &SigninMac {
        &self.signin
    }

    /// Browser sessions (single sign-on).
    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    /// Whether the public URL is https: the cookies get `Secure` and the
    /// `__Host-` prefix.
    pub fn https(&self) -> bool {
        self.public_url().starts_with("https://")
    }

    /// After a revocation write whose stream entry is `seq`: waits until
    /// every core of this process whose mirror is current has applied it, so
    /// the revocation is in force on this whole node once it is answered
    /// (at most `redis.mirror_max_lag`). Nothing to wait for without the
    /// mirror.
    pub async fn revocation_applied(&self, seq: u64) {
        if self.mirror.is_some() {
            mirror::wait_applied(
                self.shared.mirror_progress(),
                seq,
                self.shared.config().redis.mirror_max_lag,
            )
            .await;
        }
    }

    /// Counts a new connection unless the core is at its cap.
    pub fn try_open_connection(&self) -> bool {
        let open = self.open.get();
        if open >= self.shared.config().server.max_connections_per_core {
            return false;
        }
        self.open.set(open + 1);
        self.counters.open_connections.set(open as u64 + 1);
        // Fresh until its first request arrives; counted here, at accept,
        // not when its task first runs, so a drain cannot miss it.
        self.fresh_started();
        true
    }

    pub(crate) fn conn_closed(&self) {
        let open = self.open.get().saturating_sub(1);
        self.open.set(open);
        self.counters.open_connections.set(open as u64);
    }

    pub(crate) fn fresh_started(&self) {
        self.fresh.set(self.fresh.get() + 1);
    }

    pub(crate) fn fresh_done(&self) {
        self.fresh.set(self.fresh.get().saturating_sub(1));
    }

    pub(crate) fn request_started(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
    }

    pub(crate) fn requests_finished(&self, n: usize) {
        self.in_flight.set(self.in_flight.get().saturating_sub(n));
    }

    /// Open connections on this core.
    pub fn open_connections(&self) -> usize {
        self.open.get()
    }

    /// Requests being handled now.
    pub fn requests_in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Connections accepted that have not sent a whole request yet.
    pub fn fresh_connections(&self) -> usize {
        self.fresh.get()
    }

    /// Connections on this core that may still answer a request: open
    /// ones, less those closing gracefully after their last answer. A
    /// drain waits for this to reach zero.
    pub fn active_connections(&self) -> usize {
        self.open.get().saturating_sub(self.closing.get())
    }

    /// A connection has answered its last request and closes gracefully.
    pub(crate) fn closing_started(&self) {
        self.closing.set(self.closing.get() + 1);
    }

    /// A gracefully closing connection is closed.
    pub(crate) fn closing_done(&self) {
        self.closing.set(self.closing.get().saturating_sub(1));
    }

    /// Registers an open connection's task waker, for [`Core::begin_shutdown`]
    /// to wake it. Returns its slot, for [`Core::forget_connection_waker`]
    /// when the connection closes. Once the drain has begun nothing is kept
    /// (the connection sees the flag itself): a waker kept here holds its
    /// task, whose future holds this core, and that cycle must end with the
    /// drain, so that dropping the runtime drops the connections.
    pub(crate) fn register_connection_waker(&self, waker: Waker) -> usize {
        if self.shutting_down.get() {
            return usize::MAX;
        }
        let mut w = self.conn_wakers.borrow_mut();
        match w.free.pop() {
            Some(slot) => {
                w.slots[slot] = Some(waker);
                slot
            }
            None => {
                w.slots.push(Some(waker));
                w.slots.len() - 1
            }
        }
    }

    /// Drops the waker registered in `slot`; the slot is reused.
    pub(crate) fn forget_connection_waker(&self, slot: usize) {
        let mut w = self.conn_wakers.borrow_mut();
        if let Some(cell) = w.slots.get_mut(slot) {
            if cell.take().is_some() {
                w.free.push(slot);
            }
        }
    }

    /// Starts the drain: from now on responses carry `Connection: close`;
    /// and every open connection's task is woken once, so that one waiting
    /// quietly for a request sees the drain (see `net`). The wakers are
    /// given up (see [`Core::register_connection_waker`]).
    pub fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        self.drain_started.set(Some(Instant::now()));
        let wakers = std::mem::take(&mut *self.conn_wakers.borrow_mut());
        // Wakes only schedule the tasks: none runs here.
        for waker in wakers.slots.into_iter().flatten() {
            waker.wake();
        }
    }

    /// The time, as the core's once-a-second ticker last read it: for
    /// deadlines that need no more than a second's precision and must not
    /// read the clock per request (a write's stall deadline).
    #[inline]
    pub fn coarse_now(&self) -> Instant {
        self.coarse_now.get()
    }

    /// Reads the clock for [`Core::coarse_now`] (the ticker, once a second).
    pub fn tick_coarse_clock(&self) {
        self.coarse_now.set(Instant::now());
    }

    /// When the drain began, once it has.
    pub fn drain_started(&self) -> Option<Instant> {
        self.drain_started.get()
    }

    /// True once SIGTERM/SIGINT arrived: responses carry `Connection: close`.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// The shutdown flag, for responses written after an await.
    pub fn shutdown_flag(&self) -> &Cell<bool> {
        &self.shutting_down
    }

    /// The published key set (its JWKS), as the control thread loaded it.
    pub fn key_material(&self) -> Arc<KeyMaterial> {
        self.shared.key_material()
    }

    /// The core's keys, refreshed first when a new key set was published.
    #[inline]
    pub fn keys(&self) -> Rc<CoreKeys> {
        let published = self.shared.keys_version();
        if published != self.keys_version.get() {
            self.adopt_keys(published);
        }
        self.keys.borrow().clone()
    }

    #[cold]
    fn adopt_keys(&self, published: u64) {
        let material = self.shared.key_material();
        match CoreKeys::from_material(&material) {
            Ok(keys) => {
                if keys.generation() != self.keys.borrow().generation() {
                    // A key may have been removed: nothing verified under the
                    // old set may be answered from the cache.
                    self.cache.borrow_mut().clear();
                }
                *self.keys.borrow_mut() = Rc::new(keys);
            }
            Err(e) => tracing::error!(
                core = self.id,
                "cannot parse the published key set, keeping the old one: {e}"
            ),
        }
        self.keys_version.set(published);
    }

    /// A cached positive verification of `token`, still valid at `now`.
    /// Call [`Core::keys`] first: a new key set empties the cache.
    #[inline]
    pub fn cached_verification(&self, token: &[u8], now: u64) -> Option<Rc<VerifiedToken>> {
        self.cache.borrow_mut().get(token, now)
    }

    /// Caches a positive verification of `token` until its `exp`.
    pub fn remember_verification(&self, token: &[u8], verified: Rc<VerifiedToken>) {
        self.cache.borrow_mut().insert(token, verified);
    }

    /// The client table, refreshed first when a new one was published (then
    /// copied into this core, off the hot path: reloads are rare).
    #[inline]
    pub fn clients(&self) -> Rc<ClientTable> {
        let published = self.shared.clients_version();
        if published != self.clients_version.get() {
            *self.clients.borrow_mut() = Rc::new(ClientTable::clone(&self.shared.client_table()));
            self.clients_version.set(published);
        }
        self.clients.borrow().clone()
    }

    /// The memory of client secrets that authenticated on this core, for
    /// [`crate::identity::authenticate_remembered`]. Borrow it only for a
    /// synchronous check, never across an `.await`.
    pub fn secret_memo(&self) -> std::cell::RefMut<'_, SecretMemo> {
        self.secret_memo.borrow_mut()
    }

    /// Asks the control thread for a key-set reload (a token named a `kid`
    /// this core does not know).
    pub fn request_key_reload(&self) {
        self.shared.request_key_reload();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::state::shared;

    /// Runs `f` with core 0 of a fresh `Shared`, on a monoio runtime (the
    /// core's Redis connection spawns its task there).
    fn with_core(config: Config, f: impl FnOnce(Rc<Core>, Arc<Shared>)) {
        let shared = Arc::new(shared::for_tests(config, 2));
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(async move {
                let core = Core::new(0, shared.clone()).unwrap();
                f(core, shared);
            });
    }

    #[test]
    fn connections_are_counted_up_to_the_cap() {
        let mut config = Config::default();
        config.server.max_connections_per_core = 2;
        with_core(config, |core, shared| {
            assert!(core.try_open_connection());
            assert!(core.try_open_connection());
            assert!(!core.try_open_connection(), "the third is over the cap");
            assert_eq!(core.open_connections(), 2);
            assert_eq!(core.counters().open_connections.get(), 2);
            // Only this core's gauge moved.
            assert_eq!(shared.counters()[1].open_connections.get(), 0);
            core.conn_closed();
            assert_eq!(core.open_connections(), 1);
            assert_eq!(core.counters().open_connections.get(), 1);
            assert!(core.try_open_connection(), "a slot came free");
            core.conn_closed();
            core.conn_closed();
            core.conn_closed();
            assert_eq!(core.open_connections(), 0, "never below zero");
        });
    }

    #[test]
    fn accepted_connections_are_fresh_until_their_first_request() {
        with_core(Config::default(), |core, _| {
            assert!(core.try_open_connection());
            assert!(core.try_open_connection());
            assert_eq!(core.fresh_connections(), 2);
            core.fresh_done();
            assert_eq!(core.fresh_connections(), 1);
            core.fresh_done();
            core.fresh_done();
            assert_eq!(core.fresh_connections(), 0, "never below zero");
        });
    }

    #[test]
    fn the_coarse_clock_moves_when_ticked() {
        with_core(Config::default(), |core, _| {
            let before = core.coarse_now();
            assert!(before <= Instant::now());
            std::thread::sleep(Duration::from_millis(5));
            assert_eq!(core.coarse_now(), before, "only the ticker moves it");
            core.tick_coarse_clock();
            assert!(core.coarse_now() >= before + Duration::from_millis(5));
        });
    }

    #[test]
    fn closing_connections_are_not_active() {
        with_core(Config::default(), |core, _| {
            assert!(core.try_open_connection());
            assert!(core.try_open_connection());
            assert_eq!(core.active_connections(), 2);
            core.closing_started();
            assert_eq!(core.active_connections(), 1);
            core.closing_done();
            core.conn_closed();
            assert_eq!(core.active_connections(), 1);
            core.closing_done();
            assert_eq!(core.active_connections(), 1, "never below zero");
        });
    }

    /// A waker that counts its wakes.
    struct CountingWake(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWake {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn the_drain_wakes_every_registered_connection_once() {
        with_core(Config::default(), |core, _| {
            let counts: Vec<_> = (0..3)
                .map(|_| Arc::new(CountingWake(Default::default())))
                .collect();
            let slots: Vec<usize> = counts
                .iter()
                .map(|c| core.register_connection_waker(Waker::from(c.clone())))
                .collect();
            // The second connection closed: its slot is reused, its waker
            // never woken; forgetting twice is harmless.
            core.forget_connection_waker(slots[1]);
            core.forget_connection_waker(slots[1]);
            let again = Arc::new(CountingWake(Default::default()));
            assert_eq!(
                core.register_connection_waker(Waker::from(again.clone())),
                slots[1]
            );
            assert!(core.drain_started().is_none());
            core.begin_shutdown();
            assert!(core.drain_started().is_some());
            let woken = |c: &Arc<CountingWake>| c.0.load(std::sync::atomic::Ordering::SeqCst);
            assert_eq!(
                [
                    woken(&counts[0]),
                    woken(&counts[1]),
                    woken(&counts[2]),
                    woken(&again)
                ],
                [1, 0, 1, 1]
            );
            // The wakers were given up (no task is held by the core any
            // more), and none is kept once draining.
            assert_eq!(Arc::strong_count(&counts[0]), 1);
            let late = Arc::new(CountingWake(Default::default()));
            core.forget_connection_waker(slots[0]);
            let slot = core.register_connection_waker(Waker::from(late.clone()));
            assert_eq!(Arc::strong_count(&late), 1);
            core.forget_connection_waker(slot);
        });
    }

    #[test]
    fn requests_in_flight_and_the_shutdown_flag() {
        with_core(Config::default(), |core, _| {
            core.request_started();
            core.request_started();
            core.request_started();
            assert_eq!(core.requests_in_flight(), 3);
            core.requests_finished(2);
            assert_eq!(core.requests_in_flight(), 1);
            core.requests_finished(5);
            assert_eq!(core.requests_in_flight(), 0, "never below zero");
            assert!(!core.is_shutting_down());
            core.begin_shutdown();
            assert!(core.is_shutting_down());
            assert!(core.shutdown_flag().get());
        });
    }

    #[test]
    fn a_published_client_table_is_picked_up_on_the_next_call() {
        with_core(Config::default(), |core, shared| {
            let before = core.clients();
            assert!(before.is_empty());
            assert!(
                Rc::ptr_eq(&before, &core.clients()),
                "no reload without a new version"
            );
            shared.publish_clients(ClientTable::new([crate::identity::ClientRecord {
                client_id: "c".into(),
                secret_sha256: None,
                grant_types: vec![crate::identity::GrantType::Password],
                scopes: vec![],
                access_ttl: None,
                refresh_ttl: None,
                refresh_max_lifetime: None,
                redirect_uris: vec![],
                post_logout_redirect_uris: vec![],
            }]));
            assert_eq!(core.clients().len(), 1);
        });
    }

    #[test]
    fn a_new_key_set_replaces_the_core_keys_and_empties_the_cache() {
        use crate::tokens::keys::{generate, KeyEntry};
        with_core(Config::default(), |core, shared| {
            let old = core.keys();
            let now = crate::clock::unix_now();
            let token = signed_token(&core, now);
            let verified = crate::tokens::verify(&old, &token, core.expectations(), now).unwrap();
            core.remember_verification(token.as_bytes(), Rc::new(verified));
            assert!(core.cached_verification(token.as_bytes(), now).is_some());
            // The same set again: same generation, the cache stays.
            let same = KeyMaterial::from_entries(shared.key_material().keys().to_vec()).unwrap();
            shared.publish_keys(same);
            assert_eq!(core.keys().generation(), old.generation());
            assert!(core.cached_verification(token.as_bytes(), now).is_some());
            // Another set: new keys, and nothing verified under the old one
            // is answered from the cache.
            let key = generate(crate::config::Algorithm::EdDSA).unwrap();
            let other = KeyMaterial::from_entries(vec![KeyEntry::from_generated(&key, 0).unwrap()])
                .unwrap();
            shared.publish_keys(other);
            assert_ne!(core.keys().generation(), old.generation());
            assert!(core.cached_verification(token.as_bytes(), now).is_none());
        });
    }

    /// An access token signed with the core's current key, valid a minute.
    fn signed_token(core: &Core, now: u64) -> String {
        let claims = crate::tokens::AccessClaims {
            iss: core.issuer().to_owned(),
            sub: "u1".into(),
            aud: core.tokens_config().audience.clone(),
            exp: now + 60,
            iat: now,
            jti: crate::tokens::new_jti(),
            client_id: "c".into(),
            scope: String::new(),
            username: None,
        };
        crate::tokens::sign_access(&core.keys(), &claims, now).unwrap()
    }

    #[test]
    fn a_key_reload_request_reaches_the_control_thread() {
        with_core(Config::default(), |core, shared| {
            core.request_key_reload();
            assert!(shared.take_key_reload_request());
        });
    }

    #[test]
    fn expectations_and_accessors_come_from_the_configuration() {
        let mut config = Config::default();
        config.tokens.audience = "aud-x".into();
        with_core(config, |core, shared| {
            assert_eq!(core.id(), 0);
            assert_eq!(core.expectations().iss(), shared.issuer());
            assert_eq!(core.expectations().aud(), "aud-x");
            assert_eq!(core.tokens_config().audience, "aud-x");
            assert_eq!(
                core.expectations().leeway(),
                core.tokens_config().leeway.as_secs()
            );
            assert_eq!(
                core.mirror().is_some(),
                core.config().redis.revocation_mirror
            );
            assert_eq!(core.all_counters().len(), 2);
        });
    }
}
