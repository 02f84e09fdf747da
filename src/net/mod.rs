//! Sockets: the SO_REUSEPORT listeners and the per-connection loop.
//!
//! The loop follows may_minihttp's pipelining shape: read whatever arrived,
//! answer every complete request in it in order into one output buffer, write
//! that buffer once, repeat. Buffers move into each read or write and come
//! back with the result (monoio's ownership model); both are reused while the
//! connection is busy, and freed when it falls silent (see `IDLE_RELEASE`).
//!
//! Owns: the listening sockets (SO_REUSEPORT, backlog, `TCP_NODELAY`), each
//! connection's buffers, its head and idle timeouts, and the answers to the
//! requests the parser refuses (400, 411, 413, 431). The connection cap is
//! checked at accept, in `cores`.
//!
//! Never imports: `cores`, `access`, a service or a store: a parsed request
//! goes to [`handlers::handle`], and only from there to the rest.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, CancelableAsyncReadRent, Canceller};
use monoio::net::TcpStream;

use crate::handlers;
use crate::http::{self, ParseError, Parsed, ResponseCtx};
use crate::state::Core;

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
const IDLE_RELEASE: Duration = Duration::from_secs(1);

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
/// however it ends; and keeps the count of connections that have not yet
/// sent a whole request ("fresh"), which a draining core waits for briefly.
struct ConnGuard {
    core: Rc<Core>,
    fresh: bool,
}

impl ConnGuard {
    fn first_request(&mut self) {
        if self.fresh {
            self.fresh = false;
            self.core.fresh_done();
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.first_request();
        self.core.conn_closed();
    }
}

/// Serves one connection until it closes, times out, or breaks the protocol.
/// The caller has already counted it in the core's open connections.
pub async fn serve_connection(core: Rc<Core>, stream: TcpStream, peer: SocketAddr) {
    // Counted as fresh by the accept loop already (before this task first
    // runs), so a drain cannot miss it.
    let mut guard = ConnGuard {
        core: core.clone(),
        fresh: true,
    };
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    let limits = core.limits();
    let head_timeout = core.config().server.head_timeout;
    let idle_timeout = core.config().server.idle_timeout;
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
    // Cancels the read of a busy connection gone silent, with io_uring only
    // (see `linger_read`; epoll drops it).
    let mut canceller = (core.driver() == crate::config::Driver::IoUring).then(Canceller::new);
    // When the first byte of the request being read arrived: the head (and
    // body) must be complete within `head_timeout` of it.
    let mut request_started: Option<Instant> = None;

    loop {
        // Answer every complete request in the buffer, in order.
        let mut consumed = 0;
        let mut close = false;
        // Requests answered into `wbuf` but not yet written: shutdown waits
        // for them.
        let mut handled = 0;
        if !rbuf.is_empty() && wbuf.capacity() == 0 {
            wbuf = Vec::with_capacity(BUF_SIZE);
        }
        while consumed < rbuf.len() {
            match http::parse(&rbuf[consumed..], &limits) {
                Ok(Parsed::Complete(req, len)) => {
                    guard.first_request();
                    consumed += len;
                    request_started = None;
                    core.request_started();
                    handled += 1;
                    let keep = handlers::handle(&core, &req, peer, &mut wbuf).await;
                    if !keep {
                        close = true;
                        break;
                    }
                }
                Ok(Parsed::Partial) => {
                    request_started.get_or_insert_with(Instant::now);
                    break;
                }
                Err(e) => {
                    write_parse_error(&core, e, &mut wbuf);
                    close = true;
                    break;
                }
            }
        }
        if consumed > 0 {
            rbuf.drain(..consumed);
        }
        if !wbuf.is_empty() {
            let (res, buf) = stream.write_all(wbuf).await;
            wbuf = buf;
            wbuf.clear();
            core.requests_finished(handled);
            if res.is_err() {
                return;
            }
        }
        // While draining, a connection that has not sent its first request
        // yet, or is part-way through one, still reads it (the drain waits
        // for fresh connections): returning here would close the socket
        // with the request unread, which the kernel answers with a reset.
        if close || (core.is_shutting_down() && !guard.fresh && rbuf.is_empty()) {
            return;
        }

        // Read more: an idle connection may wait `idle_timeout`; a started
        // request must finish within `head_timeout` of its first byte.
        let deadline = match request_started {
            Some(t) if !rbuf.is_empty() => t + head_timeout,
            _ => Instant::now() + idle_timeout,
        };
        let Some(mut wait) = deadline.checked_duration_since(Instant::now()) else {
            // Only a head deadline can have passed (the idle one is always
            // ahead): a byte that raced the timer does not save a slow head,
            // and the cut-off counts like any other timeout.
            core.counters().timeouts.inc();
            return;
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
                let quiet_since = Instant::now();
                let ready = stream.readable(!readiness_stale);
                let rest = deadline.saturating_duration_since(quiet_since);
                match monoio::time::timeout(rest, ready).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_elapsed) => {
                        core.counters().timeouts.inc();
                        return;
                    }
                }
                busy = !guard.fresh && quiet_since.elapsed() < IDLE_RELEASE;
                wait = deadline.saturating_duration_since(Instant::now());
            }
            if rbuf.capacity() == 0 {
                rbuf = Vec::with_capacity(BUF_SIZE);
            }
            if rbuf.capacity() - rbuf.len() < 1024 {
                // Grow up to what one request may need; the parser refuses more.
                let want = (rbuf.capacity() * 2).min(limits.max_head + limits.max_body + BUF_SIZE);
                rbuf.reserve(want.saturating_sub(rbuf.len()).max(1024));
            }
            let len = rbuf.len();
            let cap = rbuf.capacity();
            let read = stream.read(rbuf.slice_mut(len..cap));
            let limit = if linger { IDLE_RELEASE } else { wait };
            match monoio::time::timeout(limit.max(Duration::from_millis(1)), read).await {
                Ok((Ok(0), _)) | Ok((Err(_), _)) => return,
                Ok((Ok(_), slice)) => {
                    rbuf = slice.into_inner();
                    readiness_stale = true;
                    break;
                }
                Err(_elapsed) if linger => {
                    // Epoll (io_uring lingers in `linger_read`): a read
                    // still waiting has read nothing; its buffer went with
                    // it. Monoio saw the socket drained.
                    rbuf = Vec::new();
                    (linger, busy, readiness_stale) = (false, false, false);
                }
                Err(_elapsed) => {
                    // A slow client: cut off. The buffer went with the read.
                    core.counters().timeouts.inc();
                    return;
                }
            }
        }
    }
}

