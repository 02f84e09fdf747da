//! The per-core pipelined Redis connection: [`RedisConn`], and the
//! [`CommandWriter`] that encodes commands straight into its write buffer.
//!
//! Each worker core owns one [`RedisConn`] (shared on the core through `Rc`,
//! never across threads). Every request on the core that needs Redis calls
//! [`RedisConn::query`] (or one of its siblings); the path of a command is:
//!
//! 1. `enqueue`: the command is encoded straight into the connection's shared
//!    write buffer and a waiting *slot* is pushed onto a FIFO. Nothing is
//!    written yet, and nothing is allocated in the steady state.
//! 2. the writer task (see `supervisor`) wakes up and writes everything
//!    queued since its last write in one `write_all` (one batch = one "round
//!    trip"), swapping the write buffer with a spare one so callers keep
//!    queueing meanwhile.
//! 3. the reader task decodes each complete reply (see `resp`) and hands it
//!    to the slot at the front of the FIFO — Redis answers in order, so FIFO
//!    order is the matching.
//! 4. the caller's future sees its slot filled and returns.
//!
//! A caller that gives up (timeout, or its request was dropped) marks its
//! slot *abandoned*; its reply is still consumed in order and thrown away, so
//! it can never be handed to the next caller.
//!
//! While disconnected, queries fail at once with [`RedisError::Unavailable`]:
//! validation fails closed and fast.
//!
//! Owns: the FIFO of waiting callers, their slots, the write buffer and the
//! counters. Never imports anything of the crate outside `redis`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use redis::ToRedisArgs;

/// The connection's counters, in the form the metrics page reads them
/// (defined by `metrics`, filled here).
pub use crate::metrics::RedisStats;

use super::error::RedisError;
use super::resp::{check_server_error, server_error, Reply};
use super::script::Script;
use super::supervisor::{supervise, Broken};
use super::target::RedisTarget;

/// Shortest time allowed for TCP connect + AUTH + SELECT (the query timeout is
/// usually ~100 ms, too short for a connection set-up across a network).
const CONNECT_TIMEOUT_MIN: Duration = Duration::from_secs(1);
/// Commands queued or awaiting a reply on one core. Bounds the memory a
/// stalled Redis can make us hold (abandoned slots stay queued until their
/// reply arrives); beyond it queries fail with `Unavailable`.
const MAX_IN_FLIGHT: usize = 65_536;
/// Initial capacity of the write buffers.
pub(super) const WRITE_BUF_INITIAL: usize = 4 * 1024;

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
    pub(super) fn new(buf: &'a mut Vec<u8>) -> CommandWriter<'a> {
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
        push_decimal(self.buf, nargs);
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
        push_decimal(self.buf, len);
        self.buf.extend_from_slice(b"\r\n");
        for part in parts {
            self.buf.extend_from_slice(part);
        }
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Appends one argument: `n` in decimal.
    pub fn arg_u64(&mut self, n: u64) -> &mut Self {
        let mut digits = itoa::Buffer::new();
        self.arg_parts(&[digits.format(n).as_bytes()])
    }

    /// True when exactly `commands` complete commands were written.
    pub(super) fn is_complete(&self, commands: usize) -> bool {
        self.valid && self.args_left == 0 && self.commands == commands
    }
}

/// Appends `n` in decimal (RESP lengths and counts).
fn push_decimal(buf: &mut Vec<u8>, n: usize) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn is_empty_cmd(cmd: &redis::Cmd) -> bool {
    // An empty `Cmd` would encode as `*0\r\n`, which Redis answers with
    // nothing at all: the FIFO would hand the next reply to the wrong caller.
    cmd.args_iter().len() == 0
}

#[derive(Default)]
pub(super) struct StatCells {
    pub(super) round_trips: Cell<u64>,
    commands: Cell<u64>,
    errors: Cell<u64>,
    pub(super) reconnects: Cell<u64>,
    pub(super) connect_failures: Cell<u64>,
    timeouts: Cell<u64>,
}

pub(super) fn bump(c: &Cell<u64>, by: u64) {
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
pub(super) struct State {
    /// Commands queued since the writer last took the buffer.
    pub(super) wbuf: Vec<u8>,
    /// Callers waiting for replies, in the order their commands were queued.
    fifo: VecDeque<Entry>,
    /// Commands queued or awaiting a reply (bounded by `MAX_IN_FLIGHT`).
    pub(super) in_flight: usize,
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

/// What a [`RedisConn`] shares with its background task (see `supervisor`).
pub(super) struct Shared {
    pub(super) target: RedisTarget,
    /// `redis.timeout`: how long a caller waits for its reply.
    pub(super) timeout: Duration,
    /// Whether the background task has a working connection.
    pub(super) connected: Cell<bool>,
    /// Set when the last `RedisConn` handle is dropped: the tasks stop.
    pub(super) closed: Cell<bool>,
    /// Replies decoded on the current connection, for the stall watchdog.
    pub(super) replies_seen: Cell<u64>,
    pub(super) stats: StatCells,
    pub(super) state: RefCell<State>,
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
    pub(super) fn deliver(&self, reply: Reply) -> Result<(), Broken> {
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
    pub(super) fn fail_all(&self) {
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
    pub(super) fn poll_work(&self, cx: &mut Context<'_>) -> Poll<bool> {
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

    pub(super) fn connect_timeout(&self) -> Duration {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(name: &str) -> redis::Cmd {
        redis::cmd(name)
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

    /// Lengths, counts and `arg_u64` are written by `itoa`: the bytes are
    /// the decimal digits, from 0 to `u64::MAX`.
    #[test]
    fn decimal_formatting() {
        for n in [0u64, 7, 10, 99, 100, 123_456_789, u64::MAX] {
            let digits = n.to_string();
            let mut buf = Vec::new();
            let mut w = CommandWriter::new(&mut buf);
            w.command(1).arg_u64(n);
            assert!(w.is_complete(1));
            let expect = format!("*1\r\n${}\r\n{digits}\r\n", digits.len());
            assert_eq!(buf, expect.as_bytes(), "{n}");
        }
        // Counts of ten and more.
        let mut buf = Vec::new();
        let mut w = CommandWriter::new(&mut buf);
        w.command(12);
        assert!(buf.starts_with(b"*12\r\n"));
    }
}
