//! [`Shared`]: what every core of the process shares, and the only state
//! that crosses threads: read-only after start, published as immutable
//! snapshots, or atomics written by one side and read by the other.
//!
//! Owns: the configuration, the pools (blocking, PostgreSQL) and the Redis
//! target, every core's counters, the mirrors' progress, the published key
//! set and client table, the key-encryption key and the password hasher, and
//! the flags the control thread and the cores trade (Redis ready, key reload
//! requested, one listener closing at a time).
//!
//! Never imports: `cores`, `net`, `handlers`, `access` or `router`, nor
//! `http`'s request types (only its parse [`Limits`]): it is reached through
//! [`Core`](super::Core) and by the composition root only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::published::Published;
use crate::config::{Config, Driver};
use crate::http::Limits;
use crate::identity::{ClientTable, Hasher};
use crate::metrics::{CoreCounters, SharedHistogram};
use crate::redis::RedisTarget;
use crate::revocation::mirror::Progress;
use crate::store::{BlockingPool, PgPool, PgProbe};
use crate::tokens::{Kek, KeyMaterial};

/// What start-up gathered before the cores run: the checked configuration,
/// the stores and what was loaded from them. [`Shared::new`] derives the
/// rest.
pub struct SharedParts {
    pub config: Config,
    /// The address the listeners actually bound (port 0 resolved).
    pub bound: SocketAddr,
    /// Number of worker cores: one counter set each.
    pub cores: usize,
    pub pool: BlockingPool,
    pub pg: PgPool,
    pub redis_target: RedisTarget,
    pub kek: Kek,
    pub hasher: Arc<Hasher>,
    pub keys: KeyMaterial,
    pub clients: ClientTable,
}

/// What every core shares: read-only after start, or published as immutable
/// snapshots. Nothing here is locked on the hot path.
pub struct Shared {
    config: Config,
    limits: Limits,
    pool: BlockingPool,
    pg: PgPool,
    /// The readiness check of PostgreSQL, apart from the pools (see
    /// `store::probe`).
    pg_probe: PgProbe,
    redis_target: RedisTarget,
    /// One set of counters per core; each core writes only its own, the
    /// metrics scrape sums them.
    counters: Vec<Arc<CoreCounters>>,
    /// How far each core's revocation mirror got in the stream: what a
    /// revoke waits on (see `Core::revocation_applied`).
    progress: Progress,
    /// Unix seconds of each core's last event-loop tick (once a second),
    /// by core index: the systemd watchdog is fed only while every one is
    /// recent. Liveness, not a metric: the scrape never reads it.
    heartbeats: Box<[AtomicU64]>,
    started: Instant,
    /// The key-encryption key (for reloads).
    kek: Kek,
    /// argon2id with the configured parameters; used on the blocking pool.
    hasher: Arc<Hasher>,
    /// The signing and verification keys, as loaded from PostgreSQL.
    keys: Published<KeyMaterial>,
    /// The OAuth clients, as loaded from PostgreSQL.
    clients: Published<ClientTable>,
    /// Set by a core that met an unknown `kid`; the control thread reloads
    /// the key set (at most once per `cores::control::UNKNOWN_KID_RELOAD_INTERVAL`).
    reload_requested: AtomicBool,
    /// `iss` of the tokens this deployment issues.
    issuer: String,
    /// Set once Redis answered and holds every revocation: systemd is told
    /// READY=1 only then.
    redis_ready: AtomicBool,
    /// Base URL of this deployment, for discovery documents.
    public_url: String,
    /// Time of each login verification on the blocking pool (argon2id,
    /// plus the user lookup).
    argon2: Arc<SharedHistogram>,
    /// The driver the cores run, resolved (never `Auto`).
    driver: Driver,
    /// Held while a draining core closes its listener, so that the cores of
    /// one process stop listening one after another (see
    /// `cores::accept::stop_listening`).
    listener_close: Mutex<()>,
}

