//! Configuration: a TOML file plus `TOKEND_<SECTION>_<KEY>` environment
//! overrides, checked into one [`Config`] in a single step.
//!
//! Every section's struct denies unknown fields, so a typo stops start-up
//! with the key named (`server.lisen`), and every field's doc gives its
//! default. Secrets (`database.url` passwords, `redis.url` passwords,
//! `keys.kek`) are redacted whenever the configuration is printed.
//!
//! Owns: every configuration key, its default and its check, the values
//! derived from them ([`Config::issuer`], [`Config::blocking_threads`], ...),
//! and the redaction of secrets ([`redact_url`]).
//!
//! Never imports: any other module of the crate. It sits just above `clock`
//! at the bottom of the layering (and needs nothing of it): everything else
//! may read `config`, never the other way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod duration;
mod env;
mod load;
mod redact;

pub use redact::redact_url;

/// Occurs when the configuration cannot be read or checked. The message always
/// names the file or the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Occurs when the configuration file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Occurs when the file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    /// Occurs when a key is unknown or its value has the wrong type or form.
    #[error("invalid config key `{key}`: {message}")]
    Key { key: String, message: String },
    /// Occurs when an environment override names no known section.
    #[error("environment variable {var}: unknown config section `{section}` (known: server, database, redis, tokens, passwords, limits, keys, users, oauth)")]
    EnvSection { var: String, section: String },
}

impl ConfigError {
    fn key(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

const SECTIONS: [&str; 9] = [
    "server",
    "database",
    "redis",
    "tokens",
    "passwords",
    "limits",
    "keys",
    "users",
    "oauth",
];

/// The checked configuration every part of tokend reads.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub tokens: TokensConfig,
    pub passwords: PasswordsConfig,
    pub limits: LimitsConfig,
    pub keys: KeysConfig,
    pub users: UsersConfig,
    pub oauth: OAuthConfig,
}

/// Which monoio driver each core runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// io_uring where the kernel offers it, epoll otherwise.
    Auto,
    /// io_uring; start-up fails where the kernel refuses it.
    IoUring,
    /// epoll (monoio's "legacy" driver).
    Epoll,
}

impl Driver {
    /// The driver the cores actually run: `Auto` becomes io_uring where the
    /// kernel offers it, epoll otherwise.
    pub fn resolve(self) -> Driver {
        match self {
            Driver::Auto if monoio::utils::detect_uring() => Driver::IoUring,
            Driver::Auto => Driver::Epoll,
            d => d,
        }
    }

    /// The name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Auto => "auto",
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// Which cores run a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cores {
    /// Every core the process may run on.
    All,
    /// The first N cores the process may run on.
    Count(usize),
    /// These core ids.
    List(Vec<usize>),
}

impl Serialize for Cores {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cores::All => s.serialize_str("all"),
            Cores::Count(n) => s.serialize_u64(*n as u64),
            Cores::List(l) => l.serialize(s),
        }
    }
}

/// The most cores a configuration may name, and one past the highest core id:
/// far above any machine's (Linux's `NR_CPUS` tops out at 8192), and small
/// enough that every value prints back as a TOML integer. The fuzzer found
/// `cores = "17828287057971659956"` accepted, then printed as a number TOML
/// cannot read back.
pub const MAX_CORES: usize = 65_536;

impl<'de> Deserialize<'de> for Cores {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            L(Vec<i64>),
            S(String),
        }
        let bad = || {
            serde::de::Error::custom(format!(
                "expected \"all\", a count like 4, or a list of core ids like [0, 1] or \"0,1\" \
                 (counts and ids below {MAX_CORES})"
            ))
        };
        let id = |c: i64| usize::try_from(c).ok().filter(|&c| c < MAX_CORES);
        match Raw::deserialize(d)? {
            Raw::N(n) => id(n).filter(|&n| n > 0).map(Cores::Count).ok_or_else(bad),
            Raw::L(l) if !l.is_empty() => l
                .into_iter()
                .map(id)
                .collect::<Option<Vec<_>>>()
                .map(Cores::List)
                .ok_or_else(bad),
            Raw::L(_) => Err(bad()),
            Raw::S(s) => {
                // `TOKEND_SERVER_CORES` is always a string: "4", "0,1" and
                // "[0, 1]" all read as in the file.
                let s = s.trim();
                let s = s
                    .strip_prefix('[')
                    .and_then(|s| s.strip_suffix(']'))
                    .unwrap_or(s);
                if s.eq_ignore_ascii_case("all") {
                    return Ok(Cores::All);
                }
                if let Ok(n) = s.parse::<usize>() {
                    return if n > 0 && n < MAX_CORES {
                        Ok(Cores::Count(n))
                    } else {
                        Err(bad())
                    };
                }
                let list: Result<Vec<usize>, _> = s.split(',').map(|p| p.trim().parse()).collect();
                list.ok()
                    .filter(|l| !l.is_empty() && l.iter().all(|&c| c < MAX_CORES))
                    .map(Cores::List)
                    .ok_or_else(bad)
            }
        }
    }
}

