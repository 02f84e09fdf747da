//! tokend's own deadline on every wait for PostgreSQL's answer, enforced on
//! its side of the socket.
//!
//! Why it is needed: `statement_timeout` makes the server cancel a slow
//! statement, but a frozen server, or a network or proxy that keeps the
//! connection open and forwards nothing, never delivers that cancellation;
//! TCP's own timers (`tcp_user_timeout`, keepalives) stay quiet too while the
//! peer's kernel acknowledges what is sent. The synchronous `postgres` client
//! has no per-statement timeout and keeps its socket to itself, so such a
//! statement waited for ever (issue #12: logins hung for 45 s and more), and
//! so did dropping the connection: its close waits for every answer owed.
//!
//! How: tokio-postgres hands the socket it opened to the TLS connector it is
//! given, and with `sslnegotiation=direct` it does so before a byte is
//! exchanged (there is no `SSLRequest` to answer). [`Watched`] is such a
//! connector that does no TLS: it wraps the plain socket in a
//! [`WatchedStream`], and the server sees the ordinary plaintext start-up
//! packet it would see with `NoTls`. The stream follows the protocol's
//! message framing in both directions and counts the answers owed: one
//! `ReadyForQuery` for the start-up, and one per simple `Query` and per
//! `Sync` of the extended protocol (tokio-postgres ends each of its requests
//! with one). While an answer is owed and nothing has come from the server
//! for the connection's patience (`database.connect_timeout` until the
//! start-up's `ReadyForQuery`, then `statement_timeout` plus the grace), the stream fails, for good, with
//! `TimedOut`: the pending statement returns an error, the client sees its
//! connection closed, and the pool drops it at once. An idle connection owes
//! nothing and has no deadline; a write that cannot make progress for the
//! patience fails the same way.
//!
//! TLS (`sslmode=require`, `verify-ca`, `verify-full`; see `pgtls`): the
//! connector is given the bare socket the same way, sends the `SSLRequest`
//! itself, reads the server's one-byte answer and runs the rustls handshake
//! (tokio-rustls), all within `database.connect_timeout`, and puts the
//! encrypted stream under the watch: the framing is followed on the
//! plaintext side of TLS.
//!
//! Limits: `COPY … FROM STDIN` (never used by tokend) waits on the client
//! and would be cut after the patience. A Unix-socket host gets no
//! hostname from tokio-postgres, which refuses to start "TLS" without one:
//! [`super::pg`] connects those without this stream (the server's
//! `statement_timeout` is then the only bound; see `database.url`).
//!
//! Owns: [`Watch`] (a connection's patience and why it was cut), the
//! connector and the stream. Never imports: anything of the crate outside
//! `store` (`pgtls`, the TLS configuration).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use postgres::Socket;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::pgtls::PgTls;

/// What the streams of a pool (or of one CLI connection) and their owner
/// share: how long the server may stay silent while an answer is owed, why
/// a stream last gave up, and which streams are retired.
#[derive(Debug)]
pub struct Watch {
    /// `database.connect_timeout`: the patience of a stream until the
    /// server's first `ReadyForQuery` (the end of the start-up).
    connect: Duration,
    /// `database.statement_timeout` plus [`super::pg::GRACE`]: the patience
    /// of a stream after its start-up.
    patience: Duration,
    /// Why a stream last gave up, once one has (for the log line of the
    /// outage). The pool's connections are `postgres::Client`s, which keep
    /// their stream to themselves: the cause is the watch's, not a stream's.
    cause: Mutex<Option<String>>,
    /// Bumped by [`Watch::retire_idle`]: a stream made under an older
    /// generation fails when asked to send a new request.
    generation: AtomicU64,
}

/// The text of the error of a stream retired by [`Watch::retire_idle`]:
/// not news of PostgreSQL, so not a failure to count.
pub const RETIRED: &str = "an idle connection from before the outage";

