//! Tests of the pipelined client against a real Redis: the shared test Redis
//! for what only reads and writes under a random prefix, private
//! `redis-server` processes for what kills, freezes or flushes Redis.

use std::time::{Duration, Instant};

use super::testutil::*;
use super::*;

fn cmd(name: &str) -> redis::Cmd {
    redis::cmd(name)
}

/// Upper bound on a call that must fail at once, without waiting on the
/// network. What proves it did not wait for a reply is the error it gets
/// (`Unavailable`, never `Timeout`); this bound only catches a call that
/// blocks on something else (a connect, a lookup). It is far below the
/// timeouts of the connections it is used with (5 s and 10 s; the stall
/// test's 100 ms timeout leaves the error as the only proof there), and
/// generous on purpose: on a loaded 2-CPU machine a test thread can be
/// descheduled for hundreds of milliseconds.
const FAIL_FAST: Duration = Duration::from_secs(1);

/// `blocked_clients` of `INFO clients`: callers waiting in `BLPOP` & co.
fn blocked_clients(side: &mut BlockingRedis) -> i64 {
    let info = side.query(cmd("INFO").arg("clients")).unwrap();
    info.as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// 1000 tasks on one core, each INCRs its own key `i+1` times and reads
/// it back: every caller must get its own replies, sent in batches.
#[test]
fn many_tasks_get_their_own_replies() {
    on_both_drivers(|driver| async move {
        let prefix = random_prefix();
        let conn = RedisConn::new(shared_target(), Duration::from_secs(5));
        assert!(
            conn.wait_connected(Duration::from_secs(5)).await,
            "{driver}"
        );
        let handles: Vec<_> = (0..1000u32)
            .map(|i| {
                let conn = conn.clone();
                let key = format!("{prefix}n:{i}");
                monoio::spawn(async move {
                    for n in 1..=(i % 7 + 1) {
                        let r = conn.query(cmd("INCR").arg(&key)).await.unwrap();
                        assert_eq!(r.as_int(), Some(i64::from(n)));
                    }
                    let got = conn.query(cmd("GET").arg(&key)).await.unwrap();
                    assert_eq!(got.as_int(), Some(i64::from(i % 7 + 1)));
                    // Several commands, one round trip, replies in order.
                    let many = conn
                        .query_many(&[
                            cmd("INCRBY").arg(&key).arg(1000).clone(),
                            cmd("GET").arg(format!("{key}:missing")).clone(),
                            cmd("ECHO").arg(i).clone(),
                        ])
                        .await
                        .unwrap();
                    assert_eq!(many[0].as_int(), Some(i64::from(i % 7 + 1001)));
                    assert!(many[1].is_nil());
                    assert_eq!(many[2].as_int(), Some(i64::from(i)));
                })
            })
            .collect();
        for h in handles {
            h.await;
        }
        let s = conn.stats();
        assert!(s.commands >= 1000 * 5, "{s:?}");
        assert!(
            s.round_trips * 4 < s.commands,
            "{driver}: batching expected: {s:?}"
        );
        assert_eq!((s.errors, s.timeouts), (0, 0));
        assert!(conn.ping().await.is_ok());
        cleanup(&prefix);
    });
}

/// A reply that arrives after its caller timed out is read and dropped,
/// never handed to the next caller.
#[test]
fn late_replies_are_not_misdelivered() {
    on_both_drivers(|driver| async move {
        let prefix = random_prefix();
        let list = format!("{prefix}list");
        let key = format!("{prefix}k");
        let conn = RedisConn::new(shared_target(), Duration::from_millis(100));
        assert!(conn.wait_connected(Duration::from_secs(5)).await);
        conn.query(cmd("SET").arg(&key).arg("mine")).await.unwrap();

        // BLPOP blocks only this connection; everything pipelined behind
        // it waits too, and both callers give up.
        let (blpop_cmd, get_cmd) = (
            cmd("BLPOP").arg(&list).arg(2).clone(),
            cmd("GET").arg(&key).clone(),
        );
        let blpop = conn.query(&blpop_cmd);
        let get_behind = conn.query(&get_cmd);
        let (a, b) = monoio::join!(blpop, get_behind);
        assert_eq!(a, Err(RedisError::Timeout), "{driver}");
        assert_eq!(b, Err(RedisError::Timeout), "{driver}");

        // Now BLPOP gets its element: its late reply (an array) and the
        // late GET reply arrive; both must be thrown away.
        let mut side = BlockingRedis::connect(&shared_target(), Duration::from_secs(2)).unwrap();
        side.query(cmd("RPUSH").arg(&list).arg("late")).unwrap();

        for round in 0..20 {
            let r = conn.query(cmd("ECHO").arg(round)).await;
            assert_eq!(r.unwrap().as_int(), Some(round), "{driver}");
        }
        let got = conn.query(cmd("GET").arg(&key)).await.unwrap();
        assert_eq!(got.as_str(), Some("mine"));
        let s = conn.stats();
        assert_eq!(s.timeouts, 2, "{s:?}");
        assert_eq!(s.errors, 0, "{s:?}");
        assert!(conn.is_connected());
        cleanup(&prefix);
    });
}

/// Error replies become `Server` errors and leave the connection usable.
#[test]
fn error_replies() {
    legacy(async {
        let prefix = random_prefix();
        let key = format!("{prefix}list");
        let conn = RedisConn::new(shared_target(), Duration::from_secs(2));
        assert!(conn.wait_connected(Duration::from_secs(5)).await);
        conn.query(cmd("RPUSH").arg(&key).arg("x")).await.unwrap();
        let e = conn.query(cmd("INCR").arg(&key)).await.unwrap_err();
        assert!(
            matches!(e, RedisError::Server(c) if c.as_str() == "WRONGTYPE"),
            "{e:?}"
        );
        let e = conn
            .query_many(&[cmd("PING"), cmd("INCR").arg(&key).clone()])
            .await
            .unwrap_err();
        assert!(matches!(e, RedisError::Server(_)));
        // Empty commands would get no reply at all: refused locally.
        assert_eq!(
            conn.query(&redis::Cmd::new()).await,
            Err(RedisError::Protocol)
        );
        let bad = conn
            .query_with(|w| {
                w.command(2).arg(b"GET");
            })
            .await;
        assert_eq!(bad, Err(RedisError::Protocol));
        assert!(conn.ping().await.is_ok());
        assert_eq!(conn.stats().errors, 4);
        cleanup(&prefix);
    });
}

#[test]
fn closed_port_is_unavailable_fast() {
    on_both_drivers(|driver| async move {
        let target = RedisTarget::parse(&format!("redis://127.0.0.1:{}", free_port())).unwrap();
        let conn = RedisConn::new(target, Duration::from_secs(5));
        for _ in 0..3 {
            let failures = conn.stats().connect_failures;
            let t = Instant::now();
            assert_eq!(conn.query(&cmd("PING")).await, Err(RedisError::Unavailable));
            assert_eq!(conn.ping().await, Err(RedisError::Unavailable));
            assert!(t.elapsed() < FAIL_FAST, "{driver}: {:?}", t.elapsed());
            // Meanwhile the supervisor keeps trying, and failing.
            until("another failed connect", Duration::from_secs(5), || {
                conn.stats().connect_failures > failures
            })
            .await;
        }
        assert!(!conn.is_connected());
        assert!(conn.stats().connect_failures >= 2, "{:?}", conn.stats());
    });
}

/// Kill Redis: waiting callers get an error at once, later ones fail
/// fast; restart it on the same port: the same `RedisConn` recovers.
#[test]
fn recovers_after_redis_restart() {
    on_both_drivers(|driver| async move {
        let mut server = PrivateRedis::start(&[]);
        let conn = RedisConn::new(server.target(), Duration::from_secs(10));
        assert!(
            conn.wait_connected(Duration::from_secs(5)).await,
            "{driver}"
        );
        conn.query(cmd("SET").arg("k").arg("v1")).await.unwrap();

        // A caller blocked in Redis when the connection breaks.
        let blocked = {
            let conn = conn.clone();
            monoio::spawn(async move { conn.query(cmd("BLPOP").arg("nolist").arg(8)).await })
        };
        let mut side = BlockingRedis::connect(&server.target(), Duration::from_secs(2)).unwrap();
        until("the BLPOP blocks in Redis", Duration::from_secs(5), || {
            blocked_clients(&mut side) == 1
        })
        .await;
        let t = Instant::now();
        server.kill();
        assert_eq!(blocked.await, Err(RedisError::Unavailable), "{driver}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{driver}: {:?}",
            t.elapsed()
        );
        assert!(!conn.is_connected());
        let failures = conn.stats().connect_failures;
        let t = Instant::now();
        assert_eq!(conn.query(&cmd("PING")).await, Err(RedisError::Unavailable));
        assert!(t.elapsed() < FAIL_FAST, "{driver}: {:?}", t.elapsed());
        // Reconnecting fails while Redis is down.
        until("a failed reconnect", Duration::from_secs(5), || {
            conn.stats().connect_failures > failures
        })
        .await;

        server.restart();
        let t = Instant::now();
        assert!(
            conn.wait_connected(Duration::from_secs(5)).await,
            "{driver}: no reconnect"
        );
        // The next attempt comes within the backoff, at most BACKOFF_MAX
        // (2 s); a second more for a loaded machine.
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // The new server has no data (no persistence), but answers.
        assert!(conn.query(cmd("GET").arg("k")).await.unwrap().is_nil());
        conn.query(cmd("SET").arg("k").arg("v2")).await.unwrap();
        let r = conn.query(cmd("GET").arg("k")).await.unwrap();
        assert_eq!(r.as_str(), Some("v2"));
        assert_eq!(conn.stats().reconnects, 1, "{:?}", conn.stats());
    });
}

/// A frozen Redis (SIGSTOP: the kernel keeps the connection open) is
/// detected by the stall watchdog; queries then fail fast instead of each
/// waiting out its timeout, and recover when Redis thaws.
#[test]
fn stalled_redis_is_dropped_and_recovered() {
    on_both_drivers(|driver| async move {
        let server = PrivateRedis::start(&[]);
        let conn = RedisConn::new(server.target(), Duration::from_millis(100));
        assert!(conn.wait_connected(Duration::from_secs(5)).await);
        // SAFETY: sending a signal to our own child process, by its pid.
        unsafe { libc::kill(server.pid(), libc::SIGSTOP) };
        assert_eq!(conn.query(&cmd("PING")).await, Err(RedisError::Timeout));
        // The watchdog needs two of its 1 s periods without a reply, so
        // about 2 s; 10 s leaves room for a machine running the other tests
        // on its 2 CPUs (a clean Debian 12 run of scripts/test.sh once missed
        // an earlier 5 s bound on io_uring; alone, 6 runs of 6 passed).
        let t = Instant::now();
        while conn.is_connected() && t.elapsed() < Duration::from_secs(10) {
            let _ = conn.query(&cmd("PING")).await;
            monoio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            !conn.is_connected(),
            "{driver}: stall not detected in {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        assert_eq!(conn.query(&cmd("PING")).await, Err(RedisError::Unavailable));
        assert!(t.elapsed() < FAIL_FAST, "{driver}: {:?}", t.elapsed());
        // SAFETY: as above.
        unsafe { libc::kill(server.pid(), libc::SIGCONT) };
        assert!(
            conn.wait_connected(Duration::from_secs(5)).await,
            "{driver}"
        );
        assert!(conn.ping().await.is_ok());
    });
}

#[test]
fn evalsha_falls_back_to_eval_on_noscript() {
    on_both_drivers(|driver| async move {
        let server = PrivateRedis::start(&[]);
        let conn = RedisConn::new(server.target(), Duration::from_secs(2));
        assert!(conn.wait_connected(Duration::from_secs(5)).await);
        let script =
            Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1]) + tonumber(ARGV[2])");
        assert_eq!(script.sha(), redis::Script::new(script.source()).get_hash());

        // Not cached yet: EVALSHA → NOSCRIPT → EVAL.
        let c0 = conn.stats().commands;
        let r = conn.eval(&script, &["counter"], &[5, 100]).await.unwrap();
        assert_eq!(r.as_int(), Some(105), "{driver}");
        assert_eq!(conn.stats().commands - c0, 2);
        // Cached by EVAL: EVALSHA alone.
        let r = conn.eval(&script, &["counter"], &[1, 0]).await.unwrap();
        assert_eq!(r.as_int(), Some(6));
        assert_eq!(conn.stats().commands - c0, 3);
        // Cache flushed (only ever on our private server): fallback again.
        conn.query(cmd("SCRIPT").arg("FLUSH")).await.unwrap();
        let r = conn.eval(&script, &["counter"], &[1, 0]).await.unwrap();
        assert_eq!(r.as_int(), Some(7));
        assert_eq!(conn.stats().commands - c0, 6);
        // A Lua runtime error is a Server error, not a retry loop.
        let failing = Script::new("return redis.error_reply('NOPE no way')");
        let e = conn.eval::<&str, u8>(&failing, &[], &[]).await.unwrap_err();
        assert!(
            matches!(e, RedisError::Server(c) if c.as_str() == "NOPE"),
            "{e:?}"
        );
        assert!(conn.ping().await.is_ok());
    });
}

