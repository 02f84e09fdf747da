//! The PostgreSQL pool (`r2d2` with `r2d2_postgres`'s manager over the
//! deadline connector of [`super::deadline`]), the
//! `SELECT 1` check, and one-off connections for CLI commands. Used from the
//! blocking pool, at start-up, on the control thread and by CLI commands: a
//! worker core's event loop never calls it.
//!
//! Every wait for PostgreSQL is bounded (issue #12, "a PostgreSQL that stops
//! answering"):
//!
//! - connecting: the TCP connect, start-up and authentication within
//!   `database.connect_timeout`; a checkout waits for a free connection as
//!   long at most (r2d2's `connection_timeout`);
//! - a statement: `database.statement_timeout` is PostgreSQL's
//!   `statement_timeout` on every connection, and tokend cuts a connection
//!   whose server stays silent for that long plus [`GRACE`] while an answer
//!   is owed ([`super::deadline`]): a frozen server or network never
//!   delivers its own cancellation;
//! - the health query of a checkout (r2d2_postgres's `simple_query("")`,
//!   under r2d2's `test_on_check_out`) is a statement like any other; an
//!   outage's start retires the idle connections ([`Watch::retire_idle`]),
//!   so that during it the query fails at once on them instead.
//!
//! What PostgreSQL's connections tell [`Health`] comes through r2d2's hooks
//! ([`Session`] on each new connection, [`Failures`] for each failed
//! connect or check) and through [`PgPool::get`] and [`PgConn`]'s drop.
//!
//! Once a connection fails that way, or a checkout times out for want of a
//! connection that answers, the pool counts PostgreSQL as unavailable
//! ([`Health`]): it logs that once, with the cause, and every later checkout
//! fails at once ([`StoreError::Unavailable`], which callers answer with
//! `503` and `Retry-After`), but one at a time, at most once per
//! [`PROBE_EVERY`], goes through to find out whether PostgreSQL is back. A
//! connection made or returned healthy ends the outage (logged once, with how
//! long it lasted). So a frozen database costs the first request at most
//! `max(connect_timeout, statement_timeout + GRACE)`, every other request
//! nothing but a `503`, and recovers by itself.
//!
//! Owns: how tokend connects to PostgreSQL (URL, timeouts,
//! `application_name`, pool size, the `statement_timeout` of its sessions),
//! whether PostgreSQL counts as available, the rate of log lines about it,
//! and [`StoreError`], whose messages never carry the URL's password.
//!
//! Never imports: `handlers`, `http`, `net`, `state`, `cores`, `redis` or any
//! service; of the crate it reads only its `[database]` configuration.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::config::{Host, SslMode, SslNegotiation};

use r2d2_postgres::PostgresConnectionManager;

use super::deadline::{Watch, Watched, RETIRED};
use super::pgtls::{split_tls_params, PgTls};
use crate::config::{redact_url, DatabaseConfig};

/// What tokend adds to `database.statement_timeout` before it cuts a silent
/// connection itself: time for the server's own cancellation to arrive, so
/// that a slow but live server keeps its connection and answers with its
/// error (a connection cut by tokend is dropped and made again).
pub const GRACE: Duration = Duration::from_secs(1);

/// While PostgreSQL is unavailable, the least time between the end of one
/// probe (a checkout let through to see whether it is back) and the next.
/// Bounds how long recovery may go unnoticed, and how much of the blocking
/// pool probing takes: one thread for at most one bounded wait per period.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Least time between two log lines of [`PgPool::log_failure`] (while
/// PostgreSQL is available: an outage is logged once, by [`Health`]).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Occurs when PostgreSQL cannot be reached or a query fails. Logged with its
/// cause; clients only ever see `server_error` / `temporarily_unavailable`.
/// Each message carries its whole cause (`postgres::Error`'s own text is
/// only its kind, "error communicating with the server"), so no variant has
/// a `source` to print twice.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Occurs when `database.url` does not parse.
    #[error("database.url is not a valid PostgreSQL URL ({url}): {}", chain(.error))]
    Url { url: String, error: postgres::Error },
    /// Occurs when the TLS asked for by `database.url` (`sslmode`,
    /// `sslrootcert`) cannot be set up: an unknown mode, a root certificate
    /// that cannot be read, TLS asked for over a Unix socket.
    #[error("database.url ({url}): {why}")]
    Tls { url: String, why: String },
    /// Occurs when a connection cannot be made, or made usable, within the
    /// configured bounds.
    #[error("cannot connect to PostgreSQL at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    /// Occurs when PostgreSQL counts as unavailable: a checkout refused at
    /// once during an outage, or one that found no connection that answers.
    #[error("PostgreSQL is unavailable: {cause}")]
    Unavailable { cause: String },
    /// Occurs when every connection stayed busy for the whole checkout
    /// timeout, PostgreSQL answering all along.
    #[error("no PostgreSQL connection came free within {}", humantime::format_duration(*.0))]
    Busy(Duration),
    /// Occurs when a query fails.
    #[error("PostgreSQL query failed: {}", chain(.0))]
    Query(postgres::Error),
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Query(e)
    }
}

