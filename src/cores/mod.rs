//! Thread-per-core serving: one pinned thread per configured core, each
//! running its own monoio event loop with its own listener, caches and Redis
//! connection; the control thread handles signals and shutdown.
//!
//! Start-up order: check the configuration, reach PostgreSQL and Redis, bind
//! every listener (so a port conflict fails before anything runs), start the
//! blocking pool, start the cores and wait until each reports it is serving.
//! Only then is the service "ready".

pub mod counters;

use std::cell::Cell;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::config::{Config, Cores, Driver};
use crate::http::{DateCache, Limits};
use crate::identity::{ClientTable, Hasher};
use crate::redis::{RedisConn, RedisTarget};
use crate::revocation::mirror::{self, Mirror};
use crate::revocation::RedisRevocations;
use crate::store::{self, BlockingPool, PgPool};
use crate::tokens::{CoreKeys, Expectations, Kek, KeyMaterial, VerifiedCache};

pub use counters::{CoreCounters, Counter};

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

/// An immutable value published to every core: the control thread replaces
/// it, each core notices the new version with one atomic load per request
/// and takes its own copy. The mutex is touched only when the version
/// changed, so the hot path never contends on it.
pub struct Published<T> {
    version: AtomicU64,
    value: Mutex<Arc<T>>,
}

impl<T> Published<T> {
    pub fn new(value: T) -> Published<T> {
        Published {
            version: AtomicU64::new(1),
            value: Mutex::new(Arc::new(value)),
        }
    }

