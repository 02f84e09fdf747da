//! `TOKEND_<SECTION>_<KEY>` overrides: each variable's text read as the
//! type of the key it sets.
//!
//! Owns: the typing of environment overrides. Never imports: anything
//! outside `config`.

use std::path::PathBuf;

use super::*;

/// What an environment override is read as: the type of the key it sets,
/// whatever its text looks like (issue #12: `TOKEND_REDIS_PREFIX=2024` was
/// read as the integer 2024 and the string key refused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EnvKind {
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
pub(super) fn env_kind(section: &str, key: &str) -> EnvKind {
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
    pub(super) fn sample_with_every_key() -> Config {
        let mut c = Config::default();
        c.server.public_url = Some(String::new());
        c.server.trusted_proxies = vec![ProxyNet(ipnet::IpNet::default())];
        c.database.pool_size = Some(1);
        c.tokens.issuer = Some(String::new());
        c.limits.blocking_threads = Some(1);
        c.keys.kek_file = Some(PathBuf::new());
        c.keys.kek = Some(String::new());
        c.redis.sentinels = vec![String::new()];
        c.redis.sentinel_username = Some(String::new());
        c.redis.sentinel_password = Some(String::new());
        c.redis.tls_ca_file = Some(PathBuf::new());
        c.redis.tls_cert_file = Some(PathBuf::new());
        c.redis.tls_key_file = Some(PathBuf::new());
        c.redis.tls_server_name = Some(String::new());
        c
    }
}

/// The environment variable `var`'s text as the value of `section.key`, typed
/// by the key ([`env_kind`]); a text that is not of that type is refused
/// with the key and the variable named.
pub(super) fn env_value(
    var: &str,
    section: &str,
    key: &str,
    raw: &str,
) -> Result<toml::Value, ConfigError> {
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
