//! The background task of a [`RedisConn`](super::RedisConn): connects (with
//! `AUTH`/`SELECT`/`PING`), runs reader, writer and a stall watchdog until
//! one of them fails, fails every waiting caller, and reconnects with
//! exponential backoff, until the last handle is dropped.
//!
//! Only `monoio::net::TcpStream`, `monoio-rustls` over it, and generic
//! monoio I/O traits are used, so
//! this works under both the io_uring and the legacy (epoll) drivers. The
//! runtime must be built with `enable_timer()`.
//!
//! Owns: the socket and the reconnect policy. Never imports anything of the
//! crate outside `redis`.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Split,
    Splitable,
};
use monoio::net::TcpStream;
use monoio_rustls::{ClientTlsStream, TlsConnector, TlsError};

use super::blocking::is_readonly;
use super::conn::{bump, Shared, WRITE_BUF_INITIAL};
use super::error::ServerErrorCode;
use super::resp::{decode_reply, Reply};
use super::sentinel::{read_answer, LocateError};
use super::target::{check_role, RedisTarget, Role};
use super::tls::tls_failure;

/// A connection's socket: in clear, or in TLS (`rediss://`). The functions
/// that read and write are generic over the stream, so the clear one pays
/// nothing for the other.
enum Conn {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

impl Conn {
    /// [`exchange`] on whichever stream this is.
    async fn exchange(
        &mut self,
        rbuf: &mut BytesMut,
        cmds: &[redis::Cmd],
    ) -> Result<Vec<Reply>, Broken> {
        match self {
            Conn::Plain(s) => exchange(s, rbuf, cmds).await,
            Conn::Tls(s) => exchange(&mut **s, rbuf, cmds).await,
        }
    }
}

/// First delay before reconnecting after an error; doubled after each failed
/// attempt up to [`BACKOFF_MAX`], reset after a successful connect.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest delay between two connection attempts: bounds how long after Redis
/// comes back the core keeps answering 503.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The same with sentinels: asking them is cheap, and after a failover the
/// new primary should be found within this of its promotion (issue #14
/// asks for every node back within the failover time plus one second).
const BACKOFF_MAX_SENTINEL: Duration = Duration::from_millis(250);
/// Longest wait for one sentinel's answer (connect, handshake, question)
/// before the next one is asked. Sentinels answer from memory: on a LAN in
/// well under a millisecond.
const SENTINEL_ASK: Duration = Duration::from_millis(500);
/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 16 * 1024;
/// A write buffer that grew beyond this during a burst is given back to the
/// allocator after the burst, so one spike does not pin memory forever.
const WRITE_BUF_KEEP: usize = 1024 * 1024;

/// Why a connection ended (for logs).
pub(super) enum Broken {
    Io(io::Error),
    Eof,
    Protocol,
    UnexpectedReply,

    Stalled,
    Closed,
    Handshake(ServerErrorCode),
    ConnectTimeout,
    /// The sentinels named no primary.
    Locate(LocateError),
    /// The server is not (or no longer) a primary: `ROLE` at connect, or a
    /// write refused with `READONLY`.
    NotPrimary(Role),
    /// The sentinels name another primary now.
    Moved,
    /// TLS failed (the reason: a certificate that does not match, …).
    Tls(String),
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Io(e) => write!(f, "{e}"),
            Broken::Eof => f.write_str("connection closed by redis"),
            Broken::Protocol => f.write_str("malformed reply"),
            Broken::UnexpectedReply => f.write_str("reply nobody asked for"),
            Broken::Stalled => f.write_str("no reply for too long (redis stalled?)"),
            Broken::Closed => f.write_str("closed"),
            Broken::Handshake(code) => write!(f, "AUTH/SELECT/PING refused ({code})"),
            Broken::ConnectTimeout => f.write_str("connect timed out"),
            Broken::Locate(e) => write!(f, "{e}"),
            Broken::NotPrimary(role) => write!(f, "the server is {role}, not a primary"),
            Broken::Moved => f.write_str("the sentinels name another primary (failover)"),
            Broken::Tls(why) => f.write_str(why),
        }
    }
}

impl From<io::Error> for Broken {
    fn from(e: io::Error) -> Broken {
        Broken::Io(e)
    }
}

