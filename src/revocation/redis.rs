//! The per-core pipelined Redis connection.
//!
//! Each worker core owns one [`RedisConn`] (shared on the core through `Rc`,
//! never across threads). Every request on the core that needs Redis calls
//! [`RedisConn::query`] (or one of its siblings); the path of a command is:
//!
//! 1. `enqueue`: the command is encoded straight into the connection's shared
//!    write buffer and a waiting *slot* is pushed onto a FIFO. Nothing is
//!    written yet, and nothing is allocated in the steady state.
//! 2. the writer task wakes up and writes everything queued since its last
//!    write in one `write_all` (one batch = one "round trip"), swapping the
//!    write buffer with a spare one so callers keep queueing meanwhile.
//! 3. the reader task decodes each complete reply (a small RESP2 decoder,
//!    see "Decoding" below; "need more bytes" is `Ok(None)`) and hands it to the slot at the front
//!    of the FIFO — Redis answers in order, so FIFO order is the matching.
//! 4. the caller's future sees its slot filled and returns.
//!
//! A caller that gives up (timeout, or its request was dropped) marks its
//! slot *abandoned*; its reply is still consumed in order and thrown away, so
//! it can never be handed to the next caller.
//!
//! A supervisor task connects (with `AUTH`/`SELECT`), runs reader, writer and
//! a stall watchdog until one of them fails, fails every waiting caller, and
//! reconnects with exponential backoff. While disconnected, queries fail at
//! once with [`RedisError::Unavailable`]: validation fails closed and fast.
//!
//! Only `monoio::net::TcpStream` and generic monoio I/O traits are used, so
//! this works under both the io_uring and the legacy (epoll) drivers. The
//! runtime must be built with `enable_timer()`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use redis::ToRedisArgs;

use crate::metrics::RedisStats;

/// First delay before reconnecting after an error; doubled after each failed
/// attempt up to [`BACKOFF_MAX`], reset after a successful connect.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest delay between two connection attempts: bounds how long after Redis
/// comes back the core keeps answering 503.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Shortest time allowed for TCP connect + AUTH + SELECT (the query timeout is
/// usually ~100 ms, too short for a connection set-up across a network).
const CONNECT_TIMEOUT_MIN: Duration = Duration::from_secs(1);
/// Commands queued or awaiting a reply on one core. Bounds the memory a
/// stalled Redis can make us hold (abandoned slots stay queued until their
/// reply arrives); beyond it queries fail with `Unavailable`.
const MAX_IN_FLIGHT: usize = 65_536;
/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 16 * 1024;
/// A write buffer that grew beyond this during a burst is given back to the
/// allocator after the burst, so one spike does not pin memory forever.
const WRITE_BUF_KEEP: usize = 1024 * 1024;
/// Initial capacity of the write buffers.
const WRITE_BUF_INITIAL: usize = 4 * 1024;
/// Deepest nesting of arrays accepted in a reply (a Lua table of tables,
/// `EXEC`); deeper is a protocol error rather than unbounded recursion.
const MAX_REPLY_DEPTH: usize = 32;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a Redis command did not produce a usable reply.
///
/// `Copy` and allocation-free, so the hot path can pass it around freely. Its
/// text is for logs only: HTTP clients see `503 temporarily_unavailable` or
/// `500 server_error`, never this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// Occurs when there is no connection to Redis (not yet connected,
    /// reconnecting after an error, Redis down), when the connection broke
    /// while the command waited for its reply, or when more than
    /// `MAX_IN_FLIGHT` commands are already waiting on this core.
    #[error("redis is unavailable (not connected); requests fail closed until it is back")]
    Unavailable,
    /// Occurs when Redis does not answer within the configured
    /// `redis.timeout`.
    #[error("redis did not answer within the timeout (see redis.timeout)")]
    Timeout,
    /// Occurs when Redis sends bytes that are not valid RESP2, a reply of an
    /// unexpected shape (e.g. `MGET` not answering an array), or when a
    /// command could not be encoded (empty command, wrong argument count).
    #[error("redis protocol error: malformed or unexpected reply")]
    Protocol,
    /// Occurs when Redis answers with an error reply (`WRONGTYPE`, `OOM`,
    /// `NOSCRIPT`, a Lua error, …). The error's first word is kept; the full
    /// text is logged where it is received.
    #[error("redis answered with an error reply ({0})")]
    Server(ServerErrorCode),
    /// Occurs when a `redis://` URL cannot be parsed; the text names the part.
    #[error("invalid redis url: {0} (expected redis://[[user]:password@]host[:port][/db])")]
    InvalidUrl(&'static str),
}

/// The first word of a Redis error reply (`ERR`, `WRONGTYPE`, `NOSCRIPT`, …),
/// stored inline so that [`RedisError`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerErrorCode {
    len: u8,
    bytes: [u8; 15],
}

impl ServerErrorCode {
    /// Takes the leading code word of an error message (at most 15 ASCII
    /// letters, digits or `_`).
    pub fn from_message(msg: &str) -> ServerErrorCode {
        let mut code = ServerErrorCode {
            len: 0,
            bytes: [0; 15],
        };
        for &b in msg.as_bytes() {
            if !(b.is_ascii_alphanumeric() || b == b'_')
                || usize::from(code.len) == code.bytes.len()
            {
                break;
            }
            code.bytes[usize::from(code.len)] = b;
            code.len += 1;
        }
        code
    }

    /// The code as text; `"ERR"` if the message had no code word.
    pub fn as_str(&self) -> &str {
        match std::str::from_utf8(&self.bytes[..usize::from(self.len)]) {
            Ok(s) if !s.is_empty() => s,
            _ => "ERR",
        }
    }
}

impl fmt::Display for ServerErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ServerErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerErrorCode({})", self.as_str())
    }
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

/// One decoded RESP2 reply, owned (bulk strings share the read buffer's
/// allocation through [`Bytes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A null bulk string or null array (e.g. `GET` of a missing key).
    Nil,
    /// An integer reply (`INCR`, `DEL`, `EXISTS`, a Lua number, …).
    Int(i64),
    /// A bulk string.
    Bulk(Bytes),
    /// A simple string (`OK`, `PONG`).
    Simple(String),
    /// An error reply. [`RedisConn::query`] turns it into
    /// [`RedisError::Server`]; it only appears inside arrays (e.g. a Lua
    /// script returning a table holding an error).
    Error(String),
    /// An array of replies (`MGET`, `EXEC`, a Lua table).
    Array(Vec<Reply>),
}

