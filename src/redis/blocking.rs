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
use super::sentinel::ConnectError;
use super::target::{check_role, RedisTarget};
use super::tls::tls_failure;

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 16 * 1024;

/// A synchronous connection to Redis.
///
/// After any I/O error or timeout the connection is marked broken and every
/// later call fails with [`RedisError::Unavailable`]: a reply that arrives
/// late must never be taken for the answer to the next command. Connect
/// again to recover.
pub struct BlockingRedis {
    stream: Stream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    chunk: Box<[u8]>,
    broken: bool,
    peer: String,
    /// Why the TLS session failed, when it did (read by `connect`).
    tls_failure: Option<String>,
}

/// The socket, in clear or in TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl BlockingRedis {
    /// Connects (trying each resolved address within `timeout`), sets
    /// `timeout` on every read and write, and sends AUTH/SELECT as the URL
    /// asks, then PING and ROLE. With sentinels, asks them for the primary
    /// first. The cause of a failure is logged (`tracing`); see
    /// [`connect_explained`](Self::connect_explained) for it as a value.
    pub fn connect(target: &RedisTarget, timeout: Duration) -> Result<BlockingRedis, RedisError> {
        Self::connect_explained(target, timeout).map_err(|e| {
            tracing::warn!("redis: cannot connect to {target}: {e}");
            match e {
                ConnectError::Unreachable(_, e) => e,
                _ => RedisError::Unavailable,
            }
        })
    }

    /// [`connect`](Self::connect), with why it failed: start-up tells a
    /// misconfiguration (no sentinel answers, none knows the name, the
    /// server is a replica) from an outage.
    pub fn connect_explained(
        target: &RedisTarget,
        timeout: Duration,
    ) -> Result<BlockingRedis, ConnectError> {
        match target.sentinels() {
            None => Self::connect_to(target, timeout),
            Some(sentinels) => {
                let (host, port) = sentinels
                    .locate_blocking(timeout)
                    .map_err(ConnectError::Locate)?;
                Self::connect_to(&target.at(&host, port), timeout)
            }
        }
    }

    /// Connects to `target`'s own address (never through sentinels): a
    /// sentinel, or a data node.
    pub(super) fn connect_direct(
        target: &RedisTarget,
        timeout: Duration,
    ) -> Result<BlockingRedis, ConnectError> {
        Self::connect_to(target, timeout)
    }

    fn connect_to(target: &RedisTarget, timeout: Duration) -> Result<BlockingRedis, ConnectError> {
        let unreachable = |e: RedisError| ConnectError::Unreachable(target.display_addr(), e);
        // `set_read_timeout(Some(ZERO))` is an error; a zero timeout means
        // "as short as possible".
        let timeout = timeout.max(Duration::from_millis(1));
        let addrs = target.socket_addrs_blocking().map_err(|e| {
            tracing::debug!("redis: cannot resolve {}: {e}", target.display_addr());
            unreachable(RedisError::Unavailable)
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
            tracing::debug!(
                "redis: cannot connect to {}: {last_err}",
                target.display_addr()
            );
            return Err(unreachable(io_error(&last_err)));
        };
        let setup = stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .and_then(|()| stream.set_nodelay(true));
        if let Err(e) = setup {
            tracing::debug!(
                "redis: cannot configure the socket to {}: {e}",
                target.display_addr()
            );
            return Err(unreachable(RedisError::Unavailable));
        }
        let peer = target.display_addr();
        let stream = match target.tls() {
            None => Stream::Plain(stream),
            Some(tls) => {
                // The handshake itself runs on the first write, under the
                // socket's timeouts.
                let name = tls
                    .server_name(target.host())
                    .map_err(|e| ConnectError::Tls(peer.clone(), e))?;
                let session = rustls::ClientConnection::new(tls.client_config(), name)
                    .map_err(|e| ConnectError::Tls(peer.clone(), format!("TLS: {e}")))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(session, stream)))
            }
        };
        let mut conn = BlockingRedis {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::new(),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            broken: false,
            peer: peer.clone(),
            tls_failure: None,
        };
        let cmds = target.handshake_commands();
        let mut replies = match conn.roundtrip(&cmds) {
            Ok(r) => r,
            // A certificate that does not match, an unknown CA, a refused
            // client certificate: said as such.
            Err(e) => {
                return Err(match conn.tls_failure.take() {
                    Some(why) => ConnectError::Tls(peer, why),
                    None => unreachable(e),
                })
            }
        };
        let role = if target.checks_role() {
            replies.pop()
        } else {
            None
        };
        for r in replies {
            if let Reply::Error(msg) = r {
                // Redis error texts never echo the password.
                tracing::debug!("redis: {peer} refused AUTH/SELECT/PING: {msg}");
                return Err(unreachable(
                    check_server_error(Reply::Error(msg)).unwrap_err(),
                ));
            }
        }
        if let Some(role) = role {
            check_role(&role).map_err(|r| ConnectError::NotPrimary(peer, r))?;
        }
        Ok(conn)
    }

    /// With sentinels: whether they still name this connection's server as
    /// the primary (a sentinel that does not answer counts as yes: the
    /// connection's own errors tell an outage). Without: true. Blocking, up
    /// to `timeout` per sentinel asked.
    pub fn is_current_primary(&self, target: &RedisTarget, timeout: Duration) -> bool {
        let Some(sentinels) = target.sentinels() else {
            return true;
        };
        match sentinels.locate_blocking(timeout) {
            Ok((host, port)) => target.at(&host, port).display_addr() == self.peer,
            Err(_) => true,
        }
    }

    /// `host:port` of the server this connection talks to: with sentinels,
    /// the primary they named when it was made.
    pub fn peer(&self) -> &str {
        &self.peer
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
        match &result {
            Err(_) => self.broken = true,
            // A demoted primary (after a failover): reconnect, through the
            // sentinels, to the new one.
            Ok(replies) if replies.iter().any(is_readonly) => self.broken = true,
            Ok(_) => {}
        }
        result
    }

    fn exchange(&mut self, n: usize) -> Result<Vec<Reply>, RedisError> {
        let written = self
            .stream
            .write_all(&self.wbuf)
            .and_then(|()| self.stream.flush());
        if let Err(e) = written {
            return Err(self.io_failed(&e));
        }
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
                Err(e) => return Err(self.io_failed(&e)),
            }
        }
        Ok(replies)
    }

    /// The error an I/O failure is reported as; a TLS failure's reason is
    /// kept for `connect`.
    fn io_failed(&mut self, e: &io::Error) -> RedisError {
        if let Some(why) = tls_failure(e) {
            self.tls_failure = Some(why);
        }
        io_error(e)
    }
}

/// A write refused by a replica: `READONLY …`, directly or from a script.
pub(super) fn is_readonly(reply: &Reply) -> bool {
    match reply {
        Reply::Error(msg) => msg.contains("READONLY"),
        Reply::Array(items) => items.iter().any(is_readonly),
        _ => false,
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