    /// Replaces the value; every core picks it up on its next request.
    pub fn publish(&self, value: T) {
        let mut guard = self.value.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Arc::new(value);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The current version number.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        self.value.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What every core shares: read-only after start, or published as immutable
/// snapshots. Nothing here is locked on the hot path.
pub struct Shared {
    pub config: Config,
    pub limits: Limits,
    pub pool: BlockingPool,
    pub pg: PgPool,
    pub redis_target: RedisTarget,
    /// One set of counters per core; each core writes only its own, the
    /// metrics scrape sums them.
    pub counters: Vec<Arc<CoreCounters>>,
    pub started: Instant,
    /// The key-encryption key (for reloads).
    pub kek: Kek,
    /// argon2id with the configured parameters; used on the blocking pool.
    pub hasher: Arc<Hasher>,
    /// The signing and verification keys, as loaded from PostgreSQL.
    pub keys: Published<KeyMaterial>,
    /// The OAuth clients, as loaded from PostgreSQL.
    pub clients: Published<ClientTable>,
    /// Set by a core that met an unknown `kid`; the control thread reloads
    /// the key set (at most once per [`UNKNOWN_KID_RELOAD_INTERVAL`]).
    pub reload_requested: AtomicBool,
    /// `iss` of the tokens this deployment issues.
    pub issuer: String,
    /// Set once Redis answered and holds every revocation: systemd is told
    /// READY=1 only then.
    pub redis_ready: AtomicBool,
    /// Base URL of this deployment, for discovery documents.
    pub public_url: String,
    /// Time of each login verification on the blocking pool (argon2id,
    /// plus the user lookup).
    pub argon2: Arc<crate::metrics::SharedHistogram>,
    /// The driver the cores run, resolved (never `Auto`).
    pub driver: Driver,
    /// Held while a draining core closes its listener, so that the cores of
    /// one process stop listening one after another (see `stop_listening`).
    pub listener_close: Mutex<()>,
}

impl Shared {
    /// True while every core's event loop ticked within `within`: what the
    /// systemd watchdog is fed on. A stuck core stops the pings, and systemd
    /// restarts tokend.
    pub fn all_cores_alive(&self, within: Duration) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.counters
            .iter()
            .all(|c| now.saturating_sub(c.heartbeat.get()) <= within.as_secs().max(2))
    }
}

/// How long a draining core waits for just-accepted connections to send
/// their first request (normally one round trip away).
const FRESH_CONNECTION_GRACE: Duration = Duration::from_secs(1);

/// Least time between two key-set reloads caused by unknown `kid`s: a flood
/// of garbage tokens must not turn into a flood of PostgreSQL queries.
pub const UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

impl Shared {
    /// Makes sure Redis holds every revocation: when the marker key is
    /// missing (first start, or Redis lost its data), re-seeds Redis from
    /// PostgreSQL, then sets the marker. Until then validation answers 503.
    /// Blocking: the control thread calls it about once a second.
    pub fn ensure_seeded(&self, redis: &mut Option<crate::redis::BlockingRedis>) -> bool {
        use crate::redis::BlockingRedis;
        use crate::revocation::durable;
        if redis.is_none() {
            match BlockingRedis::connect(&self.redis_target, Duration::from_secs(2)) {
                Ok(r) => *redis = Some(r),
                Err(_) => return false, // Redis down: the cores already fail closed.
            }
        }
        let Some(conn) = redis.as_mut() else {
            return false;
        };
        let t = &self.config.tokens;
        let (access, refresh) = (
            t.access_ttl.as_secs() + t.leeway.as_secs(),
            t.refresh_ttl.as_secs(),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let pg = self.pg.clone();
        let result = durable::ensure_seeded(
            conn,
            &self.config.redis.prefix,
            access,
            refresh,
            now,
            |now| {
                let mut c = pg.get()?;
                Ok(durable::load_for_reseed(&mut *c, now, access, refresh)?)
            },
        );
        match result {
            Ok(_) => {
                self.redis_ready.store(true, Ordering::Release);
                true
            }
            Err(e) => {
                tracing::warn!("re-seeding Redis failed, will retry: {e}");
                // Reconnect next time: the connection may be what failed.
                *redis = None;
                false
            }
        }
    }

    /// Deletes signing keys that stopped signing longer ago than any token
    /// they signed can live (safe from several nodes at once: the key
    /// functions take an advisory lock).
    pub fn prune_keys(&self) {
        let t = &self.config.tokens;
        let longest = self
            .clients
            .load()
            .iter()
            .filter_map(|c| c.access_ttl)
            .max()
            .map(Duration::from_secs)
            .unwrap_or_default()
            .max(t.access_ttl);
        match self.pg.get() {
            Ok(mut c) => match crate::tokens::keys::prune(&mut *c, longest + t.leeway) {
                Ok(pruned) => {
                    for kid in pruned {
                        tracing::info!(kid, "pruned a retired signing key");
                    }
                }
                Err(e) => tracing::warn!("cannot prune signing keys: {e}"),
            },
            Err(e) => tracing::warn!("cannot prune signing keys: {e}"),
        }
    }

    /// Deletes durable revocations whose tokens have expired anyway.
    pub fn prune_revocations(&self) {
        match self.pg.get() {
            Ok(mut c) => match crate::revocation::durable::prune_expired(&mut *c) {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "pruned expired revocations"),
                Err(e) => tracing::warn!("cannot prune expired revocations: {e}"),
            },
            Err(e) => tracing::warn!("cannot prune expired revocations: {e}"),
        }
    }