/// `[server]`: the listener, the cores and connection limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address every core binds with SO_REUSEPORT. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `"all"` (default), a count, or a list of core ids.
    pub cores: Cores,
    /// `"auto"`, `"io_uring"` or `"epoll"`. Default `"epoll"`: measured faster
    /// for this workload on the machines we benchmark on (`bench/drivers.sh`).
    pub driver: Driver,
    /// Open connections per core; a connection over it is closed at once. Default 10000.
    pub max_connections_per_core: usize,
    /// Time allowed to receive a whole request (head and body) from its first
    /// byte, and a new connection's first request from its accept. Default
    /// `10s`.
    #[serde(with = "duration")]
    pub head_timeout: Duration,
    /// Time an idle keep-alive connection is kept open. Default `60s`.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Time a connection's answers may make no write progress (a client
    /// that does not read them) before the connection is closed, kept to
    /// the second (see `net::write_out`). Default `10s`.
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    /// Time allowed to finish in-flight requests on SIGTERM. Default `10s`.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// Public base URL, used as the default issuer and in discovery documents.
    /// Default `http://<listen>`.
    pub public_url: Option<String>,
    /// Log level filter (`RUST_LOG` wins when set). Default `"info"`.
    pub log_level: String,
    /// `"text"` (default, for journald) or `"json"`.
    pub log_format: String,
    /// One log line per request. Default `false`: no logging on the hot path.
    pub access_log: bool,
    /// Reverse proxies whose word on the client's address is taken: when a
    /// request comes from one of these addresses or networks (`"10.0.0.1"`,
    /// `"10.0.0.0/8"`, `"::1"`), the client's address is read from
    /// [`ServerConfig::forwarded_header`], right to left past every trusted
    /// hop; from anywhere else the header is ignored. The login limits count
    /// failures per this address. Default none: the TCP peer's address.
    /// `TOKEND_SERVER_TRUSTED_PROXIES` takes a comma-separated list.
    pub trusted_proxies: Vec<ProxyNet>,
    /// The header the trusted proxies set: `"x-forwarded-for"` (default,
    /// nginx's `$proxy_add_x_forwarded_for`, Traefik, Envoy) or
    /// `"forwarded"` (RFC 7239). Only this one is read: a proxy that passes
    /// the other one through from the client must not make it trusted.
    pub forwarded_header: ForwardedHeader,
}

/// An address or network of `server.trusted_proxies`: `"10.0.0.1"` or
/// `"10.0.0.0/8"` (IPv4 or IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet(pub ipnet::IpNet);

impl ProxyNet {
    /// Whether `addr` is in it (an IPv4-mapped IPv6 address as its IPv4).
    pub fn contains(&self, addr: std::net::IpAddr) -> bool {
        self.0.contains(&addr.to_canonical())
    }
}

impl std::str::FromStr for ProxyNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(|n| ProxyNet(n.trunc()))
            .map_err(|_| format!("{s:?} is not an address or a network like 10.0.0.0/8"))
    }
}