impl Reply {
    /// True for [`Reply::Nil`].
    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Nil)
    }

    /// True for the simple string `OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Simple(s) if s == "OK")
    }

    /// The integer: an [`Reply::Int`], or a bulk/simple string holding a
    /// decimal integer (`GET` of a counter).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bulk(_) | Reply::Simple(_) => self.as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// The bytes of a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(b) => Some(b),
            Reply::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The text of a bulk or simple string, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// The elements of an array reply.
    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an array reply, by value.
    pub fn into_array(self) -> Option<Vec<Reply>> {
        match self {
            Reply::Array(v) => Some(v),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------
//
// A small RESP2 decoder of our own, in two passes: `frame_end` checks that a
// whole, well-formed reply is buffered (the cheap check before the parse, as
// in mini-redis's `Frame::check`; "incomplete" is `Ok(None)`), then `build`
// turns exactly those bytes into a `Reply`, bulk strings sharing the read
// buffer's allocation. It replaced `redis-protocol` (issue #4): callgrind on
// /validate (one core, wrk -c64) showed its decode, the intermediate
// `BytesFrame` and the conversion into `Reply` at ~2,100 instructions and two
// allocations per `MGET` reply, 13% of tokend's userland path; this costs a
// few hundred and one allocation (the array's `Vec`).

/// Decodes the next complete reply from the front of `buf`, removing its
/// bytes; `Ok(None)` when more bytes are needed. Shared with the blocking
/// client.
pub(crate) fn decode_reply(buf: &mut BytesMut) -> Result<Option<Reply>, RedisError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let end = match frame_end(buf, 0, 0) {
        Ok(Some(end)) => end,
        Ok(None) => return Ok(None),
        Err(e) => return Err(undecodable(e, buf)),
    };
    let frame = buf.split_to(end).freeze();
    match build(&frame, 0) {
        Ok((reply, _)) => Ok(Some(reply)),
        Err(e) => Err(undecodable(e, &frame)),
    }
}

#[cold]
fn undecodable(e: RedisError, buf: &[u8]) -> RedisError {
    let head = &buf[..buf.len().min(32)];
    tracing::warn!(
        "redis: undecodable reply starting with {:?}",
        String::from_utf8_lossy(head)
    );
    e
}

/// The line after the type byte at `at`: where it ends (its `\r`) and where
/// the next item starts (after `\r\n`); `Ok(None)` when not all buffered.
#[inline]
fn line_at(buf: &[u8], at: usize) -> Result<Option<(usize, usize)>, RedisError> {
    let start = at + 1;
    let Some(rel) = buf
        .get(start..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\r'))
    else {
        return Ok(None);
    };
    let cr = start + rel;
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((cr, cr + 2))),
        Some(_) => Err(RedisError::Protocol),
    }
}

/// A RESP2 integer: optional `-`, then 1 to 19 decimal digits.
fn parse_int(line: &[u8]) -> Result<i64, RedisError> {
    let (negative, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(RedisError::Protocol);
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RedisError::Protocol);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or(RedisError::Protocol)?;
    }
    Ok(if negative { -n } else { n })
}

/// A bulk-string or array length: `None` for `-1` (null), an error for any
/// other negative number.
fn parse_len(line: &[u8]) -> Result<Option<usize>, RedisError> {
    match parse_int(line)? {
        -1 => Ok(None),
        n => usize::try_from(n)
            .map(Some)
            .map_err(|_| RedisError::Protocol),
    }
}

/// Where the reply starting at `at` ends, checking it; `Ok(None)` when it is
/// not all buffered yet.
fn frame_end(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, RedisError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((cr, next)) = line_at(buf, at)? else {
        return Ok(None);
    };
    let line = &buf[at + 1..cr];
    match kind {
        b'+' | b'-' => Ok(Some(next)),
        b':' => parse_int(line).map(|_| Some(next)),
        b'$' => {
            let Some(len) = parse_len(line)? else {
                return Ok(Some(next));
            };
            let end = next
                .checked_add(len)
                .and_then(|e| e.checked_add(2))
                .ok_or(RedisError::Protocol)?;
            match buf.get(end - 2..end) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some(end)),
                Some(_) => Err(RedisError::Protocol),
            }
        }
        b'*' => {
            let Some(n) = parse_len(line)? else {
                return Ok(Some(next));
            };
            if depth >= MAX_REPLY_DEPTH {
                return Err(RedisError::Protocol);
            }
            let mut at = next;
            for _ in 0..n {
                match frame_end(buf, at, depth + 1)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        _ => Err(RedisError::Protocol),
    }
}

/// The reply starting at `at` of `frame`, which `frame_end` has checked, and
/// where it ends.
fn build(frame: &Bytes, at: usize) -> Result<(Reply, usize), RedisError> {
    let kind = *frame.get(at).ok_or(RedisError::Protocol)?;
    let (cr, next) = line_at(frame, at)?.ok_or(RedisError::Protocol)?;
    let line = &frame[at + 1..cr];
    Ok(match kind {
        b'+' => (
            Reply::Simple(String::from_utf8_lossy(line).into_owned()),
            next,
        ),
        b'-' => (
            Reply::Error(String::from_utf8_lossy(line).into_owned()),
            next,
        ),
        b':' => (Reply::Int(parse_int(line)?), next),
        b'$' => match parse_len(line)? {
            None => (Reply::Nil, next),
            Some(len) => {
                let end = next + len;
                if frame.len() < end + 2 {
                    return Err(RedisError::Protocol);
                }
                (Reply::Bulk(frame.slice(next..end)), end + 2)
            }
        },
        b'*' => match parse_len(line)? {
            None => (Reply::Nil, next),
            Some(n) => {
                // `n` is bounded by the checked frame: each element takes at
                // least three bytes of it.
                let mut items = Vec::with_capacity(n);
                let mut at = next;
                for _ in 0..n {
                    let (item, end) = build(frame, at)?;
                    items.push(item);
                    at = end;
                }
                (Reply::Array(items), at)
            }
        },
        _ => return Err(RedisError::Protocol),
    })
}