/// An error and its sources, `: `-separated. `postgres::Error`'s own text
/// is only its kind ("error communicating with the server"); the cause that
/// an operator needs is in its sources.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}

/// Everything a connection is made with, from `[database]`.
#[derive(Debug, Clone)]
struct Settings {
    pg: postgres::Config,
    /// `database.url` with its password redacted, for messages.
    url: String,
    connect_timeout: Duration,
    statement_timeout: Duration,
    /// Whether connections go through [`Watched`] (not over a Unix socket).
    watched: bool,
    /// TLS, when `sslmode` asks for it (see `pgtls`).
    tls: Option<Arc<PgTls>>,
}

impl Settings {
    fn new(config: &DatabaseConfig) -> Result<Settings, StoreError> {
        let url = redact_url(&config.url);
        // tokio-postgres knows neither verify-full nor sslrootcert: both are
        // read here, and the TLS is tokend's connector's (see `pgtls`).
        let (plain_url, mode, root) =
            split_tls_params(&config.url).map_err(|why| StoreError::Tls {
                url: url.clone(),
                why,
            })?;
        let tls = PgTls::new(mode, root.as_deref())
            .map_err(|why| StoreError::Tls {
                url: url.clone(),
                why,
            })?
            .map(Arc::new);
        let mut pg: postgres::Config = plain_url.parse().map_err(|error| StoreError::Url {
            url: url.clone(),
            error,
        })?;
        pg.connect_timeout(config.connect_timeout);
        pg.application_name("tokend");
        // Let the kernel drop a connection whose peer stopped acknowledging
        // (a dead host); a peer that acknowledges but never answers is the
        // watch's business.
        pg.tcp_user_timeout(config.statement_timeout + GRACE);
        // tokio-postgres starts the "TLS" of `Watched` only with a hostname:
        // with `hostaddr` alone, name each address as its host too.
        if pg.get_hosts().is_empty() {
            for addr in pg.get_hostaddrs().to_vec() {
                pg.host(&addr.to_string());
            }
        }
        let unix = pg.get_hosts().iter().any(|h| !matches!(h, Host::Tcp(_)));
        if unix && tls.is_some() {
            return Err(StoreError::Tls {
                url,
                why: "TLS (sslmode) is for TCP hosts, not a Unix socket".into(),
            });
        }
        if unix {
            // No hostname, no "TLS", no watched stream: plaintext as before,
            // bounded by the server's statement_timeout alone.
            pg.ssl_mode(SslMode::Disable);
        } else {
            pg.ssl_mode(SslMode::Require);
            pg.ssl_negotiation(SslNegotiation::Direct);
        }
        Ok(Settings {
            pg,
            url,
            connect_timeout: config.connect_timeout,
            statement_timeout: config.statement_timeout,
            watched: !unix,
            tls,
        })
    }

    /// How long the server may stay silent while a statement's answer is
    /// owed.
    fn patience(&self) -> Duration {
        self.statement_timeout + GRACE
    }

    /// The watch for this configuration's connections.
    fn watch(&self) -> Arc<Watch> {
        Watch::new(self.connect_timeout, self.patience())
    }

    /// One connection: made within `connect_timeout`, with the session's
    /// `statement_timeout` set, and every later wait under a watch.
    fn open(&self) -> Result<postgres::Client, StoreError> {
        let unreachable = |e: postgres::Error| StoreError::Unreachable {
            url: self.url.clone(),
            cause: chain(&e),
        };
        let mut client = self
            .pg
            .connect(Watched::new(self.watch()).with_tls(self.tls.clone()))
            .map_err(unreachable)?;
        set_statement_timeout(&mut client, self.statement_timeout).map_err(unreachable)?;
        Ok(client)
    }
}

