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
    /// Its working directory (a replica writes its first sync there),
    /// removed on drop.
    dir: std::path::PathBuf,
}

impl PrivateRedis {
    pub fn start(extra: &[&str]) -> PrivateRedis {
        let dir = std::env::temp_dir().join(format!(
            "tokend-redis-test-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = PrivateRedis {
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            dir,
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
            .current_dir(&self.dir)
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Sentinel child process of our own (`redis-server <conf>
/// --sentinel`), watching the primary on `127.0.0.1:{primary}` under
/// `name`; killed, and its directory removed, on drop.
pub struct PrivateSentinel {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl PrivateSentinel {
    pub fn start(name: &str, primary: u16, quorum: u32) -> PrivateSentinel {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "tokend-sentinel-test-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        // Sentinel rewrites its configuration file: it must be writable.
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {name} 127.0.0.1 {primary} {quorum}\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        // Debian's redis-sentinel (scripts/services.sh --for-tests installs
        // it); `redis-server --sentinel` is the same program.
        let packaged = Command::new("redis-sentinel")
            .arg("--version")
            .output()
            .is_ok();
        let mut cmd = Command::new(if packaged {
            "redis-sentinel"
        } else {
            "redis-server"
        });
        cmd.arg(&conf);
        if !packaged {
            cmd.arg("--sentinel");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let s = PrivateSentinel {
            port,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis sentinel did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// `127.0.0.1:port`, as `redis.sentinels` lists it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends one command to the sentinel itself.
    pub fn query(&self, cmd: &::redis::Cmd) -> Result<super::Reply, super::RedisError> {
        let node = RedisTarget::sentinel_node("127.0.0.1", self.port, None, None);
        let mut c = BlockingRedis::connect(&node, Duration::from_secs(2))?;
        c.query(cmd)
    }
}

impl Drop for PrivateSentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (blocking) until the replica on `port` has finished its first sync
/// with its primary.
pub fn wait_replica_synced(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A replica refuses a data connection's ROLE check: ask with a
        // sentinel-style connection (no ROLE).
        let node = RedisTarget::sentinel_node("127.0.0.1", port, None, None);
        let up = BlockingRedis::connect(&node, Duration::from_secs(2))
            .and_then(|mut c| c.query(::redis::cmd("INFO").arg("replication")))
            .ok()
            .and_then(|r| r.as_str().map(|s| s.contains("master_link_status:up")))
            .unwrap_or(false);
        if up {
            return;
        }
        assert!(Instant::now() < deadline, "replica on {port} did not sync");
        std::thread::sleep(Duration::from_millis(50));
    }
}