impl Watch {
    /// A watch with these patiences, nothing failed.
    pub fn new(connect: Duration, patience: Duration) -> Arc<Watch> {
        Arc::new(Watch {
            connect: connect.max(Duration::from_millis(1)),
            patience: patience.max(Duration::from_millis(1)),
            cause: Mutex::new(None),
            generation: AtomicU64::new(0),
        })
    }

    /// Why a stream last gave up, if one has.
    pub fn cause(&self) -> Option<String> {
        self.cause.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_cause(&self, cause: Option<String>) {
        *self.cause.lock().unwrap_or_else(|e| e.into_inner()) = cause;
    }

    /// Every stream that exists now fails, with [`RETIRED`], at once when
    /// asked to send its next request (at an outage's start: an idle
    /// connection is not worth a bounded wait, and r2d2_postgres checks
    /// one with a query on checkout).
    pub fn retire_idle(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// The connector that puts the socket under a [`Watch`], in clear or in
/// TLS (see the module header). Used with `sslmode=require` and
/// `sslnegotiation=direct` towards tokio-postgres, which make it hand the
/// socket over before any byte is exchanged.
#[derive(Debug, Clone)]
pub struct Watched {
    watch: Arc<Watch>,
    tls: Option<Arc<PgTls>>,
    /// The host this connection is for (the certificate's name to check).
    host: String,
}

impl Watched {
    /// A connector whose streams report to `watch`, in clear.
    pub fn new(watch: Arc<Watch>) -> Watched {
        Watched {
            watch,
            tls: None,
            host: String::new(),
        }
    }

    /// The same, every stream encrypted with `tls` (when `Some`).
    pub fn with_tls(self, tls: Option<Arc<PgTls>>) -> Watched {
        Watched { tls, ..self }
    }
}

impl MakeTlsConnect<Socket> for Watched {
    type Stream = WatchedStream;
    type TlsConnect = Watched;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Watched, io::Error> {
        Ok(Watched {
            host: domain.to_owned(),
            ..self.clone()
        })
    }
}

/// The `SSLRequest` message: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

impl TlsConnect<Socket> for Watched {
    type Stream = WatchedStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<WatchedStream, io::Error>> + Send>>;

    fn connect(self, mut stream: Socket) -> Self::Future {
        Box::pin(async move {
            let Some(tls) = self.tls else {
                return Ok(WatchedStream::new(Inner::Plain(stream), self.watch));
            };
            let patience = self.watch.connect;
            let host = self.host;
            let handshake = async move {
                stream.write_all(&SSL_REQUEST).await?;
                let mut answer = [0u8; 1];
                stream.read_exact(&mut answer).await?;
                if answer[0] != b'S' {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        "the server does not offer TLS (database.url asks for it with sslmode)",
                    ));
                }
                let name = ServerName::try_from(host.clone()).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{host:?} is not a name a certificate can be checked for"),
                    )
                })?;
                tokio_rustls::TlsConnector::from(tls.client_config())
                    .connect(name, stream)
                    .await
            };
            let tls_stream = tokio::time::timeout(patience, handshake)
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no TLS handshake with PostgreSQL within {}",
                            humantime::format_duration(patience)
                        ),
                    )
                })??;
            Ok(WatchedStream::new(
                Inner::Tls(Box::new(tls_stream)),
                self.watch,
            ))
        })
    }
}

/// A connection's socket, in clear or in TLS.
#[derive(Debug)]
enum Inner {
    Plain(Socket),
    Tls(Box<tokio_rustls::client::TlsStream<Socket>>),
}

