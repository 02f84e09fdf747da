//! Reading and checking: the TOML file and the `TOKEND_*` overrides merged
//! into one [`Config`], every cross-key rule checked once, and the values
//! derived from the keys ([`Config::issuer`], [`Config::blocking_threads`]).
//!
//! Owns: `Config::load`, the check, the derived values and printing.
//! Never imports: anything outside `config` (see the module's head).

use std::fmt;
use std::path::Path;

use super::env::env_value;
use super::redact::redact_url;
use super::*;

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
        let name = &self.oauth.display_name;
        if name.trim().is_empty()
            || name.chars().count() > 100
            || name.chars().any(char::is_control)
        {
            return Err(ConfigError::key(
                "oauth.display_name",
                "must be 1 to 100 characters, without control characters",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&self.oauth.code_ttl) {
            return Err(ConfigError::key(
                "oauth.code_ttl",
                "must be between 1s and 10m (RFC 6749 §4.1.2)",
            ));
        }
        let o = &self.oauth;
        let minute = Duration::from_secs(60);
        if !(minute..=Duration::from_secs(30 * 86400)).contains(&o.session_max_lifetime) {
            return Err(ConfigError::key(
                "oauth.session_max_lifetime",
                "must be between 1m and 30d",
            ));
        }
        if !(minute..=o.session_max_lifetime).contains(&o.session_idle_ttl) {
            return Err(ConfigError::key(
                "oauth.session_idle_ttl",
                "must be between 1m and oauth.session_max_lifetime",
            ));
        }
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
        if !self.redis.url.starts_with("redis://") && !self.redis.url.starts_with("rediss://") {
            return Err(ConfigError::key(
                "redis.url",
                "must start with redis:// (or rediss:// for TLS)",
            ));
        }
        if !self.redis.sentinels.is_empty() && self.redis.sentinel_master.is_empty() {
            return Err(ConfigError::key(
                "redis.sentinel_master",
                "is required with redis.sentinels: the name the sentinels monitor the primary by",
            ));
        }
        if self.redis.sentinels.is_empty() && !self.redis.sentinel_master.is_empty() {
            return Err(ConfigError::key(
                "redis.sentinels",
                "must list the sentinels (host:port) when redis.sentinel_master is set",
            ));
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
        if c.redis.sentinel_password.is_some() {
            c.redis.sentinel_password = Some("<redacted>".into());
        }
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