/// Whether PostgreSQL counts as available, and the one log line at the
/// start and at the end of each outage (see the module header).
#[derive(Debug, Default)]
struct Health {
    /// Set during an outage; the only thing a checkout reads when all is
    /// well.
    down: AtomicBool,
    /// The pool's watch: an outage's start retires its idle connections.
    watch: Option<Arc<Watch>>,
    outage: Mutex<Outage>,
    log: Mutex<LogGate>,
}

/// The current outage, or the end of the last one.
#[derive(Debug, Default)]
struct Outage {
    since: Option<Instant>,
    /// When the last outage ended: a failure of an attempt begun before
    /// then is old news, not a new outage (a connect that was already
    /// waiting on the frozen server when another one got through).
    ended: Option<Instant>,
    /// The first failure's cause, given to every refused checkout.
    cause: String,
    /// A probe is in flight.
    probing: bool,
    /// No probe before this.
    next_probe: Option<Instant>,
    /// Checkouts refused at once.
    refused: u64,
}

/// What [`Health::admit`] decides for a checkout.
enum Admit {
    /// PostgreSQL is available.
    Go,
    /// An outage: this checkout goes through to see whether it is over.
    Probe,
    /// An outage: fail at once, with its cause.
    Refuse(String),
}

impl Health {
    fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    fn outage(&self) -> std::sync::MutexGuard<'_, Outage> {
        self.outage.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admit(&self) -> Admit {
        if !self.is_down() {
            return Admit::Go;
        }
        let mut o = self.outage();
        let now = Instant::now();
        if !o.probing && o.next_probe.is_none_or(|t| now >= t) {
            o.probing = true;
            return Admit::Probe;
        }
        o.refused += 1;
        Admit::Refuse(o.cause.clone())
    }

    /// The current outage's cause.
    fn cause(&self) -> String {
        self.outage().cause.clone()
    }

    fn end_probe(&self) {
        let mut o = self.outage();
        o.probing = false;
        o.next_probe = Some(Instant::now() + PROBE_EVERY);
    }

    /// An attempt begun at `started` found PostgreSQL not answering: starts
    /// an outage (logged once) unless one is on, or the attempt began
    /// before the last one ended.
    fn failure(&self, started: Instant, cause: &str) {
        let mut o = self.outage();
        if self.is_down() || o.ended.is_some_and(|end| started < end) {
            return;
        }
        let now = Instant::now();
        *o = Outage {
            since: Some(now),
            ended: o.ended,
            cause: cause.to_string(),
            probing: o.probing,
            next_probe: Some(now + PROBE_EVERY),
            refused: 0,
        };
        self.down.store(true, Ordering::Release);
        if let Some(watch) = &self.watch {
            watch.retire_idle();
        }
        tracing::error!(
            "PostgreSQL unavailable: {cause}; requests that need it answer 503 until it answers again"
        );
    }

    /// PostgreSQL answered: ends the outage (logged once) if one is on.
    fn success(&self) {
        if !self.is_down() {
            return;
        }
        let mut o = self.outage();
        if !self.is_down() {
            return;
        }
        o.ended = Some(Instant::now());
        self.down.store(false, Ordering::Release);
        let lasted = o.since.map(|t| t.elapsed()).unwrap_or_default();
        tracing::info!(
            refused = o.refused,
            "PostgreSQL answers again, {:.1} s after it was found unavailable",
            lasted.as_secs_f64()
        );
    }
}

/// At most one line per [`LOG_EVERY`]; counts the lines held back.
#[derive(Debug, Default)]
struct LogGate {
    next: Option<Instant>,
    held: u64,
}

impl LogGate {
    /// `Some(lines held back since the last one)` when a line may go out now.
    fn pass(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|t| now < t) {
            self.held += 1;
            return None;
        }
        self.next = Some(now + LOG_EVERY);
        Some(std::mem::take(&mut self.held))
    }
}

/// The pool's connection manager: r2d2_postgres's, with the deadline
/// connector (so every wait of a connection, its checkout's empty query
/// included, is under the pool's [`Watch`]).
type Manager = PostgresConnectionManager<Watched>;