#[test]
fn auth_and_select_after_connect() {
    legacy(async {
        let server = PrivateRedis::start(&["--requirepass", "s3cret/pw"]);
        let url = format!("redis://:s3cret%2Fpw@127.0.0.1:{}/3", server.port);
        let target = RedisTarget::parse(&url).unwrap();
        let conn = RedisConn::new(target.clone(), Duration::from_secs(2));
        assert!(conn.wait_connected(Duration::from_secs(5)).await);
        conn.query(cmd("SET").arg("in-db-3").arg("yes"))
            .await
            .unwrap();
        let mut side = BlockingRedis::connect(&target, Duration::from_secs(2)).unwrap();
        let r = side.query(cmd("GET").arg("in-db-3")).unwrap();
        assert_eq!(r.as_str(), Some("yes"));
        let r = side.query(cmd("CLIENT").arg("INFO")).unwrap();
        assert!(r.as_str().unwrap().contains("db=3"), "{r:?}");

        // A wrong password never counts as connected: fail fast.
        let wrong =
            RedisTarget::parse(&format!("redis://:nope@127.0.0.1:{}", server.port)).unwrap();
        let bad = RedisConn::new(wrong.clone(), Duration::from_secs(2));
        until("the refused handshake", Duration::from_secs(5), || {
            bad.stats().connect_failures >= 1
        })
        .await;
        assert!(!bad.is_connected());
        assert_eq!(bad.ping().await, Err(RedisError::Unavailable));
        assert!(matches!(
            BlockingRedis::connect(&wrong, Duration::from_secs(2)),
            Err(RedisError::Server(_))
        ));
    });
}

