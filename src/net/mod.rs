//! Sockets: the SO_REUSEPORT listeners and the per-connection loop.
//!
//! The loop follows may_minihttp's pipelining shape: read whatever arrived,
//! answer every complete request in it in order into one output buffer, write
//! that buffer once, repeat. Buffers move into each read or write and come
//! back with the result (monoio's ownership model); both are reused while the
//! connection is busy, and freed when it falls silent (see `IDLE_RELEASE`).
//! The output buffer is bounded: past `WRITE_HIGH_WATER` it is written
//! before anything more is parsed, and a write that makes no progress for
//! `server.write_timeout` ends the connection.
//!
//! Owns: the listening sockets (SO_REUSEPORT, backlog, `TCP_NODELAY`), each
//! connection's buffers, its head, idle and write timeouts, the answers to
//! the requests the parser refuses (400, 411, 413, 431), the graceful
//! (lingering) close, and how each connection drains when its core shuts
//! down. The connection cap is checked at accept, in `cores`.
//!
//! Never imports: `cores`, `access`, a service or a store: a parsed request
//! goes to [`handlers::handle`], and only from there to the rest.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, Canceller};
use monoio::net::TcpStream;

use crate::handlers;
use crate::http::{self, ParseError, Parsed, ResponseCtx};
use crate::state::Core;

mod stream;
use stream::*;

/// Listen backlog of each core's socket.
const BACKLOG: i32 = 4096;

/// Initial size of a connection's read and write buffers. They grow up to
/// the head + body limits when a request needs it.
const BUF_SIZE: usize = 4096;

/// Buffers are held only by busy connections: one whose request came within
/// this time of the response before it keeps its read and write buffers and
/// reads as before, for up to this long; a quiet one (a new connection, one
/// that went silent) frees them, waits for readiness without a buffer, and
/// allocates fresh `BUF_SIZE` ones when bytes come (so a buffer grown by
/// pipelined or large requests goes back too). Measured (issue #4, 10,000
/// keep-alive connections that sent one request each, one core): the two
/// 4 KiB buffers were 8 of the ~12.6 KiB each connection held, 80 MiB. A busy
/// connection's path is unchanged: same syscalls, no allocation (callgrind,
/// instructions per validation: 10,295 before, 10,375 with this and jemalloc;
/// the recv future is no longer inlined). A quiet connection's next request
/// pays two allocations and at most one more syscall (a poll(2) to clear
/// readiness that epoll may have left stale).
///
/// While a core drains, a connection answered less than this long ago is
/// between two requests of a stream, not idle (see `serve_connection`).
///
/// Both are measured from the core's once-a-second clock: a busy connection
/// lingers between this and this plus [`COARSE_CLOCK`] (with epoll; with
/// io_uring, `linger_read` waits exactly this).
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// Bound of a connection's unwritten answers: once the output buffer holds
/// this much, it is written before another pipelined request is parsed.
///
/// A client that pipelines and never reads otherwise had every request in
/// its read buffer answered into an unbounded output buffer (issue #12:
/// twenty connections pipelining `GET /metrics` took tokend from 9.5 MB to
/// 38.7 MB resident; +30 MB in `robustness_net`'s test). Now such a
/// connection holds at most this plus one answer (the largest, a metrics
/// page, is ~12 KiB), plus its read buffer (at most the head and body
/// limits): +1 MB in that test. The bound never limits a client that
/// reads: a validation's answer is ~300 bytes, so 32 KiB is a hundred of
/// them in one write (wrk pipelines 16), and a bigger batch is still written
/// 32 KiB per send(2). It is of the order of a socket's first send buffer
/// (`tcp_wmem`, 16 KiB default), so a stuck client holds about as much here
/// as in the kernel. 10,000 stuck connections at the cap: 320 MiB at most.
const WRITE_HIGH_WATER: usize = 32 * 1024;

