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

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    #[error("environment variable {var}: unknown config section `{section}` (known: server, database, redis, tokens, passwords, limits, keys, users)")]
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

const SECTIONS: [&str; 8] = [
    "server",
    "database",
    "redis",
    "tokens",
    "passwords",
    "limits",
    "keys",
    "users",
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
    #[serde(with = "humantime_serde")]
    pub head_timeout: Duration,
    /// Time an idle keep-alive connection is kept open. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time a connection's answers may make no write progress (a client
    /// that does not read them) before the connection is closed, kept to
    /// the second (see `net::write_out`). Default `10s`.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Time allowed to finish in-flight requests on SIGTERM. Default `10s`.
    #[serde(with = "humantime_serde")]
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
    /// A password in it is redacted when printed.
    pub url: String,
    /// Connections in the pool. Default: `limits.blocking_threads`.
    pub pool_size: Option<u32>,
    /// Time allowed to get a connection: to make one (TCP connect, start-up
    /// and authentication), or to wait for a free one. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest a statement may take: PostgreSQL's `statement_timeout` on
    /// every connection tokend makes (the CLI's too), and tokend's own bound
    /// on every wait for an answer (this plus one second), so that a frozen
    /// database or network costs a `503` with `Retry-After`, not a hang.
    /// tokend's statements are index lookups and small writes that take
    /// milliseconds; 5 s rides out a checkpoint or lock wait on a loaded
    /// database and still answers a user before a typical client gives up.
    /// Default `5s` (`TOKEND_DATABASE_STATEMENT_TIMEOUT`).
    #[serde(with = "humantime_serde")]
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
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Answer the revocation check from an in-memory mirror on each core,
    /// fed by a Redis stream, instead of one Redis round trip per check.
    /// Default `false`. See `revocation::mirror`.
    pub revocation_mirror: bool,
    /// With the mirror: the longest a core trusts it without hearing from
    /// Redis; past it the core asks Redis (and fails closed). Bounds how
    /// late another node's revocation can be seen. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub mirror_max_lag: Duration,
    /// How often each node re-applies the revocations and "not before" marks
    /// PostgreSQL holds (those that can still void a live token) to Redis,
    /// writing back what Redis lacks: a revocation whose Redis write failed
    /// after PostgreSQL's commit, or that a Redis failover or restore lost.
    /// The longest such a loss goes unrepaired. Default `1m`.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
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
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    /// Refresh-token lifetime. Default `30d`.
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
    /// Clock leeway for `exp` and `nbf`. Default `0s`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Time a used refresh token may be presented again without revoking its
    /// family (for clients that lost a response). Default `0s`.
    #[serde(with = "humantime_serde")]
    pub refresh_reuse_grace: Duration,
    /// Absolute lifetime of a refresh-token family, from its login: past it
    /// the family's tokens are refused and the user logs in again, however
    /// often they were rotated (each rotation otherwise starts a new
    /// `refresh_ttl`). A client may have its own
    /// (`tokend client add --refresh-max-lifetime`). `"0s"`: none. Default
    /// `90d`.
    #[serde(with = "humantime_serde")]
    pub refresh_max_lifetime: Duration,
    /// Verified tokens cached per core. Default 100000. Each entry holds the
    /// token and its claims, about 1.1 KiB with EdDSA tokens (~490 bytes):
    /// a full cache of 100000 is about 110 MiB per core.
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
    #[serde(with = "humantime_serde")]
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
    #[serde(with = "humantime_serde")]
    pub publish_ahead: Duration,
    /// Time between key-set reloads on every node. Default `60s`.
    #[serde(with = "humantime_serde")]
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

impl Config {
    /// Reads `path` (when given), applies `TOKEND_*` overrides from `env`, and
    /// checks the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, name) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None => (String::new(), "<none>".to_string()),
        };
        Self::from_toml_and_env(&text, &name, env)
    }

    /// Parses TOML text, applies overrides and checks; `name` is used in messages.
    pub fn from_toml_and_env(
        text: &str,
        name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: name.to_string(),
            message: e.message().to_string(),
        })?;
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            // TOKEND_CONFIG names the file; TOKEND_TEST_* belong to the test
            // suite (scripts/test.sh), not to the configuration.
            .filter(|(k, _)| {
                k.starts_with("TOKEND_") && k != "TOKEND_CONFIG" && !k.starts_with("TOKEND_TEST_")
            })
            .collect();
        overrides.sort();
        for (var, value) in overrides {
            let rest = &var["TOKEND_".len()..];
            let (section, key) = rest.split_once('_').unwrap_or((rest, ""));
            let section = section.to_ascii_lowercase();
            if !SECTIONS.contains(&section.as_str()) || key.is_empty() {
                return Err(ConfigError::EnvSection { var, section });
            }
            let key = key.to_ascii_lowercase();
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(sec) = entry else {
                return Err(ConfigError::key(&section, "must be a table"));
            };
            let value = env_value(&var, &section, &key, &value)?;
            sec.insert(key, value);
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::key(&key, e.into_inner().message().to_string())
            })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.max_head_bytes < 256 {
            return Err(ConfigError::key(
                "limits.max_head_bytes",
                "must be at least 256",
            ));
        }
        if l.max_headers == 0 || l.max_headers > 1024 {
            return Err(ConfigError::key(
                "limits.max_headers",
                "must be between 1 and 1024",
            ));
        }
        if !(0..=19).contains(&l.blocking_nice) {
            return Err(ConfigError::key(
                "limits.blocking_nice",
                "must be between 0 and 19",
            ));
        }
        if !(Duration::from_millis(500)..=Duration::from_secs(60))
            .contains(&self.redis.mirror_max_lag)
        {
            // The mirror hears from Redis every 250 ms at least.
            return Err(ConfigError::key(
                "redis.mirror_max_lag",
                "must be between 500ms and 60s",
            ));
        }
        if l.blocking_threads == Some(0) {
            return Err(ConfigError::key(
                "limits.blocking_threads",
                "must be at least 1",
            ));
        }
        if l.blocking_queue == 0 {
            return Err(ConfigError::key(
                "limits.blocking_queue",
                "must be at least 1",
            ));
        }
        if self.server.max_connections_per_core == 0 {
            return Err(ConfigError::key(
                "server.max_connections_per_core",
                "must be at least 1",
            ));
        }
        if self.server.write_timeout.is_zero() {
            return Err(ConfigError::key(
                "server.write_timeout",
                "must be greater than zero",
            ));
        }
        if !matches!(self.server.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::key(
                "server.log_format",
                "must be \"text\" or \"json\"",
            ));
        }
        if !self.database.url.starts_with("postgres://")
            && !self.database.url.starts_with("postgresql://")
        {
            return Err(ConfigError::key(
                "database.url",
                "must start with postgres:// or postgresql://",
            ));
        }
        if self.database.statement_timeout < Duration::from_millis(1) {
            // 0 would mean "no limit" to PostgreSQL: a frozen database
            // would hang every request that needs it again.
            return Err(ConfigError::key(
                "database.statement_timeout",
                "must be at least 1ms",
            ));
        }
        if self.database.connect_timeout < Duration::from_millis(1) {
            return Err(ConfigError::key(
                "database.connect_timeout",
                "must be at least 1ms",
            ));
        }
        if !self.redis.url.starts_with("redis://") {
            return Err(ConfigError::key("redis.url", "must start with redis://"));
        }
        if self.redis.timeout.is_zero() {
            return Err(ConfigError::key(
                "redis.timeout",
                "must be greater than zero",
            ));
        }
        if self.tokens.access_ttl.as_secs() == 0 {
            return Err(ConfigError::key("tokens.access_ttl", "must be at least 1s"));
        }
        if self.tokens.refresh_ttl.as_secs() == 0 {
            return Err(ConfigError::key(
                "tokens.refresh_ttl",
                "must be at least 1s",
            ));
        }
        let p = &self.passwords;
        if p.memory_kib < 8 * p.parallelism.max(1) || p.iterations == 0 || p.parallelism == 0 {
            return Err(ConfigError::key(
                "passwords",
                "argon2 needs iterations >= 1, parallelism >= 1 and memory_kib >= 8 x parallelism",
            ));
        }
        Ok(())
    }

    /// Threads of the blocking pool.
    pub fn blocking_threads(&self) -> usize {
        self.limits.blocking_threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
    }

    /// Base URL of this deployment, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.server.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.server.listen),
        }
    }

    /// `iss` of issued tokens.
    pub fn issuer(&self) -> String {
        self.tokens
            .issuer
            .clone()
            .unwrap_or_else(|| self.public_url())
    }

    /// The configuration as TOML with every secret replaced by `"<redacted>"`.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        c.database.url = redact_url(&c.database.url);
        c.redis.url = redact_url(&c.redis.url);
        if c.keys.kek.is_some() {
            c.keys.kek = Some("<redacted>".into());
        }
        toml::to_string(&c).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted_toml())
    }
}