    /// Reloads the key set and the clients from PostgreSQL and publishes
    /// them. Blocking: the control thread calls it, never a core.
    pub fn reload(&self) -> Result<(), ServeError> {
        let mut conn = self.pg.get().map_err(|source| {
            ServeError::Store(store::StoreError::Connect {
                url: crate::config::redact_url(&self.config.database.url),
                source,
            })
        })?;
        let material = crate::tokens::keys::load(&mut *conn, &self.kek)?;
        if material.generation() != self.keys.load().generation() {
            tracing::info!("key set changed; publishing to every core");
        }
        self.keys.publish(material);
        let clients = crate::identity::clients::load_all(&mut *conn)?;
        self.clients.publish(clients);
        Ok(())
    }
}

/// One core's state. Owned by its thread (`Rc`), never shared.
pub struct Core {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub date: DateCache,
    pub redis: Rc<RedisConn>,
    pub counters: Arc<CoreCounters>,
    /// The revocation check (one Redis round trip) and revocation writes.
    pub revocations: RedisRevocations,
    /// The in-memory revocation mirror, when `redis.revocation_mirror` is
    /// on; asked before `revocations` (see `revocation::mirror`).
    pub mirror: Option<Rc<Mirror>>,
    /// Refresh tokens (rotation in one Lua script).
    pub refresh: crate::refresh::RefreshStore,
    /// What a valid token must say (issuer, audience, leeway).
    pub expect: Expectations,
    /// This core's own parsed keys, and the published version they came from.
    keys: RefCell<Rc<CoreKeys>>,
    keys_version: Cell<u64>,
    /// Positive verifications, until each token's `exp`; emptied when the
    /// key set changes. Bounded by `tokens.verified_cache_size`.
    pub cache: RefCell<VerifiedCache>,
    /// This core's reference to the published client table.
    clients: RefCell<Arc<ClientTable>>,
    clients_version: Cell<u64>,
    /// Open connections on this core; bounded by `server.max_connections_per_core`.
    open: Cell<usize>,
    /// Requests being handled now; shutdown waits for this to reach zero.
    in_flight: Cell<usize>,
    /// Connections accepted whose first request has not arrived yet: a
    /// draining core gives them [`FRESH_CONNECTION_GRACE`] to send it, so a
    /// client that connected just before SIGTERM still gets its answer.
    fresh: Cell<usize>,
    shutting_down: Cell<bool>,
}

impl Core {
    /// After a revocation write whose stream entry is `seq`: waits until
    /// every core of this process whose mirror is current has applied it, so
    /// the revocation is in force on this whole node once it is answered
    /// (at most `redis.mirror_max_lag`). Nothing to wait for without the
    /// mirror.
    pub async fn revocation_applied(&self, seq: u64) {
        if self.mirror.is_some() {
            mirror::wait_applied(
                &self.shared.counters,
                seq,
                self.shared.config.redis.mirror_max_lag,
            )
            .await;
        }
    }

