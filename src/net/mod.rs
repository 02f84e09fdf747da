//! Sockets: the SO_REUSEPORT listeners and the per-connection loop.
//!
//! The loop follows may_minihttp's pipelining shape: read whatever arrived,
//! answer every complete request in it in order into one output buffer, write
//! that buffer once, repeat. Buffers move into each read or write and come
//! back with the result (monoio's ownership model); both are reused for the
//! life of the connection.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::cores::Core;
use crate::handlers;
use crate::http::{self, ParseError, Parsed, ResponseCtx};

/// Listen backlog of each core's socket.
const BACKLOG: i32 = 4096;

/// Initial size of a connection's read and write buffers. They grow up to
/// the head + body limits when a request needs it.
const BUF_SIZE: usize = 4096;

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
    let limits = core.shared.limits;
    let head_timeout = core.shared.config.server.head_timeout;
    let idle_timeout = core.shared.config.server.idle_timeout;
    let mut rbuf: Vec<u8> = Vec::with_capacity(BUF_SIZE);
    let mut wbuf: Vec<u8> = Vec::with_capacity(BUF_SIZE);
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
        let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
            return;
        };
        if rbuf.capacity() - rbuf.len() < 1024 {
            // Grow up to what one request may need; the parser refuses more.
            let want = (rbuf.capacity() * 2).min(limits.max_head + limits.max_body + BUF_SIZE);
            rbuf.reserve(want.saturating_sub(rbuf.len()).max(1024));
        }
        let len = rbuf.len();
        let cap = rbuf.capacity();
        let read = stream.read(rbuf.slice_mut(len..cap));
        match monoio::time::timeout(wait.max(Duration::from_millis(1)), read).await {
            Ok((Ok(0), _)) | Ok((Err(_), _)) => return,
            Ok((Ok(_), slice)) => rbuf = slice.into_inner(),
            Err(_elapsed) => {
                // A slow client: cut off. The buffer went with the read.
                core.counters.timeouts.inc();
                return;
            }
        }
    }
}

#[cold]
fn write_parse_error(core: &Core, e: ParseError, out: &mut Vec<u8>) {
    let date = core.date.get();
    let ctx = ResponseCtx {
        date: &date,
        keep_alive: false,
        head: false,
        closing: None,
    };
    core.counters.bad_requests.inc();
    http::response::write(
        out,
        &ctx,
        e.status(),
        Some(http::response::TEXT),
        b"",
        e.message().as_bytes(),
    );
}
