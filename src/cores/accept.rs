//! One core's accept loop and drain, and its once-a-second ticker.
//!
//! Owns: accepting (cancelable, so a drain takes back the accept in flight),
//! the connection cap at accept, stopping to listen one core at a time,
//! waiting for requests in flight on shutdown, and the tick (the `Date`
//! header, the watchdog heartbeat, the core's Redis figures). Part of the
//! composition root: only `cores` uses it.
//!
//! Never imports: `handlers`, `http`, `router`, a service or a store: it
//! reaches its core through `state` and hands each connection to `net`.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::state::{Core, Shared};

/// How long a draining core waits for just-accepted connections to send
/// their first request (normally one round trip away).
const FRESH_CONNECTION_GRACE: Duration = Duration::from_secs(1);

/// Accepts and serves connections until `stop` fires, then drains: stops
/// listening, waits for the requests in flight (up to
/// `server.shutdown_timeout`) and for just-accepted connections to send
/// their first one (up to [`FRESH_CONNECTION_GRACE`]).
pub(super) async fn serve(
    core: &Rc<Core>,
    shared: &Shared,
    listener: monoio::net::TcpListener,
    mut stop: oneshot::Receiver<()>,
) {
    let index = core.id();
    // Accepts are cancelable so that a drain can take back the one in flight
    // instead of dropping it. With io_uring, a dropped accept is cancelled,
    // but the kernel may have completed it already: monoio then discards the
    // result, and the accepted socket is neither served nor closed until the
    // process exits, when it is reset. With epoll a pending accept has taken
    // nothing. The cost is a hash-set insert and removal per accepted
    // connection (the canceller's registry), nothing per request.
    let canceller = monoio::io::Canceller::new();
    loop {
        let accept = listener.cancelable_accept(canceller.handle());
        let mut accept = std::pin::pin!(accept);
        let accepted = monoio::select! {
            accepted = &mut accept => accepted,
            _ = &mut stop => {
                // Cancel the accept and wait for its result: the kernel may
                // have completed it already, and that connection is served
                // like any other (the drain below waits for it).
                let _ = canceller.cancel();
                if let Ok((stream, peer)) = accept.await {
                    accept_connection(core, stream, peer);
                }
                break;
            }
        };
        match accepted {
            Ok((stream, peer)) => accept_connection(core, stream, peer),
            Err(e) => {
                // EMFILE and friends: log, back off briefly, keep serving.
                core.counters().accept_errors.inc();
                tracing::warn!(core = index, "accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    // Graceful shutdown: no new connections; finish what is in flight.
    core.begin_shutdown();
    stop_listening(shared, listener);
    let deadline = Instant::now() + shared.config().server.shutdown_timeout;
    let fresh_deadline = Instant::now() + FRESH_CONNECTION_GRACE;
    while (core.requests_in_flight() > 0
        || (core.fresh_connections() > 0 && Instant::now() < fresh_deadline))
        && Instant::now() < deadline
    {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if core.requests_in_flight() > 0 {
        tracing::warn!(
            core = index,
            in_flight = core.requests_in_flight(),
            "shutdown timeout: dropping requests in flight"
        );
    }
    // Returning drops the runtime with every idle connection task: their
    // sockets are closed.
}

/// Stops listening at once, and one core at a time.
///
/// `shutdown(SHUT_RD)` on a listening socket stops it synchronously, whatever
/// the driver (monoio's io_uring driver closes a socket asynchronously, at its
/// next submission). With `net.ipv4.tcp_migrate_req`, the kernel then hands
/// the connections waiting in its queues to another listener of the
/// SO_REUSEPORT group, the new process's on a restart, or one of this
/// process's cores that has not closed yet. The lock keeps two cores from
/// closing at the same moment, so that a connection is never handed to a
/// sibling listener that is closing too (which the kernel answers with a
/// reset, counted in TcpExt's TCPMigrateReqFailure).
fn stop_listening(shared: &Shared, listener: monoio::net::TcpListener) {
    use std::os::fd::AsRawFd;
    let _one_at_a_time = shared.listener_close_turn();
    // SAFETY: shutdown(2) on a descriptor this core owns and still holds.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RD) };
    drop(listener);
}

/// Serves an accepted connection, or closes it at once when the core is at
/// its connection cap (the others are untouched).
fn accept_connection(core: &Rc<Core>, stream: monoio::net::TcpStream, peer: SocketAddr) {
    if core.try_open_connection() {
        monoio::spawn(crate::net::serve_connection(core.clone(), stream, peer));
    } else {
        core.counters().refused_connections.inc();
        drop(stream);
    }
}

/// Re-renders the core's `Date` header value once a second.
pub(super) async fn date_ticker(core: Rc<Core>) {
    loop {
        core.date().refresh();
        let now = crate::clock::since_epoch();
        // Proof of life for the watchdog: this runs only if the loop turns.
        core.beat(now.as_secs());
        core.counters().redis.publish(&core.redis().stats());
        let to_next = Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()));
        monoio::time::sleep(to_next + Duration::from_millis(1)).await;
    }
}