/// The pause of a connection between two batches of `WRITE_HIGH_WATER` of
/// answers, which lets the core's other connections run. Without it a
/// client that pipelines thousands of requests (a read buffer holds up to
/// 76 KiB of them) had them all answered in one go while every other
/// connection of the core waited (here, with 20 clients pipelining
/// `GET /metrics`: a validation waited ~1 s). The timer's resolution, 1 ms,
/// costs a pipelining client at most 32 KiB of answers per millisecond
/// (32 MB/s) once past the bound, and nothing below it.
const PIPELINE_PAUSE: Duration = Duration::from_millis(1);

/// How long a draining core waits for a just-accepted connection's first
/// request (from the start of the drain) and for the rest of a request
/// part-way in (normally one round trip away).
pub const FRESH_CONNECTION_GRACE: Duration = Duration::from_secs(1);

/// While draining, the longest a write may make no progress (or
/// `server.write_timeout`, if shorter): a client that does not read its
/// answers does not hold up a drain for longer.
const DRAIN_WRITE_STALL: Duration = Duration::from_secs(1);

/// The precision of [`Core::coarse_now`], the core's clock read once a
/// second: a deadline taken from it adds this, so that it is never shorter
/// than meant (a write stall's `server.write_timeout`, a keep-alive
/// connection's `server.idle_timeout` and its linger).
const COARSE_CLOCK: Duration = Duration::from_secs(1);

/// The longest a graceful close reads and discards what the client still
/// sends after its last answer (see [`close_gracefully`]). A client that
/// sends a refused body to the end before reading needs the time its
/// remaining bytes take on the wire: a 64 KiB body is milliseconds on any
/// link worth serving (nginx waits up to 5 s between reads and 30 s in all;
/// tokend's bodies are small, so 2 s is generous). An attacker holding
/// connections this way holds each for 2 s at most, within the connection
/// cap.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// The most a graceful close reads and discards: four times the default
/// body limit (`limits.max_body_bytes`, 64 KiB), so that the rest of an
/// oversized body of a client that sends it whole before reading is read in
/// full, and a client that keeps sending past it, not waiting for an
/// answer, is cut off. The reads reuse the connection's buffer (no memory),
/// and 256 KiB is a few dozen reads of core time.
const LINGER_BYTES: usize = 256 * 1024;

/// Binds `count` listeners on `addr`, all with SO_REUSEPORT so the kernel
/// spreads connections across them. With port 0 the first socket picks the
/// port and the others join it. Returns the listeners (non-blocking, ready
/// for either monoio driver) and the bound address.
pub fn bind_listeners(
    addr: SocketAddr,
    count: usize,
) -> io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let mut listeners = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let l = bind_one(bound)?;
        bound = l.local_addr()?;
        listeners.push(l);
    }
    Ok((listeners, bound))
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Decrements the core's connection count when a connection task ends,
/// however it ends; keeps the count of connections that have not yet sent a
/// whole request ("fresh") and of those closing gracefully; and holds the
/// connection's slot among the wakers a drain wakes.
struct ConnGuard {
    core: Rc<Core>,
    fresh: bool,
    closing: bool,
    waker_slot: usize,
}

impl ConnGuard {
    fn first_request(&mut self) {
        if self.fresh {
            self.fresh = false;
            self.core.fresh_done();
        }
    }