/// What [`linger_read`] got.
enum Linger {
    /// Bytes arrived (the buffer holds them).
    Data(Vec<u8>),
    /// Nothing for [`IDLE_RELEASE`]: the read was cancelled, its buffer
    /// freed.
    Silent,
    /// End of stream or a socket error.
    Closed,
}

/// A busy connection's read between requests with io_uring: into `buf`
/// (empty), for at most [`IDLE_RELEASE`]. A read dropped while waiting may
/// still complete in the kernel, and its bytes would be lost, so it is
/// cancelled and awaited instead. Epoll does without (see `serve_connection`):
/// there a waiting read has read nothing, and the cancellation costs a
/// hash-set insert and removal per read (callgrind: ~650 instructions, 6% of
/// a validation).
async fn linger_read(stream: &mut TcpStream, buf: Vec<u8>, canceller: &mut Canceller) -> Linger {
    let cap = buf.capacity();
    let read = stream.cancelable_read(buf.slice_mut(0..cap), canceller.handle());
    let mut read = std::pin::pin!(read);
    let (res, slice) = monoio::select! {
        biased;
        done = &mut read => done,
        _ = monoio::time::sleep(IDLE_RELEASE) => {
            *canceller = std::mem::take(canceller).cancel();
            read.await
        }
    };
    match res {
        Ok(0) => Linger::Closed,
        Ok(_) => Linger::Data(slice.into_inner()),
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Linger::Silent,
        Err(_) => Linger::Closed,
    }
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