    /// Counts a new connection unless the core is at its cap.
    pub fn try_open_connection(&self) -> bool {
        let open = self.open.get();
        if open >= self.shared.config.server.max_connections_per_core {
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

    /// True once SIGTERM/SIGINT arrived: responses carry `Connection: close`.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// The shutdown flag, for responses written after an await.
    pub fn shutdown_flag(&self) -> &Cell<bool> {
        &self.shutting_down
    }

    /// The core's keys, refreshed first when a new key set was published.
    #[inline]
    pub fn keys(&self) -> Rc<CoreKeys> {
        let published = self.shared.keys.version();
        if published != self.keys_version.get() {
            self.adopt_keys(published);
        }
        self.keys.borrow().clone()
    }

    #[cold]
    fn adopt_keys(&self, published: u64) {
        let material = self.shared.keys.load();
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

    /// The client table, refreshed first when a new one was published.
    #[inline]
    pub fn clients(&self) -> Arc<ClientTable> {
        let published = self.shared.clients.version();
        if published != self.clients_version.get() {
            *self.clients.borrow_mut() = self.shared.clients.load();
            self.clients_version.set(published);
        }
        self.clients.borrow().clone()
    }

    /// Asks the control thread for a key-set reload (a token named a `kid`
    /// this core does not know).
    pub fn request_key_reload(&self) {
        self.shared.reload_requested.store(true, Ordering::Relaxed);
    }

    /// Open connections on this core.
    pub fn open_connections(&self) -> usize {
        self.open.get()
    }
}

/// The core ids this process runs workers on.
pub fn resolve_cores(cores: &Cores) -> Result<Vec<Option<core_affinity::CoreId>>, ServeError> {
    let available = core_affinity::get_core_ids().unwrap_or_default();
    if available.is_empty() {
        // Pinning unsupported: run unpinned workers, one per available CPU.
        let n = match cores {
            Cores::All => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            Cores::Count(n) => *n,
            Cores::List(l) => l.len(),
        };
        return Ok(vec![None; n]);
    }
    match cores {
        Cores::All => Ok(available.into_iter().map(Some).collect()),
        Cores::Count(n) if *n <= available.len() => {
            Ok(available.into_iter().take(*n).map(Some).collect())
        }
        Cores::Count(n) => Err(ServeError::Cores(format!(
            "asked for {n} cores, this process may run on {}",
            available.len()
        ))),
        Cores::List(ids) => ids
            .iter()
            .map(|&id| {
                available
                    .iter()
                    .find(|c| c.id == id)
                    .copied()
                    .map(Some)
                    .ok_or_else(|| {
                        ServeError::Cores(format!(
                            "core {id} is not available to this process (available: {:?})",
                            available.iter().map(|c| c.id).collect::<Vec<_>>()
                        ))
                    })
            })
            .collect(),
    }
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
    /// Starts every core and returns once all of them serve.
    pub fn start(config: Config) -> Result<Server, ServeError> {
        let cores = resolve_cores(&config.server.cores)?;
        let redis_target =
            RedisTarget::parse(&config.redis.url).map_err(|e| ServeError::Redis(e.to_string()))?;

        // The stores must answer before we say we are up.
        let threads = config.blocking_threads();
        let pg = store::pg::pool(
            &config.database,
            config.database.pool_size.unwrap_or(threads as u32),
        )?;
        store::pg::ping(&pg, &config.database.url, config.database.connect_timeout)?;
        let kek = Kek::from_config(&config.keys)?;
        let hasher = Arc::new(Hasher::new(&config.passwords)?);
        let (material, clients) = {
            let mut conn = pg.get().map_err(|source| store::StoreError::Connect {
                url: crate::config::redact_url(&config.database.url),
                source,
            })?;
            if let Some(kid) =
                crate::tokens::keys::ensure_initial_key(&mut *conn, &kek, config.keys.algorithm)?
            {
                tracing::info!(kid, "created the first signing key");
            }
            (
                crate::tokens::keys::load(&mut *conn, &kek)?,
                crate::identity::clients::load_all(&mut *conn)?,
            )
        };
        // Redis down at start is not fatal: validation fails closed (503)
        // until the cores' connections come up by themselves.
        if let Err(e) = check_redis(
            &redis_target,
            config.redis.timeout.max(Duration::from_secs(1)),
        ) {
            tracing::warn!(
                "{e}; starting anyway, requests that need Redis answer 503 until it is back"
            );
        }

        let (listeners, addr) = crate::net::bind_listeners(config.server.listen, cores.len())
            .map_err(|source| ServeError::Bind {
                addr: config.server.listen,
                source,
            })?;
        let (pool, pool_threads) = BlockingPool::start(
            threads,
            config.limits.blocking_queue,
            config.limits.blocking_nice,
            config.limits.blocking_sched_idle,
        );
        let limits = Limits {
            max_head: config.limits.max_head_bytes,
            max_body: config.limits.max_body_bytes,
            max_headers: config.limits.max_headers,
        };
        // Unset public_url / issuer default to the address actually bound
        // (which matters with port 0).
        let public_url = match &config.server.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{addr}"),
        };
        let driver = config.server.driver.resolve();
        let issuer = config
            .tokens
            .issuer
            .clone()
            .unwrap_or_else(|| public_url.clone());
        let counters = (0..cores.len())
            .map(|_| Arc::new(CoreCounters::default()))
            .collect();
        let shared = Arc::new(Shared {
            config,
            limits,
            pool,
            pg,
            redis_target,
            counters,
            started: Instant::now(),
            kek,
            hasher,
            keys: Published::new(material),
            clients: Published::new(clients),
            reload_requested: AtomicBool::new(false),
            redis_ready: AtomicBool::new(false),
            issuer,
            public_url,
            argon2: Arc::new(crate::metrics::SharedHistogram::default()),
            driver,
            listener_close: Mutex::new(()),
        });

        // Make sure Redis holds every revocation before the first
        // validation (a fresh or flushed Redis has no seed marker). Redis
        // down is not fatal here: the seeder thread retries.
        shared.ensure_seeded(&mut None);

        let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, ServeError>>();
        let mut stops = Vec::new();
        let mut handles = Vec::new();
        for (index, (core_id, listener)) in cores.into_iter().zip(listeners).enumerate() {
            let (stop_tx, stop_rx) = oneshot::channel();
            stops.push(stop_tx);
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("tokend-core-{index}"))
                .spawn(move || {
                    if let Some(id) = core_id {
                        if !core_affinity::set_for_current(id) {
                            tracing::warn!(core = index, cpu = id.id, "could not pin core thread");
                        }
                    }
                    run_core(index, shared, listener, stop_rx, ready);
                })
                .map_err(|e| ServeError::Core {
                    core: index,
                    message: format!("cannot start thread: {e}"),
                })?;
            handles.push(handle);
        }
        drop(ready_tx);
        for _ in 0..handles.len() {
            match ready_rx.recv() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(ServeError::Core {
                        core: 0,
                        message: "a core stopped during start-up".into(),
                    })
                }
            }
        }
        Ok(Server {
            addr,
            stops,
            threads: handles,
            pool_threads,
            shared,
        })
    }