    /// The connection has answered its last request: a drain no longer
    /// waits for it.
    fn closing(&mut self) {
        if !self.closing {
            self.closing = true;
            self.core.closing_started();
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.first_request();
        if self.closing {
            self.core.closing_done();
        }
        self.core.conn_closed();
        self.core.forget_connection_waker(self.waker_slot);
    }
}

/// Serves one connection until it closes, times out, or breaks the protocol.
/// The caller has already counted it in the core's open connections.
///
/// While the core drains ([`Core::is_shutting_down`]), the connection
/// answers what has arrived and closes by itself, each case bounded:
/// - a request being handled is finished; its answer, and every answer
///   written from then on, says `Connection: close`; then the connection
///   closes gracefully (see [`close_gracefully`]);
/// - a request that arrived, whole or in part, is read and answered (a part
///   gets up to [`FRESH_CONNECTION_GRACE`] more for the rest, within its
///   head timeout);
/// - a connection answered less than [`IDLE_RELEASE`] ago is between two
///   requests of a stream, not idle: its next request is usually on its way
///   already, and is answered if it comes within `IDLE_RELEASE` of that
///   answer;
/// - a just-accepted connection gets [`FRESH_CONNECTION_GRACE`] from the
///   start of the drain for its first request;
/// - an idle one (nothing for `IDLE_RELEASE`, nothing in its socket buffer)
///   closes without an answer, with a FIN;
/// - a write that makes no progress for [`DRAIN_WRITE_STALL`] ends its
///   connection.
///
/// Requests pipelined behind the first answer that says `Connection: close`
/// are not answered: a pipelining client retries them (RFC 9112 §9.3.2).
pub async fn serve_connection(core: Rc<Core>, stream: TcpStream, peer: SocketAddr) {
    // The drain wakes this task through its waker, registered once here:
    // the waits that must hear of the drain check the core's flag
    // (`draining`), at no cost per request.
    let waker = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
    // Counted as fresh by the accept loop already (before this task first
    // runs), so a drain cannot miss it.
    let mut guard = ConnGuard {
        core: core.clone(),
        fresh: true,
        closing: false,
        waker_slot: core.register_connection_waker(waker),
    };
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    let limits = core.limits();
    let head_timeout = core.config().server.head_timeout;
    let idle_timeout = core.config().server.idle_timeout;
    let write_timeout = core.config().server.write_timeout;
    // Both allocated when bytes arrive (see IDLE_RELEASE).
    let mut rbuf: Vec<u8> = Vec::new();
    let mut wbuf: Vec<u8> = Vec::new();
    // Whether the last request came within IDLE_RELEASE of the response
    // before it; a new connection's first request does not count.
    let mut busy = false;
    // Whether a read got bytes since monoio last saw the socket drained: its
    // readiness may then be stale (edge-triggered epoll), and a wait for
    // readiness must check with poll(2) first.
    let mut readiness_stale = false;
    // Whether the last read filled the read buffer: the client had more to
    // send (it pipelines), and the next read gets a larger buffer (`grow`).
    let mut filled = false;
    // Cancels the read of a busy connection gone silent, with io_uring only
    // (see `linger_read`; epoll drops it).
    let mut canceller = (core.driver() == crate::config::Driver::IoUring).then(Canceller::new);
    // When the first byte of the request being read arrived: the head (and
    // body) must be complete within `head_timeout` of it.
    let mut request_started: Option<Instant> = None;
    // A connection that has not sent its first request yet is held to
    // `head_timeout` from its accept, not `idle_timeout`: a connection slot
    // costs a client nothing to take, and holding it must not either.
    let accepted_at = Instant::now();
    // When the connection last finished writing answers (for a drain: see
    // above), at most COARSE_CLOCK late: taken with the read deadline.
    let mut answered_at = Instant::now();
    // The connection's one timer, for its life: the deadline of a read
    // (see `read_within`), and of a write that does not complete at once
    // (see `write_out`). Reads and writes only move its deadline (no timer
    // registration per request). Created unarmed, with a deadline (now)
    // that no armed one can equal, so the first arming polls it.
    let mut timer = std::pin::pin!(monoio::time::sleep(Duration::ZERO));

    'conn: loop {
        // Answer every complete request in the buffer, in order.
        let mut consumed = 0;
        let mut close = false;
        // A request the parser refused: its answer is the last, and the
        // client may still be sending it.
        let mut refused = false;
        // Requests answered into `wbuf` but not yet written: shutdown waits
        // for them.
        let mut handled = 0;
        let mut wrote = false;
        // The requests of one read are a burst (see `BurstClock`).
        let mut burst = handlers::BurstClock::default();
        while consumed < rbuf.len() {
            match http::parse(&rbuf[consumed..], &limits) {
                Ok(Parsed::Complete(req, len)) => {
                    // The write buffer is allocated for the first answer,
                    // not for a request still arriving.
                    if wbuf.capacity() == 0 {
                        wbuf = Vec::with_capacity(BUF_SIZE);
                    }
                    guard.first_request();
                    consumed += len;
                    request_started = None;
                    core.request_started();
                    handled += 1;
                    let keep = handlers::handle(&core, &req, peer, &mut wbuf, &mut burst).await;
                    if !keep {
                        close = true;
                        break;
                    }
                    if wbuf.len() >= WRITE_HIGH_WATER {
                        // Back-pressure: the answers so far go out before
                        // any further request is parsed. A client that does
                        // not read them stops this connection here, holding
                        // at most WRITE_HIGH_WATER and one answer.
                        let Some(buf) =
                            write_out(&core, &mut stream, wbuf, timer.as_mut(), write_timeout)
                                .await
                        else {
                            core.requests_finished(handled);
                            return;
                        };
                        wbuf = buf;
                        core.requests_finished(handled);
                        handled = 0;
                        wrote = true;
                        // A deep pipeline must not hold the core: the other
                        // connections run before the next batch.
                        yield_to_others().await;
                        burst.break_burst();
                    }
                }
                Ok(Parsed::Partial) => {
                    request_started.get_or_insert_with(Instant::now);
                    break;
                }
                Err(e) => {
                    if wbuf.capacity() == 0 {
                        wbuf = Vec::with_capacity(BUF_SIZE);
                    }
                    write_parse_error(&core, e, &mut wbuf);
                    close = true;
                    refused = true;
                    break;
                }
            }
        }
        if consumed > 0 {
            rbuf.drain(..consumed);
        }
        if !wbuf.is_empty() {
            let written = write_out(&core, &mut stream, wbuf, timer.as_mut(), write_timeout).await;
            core.requests_finished(handled);
            let Some(buf) = written else {
                return;
            };
            wbuf = buf;
            wrote = true;
        }
        if close {
            // After a refused request, with bytes left unread, or while
            // draining, the client may still be sending: closing now could
            // reset the connection before it reads its answer.
            if refused || !rbuf.is_empty() || core.is_shutting_down() {
                close_gracefully(&mut guard, stream, rbuf).await;
            }
            return;
        }

        // Read more: an idle connection may wait `idle_timeout`; a started
        // request must finish within `head_timeout` of its first byte, and
        // a new connection must send its first request within
        // `head_timeout` of its accept.
        //
        // Between two requests of a connection (the keep-alive path) `now`
        // is the core's once-a-second clock pushed ahead by its precision:
        // the idle and linger deadlines taken from it are never early and
        // at most COARSE_CLOCK late, and so is `answered_at` (a drain waits
        // that much longer for a busy connection's next request). Reading
        // the clock and subtracting it from the deadline cost ~140
        // instructions a keep-alive request (clock_gettime and
        // Timespec::sub_timespec, callgrind). A head deadline needs the
        // clock: it is read then.
        let head_deadline = match request_started {
            Some(t) if !rbuf.is_empty() => Some(t + head_timeout),
            _ if guard.fresh => Some(accepted_at + head_timeout.min(idle_timeout)),
            _ => None,
        };
        let mut now = if head_deadline.is_some() {
            Instant::now()
        } else {
            core.coarse_now() + COARSE_CLOCK
        };
        if wrote {
            answered_at = now;
        }
        if core.is_shutting_down() {
            let now = Instant::now();
            let until = if !rbuf.is_empty() {
                // Part of a request: the rest is on its way.
                let head_deadline = request_started.map_or(now, |t| t + head_timeout);
                head_deadline.min(now + FRESH_CONNECTION_GRACE)
            } else if guard.fresh {
                core.drain_started().unwrap_or(now) + FRESH_CONNECTION_GRACE
            } else {
                answered_at + IDLE_RELEASE
            };
            let partial = !rbuf.is_empty();
            match drain_read(
                &mut stream,
                std::mem::take(&mut rbuf),
                until,
                &mut canceller,
            )
            .await
            {
                Read::Data(buf) => {
                    rbuf = buf;
                    readiness_stale = true;
                    continue 'conn;
                }
                Read::Closed => return,
                Read::Silent(buf) => {
                    if partial {
                        // A head timeout, shortened by the drain.
                        core.counters().timeouts.inc();
                    }
                    close_gracefully(&mut guard, stream, buf).await;
                    return;
                }
            }
        }
        let (deadline, mut wait) = match head_deadline {
            None => (now + idle_timeout, idle_timeout),
            Some(deadline) => match deadline.checked_duration_since(now) {
                Some(wait) => (deadline, wait),
                None => {
                    // A head deadline has passed, a request's or a new
                    // connection's: a byte that raced the timer does not
                    // save a slow head, and the cut-off counts like any
                    // other timeout.
                    core.counters().timeouts.inc();
                    return;
                }
            },
        };
        // Between requests (see IDLE_RELEASE) a busy connection lingers: it
        // reads with its buffers for up to IDLE_RELEASE. A quiet one frees
        // them and waits for readiness first.
        let mut linger = busy && rbuf.is_empty() && wait > IDLE_RELEASE;
        loop {
            if linger {
                if let Some(canceller) = canceller.as_mut() {
                    match linger_read(&mut stream, std::mem::take(&mut rbuf), canceller).await {
                        Linger::Data(buf) => {
                            rbuf = buf;
                            readiness_stale = true;
                            break;
                        }
                        Linger::Closed => return,
                        Linger::Silent => {
                            (linger, busy, readiness_stale) = (false, false, false);
                        }
                    }
                }
            }
            if !linger && rbuf.is_empty() && wait > IDLE_RELEASE {
                rbuf = Vec::new();
                wbuf = Vec::new();
                filled = false;
                let quiet_since = Instant::now();
                let ready = stream.readable(!readiness_stale);
                let rest = deadline.saturating_duration_since(quiet_since);
                let waited = monoio::select! {
                    biased;
                    waited = monoio::time::timeout(rest, ready) => Some(waited),
                    _ = draining(&core) => None,
                };
                match waited {
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(_))) => return,
                    Some(Err(_elapsed)) => {
                        core.counters().timeouts.inc();
                        return;
                    }
                    // The drain began: back to the top, where a draining
                    // connection looks for a request, or closes.
                    None => continue 'conn,
                }
                now = Instant::now();
                busy = !guard.fresh && now.saturating_duration_since(quiet_since) < IDLE_RELEASE;
                wait = deadline.saturating_duration_since(now);
            }
            if rbuf.capacity() == 0 {
                rbuf = Vec::with_capacity(BUF_SIZE);
            }
            grow(&mut rbuf, &limits, filled);
            let len = rbuf.len();
            let cap = rbuf.capacity();
            let limit = if linger { IDLE_RELEASE } else { wait };
            let limit = limit.max(Duration::from_millis(1));
            let got = if len == 0 {
                // Made in place and lent pinned: moving the read's future
                // (into `read_within`, then into a pin) cost two memcpy
                // calls a request (~58 instructions, callgrind).
                let read = std::pin::pin!(stream.read(rbuf.slice_mut(len..cap)));
                read_within(timer.as_mut(), now + limit, read).await
            } else {
                let read = stream.read(rbuf.slice_mut(len..cap));
                rest_of_request(&core, read, limit).await.ok()
            };
            match got {
                Some((Ok(0), _)) | Some((Err(_), _)) => return,
                Some((Ok(n), slice)) => {
                    rbuf = slice.into_inner();
                    readiness_stale = true;
                    filled = n == cap - len;
                    break;
                }
                None if linger => {
                    // Epoll (io_uring lingers in `linger_read`): a read
                    // still waiting has read nothing; its buffer went with
                    // it. Monoio saw the socket drained.
                    rbuf = Vec::new();
                    (linger, busy, readiness_stale) = (false, false, false);
                }
                None => {
                    // A slow client: cut off. The buffer went with the read.
                    core.counters().timeouts.inc();
                    return;
                }
            }
        }
    }
}