/// Connects, runs the connection until it breaks, fails the waiting callers,
/// backs off, and again, until the `RedisConn` is dropped.
pub(super) async fn supervise(shared: Rc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let mut ever_connected = false;
    let mut failure_logged = false;
    let backoff_max = if shared.target.sentinels().is_some() {
        BACKOFF_MAX_SENTINEL
    } else {
        BACKOFF_MAX
    };
    // With sentinels, each one asked has its own bound (SENTINEL_ASK) on
    // top of the connect to the primary.
    let budget = shared.connect_timeout()
        + SENTINEL_ASK * shared.target.sentinels().map_or(0, |s| s.len() as u32);
    while !shared.closed.get() {
        let attempt = monoio::time::timeout(budget, locate_and_establish(&shared.target)).await;
        match attempt.unwrap_or(Err(Broken::ConnectTimeout)) {
            Ok((stream, rbuf, peer)) => {
                if shared.closed.get() {
                    return;
                }
                if ever_connected {
                    bump(&shared.stats.reconnects, 1);
                    tracing::info!("redis: reconnected to {} at {peer}", shared.target);
                } else {
                    tracing::debug!("redis: connected to {} at {peer}", shared.target);
                }
                ever_connected = true;
                failure_logged = false;
                backoff = BACKOFF_MIN;
                shared.replies_seen.set(0);
                shared.connected.set(true);
                let why = run_connection(&shared, stream, rbuf, &peer).await;
                shared.connected.set(false);
                shared.fail_all();
                if shared.closed.get() {
                    return;
                }
                tracing::warn!(
                    "redis: connection to {} lost: {why}; reconnecting",
                    shared.target
                );
            }
            Err(why) => {
                bump(&shared.stats.connect_failures, 1);
                if failure_logged {
                    tracing::debug!("redis: cannot connect to {}: {why}", shared.target);
                } else {
                    tracing::warn!(
                        "redis: cannot connect to {}: {why}; retrying every {}ms at most",
                        shared.target,
                        backoff_max.as_millis()
                    );
                    failure_logged = true;
                }
            }
        }
        monoio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(backoff_max);
    }
}

/// With sentinels: asks them for the primary (the first that answers), then
/// connects to it. Without: connects to the target's address. Returns the
/// stream, any bytes read past the handshake, and `host:port` reached.
async fn locate_and_establish(target: &RedisTarget) -> Result<(Conn, BytesMut, String), Broken> {
    let Some(sentinels) = target.sentinels() else {
        let (stream, rbuf) = establish(target).await?;
        return Ok((stream, rbuf, target.display_addr()));
    };
    let mut unknown = false;
    let mut located = None;
    for (i, node) in sentinels.in_order() {
        // A sentinel that accepts connections but never answers must not
        // keep the next one from being asked.
        let asked = monoio::time::timeout(SENTINEL_ASK, ask_sentinel(node, sentinels.question()))
            .await
            .unwrap_or(Err(Broken::ConnectTimeout));
        match asked {
            Ok(Ok(addr)) => {
                sentinels.answered(i);
                located = Some(addr);
                break;
            }
            Ok(Err(LocateError::UnknownMaster)) => unknown = true,
            Ok(Err(e)) => tracing::debug!("redis: sentinel {}: {e}", node.display_addr()),
            Err(why) => tracing::debug!("redis: sentinel {}: {why}", node.display_addr()),
        }
    }
    let Some((host, port)) = located else {
        return Err(Broken::Locate(if unknown {
            LocateError::UnknownMaster
        } else {
            LocateError::NoSentinel
        }));
    };
    let primary = target.at(&host, port);
    let (stream, rbuf) = establish(&primary).await?;
    Ok((stream, rbuf, primary.display_addr()))
}

/// One sentinel's answer to `question`, on a connection of its own (closed
/// after). A sentinel that hangs is bounded by the caller's connect timeout.
async fn ask_sentinel(
    node: &RedisTarget,
    question: redis::Cmd,
) -> Result<Result<(String, u16), LocateError>, Broken> {
    let (mut stream, mut rbuf) = establish(node).await?;
    let mut replies = stream
        .exchange(&mut rbuf, std::slice::from_ref(&question))
        .await?;
    Ok(read_answer(&replies.pop().ok_or(Broken::Protocol)?))
}

