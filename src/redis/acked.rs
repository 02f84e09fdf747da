//! Writes that must survive a failover: [`Writes`], and `WAIT`
//! (`redis.min_replicas_acked`, issue #14).
//!
//! Redis replicates asynchronously: a write the primary acknowledged can be
//! lost if the primary dies before a replica got it, and Sentinel then
//! promotes a replica without it. For a revocation tokend repairs that from
//! PostgreSQL (see `revocation::durable`), within about a second of the
//! promotion; a refresh-token rotation lives only in Redis, and a lost one
//! lets the old refresh token be used once more. With
//! `redis.min_replicas_acked = N > 0`, the writes that matter (revocations,
//! logout-all marks, refresh rotations and family revocations) are answered
//! only once `WAIT N` says N replicas have them; fewer within the wait, and
//! the request fails with `503` ([`RedisError::NotReplicated`]) rather than
//! pretending.
//!
//! `WAIT` blocks the connection it is sent on, in Redis: every command
//! queued behind it waits too. So acknowledged writes go on a connection of
//! their own per core, never on the pipelined connection validation uses;
//! they queue behind each other (one replica round trip each, well under a
//! millisecond on a LAN). A `503` after the write reached the primary means
//! "not known to be replicated": the write may or may not survive a
//! failover, as with any store that times out.
//!
//! Owns: the choice of connection for those writes and the `WAIT` after
//! each. Never imports anything of the crate outside `redis`.

use std::rc::Rc;
use std::time::Duration;

use redis::ToRedisArgs;

use super::conn::RedisConn;
use super::error::RedisError;
use super::resp::Reply;
use super::script::Script;
use super::target::RedisTarget;

/// Where the writes that must survive a failover go, and how many replicas
/// must acknowledge each. Cheap to clone (one `Rc`).
#[derive(Clone)]
pub struct Writes {
    conn: Rc<RedisConn>,
    replicas: u32,
    wait: Duration,
}

impl Writes {
    /// Writes on `conn` itself, answered as soon as the primary has them
    /// (`redis.min_replicas_acked = 0`, the default).
    pub fn unacked(conn: Rc<RedisConn>) -> Writes {
        Writes {
            conn,
            replicas: 0,
            wait: Duration::ZERO,
        }
    }

    /// Writes on a connection of their own to `target` (opened now, in the
    /// background: call it on the core's runtime), each answered once
    /// `replicas` replicas acknowledged it within `timeout` (`redis.timeout`).
    /// The connection's own timeout covers the write, the wait and a round
    /// trip.
    pub fn acked(target: RedisTarget, timeout: Duration, replicas: u32) -> Writes {
        let wait = timeout.max(Duration::from_millis(1));
        Writes {
            conn: RedisConn::new(target, wait * 2 + Duration::from_millis(50)),
            replicas,
            wait,
        }
    }

    /// The connection the writes go on.
    pub fn conn(&self) -> &Rc<RedisConn> {
        &self.conn
    }

    /// Runs a writing Lua script (see [`RedisConn::eval`]), then, when
    /// replicas must acknowledge it, `WAIT`s for them.
    pub async fn eval<K, A>(
        &self,
        script: &Script,
        keys: &[K],
        args: &[A],
    ) -> Result<Reply, RedisError>
    where
        K: ToRedisArgs,
        A: ToRedisArgs,
    {
        let reply = self.conn.eval(script, keys, args).await?;
        self.acknowledged().await?;
        Ok(reply)
    }

    /// `WAIT replicas wait-in-ms` on the writes' connection: it covers every
    /// write sent on it before. `Ok` when enough replicas acknowledged, or
    /// none are asked for.
    pub async fn acknowledged(&self) -> Result<(), RedisError> {
        if self.replicas == 0 {
            return Ok(());
        }
        let ms = u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX);
        let replicas = u64::from(self.replicas);
        let reply = self
            .conn
            .query_with(|w| {
                w.command(3).arg(b"WAIT").arg_u64(replicas).arg_u64(ms);
            })
            .await?;
        check_acks(&reply, replicas)
    }
}

/// Reads `WAIT`'s answer: the number of replicas that acknowledged.
pub(super) fn check_acks(reply: &Reply, wanted: u64) -> Result<(), RedisError> {
    let got = reply.as_int().ok_or(RedisError::Protocol)?;
    if u64::try_from(got).unwrap_or(0) >= wanted {
        Ok(())
    } else {
        tracing::warn!(
            "redis: {got} of the {wanted} replicas asked for (redis.min_replicas_acked) acknowledged a write in time; answering 503"
        );
        Err(RedisError::NotReplicated)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::testutil::*;
    use super::*;

    const SET_LUA: &str = "return redis.call('SET', KEYS[1], ARGV[1])";

    #[test]
    fn writes_wait_for_their_replicas() {
        let primary = PrivateRedis::start(&[]);
        legacy(async {
            let script = Script::new(SET_LUA);
            // No replica: the write is made, but not acknowledged in time.
            // A second to wait: this shared 2-CPU machine stalls now and
            // then for longer than a replica's round trip.
            let lonely = Writes::acked(primary.target(), Duration::from_millis(1000), 1);
            assert!(lonely.conn().wait_connected(Duration::from_secs(5)).await);
            let t = Instant::now();
            assert_eq!(
                lonely.eval(&script, &["k"], &["1"]).await.unwrap_err(),
                RedisError::NotReplicated
            );
            assert!(
                t.elapsed() >= Duration::from_millis(1000),
                "{:?}",
                t.elapsed()
            );
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

            // With a replica in sync: acknowledged.
            let replica =
                PrivateRedis::start(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
            wait_replica_synced(replica.port);
            // Counted by the primary: after a full sync, only once the
            // replica has acknowledged an offset (up to a second later).
            let mut side =
                super::super::BlockingRedis::connect(&primary.target(), Duration::from_secs(2))
                    .unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            while side
                .query(::redis::cmd("WAIT").arg(1).arg(100))
                .unwrap()
                .as_int()
                != Some(1)
            {
                assert!(
                    Instant::now() < deadline,
                    "the primary never counted its replica"
                );
            }
            lonely.eval(&script, &["k"], &["2"]).await.unwrap();
            // And the replica has it.
            let node = RedisTarget::sentinel_node("127.0.0.1", replica.port, None, None);
            let mut side =
                super::super::BlockingRedis::connect(&node, Duration::from_secs(2)).unwrap();
            assert_eq!(
                side.query(::redis::cmd("GET").arg("k")).unwrap().as_str(),
                Some("2")
            );

            // Unacknowledged writes never wait.
            let plain = Writes::unacked(RedisConn::new(primary.target(), Duration::from_secs(1)));
            assert!(plain.conn().wait_connected(Duration::from_secs(5)).await);
            plain.eval(&script, &["k"], &["3"]).await.unwrap();
            plain.acknowledged().await.unwrap();
        });
    }

    #[test]
    fn wait_answers() {
        assert_eq!(check_acks(&Reply::Int(2), 2), Ok(()));
        assert_eq!(check_acks(&Reply::Int(3), 2), Ok(()));
        assert_eq!(
            check_acks(&Reply::Int(1), 2),
            Err(RedisError::NotReplicated)
        );
        assert_eq!(check_acks(&Reply::Nil, 1), Err(RedisError::Protocol));
    }
}
