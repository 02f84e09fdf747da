//! Shared by the tests of the Redis client and of the services on it
//! (revocation, refresh, rate limits): runtimes, the shared test Redis
//! (`TOKEND_TEST_REDIS_URL`, each test under its own random prefix), private
//! `redis-server` processes for the tests that kill or flush Redis, and a
//! wait on a condition (never a sleep) for what happens in the background.
//!
//! Test code only (`cfg(test)`).

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::blocking::BlockingRedis;
use super::target::RedisTarget;

/// The shared test Redis: `crate::testing::redis_url()`.
pub fn shared_target() -> RedisTarget {
    RedisTarget::parse(&crate::testing::redis_url()).unwrap()
}

/// Waits until `f()` holds, polling every few milliseconds on the current
/// runtime (so background tasks keep running); panics naming `what` after
/// `max`. The synchronisation the tests use instead of sleeping.
pub async fn until(what: &str, max: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + max;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A fresh key prefix; every test writes only under its own.
pub fn random_prefix() -> String {
    format!("tokend-test:{:016x}:", rand::random::<u64>())
}

/// Deletes every key under `prefix` on the shared Redis.
pub fn cleanup(prefix: &str) {
    let mut c = BlockingRedis::connect(&shared_target(), Duration::from_secs(2)).unwrap();
    let keys = c
        .query(::redis::cmd("KEYS").arg(format!("{prefix}*")))
        .unwrap();
    let keys: Vec<Vec<u8>> = keys
        .into_array()
        .unwrap()
        .iter()
        .map(|k| k.as_bytes().unwrap().to_vec())
        .collect();
    if !keys.is_empty() {
        c.query(::redis::cmd("DEL").arg(keys)).unwrap();
    }
}

pub fn legacy<F: Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn uring<F: Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs the test body once under each driver.
pub fn on_both_drivers<F, Fut>(body: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    legacy(body("legacy"));
    uring(body("io_uring"));
}

/// A port nobody listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` child process of our own, killed on drop.
pub struct PrivateRedis {
    pub port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start(extra: &[&str]) -> PrivateRedis {
        let mut r = PrivateRedis {
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn target(&self) -> RedisTarget {
        RedisTarget::parse(&self.url()).unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// (Re)starts the server on the same port and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