/// `url` with every credential in it replaced by `<redacted>`, for logs,
/// error messages and `tokend config check`.
///
/// Hides the password of the userinfo (`scheme://user:password@host`,
/// `scheme://:password@host`; for `redis://`, a lone `secret@` too) and the value of every query parameter whose
/// name (percent-decoded, any case) names a secret: `password`,
/// `sslpassword`, and anything containing `pass`, `secret`, `token` or
/// `pwd` (`?password=`, `&password=`, `;password=`, after a `#` too).
/// Over-redacting is the safe side of every doubt: the userinfo is taken to
/// end at the last `@` of the URL (PostgreSQL's parser ends it at the first,
/// the `url` crate at the last before the path, so a raw `@` or `/` in a
/// password is hidden either way), and a string without `scheme://` is not
/// a URL this function can read, so all of it is hidden when it holds an
/// `@` or a `=`.
pub fn redact_url(url: &str) -> String {
    const HIDDEN: &str = "<redacted>";
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains(['@', '=']) {
            HIDDEN.to_string()
        } else {
            url.to_string()
        };
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    out.push_str("://");
    let tail = match rest.rsplit_once('@') {
        Some((userinfo, tail)) => {
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(HIDDEN);
                }
                // `redis://secret@host` is a password in the user's place
                // (tokend refuses the URL; printing it must not leak it). A
                // PostgreSQL user alone is no secret.
                None if scheme.starts_with("redis") => out.push_str(HIDDEN),
                None => out.push_str(userinfo),
            }
            out.push('@');
            tail
        }
        None => rest,
    };
    // The host and path, then every parameter: `name=value` pieces between
    // separators (`?`, `&`, `;`, `#`), each kept or hidden by its name.
    // A piece without `=` right after a hidden value is taken for more of
    // it (a raw `&` in a password), and left out with its separator.
    let mut first = true;
    let mut hiding = false;
    for piece in tail.split_inclusive(['?', '&', ';', '#']) {
        let (body, sep) = match piece.char_indices().last() {
            Some((i, c @ ('?' | '&' | ';' | '#'))) => (&piece[..i], Some(c)),
            _ => (piece, None),
        };
        let param = body.split_once('=').filter(|_| !first);
        first = false;
        match param {
            Some((name, _)) if is_secret_param(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(HIDDEN);
                hiding = true;
            }
            None if hiding => continue,
            _ => {
                out.push_str(body);
                hiding = false;
            }
        }
        out.extend(sep);
    }
    out
}

