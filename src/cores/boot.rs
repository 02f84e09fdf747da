//! Start-up: check the configuration, reach PostgreSQL and Redis, load the
//! keys and clients, bind every listener (so a port conflict fails before
//! anything runs), start the blocking pool, re-seed Redis if it lost its
//! revocations, start one pinned thread per core and wait until each reports
//! it is serving.
//!
//! Owns: the order of start-up, the cores this process runs on
//! ([`resolve_cores`]) and each core thread's set-up (runtime, [`Core`],
//! ticker, mirror reader). Part of the composition root: imports what it
//! composes; only `main.rs` reaches it (through `cores`).
//!
//! Never imports: the table forbids the composition root nothing, but boot
//! stays off the request path: no `handlers`, `access`, `router` or `http`. A
//! connection is `net`'s from the first byte.

use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;

use super::{accept, control, ServeError, Server};
use crate::config::{Config, Cores, Driver};
use crate::identity::Hasher;
use crate::redis::{RedisConn, RedisTarget};
use crate::revocation::mirror;
use crate::state::{Core, Shared, SharedParts};
use crate::store::{self, BlockingPool};
use crate::tokens::Kek;

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
    pick_cores(cores, available)
}

/// `server.cores` against the cores this process may run on (not empty).
fn pick_cores(
    cores: &Cores,
    available: Vec<core_affinity::CoreId>,
) -> Result<Vec<Option<core_affinity::CoreId>>, ServeError> {
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

impl Server {
    /// Starts every core and returns once all of them serve.
    pub fn start(config: Config) -> Result<Server, ServeError> {
        let cores = resolve_cores(&config.server.cores)?;
        let redis_target = RedisTarget::from_config(&config.redis).map_err(ServeError::Redis)?;

        // The stores must answer before we say we are up.
        let threads = config.blocking_threads();
        let pg = store::pg::pool(
            &config.database,
            config.database.pool_size.unwrap_or(threads as u32),
        )?;
        store::pg::ping(&pg, config.database.connect_timeout)?;
        let kek = Kek::from_config(&config.keys)?;
        let hasher = Arc::new(Hasher::new(&config.passwords)?);
        let (material, clients) = {
            let mut conn = pg.get()?;
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
        // until the cores' connections come up by themselves. A
        // misconfiguration is: no sentinel answers, none knows the master
        // name, or the server is a replica.
        check_redis(
            &redis_target,
            config.redis.timeout.max(Duration::from_secs(1)),
        )?;

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
        let shared = Arc::new(Shared::new(SharedParts {
            config,
            bound: addr,
            cores: cores.len(),
            pool,
            pg,
            redis_target,
            kek,
            hasher,
            keys: material,
            clients,
        }));

        // The readiness probe's thread, connection and first result are
        // made now, not by the first /readyz (which may come in a login
        // storm, and would then wait for them).
        let _ = shared.pg_probe().check();

        // Make sure Redis holds every revocation before the first
        // validation (a fresh or flushed Redis has no seed marker). Redis
        // down is not fatal here: the seeder thread retries.
        control::ensure_seeded(&shared, &mut None);

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
}

fn check_redis(target: &RedisTarget, timeout: Duration) -> Result<(), ServeError> {
    match crate::redis::BlockingRedis::connect_explained(target, timeout) {
        Ok(_) => Ok(()),
        Err(e) if e.is_misconfiguration() => Err(ServeError::Redis(format!("{target}: {e}"))),
        Err(e) => {
            tracing::warn!(
                "redis: cannot reach {target}: {e}; starting anyway, requests that need Redis answer 503 until it is back"
            );
            Ok(())
        }
    }
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
    let driver = shared.driver();
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

/// One core, on its runtime: register the listener, build the [`Core`],
/// start its ticker and mirror reader, report ready, then serve until told
/// to stop (see [`accept::serve`]).
async fn core_main(
    index: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    stop: oneshot::Receiver<()>,
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
    let core = match Core::new(index, shared.clone()) {
        Ok(core) => core,
        Err(e) => {
            let _ = ready.send(Err(ServeError::Keys(e)));
            return;
        }
    };
    monoio::spawn(accept::date_ticker(core.clone()));
    if let Some(mirror) = core.mirror() {
        // Its own connection: `XREAD BLOCK` holds it between entries.
        let conn = RedisConn::new(
            shared.redis_target().clone(),
            mirror::reader_timeout(shared.config().redis.timeout),
        );
        monoio::spawn(Rc::clone(mirror).run(conn));
    }
    // Give the core's Redis connection a moment to come up, so the first
    // requests after "listening" don't fail closed for nothing. Redis down
    // is not fatal: requests that need it answer 503 until it is back.
    if !core.redis().wait_connected(Duration::from_secs(2)).await {
        tracing::warn!(
            core = index,
            "redis not reachable yet; requests that need it answer 503 until it is"
        );
    }
    let _ = ready.send(Ok(index));
    accept::serve(&core, &shared, listener, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use core_affinity::CoreId;

    fn ids(ids: &[usize]) -> Vec<CoreId> {
        ids.iter().map(|&id| CoreId { id }).collect()
    }

    fn picked(r: Result<Vec<Option<CoreId>>, ServeError>) -> Vec<usize> {
        r.unwrap().into_iter().map(|c| c.unwrap().id).collect()
    }

    #[test]
    fn all_takes_every_available_core() {
        assert_eq!(picked(pick_cores(&Cores::All, ids(&[0, 2, 5]))), [0, 2, 5]);
    }

    #[test]
    fn a_count_takes_the_first_available_cores() {
        assert_eq!(
            picked(pick_cores(&Cores::Count(2), ids(&[3, 1, 7]))),
            [3, 1]
        );
        assert_eq!(
            picked(pick_cores(&Cores::Count(3), ids(&[3, 1, 7]))),
            [3, 1, 7]
        );
    }

    #[test]
    fn a_count_over_what_is_available_is_refused_with_both_numbers() {
        let e = pick_cores(&Cores::Count(3), ids(&[0, 1])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "server.cores: asked for 3 cores, this process may run on 2"
        );
    }

    #[test]
    fn a_list_takes_those_cores_in_its_order() {
        assert_eq!(
            picked(pick_cores(&Cores::List(vec![5, 0]), ids(&[0, 1, 5]))),
            [5, 0]
        );
    }

    #[test]
    fn a_list_naming_an_unavailable_core_is_refused_naming_it() {
        let e = pick_cores(&Cores::List(vec![0, 9]), ids(&[0, 1])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "server.cores: core 9 is not available to this process (available: [0, 1])"
        );
    }

    #[test]
    fn resolve_cores_gives_one_worker_per_listed_or_counted_core() {
        // Whatever this machine allows: `all` is at least one worker, and a
        // count of one always fits.
        assert!(!resolve_cores(&Cores::All).unwrap().is_empty());
        assert_eq!(resolve_cores(&Cores::Count(1)).unwrap().len(), 1);
    }
}
