//! Redis Sentinel: where the primary is.
//!
//! With `redis.sentinels` set, no connection is opened to a fixed address.
//! Each (re)connect follows Redis's own client guidelines for Sentinel
//! (<https://redis.io/docs/latest/develop/reference/sentinel-clients/>):
//!
//! 1. ask the sentinels in turn `SENTINEL GET-MASTER-ADDR-BY-NAME <name>`,
//!    and take the first answer (a sentinel that does not answer, or
//!    answers with an error, is skipped; one that answered is asked first
//!    next time);
//! 2. connect to the address it names, and confirm with `ROLE` that it is a
//!    primary (the handshake of every data connection, see `target`): a
//!    sentinel that has not yet noticed a failover can name a demoted one;
//! 3. on any error, reconnect from step 1. After a failover the old
//!    primary is gone (its connections break) or demoted (Sentinel kills
//!    its clients' connections, and a write on it is refused with
//!    `READONLY`, which ends the connection too, see `conn`), so every
//!    connection finds the new primary by itself. No `+switch-master`
//!    subscription is needed for that: it would only save the first failed
//!    command.
//!
//! This file holds what both clients share: the sentinels' addresses and
//! credentials, the question and the reading of its answer, and the
//! blocking walk over the sentinels. The asynchronous walk of the per-core
//! connections is in `supervisor`, beside the rest of their connect.
//!
//! Owns: the sentinel list and the reading of their answers. Never imports
//! anything of the crate outside `redis`.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::blocking::BlockingRedis;
use super::error::RedisError;
use super::resp::Reply;
use super::target::{RedisTarget, Role};

/// The sentinels that know where the primary is, and the name they know it
/// by.
pub struct Sentinels {
    nodes: Vec<RedisTarget>,
    master: String,
    /// The sentinel that answered last: asked first next time.
    first: AtomicUsize,
}

impl PartialEq for Sentinels {
    fn eq(&self, other: &Sentinels) -> bool {
        self.nodes == other.nodes && self.master == other.master
    }
}

impl Eq for Sentinels {}

impl fmt::Debug for Sentinels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sentinels")
            .field("nodes", &self.nodes)
            .field("master", &self.master)
            .finish()
    }
}

impl fmt::Display for Sentinels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' (sentinels ", self.master)?;
        for (i, n) in self.nodes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&n.display_addr())?;
        }
        f.write_str(")")
    }
}

/// Why no primary could be found (for logs and start-up errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocateError {
    /// No sentinel answered the question.
    NoSentinel,
    /// Every sentinel that answered said it does not know the name.
    UnknownMaster,
    /// A sentinel answered something that is not an address.
    Malformed,
}

impl fmt::Display for LocateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LocateError::NoSentinel => "no sentinel answered",
            LocateError::UnknownMaster => "no sentinel knows this master name",
            LocateError::Malformed => "a sentinel answered with something that is not an address",
        })
    }
}

/// Why a connection could not be made to a primary, in full (for start-up,
/// where the first problem is reported and may be fatal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The sentinels could not name a primary.
    Locate(LocateError),
    /// The server reached is not a primary (`addr`, what it is).
    NotPrimary(String, Role),
    /// The server (or the primary the sentinels named) did not answer or
    /// refused the handshake.
    Unreachable(String, RedisError),
    /// TLS failed with the server at `addr`: its certificate does not
    /// match or chain to the CA, or it refused ours (the reason).
    Tls(String, String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Locate(e) => write!(f, "{e}"),
            ConnectError::NotPrimary(addr, role) => {
                write!(f, "{addr} is {role}, not a primary")
            }
            ConnectError::Unreachable(addr, e) => write!(f, "{addr}: {e}"),
            ConnectError::Tls(addr, why) => write!(f, "{addr}: {why}"),
        }
    }
}

impl ConnectError {
    /// Whether this is a configuration mistake rather than an outage: no
    /// sentinel answers, none knows the name, the server is not a primary,
    /// or TLS with it fails. Start-up refuses these; an unreachable primary
    /// is waited for.
    pub fn is_misconfiguration(&self) -> bool {
        !matches!(self, ConnectError::Unreachable(..))
    }
}

