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
            serde::de::Error::custom(
                "expected \"all\", a count like 4, or a list of core ids like [0, 1] or \"0,1\"",
            )
        };
        match Raw::deserialize(d)? {
            Raw::N(n) if n > 0 => Ok(Cores::Count(n as usize)),
            Raw::N(_) => Err(bad()),
            Raw::L(l) if !l.is_empty() && l.iter().all(|&c| c >= 0) => {
                Ok(Cores::List(l.into_iter().map(|c| c as usize).collect()))
            }
            Raw::L(_) => Err(bad()),
            Raw::S(s) => {
                let s = s.trim();
                if s.eq_ignore_ascii_case("all") {
                    return Ok(Cores::All);
                }
                if let Ok(n) = s.parse::<usize>() {
                    return if n > 0 {
                        Ok(Cores::Count(n))
                    } else {
                        Err(bad())
                    };
                }
                let list: Result<Vec<usize>, _> = s.split(',').map(|p| p.trim().parse()).collect();
                list.ok()
                    .filter(|l| !l.is_empty())
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
    /// Time allowed to receive a whole request head. Default `10s`.
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
    /// Time allowed to get a connection. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "postgres://postgres@127.0.0.1:5432/tokend".into(),
            pool_size: None,
            connect_timeout: Duration::from_secs(5),
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
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            prefix: "tokend:".into(),
            timeout: Duration::from_millis(100),
            revocation_mirror: false,
            mirror_max_lag: Duration::from_secs(1),
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
    /// Failed logins per username per window before `429`. Default 10.
    pub login_failures_per_user: u32,
    /// Failed logins per client IP per window before `429`. Default 100.
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
            sec.insert(key, env_value(&value));
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

/// Replaces the password of `scheme://user:password@host` with `<redacted>`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_string(),
    }
}

/// An environment value as TOML: a number, boolean or array when it reads as
/// one, a string otherwise.
fn env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    if let Ok(mut t) = toml::from_str::<toml::Table>(&doc) {
        if let Some(v) = t.remove("v") {
            if !matches!(v, toml::Value::Table(_)) {
                return v;
            }
        }
    }
    toml::Value::String(raw.to_string())
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
