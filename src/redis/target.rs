//! Where Redis is: [`RedisTarget`], parsed from a `redis://` URL, and the
//! handshake sent after every (re)connect.
//!
//! The URL is parsed by the `redis` crate's own connection-info parser
//! (`redis::parse_redis_url` and `IntoConnectionInfo`), which is compiled in
//! whatever the crate's features: it needs none of them, so the crate stays
//! at default-features off with `script` only (for the SHA1 of [`Script`]s).
//! Around it, tokend refuses what its client does not do (Unix sockets,
//! query parameters such as `?protocol=resp3`) and names the part that is
//! wrong where the crate's errors would not. `rediss://` asks for TLS (see
//! `tls`).
//!
//! A target may name its primary through Redis Sentinel instead
//! ([`RedisTarget::with_sentinels`]): the URL then gives the credentials and
//! database of the data nodes, and the sentinels where the primary is (see
//! `sentinel`).
//!
//! Owns: the target and its handshake, including the check that the server
//! is a primary (`ROLE`). Never imports anything of the crate outside
//! `redis`.
//!
//! [`Script`]: super::Script

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use redis::{ConnectionAddr, IntoConnectionInfo};

use super::error::RedisError;
use super::resp::Reply;
use super::sentinel::Sentinels;
use super::tls::RedisTls;

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
    /// Where to ask for the primary; `host` and `port` are then not used.
    sentinels: Option<Arc<Sentinels>>,
    /// Whether the handshake checks with `ROLE` that the server is a
    /// primary: true for data nodes, false for a sentinel itself.
    expect_primary: bool,
    /// TLS, for `rediss://`: on every connection, sentinels' included.
    tls: Option<Arc<RedisTls>>,
}

/// What `ROLE` said of a server that is not a primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Replica,
    Sentinel,
    Unknown,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Replica => "a replica",
            Role::Sentinel => "a sentinel",
            Role::Unknown => "not a primary",
        })
    }
}

impl RedisTarget {
    /// Parses a `redis://` URL. Username and password may be
    /// percent-encoded; the port defaults to 6379 and the database to 0.
    pub fn parse(url: &str) -> Result<RedisTarget, RedisError> {
        let (tls, rest) = match url.split_once("://") {
            Some(("redis", rest)) => (false, rest),
            Some(("rediss", rest)) => (true, rest),
            _ => {
                return Err(RedisError::InvalidUrl(
                    "the scheme must be redis:// (or rediss:// for TLS)",
                ))
            }
        };
        let mut target = Self::parse_plain(&["redis://", rest].concat())?;
        if tls {
            let system = RedisTls::new(None, None, None, None).map_err(|e| {
                tracing::warn!("redis: {e}");
                RedisError::InvalidUrl("rediss:// needs CA certificates (redis.tls_ca_file)")
            })?;
            target.set_tls(Some(Arc::new(system)));
        }
        Ok(target)
    }

    /// TLS as configured, when connections use it.
    pub(super) fn tls(&self) -> Option<&RedisTls> {
        self.tls.as_deref()
    }

    /// Encrypts (or not) every connection made to this target.
    pub(super) fn set_tls(&mut self, tls: Option<Arc<RedisTls>>) {
        self.tls = tls;
    }

    fn parse_plain(url: &str) -> Result<RedisTarget, RedisError> {
        let parsed = redis::parse_redis_url(url).ok_or(RedisError::InvalidUrl(
            "malformed URL (a port must be 1-65535, an IPv6 host in brackets)",
        ))?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(RedisError::InvalidUrl("query parameters are not supported"));
        }
        if !parsed.username().is_empty() && parsed.password().is_none() {
            return Err(RedisError::InvalidUrl(
                "a password must follow ':' (redis://:password@host)",
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(RedisError::InvalidUrl("the host is missing"));
        }
        if parsed.port() == Some(0) {
            return Err(RedisError::InvalidUrl("the port must be a number 1-65535"));
        }
        // The crate reads the database as an i64 from the path without its
        // slashes; tokend's SELECT takes a u32.
        let db = match parsed.path().trim_matches('/') {
            "" => 0,
            path => path
                .parse::<u32>()
                .map_err(|_| RedisError::InvalidUrl("the database must be a number"))?,
        };
        // What is left for the crate to refuse: a user or password that is
        // not UTF-8 once percent-decoded, and a wildcard host.
        let info = parsed.into_connection_info().map_err(|_| {
            RedisError::InvalidUrl(
                "the user or password is not UTF-8, or the host is a wildcard (0.0.0.0, ::)",
            )
        })?;
        let (host, port) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            _ => return Err(RedisError::InvalidUrl("only TCP is supported")),
        };
        let settings = info.redis_settings();
        Ok(RedisTarget {
            ip: host.parse().ok(),
            host,
            port,
            db,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            sentinels: None,
            expect_primary: true,
            tls: None,
        })
    }

