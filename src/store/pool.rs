//! The blocking pool: a fixed number of threads behind a bounded queue, for
//! everything that may block — PostgreSQL and argon2.
//!
//! A worker core hands it a closure and awaits the result; the result comes
//! back through a oneshot channel whose waker wakes the core's event loop
//! (monoio's `sync` feature makes cross-thread wakers work). A full queue is
//! refused at once ([`PoolError::Full`] → `503` with `Retry-After`), so a
//! login storm can never make a core wait, and validation on the same core is
//! not slowed.
//!
//! Revocation writes (revoke, logout-all, disable, a refresh family revoked
//! on reuse) do not queue behind logins ([`BlockingPool::run_urgent`]):
//! they have a queue of their own, which every thread takes from first, and
//! a thread of their own at the cores' priority, so a login flood that
//! fills the login queue and every login thread (under `SCHED_IDLE`, which a
//! busy machine starves) never delays them (issue #13).
//!
//! Owns: the blocking threads and their scheduling priority
//! (`limits.blocking_nice`, `limits.blocking_sched_idle`), the bounded
//! queues, and their figures ([`PoolStats`], read by `/metrics`).
//!
//! Never imports: anything of the crate (no `config`: the caller passes the
//! numbers). What the jobs do is their callers' business.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Occurs when blocking work could not run to completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Occurs when the queue is full: the caller answers `503` + `Retry-After`.
    #[error("the blocking pool is busy")]
    Full,
    /// Occurs when the job panicked (the panic is logged; the thread lives on).
    #[error("a blocking job panicked")]
    Panicked,
    /// Occurs when the pool is shutting down.
    #[error("the blocking pool is shut down")]
    Closed,
}

/// Counters of the pool, read by `/metrics`.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Jobs queued or running now.
    pub depth: AtomicUsize,
    /// Jobs refused because the queue was full.
    pub rejected: AtomicU64,
    /// Jobs completed.
    pub completed: AtomicU64,
}

/// A handle to the pool; cheap to clone, one per core.
#[derive(Clone)]
pub struct BlockingPool {
    tx: Sender<Job>,
    /// Revocation writes: taken first by every thread, and the only work of
    /// the urgent thread.
    urgent_tx: Sender<Job>,
    stats: Arc<PoolStats>,
    threads: usize,
}

/// Waiting revocation writes the urgent queue holds: each is a few
/// milliseconds of PostgreSQL, and only authenticated users and clients
/// send them.
const URGENT_QUEUE: usize = 1024;

impl BlockingPool {
    /// Starts `threads` threads sharing a queue of `queue` waiting jobs, each
    /// under the `SCHED_IDLE` policy when `sched_idle`, else at scheduling
    /// priority `nice` (0 = as the cores); see `limits.blocking_sched_idle`
    /// and `limits.blocking_nice`. Returns the pool and the thread handles
    /// (joined at shutdown after the last `BlockingPool` clone is dropped).
    pub fn start(
        threads: usize,
        queue: usize,
        nice: i32,
        sched_idle: bool,
    ) -> (BlockingPool, Vec<JoinHandle<()>>) {
        let (tx, rx): (Sender<Job>, Receiver<Job>) = crossbeam_channel::bounded(queue);
        let (urgent_tx, urgent_rx): (Sender<Job>, Receiver<Job>) =
            crossbeam_channel::bounded(URGENT_QUEUE);
        let stats = Arc::new(PoolStats::default());
        let mut handles: Vec<JoinHandle<()>> = (0..threads)
            .filter_map(|i| {
                let (rx, urgent_rx) = (rx.clone(), urgent_rx.clone());
                std::thread::Builder::new()
                    .name(format!("tokend-blocking-{i}"))
                    .spawn(move || {
                        lower_priority(i, nice, sched_idle);
                        work(&urgent_rx, &rx);
                    })
                    .map_err(|e| tracing::error!("cannot start blocking thread {i}: {e}"))
                    .ok()
            })
            .collect();
        // The urgent thread, at the cores' priority: revocation writes are
        // short and rare, and must not wait for argon2 to yield the CPU.
        let urgent = std::thread::Builder::new()
            .name("tokend-blocking-urgent".into())
            .spawn(move || {
                for job in urgent_rx.iter() {
                    job();
                }
            });
        match urgent {
            Ok(h) => handles.push(h),
            Err(e) => tracing::error!("cannot start the urgent blocking thread: {e}"),
        }
        (
            BlockingPool {
                tx,
                urgent_tx,
                stats,
                threads,
            },
            handles,
        )
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The pool's counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// Runs `f` on the pool and waits for its result without blocking the
    /// calling event loop.
    pub async fn run<F, R>(&self, f: F) -> Result<R, PoolError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.run_on(&self.tx, f).await
    }

