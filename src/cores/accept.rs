//! One core's accept loop and drain, and its once-a-second ticker.
//!
//! Owns: accepting (cancelable, so a drain takes back the accept in flight),
//! the connection cap at accept, stopping to listen one core at a time,
//! waiting on shutdown for the connections to answer what arrived, and the
//! tick (the `Date` header, the core's coarse clock, the watchdog
//! heartbeat, the core's Redis figures). Part of the composition root: only `cores` uses it.
//!
//! Never imports: `handlers`, `http`, `router`, a service or a store: it
//! reaches its core through `state` and hands each connection to `net`.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::state::{Core, Shared};

/// Accepts and serves connections until `stop` fires, then drains: stops
/// listening, wakes every connection, and waits (up to
/// `server.shutdown_timeout`) until each has answered what arrived and
/// closed, or is closing gracefully. Each connection's part of the drain is
/// bounded and its own (`net::serve_connection`): requests in flight are
/// finished, requests already received or waiting in the socket buffer are
/// read and answered with `Connection: close`, a just-accepted connection
/// gets [`crate::net::FRESH_CONNECTION_GRACE`] for its first request, an idle one
/// closes with a FIN, and a client that does not read holds up nothing.
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

    // Graceful shutdown: no new connections; every connection answers what
    // has arrived and closes. `begin_shutdown` wakes them all (the ones
    // waiting quietly for a request must look at once).
    core.begin_shutdown();
    stop_listening(shared, listener);
    let deadline = Instant::now() + shared.config().server.shutdown_timeout;
    while core.active_connections() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if core.active_connections() > 0 {
        tracing::warn!(
            core = index,
            in_flight = core.requests_in_flight(),
            connections = core.active_connections(),
            "shutdown timeout: closing connections that have not answered everything"
        );
    }
    // Returning drops the runtime with the connections still closing
    // gracefully (their answers written, their FIN sent): their sockets are
    // closed.
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

/// Re-renders the core's `Date` header value once a second, and reads the
/// core's coarse clock (`Core::coarse_now`).
pub(super) async fn date_ticker(core: Rc<Core>) {
    loop {
        core.date().refresh();
        core.tick_coarse_clock();
        let now = crate::clock::since_epoch();
        // Proof of life for the watchdog: this runs only if the loop turns.
        core.beat(now.as_secs());
        core.counters().redis.publish(&core.redis().stats());
        let to_next = Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()));
        monoio::time::sleep(to_next + Duration::from_millis(1)).await;
    }
}