impl AsyncRead for Inner {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Inner {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, data),
            Inner::Tls(s) => Pin::new(&mut **s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// The socket of one connection with a deadline on every wait for the
/// server (see the module header).
#[derive(Debug)]
pub struct WatchedStream {
    inner: Inner,
    watch: Arc<Watch>,
    /// The client's messages, to count the answers they ask for.
    sent: Framer,
    /// The server's messages, to count the answers received.
    received: Framer,
    /// `ReadyForQuery` messages still to come; 1 at first, for the start-up.
    owed: u64,
    /// When bytes last moved either way, or the current wait began.
    since: Instant,
    /// The deadline of the current wait, while there is one.
    timer: Option<Pin<Box<Sleep>>>,
    /// Set once the deadline has passed: every later call fails with it.
    failed: Option<String>,
    /// Whether the start-up is over (the first `ReadyForQuery` came).
    ready: bool,
    /// The watch's generation when the stream was made.
    generation: u64,
}

impl WatchedStream {
    fn new(inner: Inner, watch: Arc<Watch>) -> WatchedStream {
        WatchedStream {
            generation: watch.generation(),
            ready: false,
            inner,
            watch,
            sent: Framer::new(true),
            received: Framer::new(false),
            owed: 1,
            since: Instant::now(),
            timer: None,
            failed: None,
        }
    }

    fn failure(&self) -> Option<io::Error> {
        self.failed
            .as_ref()
            .map(|c| io::Error::new(io::ErrorKind::TimedOut, c.clone()))
    }

    /// How long the server may stay silent now.
    fn patience(&self) -> Duration {
        if self.ready {
            self.watch.patience
        } else {
            self.watch.connect
        }
    }

    /// Called when the socket is not ready: arms the deadline of this wait
    /// (one is kept only while an answer is owed, or always for a write
    /// that cannot proceed), and fails once it has passed.
    fn wait<T>(&mut self, cx: &mut Context<'_>, writing: bool) -> Poll<io::Result<T>> {
        if self.owed == 0 && !writing {
            self.timer = None;
            return Poll::Pending;
        }
        if self.timer.is_none() {
            // A wait that begins after a quiet time counts from now, not
            // from the last bytes moved.
            self.since = Instant::now();
        }
        match self.arm(cx) {
            Poll::Ready(()) => {
                let cause = format!(
                    "no answer from PostgreSQL within {}",
                    humantime::format_duration(self.patience())
                );
                self.watch.set_cause(Some(cause.clone()));
                self.failed = Some(cause);
                self.timer = None;
                Poll::Ready(Err(self
                    .failure()
                    .unwrap_or_else(|| io::ErrorKind::TimedOut.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Sets the timer to `since + patience` and polls it with `cx` (so that
    /// the task wakes when it fires). Ready when the deadline has passed.
    fn arm(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.since + self.patience();
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(e) = this.failure() {
            return Poll::Ready(Err(e));
        }
        let start = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[start..];
                if !got.is_empty() {
                    this.since = Instant::now();
                    let (owed, ready) = (&mut this.owed, &mut this.ready);
                    this.received.feed(got, |t| {
                        if t == b'Z' {
                            *owed = owed.saturating_sub(1);
                            *ready = true;
                        }
                    });
                    if this.owed == 0 {
                        this.timer = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.wait(cx, false),
        }
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(e) = this.failure() {
            return Poll::Ready(Err(e));
        }
        if this.owed == 0 && this.generation != this.watch.generation() {
            // Idle, and retired: fail before the request goes out.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                RETIRED,
            )));
        }
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.since = Instant::now();
                    let owed = &mut this.owed;
                    this.sent.feed(&data[..n], |t| {
                        // A simple query and a Sync each end with one
                        // ReadyForQuery.
                        if t == b'Q' || t == b'S' {
                            *owed += 1;
                        }
                    });
                    if this.owed > 0 && this.arm(cx).is_ready() {
                        // Cannot be late right after a write, but if it
                        // were, the next read must see it.
                        cx.waker().wake_by_ref();
                    }
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.wait(cx, true),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(e) = this.failure() {
            return Poll::Ready(Err(e));
        }
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.wait(cx, true),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(e) = this.failure() {
            return Poll::Ready(Err(e));
        }
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.wait(cx, true),
            ready => ready,
        }
    }
}

impl TlsStream for WatchedStream {
    /// Nothing to bind SCRAM to: none in clear (as with `NoTls`), and none
    /// offered over TLS either (SCRAM-SHA-256 without `-PLUS`, which libpq
    /// also falls back to by default).
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// Follows message boundaries in one direction of the PostgreSQL protocol:
/// each message is a type byte, a big-endian length that counts itself,
/// then the body; the client's first message (the start-up packet) has no
/// type byte. Holds at most a 5-byte header, whatever the traffic.
#[derive(Debug)]
struct Framer {
    /// Header bytes of the current message read so far.
    head: [u8; 5],
    have: usize,
    /// Body bytes of the current message still to come.
    body_left: usize,
    /// The type of the message whose body is being skipped.
    current: Option<u8>,
    /// Whether the next message is the untyped start-up packet.
    untyped: bool,
}

impl Framer {
    fn new(untyped_first: bool) -> Framer {
        Framer {
            head: [0; 5],
            have: 0,
            body_left: 0,
            current: None,
            untyped: untyped_first,
        }
    }

    /// Feeds the next bytes of the stream; calls `done` with the type of
    /// each message completed by them.
    fn feed(&mut self, mut bytes: &[u8], mut done: impl FnMut(u8)) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                if self.body_left == 0 {
                    if let Some(t) = self.current.take() {
                        done(t);
                    }
                }
                continue;
            }
            let need = if self.untyped { 4 } else { 5 };
            let n = (need - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < need {
                return;
            }
            let h = self.head;
            let (ty, len) = if self.untyped {
                (None, u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
            } else {
                (Some(h[0]), u32::from_be_bytes([h[1], h[2], h[3], h[4]]))
            };
            self.have = 0;
            self.untyped = false;
            // The length counts its own four bytes.
            self.body_left = (len as usize).saturating_sub(4);
            self.current = ty;
            if self.body_left == 0 {
                if let Some(t) = self.current.take() {
                    done(t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![ty];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn types(framer: &mut Framer, bytes: &[u8], chunk: usize) -> Vec<u8> {
        let mut seen = Vec::new();
        for part in bytes.chunks(chunk) {
            framer.feed(part, |t| seen.push(t));
        }
        seen
    }

    #[test]
    fn framing_survives_any_split() {
        // A start-up packet, then Parse, Sync, a simple Query, an empty-body
        // Sync and Terminate: what the client sends over a connection's life.
        let mut startup = (8u32 + 9).to_be_bytes().to_vec();
        startup.extend_from_slice(&196608u32.to_be_bytes());
        startup.extend_from_slice(b"user\0me\0\0");
        let mut stream = startup;
        for m in [
            msg(b'P', b"\0SELECT 1\0\0\0"),
            msg(b'S', b""),
            msg(b'Q', b"SELECT 1\0"),
            msg(b'S', b""),
            msg(b'X', b""),
        ] {
            stream.extend_from_slice(&m);
        }
        for chunk in [1, 2, 3, 5, 7, stream.len()] {
            let seen = types(&mut Framer::new(true), &stream, chunk);
            assert_eq!(seen, b"PSQSX", "chunks of {chunk}");
        }
    }

    #[test]
    fn server_messages_are_typed_from_the_first_byte() {
        let mut stream = msg(b'R', &0u32.to_be_bytes());
        stream.extend_from_slice(&msg(b'S', b"a\0b\0"));
        stream.extend_from_slice(&msg(b'K', &[0; 8]));
        stream.extend_from_slice(&msg(b'Z', b"I"));
        for chunk in [1, 4, stream.len()] {
            assert_eq!(types(&mut Framer::new(false), &stream, chunk), b"RSKZ");
        }
    }

    #[test]
    fn a_message_counts_only_once_its_body_is_in() {
        let z = msg(b'Z', b"I");
        let mut f = Framer::new(false);
        let mut seen = Vec::new();
        f.feed(&z[..5], |t| seen.push(t));
        assert!(seen.is_empty(), "the body byte has not come yet");
        f.feed(&z[5..], |t| seen.push(t));
        assert_eq!(seen, b"Z");
    }
}