    /// Like [`BlockingPool::run`], for a revocation write: queued apart from
    /// logins and taken first (see the module's documentation).
    pub async fn run_urgent<F, R>(&self, f: F) -> Result<R, PoolError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.run_on(&self.urgent_tx, f).await
    }

    async fn run_on<F, R>(&self, tx: &Sender<Job>, f: F) -> Result<R, PoolError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (done_tx, done_rx) = futures_channel::oneshot::channel();
        let stats = self.stats.clone();
        let job: Job = Box::new(move || {
            let result = catch_unwind(AssertUnwindSafe(f)).map_err(|_| PoolError::Panicked);
            if result.is_err() {
                tracing::error!("a blocking job panicked");
            }
            stats.depth.fetch_sub(1, Ordering::Relaxed);
            stats.completed.fetch_add(1, Ordering::Relaxed);
            // The caller may have gone away (connection closed); fine.
            let _ = done_tx.send(result);
        });
        self.stats.depth.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.depth.fetch_sub(1, Ordering::Relaxed);
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(PoolError::Full);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(PoolError::Closed);
            }
        }
        done_rx.await.unwrap_or(Err(PoolError::Closed))
    }
}

/// A pool thread's loop: an urgent job first whenever one waits, else
/// whichever queue has one; ends when both queues are closed.
fn work(urgent: &Receiver<Job>, normal: &Receiver<Job>) {
    loop {
        if let Ok(job) = urgent.try_recv() {
            job();
            continue;
        }
        crossbeam_channel::select! {
            recv(urgent) -> job => match job {
                Ok(job) => job(),
                // The urgent queue closed: only the other is left.
                Err(_) => {
                    for job in normal.iter() {
                        job();
                    }
                    return;
                }
            },
            recv(normal) -> job => match job {
                Ok(job) => job(),
                Err(_) => {
                    for job in urgent.iter() {
                        job();
                    }
                    return;
                }
            },
        }
    }
}