/// r2d2's hook on each new connection: sets the session's
/// `statement_timeout`, and tells [`Health`] that PostgreSQL answered.
#[derive(Debug)]
struct Session {
    statement_timeout: Duration,
    health: Arc<Health>,
}

impl r2d2::CustomizeConnection<postgres::Client, postgres::Error> for Session {
    fn on_acquire(&self, client: &mut postgres::Client) -> Result<(), postgres::Error> {
        set_statement_timeout(client, self.statement_timeout)?;
        self.health.success();
        Ok(())
    }
}

/// r2d2's error handler: gets every failed connect, `SET` and checkout
/// check, and tells [`Health`] (r2d2's own `LoggingErrorHandler` would log
/// every failed attempt, several a second during an outage: the failures
/// are [`Health`]'s to log, once).
#[derive(Debug)]
struct Failures {
    health: Arc<Health>,
    /// The longest a failed attempt may have taken: r2d2 does not say when
    /// it began, and a failure of an attempt begun before the last outage
    /// ended is old news (see [`Health::failure`]).
    longest: Duration,
}

impl r2d2::HandleError<postgres::Error> for Failures {
    fn handle_error(&self, error: postgres::Error) {
        let cause = chain(&error);
        if cause.contains(RETIRED) {
            return;
        }
        let now = Instant::now();
        let started = now.checked_sub(self.longest).unwrap_or(now);
        self.health.failure(started, &cause);
    }
}

fn set_statement_timeout(
    client: &mut postgres::Client,
    timeout: Duration,
) -> Result<(), postgres::Error> {
    let ms = timeout.as_millis().max(1);
    client.batch_execute(&format!("SET statement_timeout = {ms}"))
}

/// A pool of PostgreSQL connections, cheap to clone (see the module header
/// for its bounds and how it fails).
#[derive(Clone)]
pub struct PgPool {
    inner: r2d2::Pool<Manager>,
    health: Arc<Health>,
    watch: Arc<Watch>,
    checkout_timeout: Duration,
}

impl fmt::Debug for PgPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgPool")
            .field("down", &self.health.is_down())
            .finish()
    }
}

/// Builds the pool without connecting (connections are made on first use).
pub fn pool(config: &DatabaseConfig, size: u32) -> Result<PgPool, StoreError> {
    let settings = Settings::new(config)?;
    if !settings.watched {
        tracing::warn!(
            "database.url names a Unix socket: a statement is bounded there only by \
             PostgreSQL's own statement_timeout, not by tokend"
        );
    }
    let watch = settings.watch();
    let health = Arc::new(Health {
        watch: Some(watch.clone()),
        ..Health::default()
    });
    let manager = PostgresConnectionManager::new(
        settings.pg.clone(),
        Watched::new(watch.clone()).with_tls(settings.tls.clone()),
    );
    let inner = r2d2::Pool::builder()
        .max_size(size.max(1))
        .min_idle(Some(0))
        .connection_timeout(config.connect_timeout)
        // r2d2_postgres's check is `simple_query("")`, bounded by the watch
        // like any statement.
        .test_on_check_out(true)
        .connection_customizer(Box::new(Session {
            statement_timeout: settings.statement_timeout,
            health: health.clone(),
        }))
        .error_handler(Box::new(Failures {
            health: health.clone(),
            longest: settings.connect_timeout.max(settings.patience()),
        }))
        .build_unchecked(manager);
    Ok(PgPool {
        inner,
        health,
        watch,
        checkout_timeout: config.connect_timeout,
    })
}

impl PgPool {
    /// A connection within `database.connect_timeout`, or at once
    /// [`StoreError::Unavailable`] during an outage (but for a probe).
    /// Blocking: call it from the blocking pool, the control thread or the
    /// CLI.
    pub fn get(&self) -> Result<PgConn, StoreError> {
        self.get_within(self.checkout_timeout)
    }

