//! The configuration loader, `tokend::config::Config::from_toml_and_env`:
//! TOML text plus `TOKEND_*` environment overrides → one checked `Config`.
//!
//! Input: UTF-8 text; up to the first NUL it is the TOML file, after it one
//! override per line, `SECTION_KEY=value`, each given as the variable
//! `TOKEND_SECTION_KEY` (so the fuzzer need not find the prefix itself).
//!
//! Invariants checked besides "never panics":
//! - a configuration that loads prints (`redacted_toml`, what `tokend
//!   config check` shows) without an error;
//! - printed unredacted, it loads again to the same configuration: nothing
//!   the loader accepts is lost or changed by writing it back out.
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};
use tokend::config::Config;

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    let (file, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (format!("TOKEND_{k}"), v.to_string()))
        .collect();
    let Ok(config) = Config::from_toml_and_env(file, "fuzz.toml", env) else {
        return Corpus::Keep;
    };
    let shown = config.redacted_toml();
    assert!(
        !shown.starts_with("# cannot print config"),
        "a loaded configuration does not print: {shown}"
    );
    let printed = toml::to_string(&config).expect("a loaded configuration serialises");
    let again = match Config::from_toml_and_env(&printed, "printed.toml", Vec::new()) {
        Ok(c) => c,
        Err(e) => panic!("the printed configuration does not load: {e}\n{printed}"),
    };
    assert_eq!(
        toml::to_string(&again).expect("serialises"),
        printed,
        "the printed configuration loads to another one"
    );
    Corpus::Keep
});