/// Lowers this thread's scheduling priority to `nice` so that argon2 on a
/// CPU shared with a core yields to the core: under a login storm the
/// validations keep their latency and logins take what CPU is left (the
/// login storm in `bench/run.sh`, tokend confined to one CPU, measured it).
/// On Linux `setpriority(PRIO_PROCESS, tid)` applies to the one thread;
/// raising nice needs no privilege.
fn lower_priority(index: usize, nice: i32, sched_idle: bool) {
    if sched_idle {
        // SCHED_IDLE: a core thread that wakes up preempts this one at once.
        // With nice alone, the scheduler may let an argon2 verification run
        // on until the next tick (4 ms at HZ=250) before the woken core gets
        // the CPU: `perf sched` showed core wake-up delays of up to 4 ms
        // during the benchmark's login storm, and bench/run.sh's storm
        // validate p99 (uncorrected) went from ~4 ms to ~1 ms with this.
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain syscall about the calling thread, valid param.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            tracing::warn!(
                "blocking thread {index}: cannot set SCHED_IDLE: {}",
                std::io::Error::last_os_error()
            );
        }
        return;
    }
    if nice <= 0 {
        return;
    }
    // SAFETY: plain syscalls on the calling thread, no memory is passed.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if rc != 0 {
        tracing::warn!(
            "blocking thread {index}: cannot set nice {nice}: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn rt() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    #[test]
    fn runs_jobs_and_returns_results() {
        let (pool, _h) = BlockingPool::start(2, 8, 0, false);
        let r = rt().block_on(async move { pool.run(|| 40 + 2).await });
        assert_eq!(r, Ok(42));
    }

    /// Polls `done` every millisecond on the event loop until it holds;
    /// panics naming `what` after 10 s (a generous deadline: the conditions
    /// waited for take microseconds, even on a loaded 2-CPU machine).
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[test]
    fn full_queue_is_refused_and_loop_keeps_running() {
        let (pool, _h) = BlockingPool::start(1, 1, 0, false);
        rt().block_on(async move {
            // The one thread runs a job held at a gate until the test opens
            // it (or 30 s pass, so that a failed test cannot hang).
            let (started_tx, started_rx) = std::sync::mpsc::channel();
            let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
            let p1 = pool.clone();
            let slow = monoio::spawn(async move {
                p1.run(move || {
                    let _ = started_tx.send(());
                    let _ = gate_rx.recv_timeout(Duration::from_secs(30));
                })
                .await
            });
            until("the slow job to start", || started_rx.try_recv().is_ok()).await;
            let p2 = pool.clone();
            let queued = monoio::spawn(async move { p2.run(|| 1).await });
            until("a second job in the queue", || {
                pool.stats().depth.load(Ordering::Relaxed) == 2
            })
            .await;
            // One running, one queued: the next is refused at once, i.e. on
            // its first poll, without waiting for a slot.
            let refused = std::pin::pin!(pool.run(|| 2));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert_eq!(
                std::future::Future::poll(refused, &mut cx),
                std::task::Poll::Ready(Err(PoolError::Full))
            );
            assert_eq!(pool.stats().rejected.load(Ordering::Relaxed), 1);
            // The event loop is free while the pool is busy: a timer fires
            // while the slow job is still held at its gate.
            monoio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(pool.stats().completed.load(Ordering::Relaxed), 0);
            gate_tx.send(()).unwrap();
            assert_eq!(slow.await, Ok(()));
            assert_eq!(queued.await, Ok(1));
        });
    }

    /// Issue #13: a revocation write does not wait for logins. The one
    /// login thread is held and the login queue is full; an urgent job runs
    /// at once (on the urgent thread, at the cores' priority).
    #[test]
    fn urgent_jobs_pass_a_full_login_queue() {
        let (pool, _h) = BlockingPool::start(1, 1, 0, true);
        rt().block_on(async move {
            let (started_tx, started_rx) = std::sync::mpsc::channel();
            let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
            let p1 = pool.clone();
            let slow = monoio::spawn(async move {
                p1.run(move || {
                    let _ = started_tx.send(());
                    let _ = gate_rx.recv_timeout(Duration::from_secs(30));
                })
                .await
            });
            until("the login to start", || started_rx.try_recv().is_ok()).await;
            let p2 = pool.clone();
            let queued = monoio::spawn(async move { p2.run(|| 1).await });
            until("a login in the queue", || {
                pool.stats().depth.load(Ordering::Relaxed) == 2
            })
            .await;
            assert_eq!(pool.run(|| 2).await, Err(PoolError::Full));
            // The urgent job: done while the login is still held, and not
            // under SCHED_IDLE.
            let policy = pool
                // SAFETY: a plain syscall about the calling thread.
                .run_urgent(|| unsafe { libc::sched_getscheduler(0) })
                .await;
            assert_eq!(policy, Ok(libc::SCHED_OTHER));
            assert_eq!(pool.stats().completed.load(Ordering::Relaxed), 1);
            gate_tx.send(()).unwrap();
            assert_eq!(slow.await, Ok(()));
            assert_eq!(queued.await, Ok(1));
        });
    }

    #[test]
    fn threads_run_at_the_configured_nice() {
        let (pool, _h) = BlockingPool::start(1, 4, 7, false);
        let nice = rt().block_on(async move {
            pool.run(|| {
                // SAFETY: plain syscalls about the calling thread.
                unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
            })
            .await
        });
        assert_eq!(nice, Ok(7));
    }

    #[test]
    fn threads_run_under_sched_idle_when_asked() {
        let (pool, _h) = BlockingPool::start(1, 4, 7, true);
        let policy = rt().block_on(async move {
            // SAFETY: a plain syscall about the calling thread.
            pool.run(|| unsafe { libc::sched_getscheduler(0) }).await
        });
        assert_eq!(policy, Ok(libc::SCHED_IDLE));
    }

    #[test]
    fn panics_are_contained() {
        let (pool, _h) = BlockingPool::start(1, 4, 0, false);
        rt().block_on(async move {
            assert_eq!(
                pool.run(|| -> u8 { panic!("boom") }).await,
                Err(PoolError::Panicked)
            );
            assert_eq!(pool.run(|| 7).await, Ok(7));
        });
    }
}