impl Sentinels {
    /// `addrs` are `host:port` (`[v6]:port`; the port defaults to 26379);
    /// `username` and `password` are the sentinels' own (`requirepass` or
    /// an ACL user of the sentinels), not the data nodes'.
    pub fn new(
        addrs: &[String],
        master: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Sentinels, RedisError> {
        if addrs.is_empty() {
            return Err(RedisError::InvalidSentinel(
                "at least one sentinel is needed",
            ));
        }
        if master.is_empty() || master.chars().any(char::is_whitespace) {
            return Err(RedisError::InvalidSentinel(
                "the sentinel master name must be one word",
            ));
        }
        let nodes = addrs
            .iter()
            .map(|a| {
                let (host, port) = split_host_port(a.trim())?;
                Ok(RedisTarget::sentinel_node(host, port, username, password))
            })
            .collect::<Result<Vec<_>, RedisError>>()?;
        Ok(Sentinels {
            nodes,
            master: master.to_owned(),
            first: AtomicUsize::new(0),
        })
    }

    /// How many sentinels there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: [`new`](Self::new) refuses an empty list.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The sentinels, in the order to ask them: the last one that answered
    /// first.
    pub(super) fn in_order(&self) -> impl Iterator<Item = (usize, &RedisTarget)> {
        let n = self.nodes.len();
        let first = self.first.load(Ordering::Relaxed) % n;
        (0..n).map(move |k| {
            let i = (first + k) % n;
            (i, &self.nodes[i])
        })
    }

    /// Reaches every sentinel with `tls` (or without TLS).
    pub(super) fn set_tls(&mut self, tls: Option<std::sync::Arc<super::tls::RedisTls>>) {
        for n in &mut self.nodes {
            n.set_tls(tls.clone());
        }
    }

    /// Sentinel `i` (of [`in_order`](Self::in_order)).
    pub(super) fn node(&self, i: usize) -> &RedisTarget {
        &self.nodes[i % self.nodes.len()]
    }

    /// Remembers that sentinel `i` answered.
    pub(super) fn answered(&self, i: usize) {
        self.first.store(i, Ordering::Relaxed);
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME <master>`.
    pub(super) fn question(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("GET-MASTER-ADDR-BY-NAME").arg(self.master.as_str());
        cmd
    }

    /// Walks the sentinels (blocking, each within `timeout`) and returns the
    /// primary they name.
    pub(super) fn locate_blocking(&self, timeout: Duration) -> Result<(String, u16), LocateError> {
        let mut unknown = false;
        for (i, node) in self.in_order() {
            let answer = BlockingRedis::connect_direct(node, timeout)
                .map_err(|_| ())
                .and_then(|mut c| c.query(&self.question()).map_err(|_| ()));
            match answer.map(|r| read_answer(&r)) {
                Ok(Ok(addr)) => {
                    self.answered(i);
                    return Ok(addr);
                }
                Ok(Err(LocateError::UnknownMaster)) => unknown = true,
                Ok(Err(e)) => {
                    tracing::warn!("redis: sentinel {}: {e}", node.display_addr());
                }
                Err(()) => {
                    tracing::debug!("redis: sentinel {} did not answer", node.display_addr());
                }
            }
        }
        Err(if unknown {
            LocateError::UnknownMaster
        } else {
            LocateError::NoSentinel
        })
    }
}

/// Reads the answer to [`Sentinels::question`]: `[host, port]`, or nil for a
/// name the sentinel does not know.
pub(super) fn read_answer(reply: &Reply) -> Result<(String, u16), LocateError> {
    match reply {
        Reply::Nil => Err(LocateError::UnknownMaster),
        Reply::Array(items) if items.len() == 2 => {
            let host = items[0].as_str().filter(|h| !h.is_empty());
            let port = items[1].as_str().and_then(|p| p.parse::<u16>().ok());
            match (host, port) {
                (Some(h), Some(p)) if p != 0 => Ok((h.to_owned(), p)),
                _ => Err(LocateError::Malformed),
            }
        }
        _ => Err(LocateError::Malformed),
    }
}

/// `host:port`, `[v6]:port`, or a host alone (port 26379).
fn split_host_port(s: &str) -> Result<(&str, u16), RedisError> {
    const BAD: RedisError =
        RedisError::InvalidSentinel("a sentinel address must be host:port (IPv6 as [::1]:port)");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(BAD)?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or(BAD)?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => return Err(BAD),
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(BAD);
    }
    let port = match port {
        None => 26379,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(BAD),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_addresses() {
        let s = Sentinels::new(
            &[
                "10.0.0.1:26379".into(),
                " sentinel-b ".into(),
                "[::1]:26380".into(),
            ],
            "mymaster",
            None,
            Some("pw"),
        )
        .unwrap();
        let addrs: Vec<String> = s.in_order().map(|(_, n)| n.display_addr()).collect();
        assert_eq!(addrs, ["10.0.0.1:26379", "sentinel-b:26379", "[::1]:26380"]);
        // The one that answered is asked first next time.
        s.answered(2);
        assert_eq!(s.in_order().next().unwrap().0, 2);
        assert_eq!(s.in_order().nth(1).unwrap().0, 0);
        // The password never shows.
        let shown = format!("{s} {s:?}");
        assert!(!shown.contains("pw"), "{shown}");
        assert!(shown.contains("'mymaster'"), "{shown}");

        for bad in [
            "",
            "host:0",
            "host:x",
            "::1:26379",
            "[::1",
            "[::1]x",
            "a@b:1",
        ] {
            assert!(
                Sentinels::new(&[bad.into()], "m", None, None).is_err(),
                "{bad:?}"
            );
        }
        assert!(Sentinels::new(&[], "m", None, None).is_err());
        assert!(Sentinels::new(&["h:1".into()], "", None, None).is_err());
        assert!(Sentinels::new(&["h:1".into()], "a b", None, None).is_err());
    }

    #[test]
    fn sentinel_answers() {
        let bulk = |s: &str| Reply::Bulk(s.as_bytes().to_vec().into());
        assert_eq!(
            read_answer(&Reply::Array(vec![bulk("127.0.0.1"), bulk("6380")])),
            Ok(("127.0.0.1".into(), 6380))
        );
        assert_eq!(read_answer(&Reply::Nil), Err(LocateError::UnknownMaster));
        for bad in [
            Reply::Array(vec![bulk("h"), bulk("0")]),
            Reply::Array(vec![bulk(""), bulk("1")]),
            Reply::Array(vec![bulk("h")]),
            Reply::Error("ERR".into()),
            Reply::Int(1),
        ] {
            assert_eq!(read_answer(&bad), Err(LocateError::Malformed), "{bad:?}");
        }
    }
}