/// TCP connect (trying each resolved address), TLS for `rediss://`, then
/// AUTH/SELECT/PING/ROLE. Returns the stream and any bytes read past the
/// handshake replies.
async fn establish(target: &RedisTarget) -> Result<(Conn, BytesMut), Broken> {
    let addrs = resolve(target).await?;
    let mut last_err = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_addr(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = e,
        }
    }
    let mut stream = stream.ok_or(Broken::Io(last_err))?;
    stream.set_nodelay(true)?;
    let Some(tls) = target.tls() else {
        let rbuf = handshake(&mut stream, target).await?;
        return Ok((Conn::Plain(stream), rbuf));
    };
    let name = tls.server_name(target.host()).map_err(Broken::Tls)?;
    let mut stream = TlsConnector::from(tls.client_config())
        .connect(name, stream)
        .await
        .map_err(|e| {
            Broken::Tls(match e {
                TlsError::Rustls(r) => format!("TLS: {r}"),
                TlsError::Io(io) => tls_failure(&io).unwrap_or_else(|| format!("TLS: {io}")),
            })
        })?;
    let rbuf = handshake(&mut stream, target).await?;
    Ok((Conn::Tls(Box::new(stream)), rbuf))
}

/// Resolves the target. IP literals need no lookup; host names are resolved
/// on a short-lived thread so the core never blocks in `getaddrinfo`.
async fn resolve(target: &RedisTarget) -> Result<Vec<SocketAddr>, Broken> {
    if let Some(addr) = target.literal_addr() {
        return Ok(vec![addr]);
    }
    let (tx, rx) = futures_channel::oneshot::channel();
    let t = target.clone();
    std::thread::Builder::new()
        .name("tokend-redis-dns".into())
        .spawn(move || {
            let _ = tx.send(t.socket_addrs_blocking());
        })?;
    match rx.await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Broken::Io(io::Error::other(
            "resolver thread ended without an answer",
        ))),
    }
}

async fn handshake<S>(stream: &mut S, target: &RedisTarget) -> Result<BytesMut, Broken>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let cmds = target.handshake_commands();
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut replies = exchange(stream, &mut rbuf, &cmds).await?;
    let role = if target.checks_role() {
        replies.pop()
    } else {
        None
    };
    for reply in &replies {
        if let Reply::Error(msg) = reply {
            // Redis error texts never echo the password.
            tracing::warn!("redis: {} refused: {msg}", target.display_addr());
            return Err(Broken::Handshake(ServerErrorCode::from_message(msg)));
        }
    }
    if let Some(role) = role {
        check_role(&role).map_err(Broken::NotPrimary)?;
    }
    Ok(rbuf)
}