    /// What every core shares.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Graceful shutdown: every core stops accepting, finishes the requests
    /// in flight (up to `server.shutdown_timeout`), closes idle connections;
    /// then the blocking pool drains.
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

fn check_redis(target: &RedisTarget, timeout: Duration) -> Result<(), ServeError> {
    let mut conn = crate::redis::BlockingRedis::connect(target, timeout)
        .map_err(|e| ServeError::Redis(format!("cannot reach {}: {e}", target.display_addr())))?;
    conn.query(&redis::cmd("PING"))
        .map_err(|e| ServeError::Redis(format!("PING to {} failed: {e}", target.display_addr())))?;
    Ok(())
}

/// The body of one core thread: build the runtime with the configured driver
/// and run the core until it is told to stop.
fn run_core(
    index: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    stop: oneshot::Receiver<()>,
    ready: mpsc::Sender<Result<usize, ServeError>>,
) {
    let driver = shared.driver;
    let fut = core_main(index, shared, listener, stop, ready.clone());
    let built = match driver {
        Driver::IoUring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(4096)
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(fut)),
        _ => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(fut)),
    };
    if let Err(e) = built {
        let _ = ready.send(Err(ServeError::Core {
            core: index,
            message: format!("cannot start the {driver:?} event loop: {e}"),
        }));
    }
}