/// Makes room in the read buffer when less than 1 KiB is free, or when the
/// last read `filled` it, growing it up to what one request may need (the
/// parser refuses more).
///
/// A pipelining client's burst is larger than one buffer: 16 `/validate`
/// requests are ~9 KB. Read 4 KiB at a time, each burst took three reads
/// and three writes (the answers to each part go out before the next read),
/// and two of the reads ran under a timeout of their own (the rest of a
/// request part-way in). Doubled after a read that filled it, the buffer
/// takes a burst in one read; a quiet connection frees it (IDLE_RELEASE).
#[inline]
fn grow(rbuf: &mut Vec<u8>, limits: &http::Limits, filled: bool) {
    if filled || rbuf.capacity() - rbuf.len() < 1024 {
        let want = (rbuf.capacity() * 2).min(limits.max_head + limits.max_body + BUF_SIZE);
        rbuf.reserve(want.saturating_sub(rbuf.len()).max(1024));
    }
}

/// `read`, if it completes before `until`; bounded by the connection's one
/// timer, which it moves in place. What `monoio::time::timeout` does
/// (`read` polled first, dropped when the time is up), without a timer entry
/// made, registered and dropped, nor a clock read, per read: callgrind
/// counted ~400 instructions a keep-alive request for that (issue #15).
///
/// The timer is moved lazily: a keep-alive connection's deadline moves
/// later with every request, and moving it cost ~130 instructions a request
/// (`TimerEntry::reset` and the conversion of the deadline into ticks,
/// callgrind). A timer set earlier than `until` is left as it is; when it
/// fires before `until`, it is set to `until` then, and the read goes on.
/// A deadline earlier than the timer's (a head deadline after an idle one)
/// moves it at once, so a deadline is never late.
async fn read_within<F: Future>(
    mut timer: Pin<&mut monoio::time::Sleep>,
    until: Instant,
    mut read: Pin<&mut F>,
) -> Option<F::Output> {
    let until = monoio::time::Instant::from(until);
    if timer.deadline() > until || timer.is_elapsed() {
        timer.as_mut().reset(until);
    }
    std::future::poll_fn(|cx| {
        if let Poll::Ready(got) = read.as_mut().poll(cx) {
            return Poll::Ready(Some(got));
        }
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= until {
                return Poll::Ready(None);
            }
            // Fired at an earlier deadline: on to this read's.
            timer.as_mut().reset(until);
        }
        Poll::Pending
    })
    .await
}