/// Writes `cmds` in one write and reads their replies (in order); bytes read
/// past them stay in `rbuf`.
async fn exchange<S: AsyncReadRent + AsyncWriteRent>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    cmds: &[redis::Cmd],
) -> Result<Vec<Reply>, Broken> {
    let mut out = Vec::new();
    for cmd in cmds {
        cmd.write_packed_command(&mut out);
    }
    let (res, _) = stream.write_all(out).await;
    res?;
    let mut chunk = Vec::with_capacity(READ_CHUNK);
    let mut replies = Vec::with_capacity(cmds.len());
    loop {
        while replies.len() < cmds.len() {
            match decode_reply(rbuf) {
                Ok(Some(reply)) => replies.push(reply),
                Ok(None) => break,
                Err(_) => return Err(Broken::Protocol),
            }
        }
        if replies.len() == cmds.len() {
            return Ok(replies);
        }
        let (res, buf) = stream.read(chunk).await;
        chunk = buf;
        match res? {
            0 => return Err(Broken::Eof),
            n => rbuf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Runs reader, writer, stall watchdog and (with sentinels) the primary
/// watch until the first one stops.
async fn run_connection(shared: &Shared, stream: Conn, rbuf: BytesMut, peer: &str) -> Broken {
    match stream {
        Conn::Plain(s) => run_on(shared, s, rbuf, peer).await,
        Conn::Tls(s) => run_on(shared, *s, rbuf, peer).await,
    }
}

async fn run_on<S>(shared: &Shared, stream: S, rbuf: BytesMut, peer: &str) -> Broken
where
    S: Split + AsyncReadRent + AsyncWriteRent,
{
    let (reader, writer) = stream.into_split();
    monoio::select! {
        why = read_loop(shared, reader, rbuf) => why,
        why = write_loop(shared, writer) => why,
        why = stall_watch(shared) => why,
        why = primary_watch(&shared.target, peer) => why,
    }
}

/// How often a connection made through sentinels asks them whether its
/// server is still the primary.
const PRIMARY_WATCH: Duration = Duration::from_millis(500);

/// With sentinels: asks them, on one connection kept open, every
/// [`PRIMARY_WATCH`], and ends the connection when they name another
/// primary. Without this a failover that leaves the old primary running
/// (`SENTINEL FAILOVER`, a partition that heals) keeps the connection on
/// it, taking writes the new primary never sees, until Sentinel demotes it
/// (measured here: 10 s, the period of Sentinel's `INFO` to it). A sentinel
/// that does not answer is not a reason to leave: the next one is asked at
/// the next tick. Without sentinels it never ends.
async fn primary_watch(target: &RedisTarget, peer: &str) -> Broken {
    let Some(sentinels) = target.sentinels() else {
        return std::future::pending().await;
    };
    let mut asking: Option<(Conn, BytesMut)> = None;
    let mut order = sentinels
        .in_order()
        .map(|(i, _)| i)
        .collect::<Vec<_>>()
        .into_iter()
        .cycle();
    loop {
        monoio::time::sleep(PRIMARY_WATCH).await;
        let question = sentinels.question();
        let asked = async {
            if asking.is_none() {
                let i = order.next().unwrap_or(0);
                let node = sentinels.node(i);
                asking = Some(establish(node).await?);
            }
            let (stream, rbuf) = asking.as_mut().expect("connected above");
            let mut replies = stream
                .exchange(rbuf, std::slice::from_ref(&question))
                .await?;
            Ok::<_, Broken>(read_answer(&replies.pop().ok_or(Broken::Protocol)?))
        };
        match monoio::time::timeout(PRIMARY_WATCH, asked).await {
            Ok(Ok(Ok((host, port)))) => {
                if target.at(&host, port).display_addr() != peer {
                    return Broken::Moved;
                }
            }
            // The name is unknown to this sentinel, or it answered nothing
            // usable: ask another next time.
            Ok(Ok(Err(_))) | Ok(Err(_)) | Err(_) => asking = None,
        }
    }
}

async fn read_loop<S: AsyncReadRent>(
    shared: &Shared,
    mut reader: OwnedReadHalf<S>,
    mut rbuf: BytesMut,
) -> Broken {
    let mut chunk = Vec::with_capacity(READ_CHUNK);
    loop {
        loop {
            match decode_reply(&mut rbuf) {
                Ok(Some(reply)) => {
                    // A write refused by a demoted primary: the caller gets
                    // the error (503), and the connection is made again,
                    // through the sentinels, to the new primary.
                    let demoted = matches!(&reply, Reply::Error(_)) && is_readonly(&reply);
                    if let Err(why) = shared.deliver(reply) {
                        return why;
                    }
                    if demoted {
                        return Broken::NotPrimary(Role::Replica);
                    }
                }
                Ok(None) => break,
                Err(_) => return Broken::Protocol,
            }
        }
        let (res, buf) = reader.read(chunk).await;
        chunk = buf;
        match res {
            Ok(0) => return Broken::Eof,
            Ok(n) => rbuf.extend_from_slice(&chunk[..n]),
            Err(e) => return Broken::Io(e),
        }
    }
}

async fn write_loop<S: AsyncWriteRent>(shared: &Shared, mut writer: OwnedWriteHalf<S>) -> Broken {
    // Double buffering: callers fill `State::wbuf` while this one is written.
    let mut out = Vec::with_capacity(WRITE_BUF_INITIAL);
    loop {
        if !poll_fn(|cx| shared.poll_work(cx)).await {
            return Broken::Closed;
        }
        std::mem::swap(&mut shared.state.borrow_mut().wbuf, &mut out);
        bump(&shared.stats.round_trips, 1);
        let (res, buf) = writer.write_all(out).await;
        out = buf;
        if let Err(e) = res {
            return Broken::Io(e);
        }
        out.clear();
        if out.capacity() > WRITE_BUF_KEEP {
            out = Vec::with_capacity(WRITE_BUF_INITIAL);
        }
    }
}

/// Ends a connection on which commands wait but no reply came for a whole
/// period: a hung Redis or a silently dead peer (no RST) would otherwise make
/// every request wait out its timeout instead of failing fast while we
/// reconnect.
async fn stall_watch(shared: &Shared) -> Broken {
    let period = (shared.timeout * 2).max(Duration::from_secs(1));
    let mut previous: Option<u64> = None;
    loop {
        monoio::time::sleep(period).await;
        let seen = shared.replies_seen.get();
        let waiting = shared.state.borrow().in_flight > 0;
        if waiting && previous == Some(seen) {
            return Broken::Stalled;
        }
        previous = waiting.then_some(seen);
    }
}