    /// [`PgPool::get`] with a shorter wait for a free connection.
    pub fn get_within(&self, timeout: Duration) -> Result<PgConn, StoreError> {
        let started = Instant::now();
        let probe = match self.health.admit() {
            Admit::Go => false,
            Admit::Probe => true,
            Admit::Refuse(cause) => return Err(StoreError::Unavailable { cause }),
        };
        let result = self.inner.get_timeout(timeout.min(self.checkout_timeout));
        match result {
            Ok(conn) => Ok(PgConn {
                conn,
                health: self.health.clone(),
                watch: self.watch.clone(),
                probe,
                checked_out: Instant::now(),
            }),
            Err(e) => {
                if probe {
                    self.health.end_probe();
                }
                // r2d2 adds the last connection error, if any, to its
                // "timed out waiting for connection"; without one every
                // connection was merely busy. That text is only the
                // error's kind ("error communicating with the server"):
                // the cause is the one the error handler gave [`Health`],
                // or else the watch's last.
                let text = e.to_string();
                let cause = text.strip_prefix("timed out waiting for connection: ");
                match cause {
                    Some(cause) => {
                        let cause = self.watch.cause().unwrap_or_else(|| cause.to_string());
                        self.health.failure(started, &cause);
                        let cause = if self.health.is_down() {
                            self.health.cause()
                        } else {
                            cause
                        };
                        Err(StoreError::Unavailable { cause })
                    }
                    None if self.health.is_down() => Err(StoreError::Unavailable {
                        cause: self.health.cause(),
                    }),
                    None => Err(StoreError::Busy(timeout)),
                }
            }
        }
    }

    /// Whether PostgreSQL counts as unavailable now.
    pub fn is_down(&self) -> bool {
        self.health.is_down()
    }

    /// Logs a failed PostgreSQL job (`what`: what it was for): nothing during
    /// an outage, whose start and end are logged once; otherwise at most one
    /// line per [`LOG_EVERY`], whatever the request rate, with the number of
    /// lines held back.
    pub fn log_failure(&self, what: &str, err: &dyn fmt::Display) {
        if self.health.is_down() {
            return;
        }
        let passed = self
            .health
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pass(Instant::now());
        if let Some(held_back) = passed {
            tracing::error!(held_back, "{what}: {err}");
        }
    }
}

/// A checked-out connection: derefs to the `postgres::Client`. When it goes
/// back, a connection the watch cut (or the server closed) is dropped and
/// reported as a failure of PostgreSQL; a healthy one ends an outage.
pub struct PgConn {
    conn: r2d2::PooledConnection<Manager>,
    health: Arc<Health>,
    watch: Arc<Watch>,
    /// This checkout is an outage's probe.
    probe: bool,
    checked_out: Instant,
}

impl Deref for PgConn {
    type Target = postgres::Client;

    fn deref(&self) -> &postgres::Client {
        &self.conn
    }
}

impl DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        &mut self.conn
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if self.conn.is_closed() {
            let cause = self
                .watch
                .cause()
                .unwrap_or_else(|| "the connection closed".into());
            self.health.failure(self.checked_out, &cause);
        } else {
            self.health.success();
        }
        if self.probe {
            self.health.end_probe();
        }
    }
}

/// `SELECT 1`, waiting at most `timeout` for a connection: the readiness
/// check and the start-up check. Blocking: call it from the blocking pool.
pub fn ping(pool: &PgPool, timeout: Duration) -> Result<(), StoreError> {
    let mut conn = pool.get_within(timeout)?;
    conn.simple_query("SELECT 1")?;
    Ok(())
}