/// Turns an error reply into [`RedisError::Server`], logging its full text
/// (never shown to HTTP clients).
pub(crate) fn check_server_error(reply: Reply) -> Result<Reply, RedisError> {
    match reply {
        Reply::Error(msg) => Err(server_error(&msg)),
        other => Ok(other),
    }
}

#[cold]
fn server_error(msg: &str) -> RedisError {
    tracing::warn!("redis: error reply: {msg}");
    RedisError::Server(ServerErrorCode::from_message(msg))
}

// ---------------------------------------------------------------------------
// Target (URL)
// ---------------------------------------------------------------------------

/// Where Redis is: parsed from `redis://[[user]:password@]host[:port][/db]`.
///
/// `AUTH` (when a password is given) and `SELECT` (when `db` is not 0) are
/// sent after every (re)connect. `Debug` and `Display` never show the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    host: String,
    /// `host` parsed as an IP address, so that connecting needs no DNS.
    ip: Option<IpAddr>,
    port: u16,
    db: u32,
    username: Option<String>,
    password: Option<String>,
}

impl RedisTarget {
    /// Parses a `redis://` URL. Username and password may be
    /// percent-encoded; the port defaults to 6379 and the database to 0.
    pub fn parse(url: &str) -> Result<RedisTarget, RedisError> {
        let rest = match url.split_once("://") {
            Some(("redis", rest)) => rest,
            Some(("rediss", _)) => {
                return Err(RedisError::InvalidUrl("TLS (rediss://) is not supported"))
            }
            _ => return Err(RedisError::InvalidUrl("the scheme must be redis://")),
        };
        let (userinfo, hostpath) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (hostport, path) = match hostpath.find('/') {
            Some(i) => (&hostpath[..i], &hostpath[i + 1..]),
            None => (hostpath, ""),
        };
        if path.contains('?') || path.contains('#') {
            return Err(RedisError::InvalidUrl("query parameters are not supported"));
        }
        let db = if path.is_empty() {
            0
        } else {
            path.parse::<u32>()
                .map_err(|_| RedisError::InvalidUrl("the database must be a number"))?
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = info.split_once(':').ok_or(RedisError::InvalidUrl(
                    "a password must follow ':' (redis://:password@host)",
                ))?;
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .map(|c| c.into_owned())
                        .map_err(|_| RedisError::InvalidUrl("the user or password is not UTF-8"))
                };
                let user = if user.is_empty() {
                    None
                } else {
                    Some(decode(user)?)
                };
                (user, Some(decode(pass)?))
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or(RedisError::InvalidUrl("unclosed '[' in the host"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or(RedisError::InvalidUrl("bad port"))?,
                ),
            };
            (host, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(RedisError::InvalidUrl("the host is missing"));
        }
        let port = match port {
            None => 6379,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or(RedisError::InvalidUrl("the port must be a number 1-65535"))?,
        };
        Ok(RedisTarget {
            host: host.to_owned(),
            ip: host.parse().ok(),
            port,
            db,
            username,
            password,
        })
    }

