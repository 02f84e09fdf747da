//! A tiny synchronous Redis client for the CLI, the control thread and tests.
//!
//! Never use it on a worker core: every call blocks the thread. It shares the
//! URL parsing, the handshake and the reply decoding with
//! [`RedisConn`](super::RedisConn), and sends one command (or one pipeline)
//! at a time.
//!
//! Owns: one blocking socket. Never imports anything of the crate outside
//! `redis`.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;

use super::error::RedisError;
use super::resp::{check_server_error, decode_reply, Reply};
use super::target::RedisTarget;

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 16 * 1024;

/// A synchronous connection to Redis.
///
/// After any I/O error or timeout the connection is marked broken and every
/// later call fails with [`RedisError::Unavailable`]: a reply that arrives
/// late must never be taken for the answer to the next command. Connect
/// again to recover.
pub struct BlockingRedis {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    chunk: Box<[u8]>,
    broken: bool,
}

impl BlockingRedis {
    /// Connects (trying each resolved address within `timeout`), sets
    /// `timeout` on every read and write, and sends AUTH/SELECT as the URL
    /// asks, then PING. The cause of a failure is logged (`tracing`).
    pub fn connect(target: &RedisTarget, timeout: Duration) -> Result<BlockingRedis, RedisError> {
        // `set_read_timeout(Some(ZERO))` is an error; a zero timeout means
        // "as short as possible".
        let timeout = timeout.max(Duration::from_millis(1));
        let addrs = target.socket_addrs_blocking().map_err(|e| {
            tracing::warn!("redis: cannot resolve {}: {e}", target.display_addr());
            RedisError::Unavailable
        })?;
        let mut last_err = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let Some(stream) = stream else {
            tracing::warn!(
                "redis: cannot connect to {}: {last_err}",
                target.display_addr()
            );
            return Err(io_error(&last_err));
        };
        let setup = stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .and_then(|()| stream.set_nodelay(true));
        if let Err(e) = setup {
            tracing::warn!(
                "redis: cannot configure the socket to {}: {e}",
                target.display_addr()
            );
            return Err(RedisError::Unavailable);
        }
        let mut conn = BlockingRedis {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::new(),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            broken: false,
        };
        conn.query_many(&target.handshake_commands())
            .inspect_err(|e| {
                tracing::warn!(
                    "redis: AUTH/SELECT/PING on {} failed: {e}",
                    target.display_addr()
                );
            })?;
        Ok(conn)
    }

    /// Sends one command and waits for its reply. An error reply becomes
    /// [`RedisError::Server`] (its text is logged).
    pub fn query(&mut self, cmd: &redis::Cmd) -> Result<Reply, RedisError> {
        self.roundtrip(std::slice::from_ref(cmd))?
            .pop()
            .ok_or(RedisError::Protocol)
            .and_then(check_server_error)
    }

    /// Sends several commands in one write and returns their replies in
    /// order; fails with [`RedisError::Server`] if any reply is an error (all
    /// replies are read first, so the connection stays usable).
    pub fn query_many(&mut self, cmds: &[redis::Cmd]) -> Result<Vec<Reply>, RedisError> {
        let replies = self.roundtrip(cmds)?;
        for r in &replies {
            if let Reply::Error(msg) = r {
                check_server_error(Reply::Error(msg.clone()))?;
            }
        }
        Ok(replies)
    }

    fn roundtrip(&mut self, cmds: &[redis::Cmd]) -> Result<Vec<Reply>, RedisError> {
        if self.broken {
            return Err(RedisError::Unavailable);
        }
        if cmds.iter().any(|c| c.args_iter().len() == 0) {
            // `*0\r\n` gets no reply at all; see `RedisConn`.
            return Err(RedisError::Protocol);
        }
        self.wbuf.clear();
        for cmd in cmds {
            cmd.write_packed_command(&mut self.wbuf);
        }
        let result = self.exchange(cmds.len());
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn exchange(&mut self, n: usize) -> Result<Vec<Reply>, RedisError> {
        self.stream
            .write_all(&self.wbuf)
            .map_err(|e| io_error(&e))?;
        let mut replies = Vec::with_capacity(n);
        while replies.len() < n {
            if let Some(reply) = decode_reply(&mut self.rbuf)? {
                replies.push(reply);
                continue;
            }
            match self.stream.read(&mut self.chunk) {
                Ok(0) => return Err(RedisError::Unavailable),
                Ok(k) => self.rbuf.extend_from_slice(&self.chunk[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(&e)),
            }
        }
        Ok(replies)
    }
}

fn io_error(e: &io::Error) -> RedisError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => RedisError::Timeout,
        _ => RedisError::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::testutil::*;
    use super::*;

    #[test]
    fn query_and_pipeline() {
        let prefix = random_prefix();
        let key = format!("{prefix}b");
        let mut c = BlockingRedis::connect(&shared_target(), Duration::from_secs(2)).unwrap();
        assert_eq!(
            c.query(&redis::cmd("PING")).unwrap(),
            Reply::Simple("PONG".into())
        );
        let r = c
            .query_many(&[
                redis::cmd("SET").arg(&key).arg(41).clone(),
                redis::cmd("INCR").arg(&key).clone(),
                redis::cmd("GET").arg(&key).clone(),
            ])
            .unwrap();
        assert!(r[0].is_ok());
        assert_eq!(r[1].as_int(), Some(42));
        assert_eq!(r[2].as_int(), Some(42));
        // An error reply is an error, and the connection stays in step.
        let e = c.query(redis::cmd("HGET").arg(&key).arg("f")).unwrap_err();
        assert!(matches!(e, RedisError::Server(code) if code.as_str() == "WRONGTYPE"));
        assert_eq!(
            c.query(redis::cmd("GET").arg(&key)).unwrap().as_int(),
            Some(42)
        );
        assert_eq!(c.query(&redis::Cmd::new()), Err(RedisError::Protocol));
        cleanup(&prefix);
    }

    #[test]
    fn timeout_breaks_the_connection() {
        let prefix = random_prefix();
        let mut c = BlockingRedis::connect(&shared_target(), Duration::from_millis(100)).unwrap();
        let e = c
            .query(redis::cmd("BLPOP").arg(format!("{prefix}l")).arg(1))
            .unwrap_err();
        assert_eq!(e, RedisError::Timeout);
        // The late BLPOP reply must never answer the next command.
        assert_eq!(c.query(&redis::cmd("PING")), Err(RedisError::Unavailable));
    }

    #[test]
    fn closed_port() {
        let target = RedisTarget::parse(&format!("redis://127.0.0.1:{}", free_port())).unwrap();
        let t = Instant::now();
        assert!(BlockingRedis::connect(&target, Duration::from_secs(2)).is_err());
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