impl Serialize for ProxyNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProxyNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `server.forwarded_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cores: Cores::All,
            driver: Driver::Epoll,
            max_connections_per_core: 10_000,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            public_url: None,
            log_level: "info".into(),
            log_format: "text".into(),
            access_log: false,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
        }
    }
}

/// `[database]`: PostgreSQL, reached only from the blocking pool.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// libpq-style URL. Default `postgres://postgres@127.0.0.1:5432/tokend`.
    /// A password in it is redacted when printed. Several hosts with
    /// `target_session_attrs=read-write` for failover; `sslmode`
    /// (`require`, `verify-ca`, `verify-full`) and `sslrootcert` for TLS
    /// (see `store::pgtls`).
    pub url: String,
    /// Connections in the pool. Default: `limits.blocking_threads`.
    pub pool_size: Option<u32>,
    /// Time allowed to get a connection: to make one (TCP connect, start-up
    /// and authentication), or to wait for a free one. Default `5s`.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Longest a statement may take: PostgreSQL's `statement_timeout` on
    /// every connection tokend makes (the CLI's too), and tokend's own bound
    /// on every wait for an answer (this plus one second), so that a frozen
    /// database or network costs a `503` with `Retry-After`, not a hang.
    /// tokend's statements are index lookups and small writes that take
    /// milliseconds; 5 s rides out a checkpoint or lock wait on a loaded
    /// database and still answers a user before a typical client gives up.
    /// Default `5s` (`TOKEND_DATABASE_STATEMENT_TIMEOUT`).
    #[serde(with = "duration")]
    pub statement_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "postgres://postgres@127.0.0.1:5432/tokend".into(),
            pool_size: None,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// `[redis]`: revocations, refresh tokens and rate limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`. Default `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Prefix of every key tokend writes, so deployments can share a Redis.
    /// Default `"tokend:"`.
    pub prefix: String,
    /// Time a command may take before the request fails closed with 503.
    /// Default `100ms`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Answer the revocation check from an in-memory mirror on each core,
    /// fed by a Redis stream, instead of one Redis round trip per check.
    /// Default `false`. See `revocation::mirror`.
    pub revocation_mirror: bool,
    /// With the mirror: the longest a core trusts it without hearing from
    /// Redis; past it the core asks Redis (and fails closed). Bounds how
    /// late another node's revocation can be seen. Default `1s`.
    #[serde(with = "duration")]
    pub mirror_max_lag: Duration,
    /// How often each node re-applies the revocations and "not before" marks
    /// PostgreSQL holds (those that can still void a live token) to Redis,
    /// writing back what Redis lacks: a revocation whose Redis write failed
    /// after PostgreSQL's commit, or that a Redis failover or restore lost.
    /// The longest such a loss goes unrepaired. Default `1m`.
    #[serde(with = "duration")]
    pub reconcile_interval: Duration,
    /// Redis Sentinel: `host:port` of each sentinel (`[v6]:port`; the port
    /// defaults to 26379). When set, every connection asks them where the
    /// primary named `sentinel_master` is, confirms it with `ROLE`, and
    /// finds the new primary by itself after a failover; `url` then gives
    /// only the data nodes' user, password and database (its host and port
    /// are not used). Default: none (`url` is the primary).
    pub sentinels: Vec<String>,
    /// The name the sentinels know the primary by (`sentinel monitor
    /// <name> …`). Required with `sentinels`.
    pub sentinel_master: String,
    /// The sentinels' own ACL user, if they have one.
    pub sentinel_username: Option<String>,
    /// The sentinels' own password (their `requirepass`), if they have one;
    /// the data nodes' password is `url`'s.
    pub sentinel_password: Option<String>,
    /// Replicas that must acknowledge (`WAIT`) a revocation, a logout-all
    /// mark or a refresh rotation before it is answered; fewer within
    /// `timeout` and the request gets 503. These writes then go on a second
    /// Redis connection per core. Default 0 (answered once the primary has
    /// them). See `redis::acked`.
    pub min_replicas_acked: u32,
    /// With `rediss://`: the CA certificates (PEM) the servers' certificates
    /// must chain to. Default: the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// With `rediss://`: a client certificate (PEM) to present (Redis's
    /// `tls-auth-clients yes`), with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// The name every server's certificate must carry, when it is not the
    /// host connected to (for example the primary's IP address a sentinel
    /// names). Default: that host.
    pub tls_server_name: Option<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            prefix: "tokend:".into(),
            timeout: Duration::from_millis(100),
            revocation_mirror: false,
            mirror_max_lag: Duration::from_secs(1),
            reconcile_interval: Duration::from_secs(60),
            sentinels: Vec::new(),
            sentinel_master: String::new(),
            sentinel_username: None,
            sentinel_password: None,
            min_replicas_acked: 0,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_server_name: None,
        }
    }
}