/// Dropping the last handle stops the background task and closes the
/// socket.
#[test]
fn dropping_the_connection_closes_it() {
    on_both_drivers(|driver| async move {
        let server = PrivateRedis::start(&[]);
        let mut side = BlockingRedis::connect(&server.target(), Duration::from_secs(2)).unwrap();
        let clients = |side: &mut BlockingRedis| {
            let r = side.query(cmd("CLIENT").arg("LIST")).unwrap();
            r.as_str().unwrap().lines().count()
        };
        let conn = RedisConn::new(server.target(), Duration::from_secs(2));
        assert!(conn.wait_connected(Duration::from_secs(5)).await);
        assert_eq!(clients(&mut side), 2, "{driver}");
        drop(conn);
        until(
            &format!("{driver}: the socket is closed"),
            Duration::from_secs(5),
            || clients(&mut side) == 1,
        )
        .await;
    });
}

/// A server that is not a primary is refused at connect (`ROLE`), with the
/// reason; one demoted while connected (a write refused with `READONLY`)
/// ends the connection, which then refuses to come back to it.
#[test]
fn replicas_are_refused_and_a_demoted_primary_is_left() {
    let other = PrivateRedis::start(&[]);
    let replica = PrivateRedis::start(&["--replicaof", "127.0.0.1", &other.port.to_string()]);
    match BlockingRedis::connect_explained(&replica.target(), Duration::from_secs(2)) {
        Err(ConnectError::NotPrimary(addr, Role::Replica)) => {
            assert_eq!(addr, format!("127.0.0.1:{}", replica.port));
        }
        Err(e) => panic!("unexpected: {e}"),
        Ok(_) => panic!("a replica was taken for a primary"),
    }

    let other_port = other.port;
    on_both_drivers(|driver| async move {
        let server = PrivateRedis::start(&[]);
        let conn = RedisConn::new(server.target(), Duration::from_secs(2));
        assert!(
            conn.wait_connected(Duration::from_secs(5)).await,
            "{driver}"
        );
        conn.query(cmd("SET").arg("k").arg("v")).await.unwrap();
        // Demoted under the connection's feet (as Sentinel does to an old
        // primary that comes back).
        let mut side = BlockingRedis::connect(&server.target(), Duration::from_secs(2)).unwrap();
        side.query(cmd("REPLICAOF").arg("127.0.0.1").arg(other_port))
            .unwrap();
        let e = conn.query(cmd("SET").arg("k").arg("w")).await.unwrap_err();
        assert!(
            matches!(e, RedisError::Server(c) if c.as_str() == "READONLY"),
            "{driver}: {e:?}"
        );
        until(
            "the connection to the replica ends",
            Duration::from_secs(5),
            || !conn.is_connected(),
        )
        .await;
        // It does not come back while the server is a replica.
        let failures = conn.stats().connect_failures;
        until("a refused reconnect", Duration::from_secs(5), || {
            conn.stats().connect_failures > failures
        })
        .await;
        assert!(!conn.is_connected(), "{driver}");
    });
}