/// The read of the rest of a request part-way in, for at most `limit`; if
/// the core begins to drain meanwhile, for at most
/// [`FRESH_CONNECTION_GRACE`] more. The read is never dropped while it
/// waits, only at the end (with io_uring a dropped read may have taken
/// bytes), so a drain shortens its deadline instead of restarting it.
async fn rest_of_request<F: Future>(
    core: &Core,
    read: F,
    limit: Duration,
) -> Result<F::Output, monoio::time::error::Elapsed> {
    let mut read = std::pin::pin!(read);
    let deadline = Instant::now() + limit;
    if !core.is_shutting_down() {
        monoio::select! {
            biased;
            got = monoio::time::timeout(limit, &mut read) => return got,
            _ = draining(core) => {}
        }
    }
    let rest = deadline
        .min(Instant::now() + FRESH_CONNECTION_GRACE)
        .saturating_duration_since(Instant::now());
    monoio::time::timeout(rest.max(Duration::from_millis(1)), read).await
}

/// Ready once the core has begun to drain. It registers no waker: the drain
/// wakes every connection's task through the waker registered at its start
/// (see [`Core::begin_shutdown`]).
fn draining(core: &Core) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |_| {
        if core.is_shutting_down() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// Lets the core's other tasks, and the readiness of their sockets, go
/// first: a sleep of [`PIPELINE_PAUSE`]. (A task that wakes itself instead
/// would run again at once: monoio puts a task woken while it runs at the
/// front of its queue.)
async fn yield_to_others() {
    monoio::time::sleep(PIPELINE_PAUSE).await
}

#[cold]
fn write_parse_error(core: &Core, e: ParseError, out: &mut Vec<u8>) {
    let date = core.date().get();
    let ctx = ResponseCtx {
        date: &date,
        keep_alive: false,
        head: false,
        closing: None,
    };
    core.counters().bad_requests.inc();
    http::response::write(
        out,
        &ctx,
        e.status(),
        Some(http::response::TEXT),
        b"",
        e.message().as_bytes(),
    );
}