    /// The target `[redis]` describes: `url`, and with `sentinels` the
    /// primary they name. The error names the key that is wrong.
    pub fn from_config(c: &crate::config::RedisConfig) -> Result<RedisTarget, String> {
        let tls_files = c.tls_ca_file.is_some()
            || c.tls_cert_file.is_some()
            || c.tls_key_file.is_some()
            || c.tls_server_name.is_some();
        let target = if c.url.starts_with("rediss://") && tls_files {
            // Parsed without the system's roots: the files replace them.
            let mut t = RedisTarget::parse(&c.url.replacen("rediss://", "redis://", 1))
                .map_err(|e| format!("redis.url: {e}"))?;
            let tls = RedisTls::new(
                c.tls_ca_file.as_deref(),
                c.tls_cert_file.as_deref(),
                c.tls_key_file.as_deref(),
                c.tls_server_name.as_deref(),
            )
            .map_err(|e| format!("redis TLS: {e}"))?;
            t.set_tls(Some(Arc::new(tls)));
            t
        } else if tls_files {
            return Err(
                "redis.tls_* is set but redis.url is not rediss://: use rediss:// for TLS".into(),
            );
        } else {
            RedisTarget::parse(&c.url).map_err(|e| format!("redis.url: {e}"))?
        };
        if c.sentinels.is_empty() {
            return Ok(target);
        }
        let sentinels = Sentinels::new(
            &c.sentinels,
            &c.sentinel_master,
            c.sentinel_username.as_deref(),
            c.sentinel_password.as_deref(),
        )
        .map_err(|e| format!("redis.sentinels: {e}"))?;
        Ok(target.with_sentinels(sentinels))
    }

    /// This target's primary found through `sentinels` (Redis Sentinel):
    /// every connection asks them where the primary is, and asks again on
    /// each reconnect. The URL's user, password and database still apply to
    /// the data nodes; its host and port are not used.
    pub fn with_sentinels(mut self, mut sentinels: Sentinels) -> RedisTarget {
        // The sentinels are reached as the data nodes are: with TLS or not.
        sentinels.set_tls(self.tls.clone());
        self.sentinels = Some(Arc::new(sentinels));
        self
    }

    /// The sentinels, when the primary is found through them.
    pub fn sentinels(&self) -> Option<&Sentinels> {
        self.sentinels.as_deref()
    }

    /// A direct target for the data node at `host:port` (the primary the
    /// sentinels named), with this target's credentials and database.
    pub(super) fn at(&self, host: &str, port: u16) -> RedisTarget {
        RedisTarget {
            host: host.to_owned(),
            ip: host.parse().ok(),
            port,
            db: self.db,
            username: self.username.clone(),
            password: self.password.clone(),
            sentinels: None,
            expect_primary: true,
            tls: self.tls.clone(),
        }
    }