/// `[tokens]`: access and refresh tokens.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// `iss` of issued tokens. Default: `server.public_url`.
    pub issuer: Option<String>,
    /// `aud` of issued tokens. Default `"tokend"`.
    pub audience: String,
    /// Access-token lifetime. Default `15m`.
    #[serde(with = "duration")]
    pub access_ttl: Duration,
    /// Refresh-token lifetime. Default `30d`.
    #[serde(with = "duration")]
    pub refresh_ttl: Duration,
    /// Clock leeway for `exp` and `nbf`. Default `0s`.
    #[serde(with = "duration")]
    pub leeway: Duration,
    /// Time a used refresh token may be presented again without revoking its
    /// family (for clients that lost a response). Default `0s`.
    #[serde(with = "duration")]
    pub refresh_reuse_grace: Duration,
    /// Absolute lifetime of a refresh-token family, from its login: past it
    /// the family's tokens are refused and the user logs in again, however
    /// often they were rotated (each rotation otherwise starts a new
    /// `refresh_ttl`). A client may have its own
    /// (`tokend client add --refresh-max-lifetime`). `"0s"`: none. Default
    /// `90d`.
    #[serde(with = "duration")]
    pub refresh_max_lifetime: Duration,
    /// Verified tokens cached per core. Default 100000. Each entry holds the
    /// token and its claims, about 1.1 KiB with EdDSA tokens (~490 bytes):
    /// a full cache of 100000 is about 110 MiB per core. A token that was
    /// introspected also keeps its answer's body (~400 bytes more).
    pub verified_cache_size: usize,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            issuer: None,
            audience: "tokend".into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            leeway: Duration::ZERO,
            refresh_reuse_grace: Duration::ZERO,
            refresh_max_lifetime: Duration::from_secs(90 * 86400),
            verified_cache_size: 100_000,
        }
    }
}

/// `[passwords]`: argon2id parameters. Defaults are OWASP's second
/// recommended argon2id setting (m=19 MiB, t=2, p=1).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordsConfig {
    /// Memory cost in KiB. Default 19456.
    pub memory_kib: u32,
    /// Iterations. Default 2.
    pub iterations: u32,
    /// Lanes. Default 1.
    pub parallelism: u32,
}

impl Default for PasswordsConfig {
    fn default() -> Self {
        PasswordsConfig {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// `[limits]`: request limits, the blocking pool and login rate limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request head (request line and headers), bytes; over it `431`. Default 8192.
    pub max_head_bytes: usize,
    /// Largest request body, bytes; over it `413`. Default 65536.
    pub max_body_bytes: usize,
    /// Most headers in one request; over it `431`. Default 64.
    pub max_headers: usize,
    /// Threads of the blocking pool (PostgreSQL, argon2). Default: the number of cores.
    pub blocking_threads: Option<usize>,
    /// Jobs that may wait for the blocking pool; when full, `503` with `Retry-After`. Default 256.
    pub blocking_queue: usize,
    /// Run the blocking threads under the `SCHED_IDLE` policy: a core that
    /// wakes up takes the CPU from a login at once, so a login storm slows
    /// logins, not validations. Logins then get only the CPU time the cores
    /// leave; when validation fills every CPU they wait, and a full queue
    /// sheds them with `503`. `false`: use `blocking_nice`. Default true.
    pub blocking_sched_idle: bool,
    /// Scheduling priority (nice, 0-19) of the blocking threads when
    /// `blocking_sched_idle` is false: above 0 they yield the CPU to the
    /// cores, but a woken core may wait for the next scheduler tick. Default 10.
    pub blocking_nice: i32,
    /// Password attempts per username per window before `429` (logins and
    /// password changes, counted as they are admitted; a success clears the
    /// count). Default 10.
    pub login_failures_per_user: u32,
    /// Failed password attempts per client address (see
    /// `server.trusted_proxies`) per window before `429`. Default 100.
    pub login_failures_per_ip: u32,
    /// Window of the two counters above. Default `5m`.
    #[serde(with = "duration")]
    pub login_window: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_head_bytes: 8192,
            max_body_bytes: 65536,
            max_headers: 64,
            blocking_threads: None,
            blocking_queue: 256,
            blocking_sched_idle: true,
            blocking_nice: 10,
            login_failures_per_user: 10,
            login_failures_per_ip: 100,
            login_window: Duration::from_secs(300),
        }
    }
}