/// One connection, outside any pool, for CLI commands: bounded like the
/// pool's (a frozen database makes a command fail, not hang).
pub fn connect(config: &DatabaseConfig) -> Result<postgres::Client, StoreError> {
    Settings::new(config)?.open()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn config(url: &str) -> DatabaseConfig {
        DatabaseConfig {
            url: url.into(),
            connect_timeout: Duration::from_millis(500),
            statement_timeout: Duration::from_millis(500),
            ..DatabaseConfig::default()
        }
    }

    #[test]
    fn a_server_that_accepts_and_never_answers_fails_the_connect_in_time() {
        // Accepts (the kernel's backlog does) and never reads or answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "postgres://u:secret@127.0.0.1:{}/db",
            listener.local_addr().unwrap().port()
        );
        let start = Instant::now();
        let Err(e) = connect(&config(&url)) else {
            panic!("connected to a server that never answers");
        };
        let e = e.to_string();
        // connect_timeout is 500 ms; 3 s covers a loaded 2-CPU machine.
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(e.contains("no answer from PostgreSQL within 500ms"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }

    /// `database.url` with `params` added to its query string.
    fn with_params(url: &str, params: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{params}")
    }

    /// TLS to PostgreSQL (issue #14): `sslmode=require` encrypts (the server
    /// says so in `pg_stat_ssl`), `verify-ca` checks the chain, `verify-full`
    /// the name too, and a root the certificate does not chain to is refused
    /// by name. The test server's own certificate is the root (Debian's
    /// PostgreSQL serves its self-signed snakeoil certificate by default).
    #[test]
    fn tls_modes_encrypt_and_check_the_server() {
        let plain = crate::testing::database_url();
        let mut c = config(&plain);
        c.connect_timeout = Duration::from_secs(5);
        let mut client = connect(&c).unwrap();
        let ssl_on = client
            .query_one("SHOW ssl", &[])
            .map(|r| r.get::<_, String>(0) == "on")
            .unwrap_or(false);
        let cert_file = client
            .query_one("SHOW ssl_cert_file", &[])
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_else(|_| "/etc/ssl/certs/ssl-cert-snakeoil.pem".into());
        drop(client);

        c.url = with_params(&plain, "sslmode=require");
        if !ssl_on {
            // A server without TLS: refused, and said so.
            let Err(e) = connect(&c) else {
                panic!("sslmode=require connected to a server without TLS");
            };
            assert!(e.to_string().contains("does not offer TLS"), "{e}");
            eprintln!("the test PostgreSQL has ssl = off: only the refusal was checked");
            return;
        }
        let mut client = connect(&c).unwrap();
        let encrypted: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(encrypted, "sslmode=require gave a clear-text session");
        // The watch still follows the protocol inside TLS.
        let e = client.batch_execute("SELECT pg_sleep(3)").unwrap_err();
        assert!(
            e.code().is_some() || e.to_string().contains("no answer"),
            "{e}"
        );
        drop(client);

        // A root the server's certificate does not chain to.
        let other =
            std::env::temp_dir().join(format!("tokend-other-ca-{}.pem", std::process::id()));
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&other, params.self_signed(&key).unwrap().pem()).unwrap();
        c.url = with_params(
            &plain,
            &format!("sslmode=verify-ca&sslrootcert={}", other.display()),
        );
        let Err(e) = connect(&c) else {
            panic!("verify-ca accepted a certificate that does not chain to the root");
        };
        std::fs::remove_file(&other).unwrap();
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

        // The server's own certificate as the root.
        if std::fs::read(&cert_file).is_err() {
            eprintln!("cannot read {cert_file}: the chain checks were skipped");
            return;
        }
        c.url = with_params(
            &plain,
            &format!("sslmode=verify-ca&sslrootcert={cert_file}"),
        );
        let mut client = connect(&c).unwrap_or_else(|e| panic!("verify-ca with {cert_file}: {e}"));
        assert_eq!(
            client.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0),
            1
        );
        // The same chain, but the name connected to (an IP address) is not
        // the certificate's.
        c.url = with_params(
            &plain,
            &format!("sslmode=verify-full&sslrootcert={cert_file}"),
        );
        if plain.contains("@127.0.0.1") || plain.contains("@[::1]") {
            let Err(e) = connect(&c) else {
                panic!("verify-full accepted a certificate for another name");
            };
            assert!(e.to_string().contains("certificate"), "{e}");
        }
    }

    #[test]
    fn tls_settings_that_cannot_work_are_refused_by_name() {
        for (url, says) in [
            ("postgres://u@127.0.0.1:1/db?sslmode=verify", "sslmode"),
            (
                "postgres://u@127.0.0.1:1/db?sslmode=verify-full",
                "sslrootcert",
            ),
            (
                "postgres://u@127.0.0.1:1/db?sslmode=require&sslrootcert=/nonexistent.pem",
                "/nonexistent.pem",
            ),
            (
                "postgres://u@%2Frun%2Fpostgresql/db?sslmode=require",
                "Unix socket",
            ),
        ] {
            let Err(e) = connect(&config(url)) else {
                panic!("connected with {url}");
            };
            let e = e.to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn connections_set_the_statement_timeout_and_survive_idle_time() {
        let mut c = config(&crate::testing::database_url());
        c.connect_timeout = Duration::from_secs(5);
        c.statement_timeout = Duration::from_millis(1500);
        let mut client = connect(&c).unwrap();
        let row = client.query_one("SHOW statement_timeout", &[]).unwrap();
        assert_eq!(row.get::<_, String>(0), "1500ms");
        // Idle longer than the patience: a deadline must not be left armed.
        std::thread::sleep(Duration::from_millis(2600));
        let n: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
        assert_eq!(n, 1);
        // The server's own cancellation comes first for a slow statement,
        // and the connection stays usable.
        let e = client.batch_execute("SELECT pg_sleep(3)").unwrap_err();
        assert_eq!(e.code(), Some(&postgres::error::SqlState::QUERY_CANCELED));
        assert!(!client.is_closed());
        assert_eq!(
            client.query_one("SELECT 2", &[]).unwrap().get::<_, i32>(0),
            2
        );
    }

    #[test]
    fn a_statement_the_server_sits_on_is_cut_in_time_then_the_pool_recovers() {
        let mut c = config(&crate::testing::database_url());
        c.connect_timeout = Duration::from_secs(5);
        let p = pool(&c, 1).unwrap();
        let mut conn = p.get().unwrap();
        // Without the server's own timeout, a server silent for 5 s is
        // what a frozen one looks like from here: only tokend's watch
        // (500 ms + GRACE) is left to end the wait.
        conn.batch_execute("SET statement_timeout = 0").unwrap();
        let start = Instant::now();
        let e = conn.batch_execute("SELECT pg_sleep(5)").unwrap_err();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1500), "{took:?}: {e}");
        // 1.5 s, and room for a loaded 2-CPU machine: well under the 5 s.
        assert!(took < Duration::from_secs(4), "{took:?}: {e}");
        assert!(conn.is_closed());
        drop(conn);
        // An outage now: refused at once, until a probe finds a connection.
        assert!(p.is_down());
        let t = Instant::now();
        assert!(matches!(p.get(), Err(StoreError::Unavailable { .. })));
        assert!(t.elapsed() < Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.get().is_err() {
            assert!(Instant::now() < deadline, "no recovery within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!p.is_down());
    }

    #[test]
    fn retired_idle_connections_are_replaced_without_a_wait_or_an_outage() {
        let p = pool(&config(&crate::testing::database_url()), 2).unwrap();
        let (a, b) = (p.get().unwrap(), p.get().unwrap());
        drop((a, b));
        // What an outage's start does: both idle connections retired.
        p.watch.retire_idle();
        let t = Instant::now();
        let mut conn = p.get().unwrap();
        // The checkout's empty query fails at once on each retired one,
        // then a new connection is made (milliseconds, locally): far less
        // than the 1.5 s patience.
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(conn.query_one("SELECT 3", &[]).unwrap().get::<_, i32>(0), 3);
        assert!(
            !p.is_down(),
            "a retired connection is not news of PostgreSQL"
        );
        // Both retired ones were dropped: only the new one is left.
        assert_eq!(p.inner.state().connections, 1);
    }

    #[test]
    fn the_pool_answers_and_logs_are_rate_limited() {
        let p = pool(&config(&crate::testing::database_url()), 1).unwrap();
        ping(&p, Duration::from_secs(5)).unwrap();
        assert!(!p.is_down());
        let mut gate = LogGate::default();
        let t0 = Instant::now();
        assert_eq!(gate.pass(t0), Some(0));
        assert_eq!(gate.pass(t0 + Duration::from_secs(1)), None);
        assert_eq!(gate.pass(t0 + Duration::from_secs(2)), None);
        assert_eq!(gate.pass(t0 + LOG_EVERY), Some(2));
    }

    #[test]
    fn an_outage_refuses_all_but_one_probe_per_period() {
        let h = Health::default();
        assert!(matches!(h.admit(), Admit::Go));
        let before = Instant::now();
        h.failure(before, "frozen");
        assert!(h.is_down());
        // The first probe waits PROBE_EVERY after the failure.
        assert!(matches!(h.admit(), Admit::Refuse(c) if c == "frozen"));
        h.outage().next_probe = Some(Instant::now());
        assert!(matches!(h.admit(), Admit::Probe));
        assert!(matches!(h.admit(), Admit::Refuse(_)), "one probe at a time");
        h.end_probe();
        assert!(
            matches!(h.admit(), Admit::Refuse(_)),
            "not before PROBE_EVERY"
        );
        h.success();
        assert!(!h.is_down());
        assert!(matches!(h.admit(), Admit::Go));
        // An attempt begun before PostgreSQL answered again is old news.
        h.failure(before, "late news of the old outage");
        assert!(!h.is_down());
        h.failure(Instant::now(), "a new outage");
        assert!(h.is_down());
    }
}