/// Whether a URL query parameter's name (as written: percent-encoded, any
/// case) names a credential.
fn is_secret_param(raw_name: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(&raw_name.replace('+', " "))
        .decode_utf8_lossy()
        .to_ascii_lowercase();
    let name = decoded.trim();
    ["pass", "secret", "token", "pwd"]
        .iter()
        .any(|word| name.contains(word))
}

/// What an environment override is read as: the type of the key it sets,
/// whatever its text looks like (issue #12: `TOKEND_REDIS_PREFIX=2024` was
/// read as the integer 2024 and the string key refused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvKind {
    /// Strings, durations (`"10s"`), addresses, enums, paths and
    /// `server.cores` (whose string form takes `all`, `4`, `0,1` and
    /// `[0, 1]`): the text as it is.
    String,
    Integer,
    Float,
    /// `true` or `false`, in any case.
    Boolean,
    /// A list of strings (`server.trusted_proxies`): the text split at
    /// commas, in optional brackets (`"10.0.0.0/8, ::1"`).
    List,
}

/// The kind of every key, read from the configuration itself: a sample with
/// every optional key set, serialised to TOML, gives each key's value type.
/// A key it lacks is unknown (or an optional key missing from the sample,
/// which `env_kinds_cover_every_key` forbids): it goes in as a string and
/// the configuration names it.
fn env_kind(section: &str, key: &str) -> EnvKind {
    let sample = Config::sample_with_every_key();
    let value = toml::Value::try_from(&sample)
        .ok()
        .and_then(|v| v.get(section)?.get(key).cloned());
    match value {
        Some(toml::Value::Integer(_)) => EnvKind::Integer,
        Some(toml::Value::Float(_)) => EnvKind::Float,
        Some(toml::Value::Boolean(_)) => EnvKind::Boolean,
        // `server.cores` serialises as a string in the sample.
        Some(toml::Value::Array(_)) => EnvKind::List,
        _ => EnvKind::String,
    }
}

