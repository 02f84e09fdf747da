//! A connection's reads and writes, each bounded in time: the write that
//! gives up on a client that stops reading, the reads with a deadline (and
//! their cancellation, so that no buffer is held past it), and the
//! lingering close that lets a client read its last answer.
//!
//! Owns: every read and write `net` makes on an accepted stream after the
//! request loop's first read. Never imports: anything above `net`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelableAsyncReadRent, Canceller};
use monoio::net::TcpStream;

use super::*;

/// Writes all of `buf`; returns it, emptied, or `None` when the connection
/// must close: a write error, or no write progress for `write_timeout`
/// (counted in `tokend_write_timeouts_total`), [`DRAIN_WRITE_STALL`] at most
/// once the core drains, so that a client that does not read holds up no
/// drain.
///
/// The usual write, to a client that reads its answers, completes at its
/// first poll with epoll (the socket has room: one send(2)) and touches no
/// timer. A write that has to wait arms `stall`, the connection's one timer.
/// With io_uring every write waits (its completion comes at the next turn of
/// the loop), so arming is cheap: the deadline comes from the core's clock
/// read once a second ([`Core::coarse_now`]), so `write_timeout` is kept to
/// the second (a connection is closed between `write_timeout` and a second
/// more after its last progress); the timer is moved only when that clock
/// moved (in place, without touching the timer wheel) and polled only when
/// moved or woken; no clock is read per write. Each wake-up polls the write
/// once (callgrind, io_uring: a poll of a send is ~140 instructions).
pub(super) async fn write_out(
    core: &Core,
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
    mut stall: Pin<&mut monoio::time::Sleep>,
    write_timeout: Duration,
) -> Option<Vec<u8>> {
    let len = buf.len();
    let mut written = 0;
    while written < len {
        // Made in place: a future moved into a pin is one memcpy call more.
        let mut write = std::pin::pin!(stream.write(buf.slice(written..len)));
        // Whether `stall` was armed for this write, and whether the drain
        // has shortened it.
        let (mut armed, mut drain_seen) = (false, false);
        let done = std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = write.as_mut().poll(cx) {
                return Poll::Ready(Some(done));
            }
            // Woken, but not by the write: perhaps by the timer.
            let mut look = armed;
            if !armed {
                armed = true;
                let deadline = core.coarse_now() + write_timeout + COARSE_CLOCK;
                let deadline = monoio::time::Instant::from(deadline);
                // A timer moved or fired must be polled to (re)register
                // this task; one merely left as it was still has it.
                if stall.deadline() != deadline || stall.is_elapsed() {
                    stall.as_mut().reset(deadline);
                    look = true;
                }
            }
            if !drain_seen && core.is_shutting_down() {
                drain_seen = true;
                let sooner = monoio::time::Instant::now() + DRAIN_WRITE_STALL;
                if sooner < stall.deadline() {
                    stall.as_mut().reset(sooner);
                }
                look = true;
            }
            if look && stall.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        let Some((res, slice)) = done else {
            core.counters().write_timeouts.inc();
            return None;
        };
        buf = slice.into_inner();
        match res {
            Ok(0) => return None,
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.clear();
    Some(buf)
}

/// What a bounded read got.
pub(super) enum Read {
    /// Bytes arrived (the buffer holds them).
    Data(Vec<u8>),
    /// Nothing in time: the buffer given, or an empty one (a read dropped
    /// while waiting took it along).
    Silent(Vec<u8>),
    /// End of stream or a socket error.
    Closed,
}

/// What [`linger_read`] got.
pub(super) enum Linger {
    /// Bytes arrived (the buffer holds them).
    Data(Vec<u8>),
    /// Nothing for [`IDLE_RELEASE`]: the read was cancelled, its buffer
    /// freed.
    Silent,
    /// End of stream or a socket error.
    Closed,
}

/// A busy connection's read between requests with io_uring: into `buf`
/// (empty), for at most [`IDLE_RELEASE`], cancelled and awaited if nothing
/// comes (see [`cancelable_read`], its general form for the drain, kept
/// apart: this one is on io_uring's hot path, and the general one's extra
/// state costs ~40 instructions a request).
pub(super) async fn linger_read(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    canceller: &mut Canceller,
) -> Linger {
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

/// A read into `buf` (after what it holds) for at most `limit`, with
/// io_uring. A read dropped while waiting may still complete in the kernel,
/// and its bytes would be lost, so it is cancelled and awaited instead. Epoll
/// does without (see `serve_connection`): there a waiting read has read
/// nothing, and the cancellation costs a hash-set insert and removal per read
/// (callgrind: ~650 instructions, 6% of a validation).
pub(super) async fn cancelable_read(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    limit: Duration,
    canceller: &mut Canceller,
) -> Read {
    let (len, cap) = (buf.len(), buf.capacity());
    let read = stream.cancelable_read(buf.slice_mut(len..cap), canceller.handle());
    let mut read = std::pin::pin!(read);
    let (res, slice) = monoio::select! {
        biased;
        done = &mut read => done,
        _ = monoio::time::sleep(limit) => {
            *canceller = std::mem::take(canceller).cancel();
            read.await
        }
    };
    match res {
        Ok(0) => Read::Closed,
        Ok(_) => Read::Data(slice.into_inner()),
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Read::Silent(slice.into_inner()),
        Err(_) => Read::Closed,
    }
}

/// A read for at most `limit`, with either driver (see [`cancelable_read`]).
pub(super) async fn read_for(
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
    limit: Duration,
    canceller: &mut Option<Canceller>,
) -> Read {
    if buf.capacity() == 0 {
        buf = Vec::with_capacity(BUF_SIZE);
    }
    if buf.capacity() == buf.len() {
        buf.reserve(BUF_SIZE);
    }
    if let Some(canceller) = canceller.as_mut() {
        return cancelable_read(stream, buf, limit, canceller).await;
    }
    let (len, cap) = (buf.len(), buf.capacity());
    let read = stream.read(buf.slice_mut(len..cap));
    // `timeout_at`, not `timeout`: the connection loop's hot read is then
    // the one caller of `timeout` for this future type, and stays inlined
    // (callgrind: ~40 instructions per request otherwise).
    let deadline = Instant::now() + limit.max(Duration::from_millis(1));
    match monoio::time::timeout_at(deadline.into(), read).await {
        Ok((Ok(0), _)) | Ok((Err(_), _)) => Read::Closed,
        Ok((Ok(_), slice)) => Read::Data(slice.into_inner()),
        Err(_elapsed) => Read::Silent(Vec::new()),
    }
}

/// While draining: waits until `until` for bytes on their way (the rest of
/// a request, a first request, the next of a stream), then looks once more
/// for bytes already in the socket buffer; `Silent` when there are none: the
/// connection is idle.
pub(super) async fn drain_read(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    until: Instant,
    canceller: &mut Option<Canceller>,
) -> Read {
    let wait = until.saturating_duration_since(Instant::now());
    let buf = if wait.is_zero() {
        buf
    } else {
        match read_for(stream, buf, wait, canceller).await {
            Read::Silent(buf) => buf,
            other => return other,
        }
    };
    if !readable_now(stream) {
        return Read::Silent(buf);
    }
    // Bytes (or the end of the stream) are there: the read completes at
    // once; the bound only guards against a surprise.
    read_for(stream, buf, FRESH_CONNECTION_GRACE, canceller).await
}

/// Whether the socket has bytes to read (or its end, or an error), now:
/// poll(2) with a zero timeout.
pub(super) fn readable_now(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd that lives across the call, with a zero
    // timeout; the descriptor is this connection's own, open.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

/// Closes a connection after its last answer so that the answer reaches
/// the client whatever the client is still sending (nginx's lingering
/// close). Closing a socket with unread bytes in it makes the kernel send a
/// reset, and a reset can destroy the answer before the client reads it (a
/// client that sends a whole 70 KB body before reading got `ECONNRESET`
/// instead of its 413). So the FIN goes out first (`shutdown(SHUT_WR)`), then
/// what the client sends is read and thrown away until its own FIN,
/// [`LINGER_BYTES`] or [`LINGER_TIMEOUT`], whichever comes first; only then
/// is the socket closed. A draining core does not wait for this.
pub(super) async fn close_gracefully(
    guard: &mut ConnGuard,
    mut stream: TcpStream,
    mut buf: Vec<u8>,
) {
    guard.closing();
    if stream.shutdown().await.is_err() {
        return;
    }
    let until = Instant::now() + LINGER_TIMEOUT;
    buf.clear();
    if buf.capacity() < BUF_SIZE {
        buf = Vec::with_capacity(BUF_SIZE);
    }
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        let cap = buf.capacity();
        let read = stream.read(buf.slice_mut(0..cap));
        // `timeout_at`: see `read_for`.
        match monoio::time::timeout_at(until.into(), read).await {
            Ok((Ok(n), slice)) if n > 0 => {
                discarded += n;
                buf = slice.into_inner();
                buf.clear();
            }
            // The client's FIN, an error, or the time is up.
            _ => return,
        }
    }
}