async fn core_main(
    index: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    mut stop: oneshot::Receiver<()>,
    ready: mpsc::Sender<Result<usize, ServeError>>,
) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(ServeError::Core {
                core: index,
                message: format!("cannot register the listener: {e}"),
            }));
            return;
        }
    };
    let redis = RedisConn::new(shared.redis_target.clone(), shared.config.redis.timeout);
    let keys = match CoreKeys::from_material(&shared.keys.load()) {
        Ok(k) => k,
        Err(e) => {
            let _ = ready.send(Err(ServeError::Keys(e)));
            return;
        }
    };
    let tokens = &shared.config.tokens;
    let expect = Expectations::new(
        shared.issuer.clone(),
        tokens.audience.clone(),
        tokens.leeway.as_secs(),
    );
    let mirror = shared.config.redis.revocation_mirror.then(|| {
        Mirror::new(
            shared.config.redis.prefix.clone(),
            tokens.access_ttl,
            tokens.leeway,
            shared.config.redis.mirror_max_lag,
            shared.counters[index].clone(),
        )
    });
    let core = Rc::new(Core {
        id: index,
        mirror: mirror.clone(),
        revocations: RedisRevocations::with_seed_marker(
            redis.clone(),
            shared.config.redis.prefix.clone(),
        ),
        refresh: crate::refresh::RefreshStore::new(
            redis.clone(),
            shared.config.redis.prefix.clone(),
        ),
        expect,
        keys: RefCell::new(Rc::new(keys)),
        keys_version: Cell::new(shared.keys.version()),
        cache: RefCell::new(VerifiedCache::new(tokens.verified_cache_size)),
        clients: RefCell::new(shared.clients.load()),
        clients_version: Cell::new(shared.clients.version()),
        counters: shared.counters[index].clone(),
        shared,
        date: DateCache::default(),
        redis,
        open: Cell::new(0),
        in_flight: Cell::new(0),
        fresh: Cell::new(0),
        shutting_down: Cell::new(false),
    });
    monoio::spawn(date_ticker(core.clone()));
    if let Some(mirror) = mirror {
        // Its own connection: `XREAD BLOCK` holds it between entries.
        let conn = RedisConn::new(
            core.shared.redis_target.clone(),
            mirror::reader_timeout(core.shared.config.redis.timeout),
        );
        monoio::spawn(mirror.run(conn));
    }
    // Give the core's Redis connection a moment to come up, so the first
    // requests after "listening" don't fail closed for nothing. Redis down
    // is not fatal: requests that need it answer 503 until it is back.
    if !core.redis.wait_connected(Duration::from_secs(2)).await {
        tracing::warn!(
            core = index,
            "redis not reachable yet; requests that need it answer 503 until it is"
        );
    }
    let _ = ready.send(Ok(index));

    // Accepts are cancelable so that a drain can take back the one in flight
    // instead of dropping it. With io_uring, a dropped accept is cancelled,
    // but the kernel may have completed it already: monoio then discards the
    // result, and the accepted socket is neither served nor closed until the
    // process exits, when it is reset. With epoll a pending accept has taken
    // nothing. The cost is a hash-set insert and removal per accepted
    // connection (the canceller's registry), nothing per request.
    let canceller = monoio::io::Canceller::new();
    loop {
        let accept = listener.cancelable_accept(canceller.handle());
        let mut accept = std::pin::pin!(accept);
        let accepted = monoio::select! {
            accepted = &mut accept => accepted,
            _ = &mut stop => {
                // Cancel the accept and wait for its result: the kernel may
                // have completed it already, and that connection is served
                // like any other (the drain below waits for it).
                let _ = canceller.cancel();
                if let Ok((stream, peer)) = accept.await {
                    accept_connection(&core, stream, peer);
                }
                break;
            }
        };
        match accepted {
            Ok((stream, peer)) => accept_connection(&core, stream, peer),
            Err(e) => {
                // EMFILE and friends: log, back off briefly, keep serving.
                core.counters.accept_errors.inc();
                tracing::warn!(core = index, "accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    // Graceful shutdown: no new connections; finish what is in flight.
    core.shutting_down.set(true);
    stop_listening(&core.shared, listener);
    let deadline = Instant::now() + core.shared.config.server.shutdown_timeout;
    let fresh_deadline = Instant::now() + FRESH_CONNECTION_GRACE;
    while (core.in_flight.get() > 0 || (core.fresh.get() > 0 && Instant::now() < fresh_deadline))
        && Instant::now() < deadline
    {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if core.in_flight.get() > 0 {
        tracing::warn!(
            core = index,
            in_flight = core.in_flight.get(),
            "shutdown timeout: dropping requests in flight"
        );
    }
    // Returning drops the runtime with every idle connection task: their
    // sockets are closed.
}

/// Stops listening at once, and one core at a time.
///
/// `shutdown(SHUT_RD)` on a listening socket stops it synchronously, whatever
/// the driver (monoio's io_uring driver closes a socket asynchronously, at its
/// next submission). With `net.ipv4.tcp_migrate_req`, the kernel then hands
/// the connections waiting in its queues to another listener of the
/// SO_REUSEPORT group, the new process's on a restart, or one of this
/// process's cores that has not closed yet. The lock keeps two cores from
/// closing at the same moment, so that a connection is never handed to a
/// sibling listener that is closing too (which the kernel answers with a
/// reset, counted in TcpExt's TCPMigrateReqFailure).
fn stop_listening(shared: &Shared, listener: monoio::net::TcpListener) {
    use std::os::fd::AsRawFd;
    let _one_at_a_time = shared
        .listener_close
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: shutdown(2) on a descriptor this core owns and still holds.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RD) };
    drop(listener);
}

/// Serves an accepted connection, or closes it at once when the core is at
/// its connection cap (the others are untouched).
fn accept_connection(core: &Rc<Core>, stream: monoio::net::TcpStream, peer: SocketAddr) {
    if core.try_open_connection() {
        monoio::spawn(crate::net::serve_connection(core.clone(), stream, peer));
    } else {
        core.counters.refused_connections.inc();
        drop(stream);
    }
}

/// Re-renders the core's `Date` header value once a second.
async fn date_ticker(core: Rc<Core>) {
    loop {
        core.date.refresh();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // Proof of life for the watchdog: this runs only if the loop turns.
        core.counters.heartbeat.set(now.as_secs());
        core.counters.redis.publish(&core.redis.stats());
        let to_next = Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()));
        monoio::time::sleep(to_next + Duration::from_millis(1)).await;
    }
}