    /// A direct target for a sentinel: its own credentials, no database, no
    /// `ROLE` check.
    pub(super) fn sentinel_node(
        host: &str,
        port: u16,
        username: Option<&str>,
        password: Option<&str>,
    ) -> RedisTarget {
        RedisTarget {
            host: host.to_owned(),
            ip: host.parse().ok(),
            port,
            db: 0,
            username: username.map(str::to_owned),
            password: password.map(str::to_owned),
            sentinels: None,
            expect_primary: false,
            tls: None,
        }
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

    /// The address when the host is an IP literal: no lookup needed.
    pub(super) fn literal_addr(&self) -> Option<SocketAddr> {
        self.ip.map(|ip| SocketAddr::new(ip, self.port))
    }

    /// Resolves the address; blocking (DNS) unless the host is an IP literal.
    pub(super) fn socket_addrs_blocking(&self) -> io::Result<Vec<SocketAddr>> {
        if let Some(addr) = self.literal_addr() {
            return Ok(vec![addr]);
        }
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }

    /// The commands sent after every (re)connect, before anything else. The
    /// `PING` makes "connected" mean "Redis answers": a frozen Redis whose
    /// kernel still accepts TCP connections is not taken for up. The final
    /// `ROLE` (data nodes only; read with [`check_role`]) makes it mean "a
    /// primary answers": a replica, or a demoted primary after a failover,
    /// would refuse every write.
    pub(super) fn handshake_commands(&self) -> Vec<redis::Cmd> {
        let mut cmds = Vec::with_capacity(4);
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
        if self.expect_primary {
            cmds.push(redis::cmd("ROLE"));
        }
        cmds
    }

    /// Whether the last handshake reply is `ROLE`'s (to be read with
    /// [`check_role`]).
    pub(super) fn checks_role(&self) -> bool {
        self.expect_primary
    }
}

/// Reads `ROLE`'s reply: `Ok` for a primary. A user whose ACL forbids `ROLE`
/// (or a server without it) gets the benefit of the doubt: a replica would
/// still refuse writes with `READONLY`, which ends the connection (see
/// `conn`).
pub(super) fn check_role(reply: &Reply) -> Result<(), Role> {
    let first = match reply {
        Reply::Error(msg) => {
            tracing::debug!("redis: ROLE refused ({msg}); cannot confirm the server is a primary");
            return Ok(());
        }
        Reply::Array(items) => items.first().and_then(Reply::as_bytes),
        _ => None,
    };
    match first {
        Some(b"master") => Ok(()),
        Some(b"slave") | Some(b"replica") => Err(Role::Replica),
        Some(b"sentinel") => Err(Role::Sentinel),
        _ => Err(Role::Unknown),
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sentinels {
            Some(s) => write!(f, "the primary of {s}, database {}", self.db),
            None if self.tls.is_some() => {
                write!(f, "rediss://{}/{}", self.display_addr(), self.db)
            }
            None => write!(f, "redis://{}/{}", self.display_addr(), self.db),
        }
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
            .field("sentinels", &self.sentinels)
            .field("tls", &self.tls)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_urls() {
        // The tests' own Redis (TOKEND_TEST_REDIS_URL) parses.
        RedisTarget::parse(&crate::testing::redis_url()).unwrap();

        // A documentation address (RFC 5737); the port defaults to 6379.
        let t = RedisTarget::parse("redis://192.0.2.7/0").unwrap();
        assert_eq!((t.host(), t.port(), t.db()), ("192.0.2.7", 6379, 0));
        assert_eq!(t.literal_addr(), Some(([192, 0, 2, 7], 6379).into()));
        assert_eq!(t.handshake_commands().len(), 2, "PING, ROLE");

        let t = RedisTarget::parse("redis://:s%40cret@redis.internal/3").unwrap();
        assert_eq!((t.host(), t.port(), t.db()), ("redis.internal", 6379, 3));
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        assert_eq!(t.username, None);
        let hs = t.handshake_commands();
        assert_eq!(hs.len(), 4, "AUTH, SELECT, PING, ROLE");
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
            "redis://",
            "redis://host:0",
            "redis://host:99999",
            "redis://host:port",
            "redis://host/db",
            "redis://password@host",
            "redis://host/0?timeout=1",
            "redis://[::1",
            // Refused by the crate's parser: a wildcard host.
            "redis://0.0.0.0:6379",
            // What the crate accepts but this client does not do.
            "unix:///run/redis.sock",
            "valkey://localhost",
            "redis://localhost/?protocol=resp3",
            "redis://localhost/0#insecure",
        ] {
            assert!(
                matches!(RedisTarget::parse(bad), Err(RedisError::InvalidUrl(_))),
                "{bad}"
            );
        }
    }
}