    /// The host name or IP address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The logical database selected after connecting.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// `host:port` (IPv6 in brackets), for logs and error messages.
    pub fn display_addr(&self) -> String {
        match self.ip {
            Some(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// Resolves the address; blocking (DNS) unless the host is an IP literal.
    pub(crate) fn socket_addrs_blocking(&self) -> io::Result<Vec<SocketAddr>> {
        if let Some(ip) = self.ip {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }

    /// The commands sent after every (re)connect, before anything else. The
    /// final `PING` makes "connected" mean "Redis answers": a frozen Redis
    /// whose kernel still accepts TCP connections is not taken for up.
    pub(crate) fn handshake_commands(&self) -> Vec<redis::Cmd> {
        let mut cmds = Vec::with_capacity(3);
        if let Some(password) = &self.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &self.username {
                auth.arg(user.as_str());
            }
            auth.arg(password.as_str());
            cmds.push(auth);
        }
        if self.db != 0 {
            let mut select = redis::cmd("SELECT");
            select.arg(self.db);
            cmds.push(select);
        }
        cmds.push(redis::cmd("PING"));
        cmds
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis://{}/{}", self.display_addr(), self.db)
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Encoding without allocation
// ---------------------------------------------------------------------------

/// Writes RESP2 commands straight into the connection's shared write buffer,
/// so hot-path callers build keys like `{prefix}rev:at:{jti}` without
/// `format!` or a `redis::Cmd`.
///
/// Each [`command`](Self::command) declares its argument count, and exactly
/// that many `arg*` calls must follow; the connection checks the counts and
/// rejects a mis-built command with [`RedisError::Protocol`] before anything
/// is sent (a wrong count would desynchronise reply matching).
pub struct CommandWriter<'a> {
    buf: &'a mut Vec<u8>,
    commands: usize,
    args_left: usize,
    valid: bool,
}

impl<'a> CommandWriter<'a> {
    fn new(buf: &'a mut Vec<u8>) -> CommandWriter<'a> {
        CommandWriter {
            buf,
            commands: 0,
            args_left: 0,
            valid: true,
        }
    }

    /// Starts a command of `nargs` arguments (the command name counts).
    pub fn command(&mut self, nargs: usize) -> &mut Self {
        if self.args_left != 0 || nargs == 0 {
            self.valid = false;
        }
        self.commands += 1;
        self.args_left = nargs;
        self.buf.push(b'*');
        push_decimal(self.buf, nargs as u64);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Appends one argument.
    pub fn arg(&mut self, arg: &[u8]) -> &mut Self {
        self.arg_parts(&[arg])
    }

    /// Appends one argument made of the concatenation of `parts`
    /// (e.g. `[prefix, b"rev:at:", jti]`).
    pub fn arg_parts(&mut self, parts: &[&[u8]]) -> &mut Self {
        if self.args_left == 0 {
            self.valid = false;
        } else {
            self.args_left -= 1;
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.buf.push(b'$');
        push_decimal(self.buf, len as u64);
        self.buf.extend_from_slice(b"\r\n");
        for part in parts {
            self.buf.extend_from_slice(part);
        }
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Appends one argument: `n` in decimal.
    pub fn arg_u64(&mut self, n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let at = format_decimal(n, &mut digits);
        self.arg_parts(&[&digits[at..]])
    }

    /// True when exactly `commands` complete commands were written.
    fn is_complete(&self, commands: usize) -> bool {
        self.valid && self.args_left == 0 && self.commands == commands
    }
}

/// Writes `n` in decimal into the tail of `out`, returning where it starts.
fn format_decimal(mut n: u64, out: &mut [u8; 20]) -> usize {
    let mut at = out.len();
    loop {
        at -= 1;
        out[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return at;
        }
    }
}

fn push_decimal(buf: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let at = format_decimal(n, &mut digits);
    buf.extend_from_slice(&digits[at..]);
}

fn is_empty_cmd(cmd: &redis::Cmd) -> bool {
    // An empty `Cmd` would encode as `*0\r\n`, which Redis answers with
    // nothing at all: the FIFO would hand the next reply to the wrong caller.
    cmd.args_iter().len() == 0
}

// ---------------------------------------------------------------------------
// Lua scripts
// ---------------------------------------------------------------------------

/// A Lua script with its SHA1, run by [`RedisConn::eval`] with `EVALSHA`
/// (falling back to `EVAL` once when Redis answers `NOSCRIPT`).
///
/// Build it once (e.g. in a per-core or static struct), not per request.
#[derive(Debug, Clone)]
pub struct Script {
    source: String,
    sha: String,
}

impl Script {
    /// Wraps `source` and computes its SHA1 (hex), the name Redis gives it.
    pub fn new(source: &str) -> Script {
        Script {
            source: source.to_owned(),
            sha: redis::Script::new(source).get_hash().to_owned(),
        }
    }

    /// The SHA1 of the source, lowercase hex.
    pub fn sha(&self) -> &str {
        &self.sha
    }

    /// The Lua source.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn command<K: ToRedisArgs, A: ToRedisArgs>(
        &self,
        by_sha: bool,
        keys: &[K],
        args: &[A],
    ) -> redis::Cmd {
        let mut cmd = if by_sha {
            let mut c = redis::cmd("EVALSHA");
            c.arg(self.sha.as_str());
            c
        } else {
            let mut c = redis::cmd("EVAL");
            c.arg(self.source.as_str());
            c
        };
        cmd.arg(keys.len());
        for k in keys {
            k.write_redis_args(&mut cmd);
        }
        for a in args {
            a.write_redis_args(&mut cmd);
        }
        cmd
    }
}

// ---------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------

#[derive(Default)]
struct StatCells {
    round_trips: Cell<u64>,
    commands: Cell<u64>,
    errors: Cell<u64>,
    reconnects: Cell<u64>,
    connect_failures: Cell<u64>,
    timeouts: Cell<u64>,
}

fn bump(c: &Cell<u64>, by: u64) {
    c.set(c.get().wrapping_add(by));
}

/// Where one caller's reply lands.
enum Slot {
    Free,
    /// The caller waits. `acc` collects the replies of a multi-command query.
    Waiting {
        waker: Option<Waker>,
        acc: Vec<Reply>,
    },
    /// The reply (or failure) is ready for the caller to take.
    Done(Result<Reply, RedisError>),
    /// The caller gave up; its remaining replies are read and dropped.
    Abandoned,
}

/// One caller's commands in the FIFO, in the order they were written.
struct Entry {
    slot: u32,
    /// Replies still expected for this entry.
    remaining: u32,
    /// Whether the replies are gathered into a [`Reply::Array`].
    multi: bool,
}

/// Mutable per-core state; borrowed only briefly and never across an await.
struct State {
    /// Commands queued since the writer last took the buffer.
    wbuf: Vec<u8>,
    /// Callers waiting for replies, in the order their commands were queued.
    fifo: VecDeque<Entry>,
    /// Commands queued or awaiting a reply (bounded by `MAX_IN_FLIGHT`).
    in_flight: usize,
    /// Reply slots, reused through `free` so a query allocates nothing.
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// The writer task, parked until `wbuf` is not empty.
    writer: Option<Waker>,
}

impl State {
    fn alloc_slot(&mut self, acc: Vec<Reply>) -> Option<u32> {
        let slot = Slot::Waiting { waker: None, acc };
        if let Some(i) = self.free.pop() {
            self.slots[i as usize] = slot;
            return Some(i);
        }
        let i = u32::try_from(self.slots.len()).ok()?;
        self.slots.push(slot);
        Some(i)
    }

    fn release_slot(&mut self, i: u32) {
        if let Some(s) = self.slots.get_mut(i as usize) {
            *s = Slot::Free;
            self.free.push(i);
        }
    }
}

struct Shared {
    target: RedisTarget,
    timeout: Duration,
    connected: Cell<bool>,
    /// Set when the last `RedisConn` handle is dropped: the tasks stop.
    closed: Cell<bool>,
    /// Replies decoded on the current connection, for the stall watchdog.
    replies_seen: Cell<u64>,
    stats: StatCells,
    state: RefCell<State>,
}

/// Why a connection ended (for logs).
enum Broken {
    Io(io::Error),
    Eof,
    Protocol,
    UnexpectedReply,
    Stalled,
    Closed,
    Handshake(ServerErrorCode),
    ConnectTimeout,
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
        }
    }
}

impl From<io::Error> for Broken {
    fn from(e: io::Error) -> Broken {
        Broken::Io(e)
    }
}

/// One core's pipelined Redis connection. Create with [`RedisConn::new`]
/// inside the core's runtime; share with `Rc`. Dropping the last handle stops
/// its background task.
///
/// Only for quick commands: a blocking command (`BLPOP`, `WAIT`, a slow Lua
/// script) would hold up every request of the core queued behind it, and
/// after a second or two without any reply the connection is considered
/// stalled and reconnected. `SUBSCRIBE`/`MONITOR` break reply matching and
/// must never be sent here.
pub struct RedisConn {
    shared: Rc<Shared>,
}

impl RedisConn {
    /// Creates the connection and spawns its background task on the current
    /// monoio runtime (which must have timers enabled). Returns at once: the
    /// first connect happens in the background, and queries fail with
    /// `Unavailable` until it succeeds (see [`wait_connected`](Self::wait_connected)).
    pub fn new(target: RedisTarget, timeout: Duration) -> Rc<RedisConn> {
        let shared = Rc::new(Shared {
            target,
            timeout,
            connected: Cell::new(false),
            closed: Cell::new(false),
            replies_seen: Cell::new(0),
            stats: StatCells::default(),
            state: RefCell::new(State {
                wbuf: Vec::with_capacity(WRITE_BUF_INITIAL),
                fifo: VecDeque::new(),
                in_flight: 0,
                slots: Vec::new(),
                free: Vec::new(),
                writer: None,
            }),
        });
        monoio::spawn(supervise(Rc::clone(&shared)));
        Rc::new(RedisConn { shared })
    }

    /// Whether the connection is up (queries are being sent).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.get()
    }

    /// Waits until connected, at most `max`; true when connected. For start-up
    /// and tests; request handlers should not wait.
    pub async fn wait_connected(&self, max: Duration) -> bool {
        let deadline = std::time::Instant::now() + max;
        while !self.is_connected() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// The counters of this connection.
    pub fn stats(&self) -> RedisStats {
        let s = &self.shared.stats;
        RedisStats {
            round_trips: s.round_trips.get(),
            commands: s.commands.get(),
            errors: s.errors.get(),
            reconnects: s.reconnects.get(),
            connect_failures: s.connect_failures.get(),
            timeouts: s.timeouts.get(),
        }
    }

    /// The target this connection talks to.
    pub fn target(&self) -> &RedisTarget {
        &self.shared.target
    }

    /// Sends `PING`; `Ok` when Redis answers `PONG` in time.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let reply = self
            .query_with(|w| {
                w.command(1).arg(b"PING");
            })
            .await?;
        match reply {
            Reply::Simple(s) if s == "PONG" => Ok(()),
            _ => self.fail(RedisError::Protocol),
        }
    }

    /// Sends one command and returns its reply. An error reply becomes
    /// [`RedisError::Server`].
    pub async fn query(&self, cmd: &redis::Cmd) -> Result<Reply, RedisError> {
        let r = self.query_raw(cmd).await.and_then(check_server_error);
        self.count(r)
    }

    /// Sends several commands in one round trip and returns their replies in
    /// order. If any reply is an error, the whole call fails with
    /// [`RedisError::Server`] (the commands were still all executed).
    pub async fn query_many(&self, cmds: &[redis::Cmd]) -> Result<Vec<Reply>, RedisError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        if cmds.iter().any(is_empty_cmd) {
            return self.fail(RedisError::Protocol);
        }
        let r = self
            .run(cmds.len(), true, |buf| {
                for cmd in cmds {
                    cmd.write_packed_command(buf);
                }
                true
            })
            .await
            .and_then(|reply| reply.into_array().ok_or(RedisError::Protocol))
            .and_then(|replies| {
                match replies.iter().find_map(|r| match r {
                    Reply::Error(msg) => Some(server_error(msg)),
                    _ => None,
                }) {
                    Some(e) => Err(e),
                    None => Ok(replies),
                }
            });
        self.count(r)
    }

    /// Sends one command written by `encode` directly into the shared write
    /// buffer (no `redis::Cmd`, no allocation); see [`CommandWriter`].
    /// `encode` must write exactly one command. An error reply becomes
    /// [`RedisError::Server`].
    pub async fn query_with<F>(&self, encode: F) -> Result<Reply, RedisError>
    where
        F: FnOnce(&mut CommandWriter<'_>),
    {
        let r = self
            .run(1, false, |buf| {
                let mut w = CommandWriter::new(buf);
                encode(&mut w);
                w.is_complete(1)
            })
            .await
            .and_then(check_server_error);
        self.count(r)
    }

    /// Runs a Lua script: `EVALSHA`, and `EVAL` once if Redis answers
    /// `NOSCRIPT` (script cache flushed, Redis restarted or failed over).
    /// An error reply (including a Lua error) becomes [`RedisError::Server`].
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
        let first = self.query_raw(&script.command(true, keys, args)).await;
        let r = match first {
            Ok(Reply::Error(msg)) if msg.starts_with("NOSCRIPT") => {
                tracing::debug!("redis: script {} not cached, sending EVAL", script.sha());
                self.query_raw(&script.command(false, keys, args)).await
            }
            other => other,
        }
        .and_then(check_server_error);
        self.count(r)
    }

    /// One command, error replies returned as `Ok(Reply::Error)`.
    async fn query_raw(&self, cmd: &redis::Cmd) -> Result<Reply, RedisError> {
        if is_empty_cmd(cmd) {
            return Err(RedisError::Protocol);
        }
        self.run(1, false, |buf| {
            cmd.write_packed_command(buf);
            true
        })
        .await
    }

    /// Queues `n` commands written by `encode` (which returns false if it
    /// wrote something invalid) and waits for their replies, at most
    /// `timeout`.
    async fn run<F>(&self, n: usize, multi: bool, encode: F) -> Result<Reply, RedisError>
    where
        F: FnOnce(&mut Vec<u8>) -> bool,
    {
        let slot = self.shared.enqueue(n, multi, encode)?;
        // Created right after enqueueing with no await in between, so that if
        // this future is dropped the slot is always marked abandoned.
        let wait = ReplyWait {
            shared: &self.shared,
            slot,
            finished: false,
        };
        match monoio::time::timeout(self.shared.timeout, wait).await {
            Ok(r) => r,
            Err(_) => {
                bump(&self.shared.stats.timeouts, 1);
                Err(RedisError::Timeout)
            }
        }
    }

    fn count<T>(&self, r: Result<T, RedisError>) -> Result<T, RedisError> {
        if let Err(e) = &r {
            if *e != RedisError::Timeout {
                bump(&self.shared.stats.errors, 1);
            }
        }
        r
    }

    fn fail<T>(&self, e: RedisError) -> Result<T, RedisError> {
        self.count(Err(e))
    }
}

impl Drop for RedisConn {
    fn drop(&mut self) {
        self.shared.closed.set(true);
        let writer = match self.shared.state.try_borrow_mut() {
            Ok(mut st) => st.writer.take(),
            Err(_) => None,
        };
        if let Some(w) = writer {
            w.wake();
        }
    }
}

impl Shared {
    fn enqueue<F>(&self, n: usize, multi: bool, encode: F) -> Result<u32, RedisError>
    where
        F: FnOnce(&mut Vec<u8>) -> bool,
    {
        if !self.connected.get() {
            return Err(RedisError::Unavailable);
        }
        let remaining = match u32::try_from(n) {
            Ok(r) if r > 0 => r,
            _ => return Err(RedisError::Protocol),
        };
        let mut st = self.state.borrow_mut();
        if st.in_flight + n > MAX_IN_FLIGHT {
            return Err(RedisError::Unavailable);
        }
        let start = st.wbuf.len();
        if !encode(&mut st.wbuf) {
            st.wbuf.truncate(start);
            return Err(RedisError::Protocol);
        }
        let acc = if multi {
            Vec::with_capacity(n)
        } else {
            Vec::new()
        };
        let Some(slot) = st.alloc_slot(acc) else {
            st.wbuf.truncate(start);
            return Err(RedisError::Unavailable);
        };
        st.fifo.push_back(Entry {
            slot,
            remaining,
            multi,
        });
        st.in_flight += n;
        let writer = st.writer.take();
        drop(st);
        bump(&self.stats.commands, n as u64);
        if let Some(w) = writer {
            w.wake();
        }
        Ok(slot)
    }

    /// Hands one decoded reply to the caller at the front of the FIFO.
    fn deliver(&self, reply: Reply) -> Result<(), Broken> {
        bump(&self.replies_seen, 1);
        let mut st = self.state.borrow_mut();
        let Some(front) = st.fifo.front_mut() else {
            return Err(Broken::UnexpectedReply);
        };
        front.remaining -= 1;
        let (slot, multi, done) = (front.slot, front.multi, front.remaining == 0);
        if done {
            st.fifo.pop_front();
        }
        st.in_flight = st.in_flight.saturating_sub(1);
        let mut waker = None;
        match st.slots.get_mut(slot as usize) {
            Some(Slot::Waiting { waker: w, acc }) => {
                let single = if multi {
                    acc.push(reply);
                    None
                } else {
                    Some(reply)
                };
                if done {
                    waker = w.take();
                    let result = single.unwrap_or_else(|| Reply::Array(std::mem::take(acc)));
                    st.slots[slot as usize] = Slot::Done(Ok(result));
                }
            }
            Some(Slot::Abandoned) => {
                if done {
                    st.release_slot(slot);
                }
            }
            // Free or Done slots are never in the FIFO: Done is set only when
            // an entry leaves it.
            _ => return Err(Broken::UnexpectedReply),
        }
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// After the connection broke: every waiting caller gets `Unavailable`,
    /// abandoned slots are freed, unsent commands are dropped.
    fn fail_all(&self) {
        let mut wakers = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            st.wbuf.clear();
            st.in_flight = 0;
            while let Some(entry) = st.fifo.pop_front() {
                match st.slots.get_mut(entry.slot as usize) {
                    Some(slot @ Slot::Waiting { .. }) => {
                        if let Slot::Waiting { waker: Some(w), .. } =
                            std::mem::replace(slot, Slot::Done(Err(RedisError::Unavailable)))
                        {
                            wakers.push(w);
                        }
                    }
                    Some(Slot::Abandoned) => st.release_slot(entry.slot),
                    _ => {}
                }
            }
        }
        for w in wakers {
            w.wake();
        }
    }

    /// Ready(true) when there is something to write, Ready(false) when closed.
    fn poll_work(&self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.closed.get() {
            return Poll::Ready(false);
        }
        let mut st = self.state.borrow_mut();
        if !st.wbuf.is_empty() {
            return Poll::Ready(true);
        }
        match &st.writer {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.writer = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn connect_timeout(&self) -> Duration {
        self.timeout.max(CONNECT_TIMEOUT_MIN)
    }
}

/// A caller waiting for its slot to be filled.
struct ReplyWait<'a> {
    shared: &'a Shared,
    slot: u32,
    finished: bool,
}

impl Future for ReplyWait<'_> {
    type Output = Result<Reply, RedisError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut st = this.shared.state.borrow_mut();
        let result = match st.slots.get_mut(this.slot as usize) {
            Some(Slot::Waiting { waker, .. }) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            Some(slot @ Slot::Done(_)) => match std::mem::replace(slot, Slot::Free) {
                Slot::Done(r) => r,
                // Just matched as Done above.
                _ => Err(RedisError::Protocol),
            },
            // Only this future frees its slot, so it cannot be Free or
            // Abandoned while the future is alive; fail safe anyway.
            _ => {
                this.finished = true;
                return Poll::Ready(Err(RedisError::Protocol));
            }
        };
        st.free.push(this.slot);
        this.finished = true;
        Poll::Ready(result)
    }
}

impl Drop for ReplyWait<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Never borrowed while a user future is dropped, but if it ever were,
        // leaking one slot is better than a panic.
        let Ok(mut st) = self.shared.state.try_borrow_mut() else {
            return;
        };
        match st.slots.get(self.slot as usize) {
            Some(Slot::Waiting { .. }) => st.slots[self.slot as usize] = Slot::Abandoned,
            Some(Slot::Done(_)) => st.release_slot(self.slot),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Background task
// ---------------------------------------------------------------------------

/// Connects, runs the connection until it breaks, fails the waiting callers,
/// backs off, and again, until the `RedisConn` is dropped.
async fn supervise(shared: Rc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let mut ever_connected = false;
    let mut failure_logged = false;
    while !shared.closed.get() {
        let attempt =
            monoio::time::timeout(shared.connect_timeout(), establish(&shared.target)).await;
        match attempt.unwrap_or(Err(Broken::ConnectTimeout)) {
            Ok((stream, rbuf)) => {
                if shared.closed.get() {
                    return;
                }
                if ever_connected {
                    bump(&shared.stats.reconnects, 1);
                    tracing::info!("redis: reconnected to {}", shared.target);
                } else {
                    tracing::debug!("redis: connected to {}", shared.target);
                }
                ever_connected = true;
                failure_logged = false;
                backoff = BACKOFF_MIN;
                shared.replies_seen.set(0);
                shared.connected.set(true);
                let why = run_connection(&shared, stream, rbuf).await;
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
                        "redis: cannot connect to {}: {why}; retrying every {}s at most",
                        shared.target,
                        BACKOFF_MAX.as_secs()
                    );
                    failure_logged = true;
                }
            }
        }
        monoio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// TCP connect (trying each resolved address), then AUTH/SELECT/PING. Returns the
/// stream and any bytes read past the handshake replies.
async fn establish(target: &RedisTarget) -> Result<(TcpStream, BytesMut), Broken> {
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
    let rbuf = handshake(&mut stream, target).await?;
    Ok((stream, rbuf))
}

/// Resolves the target. IP literals need no lookup; host names are resolved
/// on a short-lived thread so the core never blocks in `getaddrinfo`.
async fn resolve(target: &RedisTarget) -> Result<Vec<SocketAddr>, Broken> {
    if let Some(ip) = target.ip {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
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

async fn handshake(stream: &mut TcpStream, target: &RedisTarget) -> Result<BytesMut, Broken> {
    let cmds = target.handshake_commands();
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::new();
    for cmd in &cmds {
        cmd.write_packed_command(&mut out);
    }
    let (res, _) = stream.write_all(out).await;
    res?;
    let mut chunk = Vec::with_capacity(READ_CHUNK);
    let mut answered = 0;
    loop {
        while answered < cmds.len() {
            match decode_reply(&mut rbuf) {
                Ok(Some(Reply::Error(msg))) => {
                    // Redis error texts never echo the password.
                    tracing::warn!("redis: {} refused: {msg}", target);
                    return Err(Broken::Handshake(ServerErrorCode::from_message(&msg)));
                }
                Ok(Some(_)) => answered += 1,
                Ok(None) => break,
                Err(_) => return Err(Broken::Protocol),
            }
        }
        if answered == cmds.len() {
            return Ok(rbuf);
        }
        let (res, buf) = stream.read(chunk).await;
        chunk = buf;
        match res? {
            0 => return Err(Broken::Eof),
            n => rbuf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Runs reader, writer and stall watchdog until the first one stops.
async fn run_connection(shared: &Shared, stream: TcpStream, rbuf: BytesMut) -> Broken {
    let (reader, writer) = stream.into_split();
    monoio::select! {
        why = read_loop(shared, reader, rbuf) => why,
        why = write_loop(shared, writer) => why,
        why = stall_watch(shared) => why,
    }
}

async fn read_loop(
    shared: &Shared,
    mut reader: OwnedReadHalf<TcpStream>,
    mut rbuf: BytesMut,
) -> Broken {
    let mut chunk = Vec::with_capacity(READ_CHUNK);
    loop {
        loop {
            match decode_reply(&mut rbuf) {
                Ok(Some(reply)) => {
                    if let Err(why) = shared.deliver(reply) {
                        return why;
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

async fn write_loop(shared: &Shared, mut writer: OwnedWriteHalf<TcpStream>) -> Broken {
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::blocking::BlockingRedis;
    use super::super::testutil::*;
    use super::*;

    fn cmd(name: &str) -> redis::Cmd {
        redis::cmd(name)
    }

    #[test]
    fn parse_urls() {
        let t = RedisTarget::parse("redis://127.0.0.1:6379/0").unwrap();
        assert_eq!((t.host(), t.port(), t.db()), ("127.0.0.1", 6379, 0));
        assert_eq!(t.handshake_commands().len(), 1, "PING only");

        let t = RedisTarget::parse("redis://:s%40cret@redis.internal/3").unwrap();
        assert_eq!((t.host(), t.port(), t.db()), ("redis.internal", 6379, 3));
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        assert_eq!(t.username, None);
        let hs = t.handshake_commands();
        assert_eq!(hs.len(), 3, "AUTH, SELECT, PING");
        assert_eq!(
            hs[0].get_packed_command(),
            b"*2\r\n$4\r\nAUTH\r\n$6\r\ns@cret\r\n"
        );
        assert_eq!(
            hs[1].get_packed_command(),
            b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"
        );

        let t = RedisTarget::parse("redis://app:pw@[::1]:6380").unwrap();
        assert_eq!((t.host(), t.port(), t.db()), ("::1", 6380, 0));
        assert_eq!(t.username.as_deref(), Some("app"));
        assert_eq!(t.display_addr(), "[::1]:6380");

        // The password never shows in Debug or Display.
        let shown = format!("{t:?} {t}");
        assert!(!shown.contains("pw"), "{shown}");

        for bad in [
            "http://localhost",
            "rediss://localhost",
            "redis://",
            "redis://host:0",
            "redis://host:99999",
            "redis://host:port",
            "redis://host/db",
            "redis://password@host",
            "redis://host/0?timeout=1",
            "redis://[::1",
        ] {
            assert!(
                matches!(RedisTarget::parse(bad), Err(RedisError::InvalidUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn command_writer_matches_redis_encoding() {
        let mut buf = Vec::new();
        let mut w = CommandWriter::new(&mut buf);
        w.command(3)
            .arg(b"MGET")
            .arg_parts(&[b"p:", b"rev:at:", b"j1"])
            .arg_parts(&[b"p:nbf:", b"alice"]);
        w.command(5)
            .arg(b"SET")
            .arg(b"k")
            .arg(b"")
            .arg(b"EX")
            .arg_u64(18_446_744_073_709_551_615);
        assert!(w.is_complete(2));
        let mut expect = cmd("MGET")
            .arg("p:rev:at:j1")
            .arg("p:nbf:alice")
            .get_packed_command();
        expect.extend(
            cmd("SET")
                .arg("k")
                .arg("")
                .arg("EX")
                .arg(u64::MAX)
                .get_packed_command(),
        );
        assert_eq!(buf, expect);

        // Miscounted commands are caught before anything is sent.
        let mut buf = Vec::new();
        let mut w = CommandWriter::new(&mut buf);
        w.command(2).arg(b"GET");
        assert!(!w.is_complete(1));
        let mut w = CommandWriter::new(&mut buf);
        w.command(1).arg(b"PING").arg(b"extra");
        assert!(!w.is_complete(1));
        let mut w = CommandWriter::new(&mut buf);
        w.command(1).arg(b"PING");
        assert!(!w.is_complete(2));
    }

    #[test]
    fn decimal_formatting() {
        for n in [0u64, 7, 10, 99, 100, 123_456_789, u64::MAX] {
            let mut d = [0u8; 20];
            let at = format_decimal(n, &mut d);
            assert_eq!(&d[at..], n.to_string().as_bytes());
        }
    }

    #[test]
    fn server_error_code() {
        let c = ServerErrorCode::from_message(
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        );
        assert_eq!(c.as_str(), "WRONGTYPE");
        assert_eq!(ServerErrorCode::from_message("").as_str(), "ERR");
        assert_eq!(
            ServerErrorCode::from_message("AVERYVERYLONGERRORCODE x").as_str(),
            "AVERYVERYLONGER"
        );
        assert_eq!(
            RedisError::Server(c).to_string(),
            "redis answered with an error reply (WRONGTYPE)"
        );
    }

    #[test]
    fn reply_helpers() {
        let b = Reply::Bulk(Bytes::from_static(b"42"));
        assert_eq!(b.as_int(), Some(42));
        assert_eq!(b.as_str(), Some("42"));
        assert!(!b.is_nil());
        assert!(Reply::Nil.is_nil());
        assert!(Reply::Simple("OK".into()).is_ok());
        assert_eq!(Reply::Int(-3).as_int(), Some(-3));
        assert_eq!(
            Reply::Array(vec![Reply::Nil]).as_array().map(|a| a.len()),
            Some(1)
        );

        // Partial input is "need more bytes", not an error; bytes are kept.
        let mut buf = BytesMut::from(&b"*2\r\n$2\r\nhi\r\n"[..]);
        assert_eq!(decode_reply(&mut buf), Ok(None));
        buf.extend_from_slice(b"$-1\r\n:5\r\n");
        assert_eq!(
            decode_reply(&mut buf),
            Ok(Some(Reply::Array(vec![
                Reply::Bulk(Bytes::from_static(b"hi")),
                Reply::Nil
            ])))
        );
        assert_eq!(decode_reply(&mut buf), Ok(Some(Reply::Int(5))));
        assert_eq!(decode_reply(&mut buf), Ok(None));
        let mut bad = BytesMut::from(&b"?what\r\n"[..]);
        assert_eq!(decode_reply(&mut bad), Err(RedisError::Protocol));
    }

    /// The hand-written decoder (issue #4, replacing `redis-protocol`): every
    /// RESP2 type, nulls, nesting, and "need more bytes" at every cut.
    #[test]
    fn decoder_covers_resp2() {
        let wire: &[u8] = b"*5\r\n+OK\r\n-ERR no\r\n:-42\r\n$0\r\n\r\n*2\r\n*-1\r\n$-1\r\n\
                            $4\r\na\r\nb\r\n:9223372036854775807\r\n";
        let first = Reply::Array(vec![
            Reply::Simple("OK".into()),
            Reply::Error("ERR no".into()),
            Reply::Int(-42),
            Reply::Bulk(Bytes::new()),
            Reply::Array(vec![Reply::Nil, Reply::Nil]),
        ]);
        let second = Reply::Bulk(Bytes::from_static(b"a\r\nb"));
        let third = Reply::Int(i64::MAX);
        // Fed in two pieces cut at every position: nothing is decoded before
        // its last byte arrives, and nothing is lost.
        for cut in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(r) = decode_reply(&mut buf).unwrap() {
                got.push(r);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(r) = decode_reply(&mut buf).unwrap() {
                got.push(r);
            }
            assert_eq!(
                got,
                [first.clone(), second.clone(), third.clone()],
                "cut {cut}"
            );
            assert!(buf.is_empty());
        }

        for bad in [
            &b"$-2\r\n"[..],
            b"*-5\r\n",
            b":12a\r\n",
            b":\r\n",
            b":-\r\n",
            b":99999999999999999999\r\n",
            b"$3\r\nabcd\r\n",
            b"+OK\rX",
            b"$x\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert_eq!(decode_reply(&mut buf), Err(RedisError::Protocol), "{bad:?}");
        }
        // Nesting is bounded; at the bound it still decodes.
        let mut deep = BytesMut::new();
        for _ in 0..MAX_REPLY_DEPTH {
            deep.extend_from_slice(b"*1\r\n");
        }
        deep.extend_from_slice(b":1\r\n");
        assert!(decode_reply(&mut deep.clone()).unwrap().is_some());
        let mut deeper = BytesMut::from(&b"*1\r\n"[..]);
        deeper.extend_from_slice(&deep);
        assert_eq!(decode_reply(&mut deeper), Err(RedisError::Protocol));
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
            let mut side =
                BlockingRedis::connect(&shared_target(), Duration::from_secs(2)).unwrap();
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
                let t = Instant::now();
                assert_eq!(conn.query(&cmd("PING")).await, Err(RedisError::Unavailable));
                assert_eq!(conn.ping().await, Err(RedisError::Unavailable));
                assert!(
                    t.elapsed() < Duration::from_millis(20),
                    "{driver}: {:?}",
                    t.elapsed()
                );
                monoio::time::sleep(Duration::from_millis(150)).await;
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
            monoio::time::sleep(Duration::from_millis(100)).await;
            let t = Instant::now();
            server.kill();
            assert_eq!(blocked.await, Err(RedisError::Unavailable), "{driver}");
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{driver}: {:?}",
                t.elapsed()
            );
            assert!(!conn.is_connected());
            let t = Instant::now();
            assert_eq!(conn.query(&cmd("PING")).await, Err(RedisError::Unavailable));
            assert!(t.elapsed() < Duration::from_millis(20));
            monoio::time::sleep(Duration::from_millis(300)).await;

            server.restart();
            let t = Instant::now();
            assert!(
                conn.wait_connected(Duration::from_secs(5)).await,
                "{driver}: no reconnect"
            );
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
            let t = Instant::now();
            while conn.is_connected() && t.elapsed() < Duration::from_secs(5) {
                let _ = conn.query(&cmd("PING")).await;
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(!conn.is_connected(), "{driver}: stall not detected");
            let t = Instant::now();
            assert_eq!(conn.query(&cmd("PING")).await, Err(RedisError::Unavailable));
            assert!(t.elapsed() < Duration::from_millis(20));
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
            monoio::time::sleep(Duration::from_millis(300)).await;
            assert!(!bad.is_connected());
            assert_eq!(bad.ping().await, Err(RedisError::Unavailable));
            assert!(bad.stats().connect_failures >= 1);
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
            let mut side =
                BlockingRedis::connect(&server.target(), Duration::from_secs(2)).unwrap();
            let clients = |side: &mut BlockingRedis| {
                let r = side.query(cmd("CLIENT").arg("LIST")).unwrap();
                r.as_str().unwrap().lines().count()
            };
            let conn = RedisConn::new(server.target(), Duration::from_secs(2));
            assert!(conn.wait_connected(Duration::from_secs(5)).await);
            assert_eq!(clients(&mut side), 2, "{driver}");
            drop(conn);
            let t = Instant::now();
            while clients(&mut side) != 1 {
                assert!(
                    t.elapsed() < Duration::from_secs(2),
                    "{driver}: socket not closed"
                );
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
}