/// Signing algorithm of new keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Algorithm {
    EdDSA,
    RS256,
    ES256,
}

/// `[keys]`: signing keys and the key-encryption key that seals them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Algorithm of new keys: `"EdDSA"` (default), `"ES256"` or `"RS256"`.
    pub algorithm: Algorithm,
    /// File holding the 32-byte key-encryption key, base64. Unset by default.
    pub kek_file: Option<PathBuf>,
    /// The key-encryption key itself, base64 (prefer `TOKEND_KEYS_KEK` or
    /// `kek_file`). Redacted when printed.
    pub kek: Option<String>,
    /// Time a rotated-in key is published before it signs. Default `10m`.
    #[serde(with = "duration")]
    pub publish_ahead: Duration,
    /// Time between key-set reloads on every node. Default `60s`.
    #[serde(with = "duration")]
    pub reload_interval: Duration,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            algorithm: Algorithm::EdDSA,
            kek_file: None,
            kek: None,
            publish_ahead: Duration::from_secs(600),
            reload_interval: Duration::from_secs(60),
        }
    }
}

/// `[users]`: the user API.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsersConfig {
    /// Lets anyone `POST /users` (without scopes). Default `false`.
    pub self_registration: bool,
}

/// `[oauth]`: which ways of signing users in tokend offers, and the
/// browser sign-in (authorization code flow, issue #16).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// The password grant (RFC 6749 §4.3): the app sees the user's password,
    /// which the OAuth 2.0 Security BCP (RFC 9700 §2.4) says must not happen
    /// and OAuth 2.1 removes. `false` refuses it for every client with
    /// `400 unsupported_grant_type` and drops it from the metadata
    /// document; refresh tokens issued before go on working. Default `true`.
    pub password_grant: bool,
    /// The name the sign-in page shows users, as its title and heading
    /// ("Sign in to {display_name}"): your product's name. 1 to 100
    /// characters, no control characters. Default `"tokend"`.
    pub display_name: String,
    /// Lifetime of an authorization code, from the redirect to its
    /// redemption at the token endpoint. RFC 6749 §4.1.2 recommends at
    /// most 10 minutes; a client redeems its code at once, so a short one
    /// narrows the window of a stolen code. Between `1s` and `10m`.
    /// Default `60s`.
    #[serde(with = "duration")]
    pub code_ttl: Duration,
    /// Browser session (single sign-on, the cookie set at sign-in): ended
    /// after this long without a `GET /authorize` that uses it; each use
    /// restarts it. Between `1m` and `session_max_lifetime`. Default `30m`.
    #[serde(with = "duration")]
    pub session_idle_ttl: Duration,
    /// Browser session: ended this long after the password was typed,
    /// however often it is used. Between `1m` and `30d`. A session never
    /// outlives the longest token lifetime (`max(tokens.access_ttl,
    /// tokens.refresh_ttl)`, how long the "not before" mark of a logout
    /// everywhere is kept): a longer setting is cut to it. Default `12h`.
    #[serde(with = "duration")]
    pub session_max_lifetime: Duration,
}

impl Config {
    /// The lifetimes of browser sessions in seconds: `(idle, absolute)`,
    /// the absolute one cut to the longest token lifetime (see
    /// [`OAuthConfig::session_max_lifetime`]), the idle one to the absolute.
    pub fn session_lifetimes(&self) -> (u64, u64) {
        let longest = self.tokens.access_ttl.max(self.tokens.refresh_ttl);
        let absolute = self
            .oauth
            .session_max_lifetime
            .min(longest)
            .as_secs()
            .max(1);
        (
            self.oauth.session_idle_ttl.as_secs().min(absolute),
            absolute,
        )
    }
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            password_grant: true,
            display_name: "tokend".into(),
            code_ttl: Duration::from_secs(60),
            session_idle_ttl: Duration::from_secs(30 * 60),
            session_max_lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

#[cfg(test)]
mod tests;
