//! Tests of the configuration: defaults, every key's check, the overrides'
//! typing, redaction, and the printed file reading back.

use std::path::Path;

use super::env::{env_kind, EnvKind};
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

/// `oauth.display_name` and `oauth.code_ttl`: defaults, and the bad
/// values refused with the key named.
#[test]
fn sign_in_keys() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.oauth.display_name, "tokend");
    assert_eq!(c.oauth.code_ttl, Duration::from_secs(60));
    let c = load(
        "[oauth]\ndisplay_name = \"Example <Corp>\"\ncode_ttl = \"5s\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.oauth.display_name, "Example <Corp>");
    assert_eq!(c.oauth.code_ttl, Duration::from_secs(5));
    for bad in ["\"\"", "\"  \"", "\"a\\nb\""] {
        let e = load(&format!("[oauth]\ndisplay_name = {bad}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("oauth.display_name"), "{e}");
    }
    for bad in ["\"0s\"", "\"11m\""] {
        let e = load(&format!("[oauth]\ncode_ttl = {bad}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("oauth.code_ttl") && e.contains("10m"), "{e}");
    }
}

/// `oauth.session_idle_ttl` and `oauth.session_max_lifetime`: defaults,
/// and the bad values refused with the key named.
#[test]
fn session_lifetimes() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.oauth.session_idle_ttl, Duration::from_secs(1800));
    assert_eq!(c.oauth.session_max_lifetime, Duration::from_secs(12 * 3600));
    let c = load(
        "[oauth]\nsession_idle_ttl = \"2h\"\nsession_max_lifetime = \"2h\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.oauth.session_idle_ttl, Duration::from_secs(7200));
    for (toml, key, words) in [
        ("session_idle_ttl = \"30s\"", "oauth.session_idle_ttl", "1m"),
        (
            "session_idle_ttl = \"13h\"",
            "oauth.session_idle_ttl",
            "session_max_lifetime",
        ),
        (
            "session_max_lifetime = \"31d\"",
            "oauth.session_max_lifetime",
            "30d",
        ),
        (
            "session_max_lifetime = \"0s\"",
            "oauth.session_max_lifetime",
            "1m",
        ),
    ] {
        let e = load(&format!("[oauth]\n{toml}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains(words), "{e}");
    }
}

/// `oauth.password_grant`: on by default, switched off from the file or
/// the environment, and nothing but a boolean.
#[test]
fn password_grant_switch() {
    assert!(load("", &[]).unwrap().oauth.password_grant);
    let c = load("[oauth]\npassword_grant = false\n", &[]).unwrap();
    assert!(!c.oauth.password_grant);
    let c = load("", &[("TOKEND_OAUTH_PASSWORD_GRANT", "false")]).unwrap();
    assert!(!c.oauth.password_grant);
    // The environment wins over the file.
    let c = load(
        "[oauth]\npassword_grant = false\n",
        &[("TOKEND_OAUTH_PASSWORD_GRANT", "TRUE")],
    )
    .unwrap();
    assert!(c.oauth.password_grant);
    let e = load("", &[("TOKEND_OAUTH_PASSWORD_GRANT", "no")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("oauth.password_grant") && e.contains("true or false"),
        "{e}"
    );
    let e = load("[oauth]\npassword_grant = \"off\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("oauth.password_grant"), "{e}");
    let e = load("[oauth]\npasword_grant = false\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("oauth.pasword_grant"), "{e}");
    // Printed, it reads back.
    let c = load("[oauth]\npassword_grant = false\n", &[]).unwrap();
    let again = load(&c.redacted_toml(), &[]).unwrap();
    assert!(!again.oauth.password_grant);
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
    let sections: [(&str, Vec<&str>); 9] = [
        ("server", fields::<ServerConfig>()),
        ("database", fields::<DatabaseConfig>()),
        ("redis", fields::<RedisConfig>()),
        ("tokens", fields::<TokensConfig>()),
        ("passwords", fields::<PasswordsConfig>()),
        ("limits", fields::<LimitsConfig>()),
        ("keys", fields::<KeysConfig>()),
        ("users", fields::<UsersConfig>()),
        ("oauth", fields::<OAuthConfig>()),
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
    assert_eq!(env_kind("oauth", "password_grant"), EnvKind::Boolean);
    assert_eq!(env_kind("oauth", "display_name"), EnvKind::String);
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
        (
            "postgres://app@db/tokend?%70%61%73%73word=hunter2",
            &["hunter2"],
        ),
        (
            "postgres://app@db/tokend?x=1;password=hunter2",
            &["hunter2"],
        ),
        ("postgres://app@db/tokend#password=hunter2", &["hunter2"]),
        (
            "postgres://app@db/tokend?password=hun%26ter2",
            &["hun%26ter2"],
        ),
        (
            "postgres://app@db/tokend?password=hun&ter2&x=1",
            &["hun", "ter2"],
        ),
        // A raw `@`, `/`, `:` or `?` in the password.
        (
            "postgres://app:hun@ter2@db/tokend",
            &["hun@ter2", "hun", "ter2"],
        ),
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