/// Through Sentinel: the primary is found by asking, a name no sentinel
/// knows and a list where none answers are told apart, and after a
/// failover both clients reach the new primary by themselves.
#[test]
fn sentinels_name_the_primary_and_a_failover_is_followed() {
    let primary = PrivateRedis::start(&[]);
    let replica = PrivateRedis::start(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    wait_replica_synced(replica.port);
    let sentinel = PrivateSentinel::start("tokend-test", primary.port, 1);
    let via = |name: &str, addrs: &[String]| {
        RedisTarget::parse("redis://127.0.0.1:1/0")
            .unwrap()
            .with_sentinels(Sentinels::new(addrs, name, None, None).unwrap())
    };
    // The first "sentinel" accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = via(
        "tokend-test",
        &[silent.local_addr().unwrap().to_string(), sentinel.addr()],
    );

    // The first sentinel does not answer: the second does.
    let mut c = BlockingRedis::connect(&target, Duration::from_secs(2)).unwrap();
    assert_eq!(c.peer(), format!("127.0.0.1:{}", primary.port));
    c.query(cmd("SET").arg("s").arg("1")).unwrap();
    assert_eq!(
        BlockingRedis::connect_explained(
            &via("nobody", &[sentinel.addr()]),
            Duration::from_secs(2)
        )
        .err(),
        Some(ConnectError::Locate(LocateError::UnknownMaster))
    );
    assert_eq!(
        BlockingRedis::connect_explained(
            &via("tokend-test", &[format!("127.0.0.1:{}", free_port())]),
            Duration::from_secs(2)
        )
        .err(),
        Some(ConnectError::Locate(LocateError::NoSentinel))
    );

    legacy(async {
        let conn = RedisConn::new(target.clone(), Duration::from_secs(2));
        assert!(conn.wait_connected(Duration::from_secs(5)).await);
        conn.query(cmd("SET").arg("s").arg("2")).await.unwrap();

        // The sentinel must know the replica before it can promote it.
        until(
            "the sentinel knows the replica",
            Duration::from_secs(15),
            || {
                sentinel
                    .query(cmd("SENTINEL").arg("REPLICAS").arg("tokend-test"))
                    .ok()
                    .and_then(|r| r.as_array().map(|a| !a.is_empty()))
                    .unwrap_or(false)
            },
        )
        .await;
        let mut failed_over = false;
        for _ in 0..50 {
            if sentinel
                .query(cmd("SENTINEL").arg("FAILOVER").arg("tokend-test"))
                .is_ok()
            {
                failed_over = true;
                break;
            }
            monoio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(failed_over, "SENTINEL FAILOVER was refused");
        let new_primary = format!("127.0.0.1:{}", replica.port);
        // Writes through the per-core connection land on the new primary,
        // without a restart.
        until(
            "a write on the new primary",
            Duration::from_secs(20),
            || {
                let mut side = BlockingRedis::connect(&target, Duration::from_secs(1));
                matches!(&side, Ok(s) if s.peer() == new_primary)
                    && side
                        .as_mut()
                        .is_ok_and(|s| s.query(cmd("SET").arg("s").arg("3")).is_ok())
            },
        )
        .await;
        // The per-core connection moves as soon as the sentinels name the
        // new primary (its primary watch), not when Sentinel gets round to
        // demoting the old one (10 s later here): until then the old one
        // still takes writes.
        let mut moved = false;
        let t = Instant::now();
        for _ in 0..100 {
            let port = conn
                .query(cmd("CONFIG").arg("GET").arg("port"))
                .await
                .ok()
                .and_then(|r| r.as_array()?.get(1)?.as_str()?.parse::<u16>().ok());
            if port == Some(replica.port) {
                // Within the watch's half second.
                eprintln!("moved {:?} after the new primary took a write", t.elapsed());
                moved = true;
                break;
            }
            monoio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            moved,
            "the per-core connection never reached the new primary"
        );
        conn.query(cmd("SET").arg("s").arg("4")).await.unwrap();
        let mut side = BlockingRedis::connect(&target, Duration::from_secs(2)).unwrap();
        assert_eq!(side.peer(), new_primary);
        assert_eq!(side.query(cmd("GET").arg("s")).unwrap().as_str(), Some("4"));
    });
}