impl Config {
    /// The defaults with every optional key set (and `server.cores` in its
    /// string form), so that each key shows its value type when serialised.
    fn sample_with_every_key() -> Config {
        let mut c = Config::default();
        c.server.public_url = Some(String::new());
        c.server.trusted_proxies = vec![ProxyNet(ipnet::IpNet::default())];
        c.database.pool_size = Some(1);
        c.tokens.issuer = Some(String::new());
        c.limits.blocking_threads = Some(1);
        c.keys.kek_file = Some(PathBuf::new());
        c.keys.kek = Some(String::new());
        c
    }
}

/// The environment variable `var`'s text as the value of `section.key`, typed
/// by the key ([`env_kind`]); a text that is not of that type is refused
/// with the key and the variable named.
fn env_value(var: &str, section: &str, key: &str, raw: &str) -> Result<toml::Value, ConfigError> {
    let wrong = |what: &str| {
        ConfigError::key(
            &format!("{section}.{key}"),
            format!("{var} must be {what}, got {raw:?}"),
        )
    };
    Ok(match env_kind(section, key) {
        EnvKind::String => toml::Value::String(raw.to_string()),
        EnvKind::Integer => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| wrong("an integer"))?)
        }
        EnvKind::Float => toml::Value::Float(raw.trim().parse().map_err(|_| wrong("a number"))?),
        EnvKind::Boolean => match raw.trim() {
            t if t.eq_ignore_ascii_case("true") => toml::Value::Boolean(true),
            f if f.eq_ignore_ascii_case("false") => toml::Value::Boolean(false),
            _ => return Err(wrong("true or false")),
        },
        EnvKind::List => {
            let t = raw.trim();
            let t = t
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or(t);
            toml::Value::Array(
                t.split(',')
                    .map(|item| item.trim().trim_matches('"').trim())
                    .filter(|item| !item.is_empty())
                    .map(|item| toml::Value::String(item.to_string()))
                    .collect(),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_and_env(
            text,
            "test.toml",
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_hold() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.server.listen.port(), 8080);
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(900));
        assert_eq!(c.tokens.refresh_ttl, Duration::from_secs(30 * 86400));
        assert_eq!(c.limits.max_head_bytes, 8192);
        assert_eq!(c.passwords.memory_kib, 19456);
        assert_eq!(c.database.statement_timeout, Duration::from_secs(5));
        assert_eq!(c.server.write_timeout, Duration::from_secs(10));
    }

    #[test]
    fn write_timeout_is_read_and_checked() {
        let c = load("", &[("TOKEND_SERVER_WRITE_TIMEOUT", "250ms")]).unwrap();
        assert_eq!(c.server.write_timeout, Duration::from_millis(250));
        let e = load("[server]\nwrite_timeout = \"0s\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.write_timeout"), "{e}");
    }

    #[test]
    fn durations_and_env_overrides() {
        let c = load(
            "[tokens]\naccess_ttl = \"5m\"\n",
            &[
                ("TOKEND_SERVER_LISTEN", "0.0.0.0:9000"),
                ("TOKEND_SERVER_CORES", "0,1"),
                ("TOKEND_REDIS_PREFIX", "t1:"),
                ("TOKEND_LIMITS_MAX_HEADERS", "32"),
                ("TOKEND_TOKENS_REFRESH_TTL", "30d"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(300));
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.server.cores, Cores::List(vec![0, 1]));
        assert_eq!(c.redis.prefix, "t1:");
        assert_eq!(c.limits.max_headers, 32);
        let c = load("", &[("TOKEND_SERVER_CORES", "2")]).unwrap();
        assert_eq!(c.server.cores, Cores::Count(2));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = load("[server]\nlisen = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.lisen"), "{e}");
        let e = load("", &[("TOKEND_SERVER_BOGUS", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.bogus"), "{e}");
        let e = load("", &[("TOKEND_NOPE_X", "1")]).unwrap_err().to_string();
        assert!(e.contains("TOKEND_NOPE_X"), "{e}");
    }

    #[test]
    fn invalid_values_are_named() {
        let e = load("[tokens]\naccess_ttl = \"soon\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokens.access_ttl"), "{e}");
        let e = load("[server]\nlisten = \"nowhere\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.listen"), "{e}");
        let e = load("[server]\ndriver = \"kqueue\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.driver"), "{e}");
        let e = load("", &[("TOKEND_LIMITS_BLOCKING_QUEUE", "0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.blocking_queue"), "{e}");
        let e = load("", &[("TOKEND_LIMITS_BLOCKING_NICE", "20")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.blocking_nice"), "{e}");
        let e = load("", &[("TOKEND_DATABASE_STATEMENT_TIMEOUT", "0s")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("database.statement_timeout"), "{e}");
    }

    /// Found by the `config` fuzz target: a count that fits no TOML integer
    /// was accepted, and `tokend config check` printed a file that does not
    /// load. Counts and ids are bounded; the bound itself prints and loads.
    #[test]
    fn core_counts_and_ids_are_bounded() {
        for bad in [
            "17828287057971659956",
            "65536",
            "0,65536",
            "[1, 18446744073709551615]",
        ] {
            let e = load("", &[("TOKEND_SERVER_CORES", bad)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("server.cores"), "{bad}: {e}");
        }
        for bad in ["cores = 65536", "cores = [0, 65536]", "cores = -1"] {
            assert!(load(&format!("[server]\n{bad}\n"), &[]).is_err(), "{bad}");
        }
        for good in ["65535", "0,65535"] {
            let c = load("", &[("TOKEND_SERVER_CORES", good)]).unwrap();
            let printed = toml::to_string(&c).unwrap();
            let again: Config = toml::from_str(&printed).unwrap();
            assert_eq!(again.server.cores, c.server.cores, "{good}");
        }
    }

    #[test]
    fn trusted_proxies_from_the_file_and_the_environment() {
        let c = load(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"::1\"]\n\
             forwarded_header = \"forwarded\"\n",
            &[],
        )
        .unwrap();
        let nets: Vec<String> = c
            .server
            .trusted_proxies
            .iter()
            .map(|n| n.0.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]);
        assert_eq!(c.server.forwarded_header, ForwardedHeader::Forwarded);
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(c.server.trusted_proxies[0].contains(ip("10.1.2.3")));
        assert!(c.server.trusted_proxies[0].contains(ip("::ffff:10.1.2.3")));
        assert!(!c.server.trusted_proxies[1].contains(ip("192.0.2.8")));
        // The environment: a comma-separated list, brackets optional.
        for text in ["10.0.0.0/8, 192.0.2.7", "[\"10.0.0.0/8\", \"192.0.2.7\"]"] {
            let c = load("", &[("TOKEND_SERVER_TRUSTED_PROXIES", text)]).unwrap();
            assert_eq!(c.server.trusted_proxies.len(), 2, "{text}");
        }
        let c = load("", &[("TOKEND_SERVER_TRUSTED_PROXIES", "")]).unwrap();
        assert!(c.server.trusted_proxies.is_empty());
        // Defaults: none, and X-Forwarded-For.
        let c = load("", &[]).unwrap();
        assert!(c.server.trusted_proxies.is_empty());
        assert_eq!(c.server.forwarded_header, ForwardedHeader::XForwardedFor);
        let e = load(
            "",
            &[("TOKEND_SERVER_TRUSTED_PROXIES", "10.0.0.0/8, proxy.lan")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("server.trusted_proxies") || e.contains("proxy.lan"),
            "{e}"
        );
    }

    /// Issue #12: an override is typed by the key it sets, not by how its
    /// text looks. A numeric- or TOML-looking text stays a string for a
    /// string key; numbers and booleans parse as their type, and a text that
    /// is not one names the key and the variable.
    #[test]
    fn env_overrides_are_typed_by_their_key() {
        let c = load(
            "",
            &[
                ("TOKEND_REDIS_PREFIX", "2024"),
                ("TOKEND_TOKENS_AUDIENCE", "1.5"),
                ("TOKEND_TOKENS_ISSUER", "true"),
                ("TOKEND_SERVER_LOG_LEVEL", "[debug]"),
                ("TOKEND_SERVER_PUBLIC_URL", "{ a = 1 }"),
                ("TOKEND_KEYS_KEK", "12345678"),
                ("TOKEND_KEYS_KEK_FILE", "0"),
                ("TOKEND_LIMITS_MAX_HEADERS", " 32 "),
                ("TOKEND_LIMITS_BLOCKING_NICE", "-0"),
                ("TOKEND_DATABASE_POOL_SIZE", "7"),
                ("TOKEND_REDIS_REVOCATION_MIRROR", "TRUE"),
                ("TOKEND_USERS_SELF_REGISTRATION", "false"),
                ("TOKEND_TOKENS_LEEWAY", "30s"),
            ],
        )
        .unwrap();
        assert_eq!(c.redis.prefix, "2024");
        assert_eq!(c.tokens.audience, "1.5");
        assert_eq!(c.tokens.issuer.as_deref(), Some("true"));
        assert_eq!(c.server.log_level, "[debug]");
        assert_eq!(c.server.public_url.as_deref(), Some("{ a = 1 }"));
        assert_eq!(c.keys.kek.as_deref(), Some("12345678"));
        assert_eq!(c.keys.kek_file.as_deref(), Some(Path::new("0")));
        assert_eq!(c.limits.max_headers, 32);
        assert_eq!(c.limits.blocking_nice, 0);
        assert_eq!(c.database.pool_size, Some(7));
        assert!(c.redis.revocation_mirror);
        assert!(!c.users.self_registration);
        assert_eq!(c.tokens.leeway, Duration::from_secs(30));
        for (cores, want) in [
            ("2", Cores::Count(2)),
            ("0,1", Cores::List(vec![0, 1])),
            ("[0, 1]", Cores::List(vec![0, 1])),
            ("all", Cores::All),
        ] {
            let c = load("", &[("TOKEND_SERVER_CORES", cores)]).unwrap();
            assert_eq!(c.server.cores, want, "{cores}");
        }
        for (var, value, key, what) in [
            (
                "TOKEND_LIMITS_MAX_HEADERS",
                "many",
                "limits.max_headers",
                "an integer",
            ),
            (
                "TOKEND_LIMITS_MAX_HEADERS",
                "1.5",
                "limits.max_headers",
                "an integer",
            ),
            (
                "TOKEND_DATABASE_POOL_SIZE",
                "",
                "database.pool_size",
                "an integer",
            ),
            (
                "TOKEND_SERVER_ACCESS_LOG",
                "1",
                "server.access_log",
                "true or false",
            ),
            (
                "TOKEND_SERVER_ACCESS_LOG",
                "yes",
                "server.access_log",
                "true or false",
            ),
        ] {
            let e = load("", &[(var, value)]).unwrap_err().to_string();
            assert!(
                e.contains(key) && e.contains(var) && e.contains(what),
                "{e}"
            );
        }
        // Out of range for the field's type: still named by serde.
        let e = load("", &[("TOKEND_LIMITS_MAX_HEADERS", "-1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.max_headers"), "{e}");
    }

    /// Every key of every section has a kind in the sample
    /// [`env_kind`] reads: an optional key left unset there would be read as
    /// a string whatever its type. The field lists come from the structs'
    /// own `Deserialize` (what `deserialize_struct` is told).
    #[test]
    fn env_kinds_cover_every_key() {
        use serde::de::{self, Visitor};

        struct Fields(Vec<&'static str>);
        impl<'de> de::Deserializer<'de> for &mut Fields {
            type Error = de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("a struct was expected"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.extend_from_slice(fields);
                Err(de::Error::custom("fields captured"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        fn fields<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
            let mut f = Fields(Vec::new());
            let _ = T::deserialize(&mut f);
            f.0
        }
        let sections: [(&str, Vec<&str>); 8] = [
            ("server", fields::<ServerConfig>()),
            ("database", fields::<DatabaseConfig>()),
            ("redis", fields::<RedisConfig>()),
            ("tokens", fields::<TokensConfig>()),
            ("passwords", fields::<PasswordsConfig>()),
            ("limits", fields::<LimitsConfig>()),
            ("keys", fields::<KeysConfig>()),
            ("users", fields::<UsersConfig>()),
        ];
        assert_eq!(fields::<Config>(), SECTIONS);
        let sample = toml::Value::try_from(Config::sample_with_every_key()).unwrap();
        for (section, keys) in &sections {
            assert!(SECTIONS.contains(section));
            assert!(!keys.is_empty(), "{section}");
            for key in keys {
                assert!(
                    sample.get(section).and_then(|s| s.get(key)).is_some(),
                    "{section}.{key} is missing from Config::sample_with_every_key"
                );
            }
        }
        assert_eq!(env_kind("limits", "max_headers"), EnvKind::Integer);
        assert_eq!(env_kind("redis", "prefix"), EnvKind::String);
        assert_eq!(env_kind("server", "access_log"), EnvKind::Boolean);
        assert_eq!(env_kind("server", "cores"), EnvKind::String);
        assert_eq!(env_kind("database", "pool_size"), EnvKind::Integer);
        assert_eq!(env_kind("server", "no_such_key"), EnvKind::String);
    }

    /// Issue #12: every credential form in a URL is hidden; what is not a
    /// credential stays readable.
    #[test]
    fn redact_url_hides_every_credential_form() {
        let cases: &[(&str, &[&str])] = &[
            ("postgres://app:hunter2@db/tokend", &["hunter2"]),
            ("postgresql://app:hunter2@db:5432/tokend", &["hunter2"]),
            ("redis://:pw123@127.0.0.1:6379/0", &["pw123"]),
            ("redis://default:pw123@127.0.0.1:6379/0", &["pw123"]),
            ("redis://pw123@127.0.0.1:6379/0", &["pw123"]),
            ("postgres://app@db/tokend?password=hunter2", &["hunter2"]),
            (
                "postgres://app@db/tokend?sslmode=require&password=hunter2&application_name=t",
                &["hunter2"],
            ),
            ("postgres://app@db/tokend?sslpassword=keypass", &["keypass"]),
            ("postgres://app@db/tokend?PassWord=hunter2", &["hunter2"]),
            ("postgres://app@db/tokend?pass%77ord=hunter2", &["hunter2"]),
            ("postgres://app@db/tokend?%70%61%73%73word=hunter2", &["hunter2"]),
            ("postgres://app@db/tokend?x=1;password=hunter2", &["hunter2"]),
            ("postgres://app@db/tokend#password=hunter2", &["hunter2"]),
            ("postgres://app@db/tokend?password=hun%26ter2", &["hun%26ter2"]),
            ("postgres://app@db/tokend?password=hun&ter2&x=1", &["hun", "ter2"]),
            // A raw `@`, `/`, `:` or `?` in the password.
            ("postgres://app:hun@ter2@db/tokend", &["hun@ter2", "hun", "ter2"]),
            ("postgres://app:hun/ter2@db/tokend", &["hun/ter2", "ter2"]),
            ("postgres://app:hun:ter2@db/tokend", &["hun:ter2", "ter2"]),
            ("postgres://app:hun?ter2@db/tokend", &["ter2"]),
            // Both forms at once, on a multi-host URL.
            (
                "postgres://app:one@h1:5432,h2:5433/db?target_session_attrs=read-write&password=two",
                &["one", "two"],
            ),
            // Not a URL: hidden whole.
            ("host=db user=app password=hunter2", &["hunter2"]),
            ("app:hunter2@db", &["hunter2"]),
        ];
        for (url, secrets) in cases {
            let shown = redact_url(url);
            for secret in *secrets {
                assert!(!shown.contains(secret), "{url} -> {shown}");
            }
            assert!(shown.contains("<redacted>"), "{url} -> {shown}");
        }
        // What holds no credential is left as it is.
        for url in [
            "postgres://postgres@127.0.0.1:5432/tokend",
            "postgres://db/tokend?sslmode=require&application_name=tokend",
            "redis://127.0.0.1:6379/0",
            "postgres://[::1]:5432/tokend",
        ] {
            assert_eq!(redact_url(url), url);
        }
        // The rest of a redacted URL stays readable.
        assert_eq!(
            redact_url("postgres://app:pw@db:5432/t?sslmode=require&password=x&connect_timeout=5"),
            "postgres://app:<redacted>@db:5432/t?sslmode=require&password=<redacted>&connect_timeout=5"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let c = load(
            "[database]\nurl = \"postgres://app:hunter2@db/tokend\"\n[keys]\nkek = \"c2VjcmV0\"\n",
            &[("TOKEND_REDIS_URL", "redis://:pw123@127.0.0.1:6379/0")],
        )
        .unwrap();
        let printed = c.to_string();
        assert!(!printed.contains("hunter2"));
        assert!(!printed.contains("pw123"));
        assert!(!printed.contains("c2VjcmV0"));
        assert!(printed.contains("<redacted>"), "{printed}");
    }
}