impl Shared {
    /// The shared state of a server whose listeners bound `parts.bound`.
    /// Unset `server.public_url` / `tokens.issuer` default to that address
    /// (which matters with port 0).
    pub fn new(parts: SharedParts) -> Shared {
        let SharedParts {
            config,
            bound,
            cores,
            pool,
            pg,
            redis_target,
            kek,
            hasher,
            keys,
            clients,
        } = parts;
        let limits = Limits {
            max_head: config.limits.max_head_bytes,
            max_body: config.limits.max_body_bytes,
            max_headers: config.limits.max_headers,
        };
        let public_url = match &config.server.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{bound}"),
        };
        let driver = config.server.driver.resolve();
        let issuer = config
            .tokens
            .issuer
            .clone()
            .unwrap_or_else(|| public_url.clone());
        let counters = (0..cores)
            .map(|_| Arc::new(CoreCounters::default()))
            .collect();
        let pg_probe = PgProbe::new(config.database.clone());
        Shared {
            config,
            limits,
            pool,
            pg,
            pg_probe,
            redis_target,
            counters,
            progress: Progress::new(cores),
            heartbeats: (0..cores).map(|_| AtomicU64::new(0)).collect(),
            started: Instant::now(),
            kek,
            hasher,
            keys: Published::new(keys),
            clients: Published::new(clients),
            reload_requested: AtomicBool::new(false),
            redis_ready: AtomicBool::new(false),
            issuer,
            public_url,
            argon2: Arc::new(SharedHistogram::default()),
            driver,
            listener_close: Mutex::new(()),
        }
    }

    /// The checked configuration, as loaded at start.
    #[inline]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The request limits of `[limits]`, for the parser.
    #[inline]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The blocking pool: PostgreSQL and argon2 run there, never on a core.
    #[inline]
    pub fn pool(&self) -> &BlockingPool {
        &self.pool
    }

    /// The PostgreSQL pool; blocking, so only on the blocking pool or the
    /// control thread.
    #[inline]
    pub fn pg(&self) -> &PgPool {
        &self.pg
    }

    /// The readiness check of PostgreSQL: its own thread and connection,
    /// never queued behind logins.
    #[inline]
    pub fn pg_probe(&self) -> &PgProbe {
        &self.pg_probe
    }

    /// Where Redis is, for a new connection.
    #[inline]
    pub fn redis_target(&self) -> &RedisTarget {
        &self.redis_target
    }

    /// Every core's counters, by core index.
    #[inline]
    pub fn counters(&self) -> &[Arc<CoreCounters>] {
        &self.counters
    }

    /// How far each core's revocation mirror got in the stream.
    #[inline]
    pub fn mirror_progress(&self) -> &Progress {
        &self.progress
    }

    /// Records that core `core`'s event loop turned at `unix_secs`.
    #[inline]
    pub fn beat(&self, core: usize, unix_secs: u64) {
        if let Some(h) = self.heartbeats.get(core) {
            h.store(unix_secs, Ordering::Relaxed);
        }
    }

    /// Every core's last heartbeat (unix seconds), by core index.
    pub fn heartbeats(&self) -> impl Iterator<Item = u64> + '_ {
        self.heartbeats.iter().map(|h| h.load(Ordering::Relaxed))
    }

    /// Number of worker cores.
    pub fn core_count(&self) -> usize {
        self.counters.len()
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The key-encryption key, to unseal a reloaded key set.
    pub fn kek(&self) -> &Kek {
        &self.kek
    }

    /// argon2id with the configured parameters.
    #[inline]
    pub fn hasher(&self) -> &Arc<Hasher> {
        &self.hasher
    }

    /// Time of each login verification on the blocking pool.
    #[inline]
    pub fn argon2_timing(&self) -> &Arc<SharedHistogram> {
        &self.argon2
    }

    /// The published key set (its JWKS, and what each core parses).
    pub fn key_material(&self) -> Arc<KeyMaterial> {
        self.keys.load()
    }

    /// Version of the published key set: one atomic load.
    #[inline]
    pub fn keys_version(&self) -> u64 {
        self.keys.version()
    }

    /// Publishes a new key set to every core.
    pub fn publish_keys(&self, keys: KeyMaterial) {
        self.keys.publish(keys);
    }

    /// The published client table.
    pub fn client_table(&self) -> Arc<ClientTable> {
        self.clients.load()
    }

    /// Version of the published client table: one atomic load.
    #[inline]
    pub fn clients_version(&self) -> u64 {
        self.clients.version()
    }

    /// Publishes a new client table to every core.
    pub fn publish_clients(&self, clients: ClientTable) {
        self.clients.publish(clients);
    }

    /// Asks the control thread for a key-set reload (a core met a `kid` it
    /// does not know).
    pub fn request_key_reload(&self) {
        self.reload_requested.store(true, Ordering::Relaxed);
    }

    /// Whether a key-set reload was asked for since the last call; clears
    /// the request.
    pub fn take_key_reload_request(&self) -> bool {
        self.reload_requested.swap(false, Ordering::Relaxed)
    }

    /// `iss` of the tokens this deployment issues.
    #[inline]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Base URL of this deployment, for discovery documents.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The driver the cores run (never `Auto`).
    #[inline]
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Records that Redis answers and holds every revocation.
    pub fn mark_redis_ready(&self) {
        self.redis_ready.store(true, Ordering::Release);
    }

    /// Whether Redis has answered and held every revocation once.
    pub fn redis_ready(&self) -> bool {
        self.redis_ready.load(Ordering::Acquire)
    }

    /// The turn of a core closing its listener: the cores of one process
    /// stop listening one after another (a poisoned lock still serves).
    pub fn listener_close_turn(&self) -> MutexGuard<'_, ()> {
        self.listener_close
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
pub(crate) use tests::for_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Shared` for unit tests: the default configuration pointed at the test
    /// services (nothing connects until used), one generated EdDSA key, no
    /// clients, one blocking thread.
    pub(crate) fn for_tests(mut config: Config, cores: usize) -> Shared {
        use crate::tokens::keys::{generate, KeyEntry};
        config.redis.url = crate::testing::redis_url();
        config.database.url = crate::testing::database_url();
        let (pool, _threads) = BlockingPool::start(1, 16, 0, false);
        let pg = crate::store::pg::pool(&config.database, 1).unwrap();
        let redis_target = RedisTarget::parse(&config.redis.url).unwrap();
        let hasher = Arc::new(Hasher::new(&config.passwords).unwrap());
        let key = generate(crate::config::Algorithm::EdDSA).unwrap();
        let keys =
            KeyMaterial::from_entries(vec![KeyEntry::from_generated(&key, 0).unwrap()]).unwrap();
        Shared::new(SharedParts {
            config,
            bound: "127.0.0.1:8080".parse().unwrap(),
            cores,
            pool,
            pg,
            redis_target,
            kek: Kek::from_bytes([7; 32]),
            hasher,
            keys,
            clients: ClientTable::default(),
        })
    }

    #[test]
    fn public_url_and_issuer_default_to_the_bound_address() {
        let shared = for_tests(Config::default(), 2);
        assert_eq!(shared.public_url(), "http://127.0.0.1:8080");
        assert_eq!(shared.issuer(), "http://127.0.0.1:8080");
        assert_eq!(shared.core_count(), 2);
        assert_eq!(shared.counters().len(), 2);
        assert_ne!(shared.driver(), Driver::Auto);
    }

    #[test]
    fn configured_public_url_loses_its_trailing_slash_and_issuer_wins() {
        let mut config = Config::default();
        config.server.public_url = Some("https://auth.example/".into());
        let shared = for_tests(config.clone(), 1);
        assert_eq!(shared.public_url(), "https://auth.example");
        assert_eq!(shared.issuer(), "https://auth.example");
        config.tokens.issuer = Some("https://issuer.example".into());
        let shared = for_tests(config, 1);
        assert_eq!(shared.public_url(), "https://auth.example");
        assert_eq!(shared.issuer(), "https://issuer.example");
    }

    #[test]
    fn a_key_reload_request_is_taken_once() {
        let shared = for_tests(Config::default(), 1);
        assert!(!shared.take_key_reload_request());
        shared.request_key_reload();
        shared.request_key_reload();
        assert!(shared.take_key_reload_request());
        assert!(!shared.take_key_reload_request());
    }

    #[test]
    fn redis_ready_is_set_once_marked() {
        let shared = for_tests(Config::default(), 1);
        assert!(!shared.redis_ready());
        shared.mark_redis_ready();
        assert!(shared.redis_ready());
    }

    #[test]
    fn publishing_bumps_the_versions_cores_compare() {
        let shared = for_tests(Config::default(), 1);
        let (k, c) = (shared.keys_version(), shared.clients_version());
        shared.publish_clients(ClientTable::default());
        assert_eq!(shared.keys_version(), k);
        assert!(shared.clients_version() > c);
        // The same key set again: a new version, the same generation (the
        // cores then keep their verified caches).
        let before = shared.key_material();
        let same = KeyMaterial::from_entries(before.keys().to_vec()).unwrap();
        shared.publish_keys(same);
        assert!(shared.keys_version() > k);
        assert_eq!(shared.key_material().generation(), before.generation());
    }
}
