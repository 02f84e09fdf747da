//! Durations in the configuration: read with humantime (`"15m"`, `"30days"`,
//! `"100ms"`, `"1h 30m"`), printed in the largest unit that divides them
//! exactly (`"90days"`, `"15m"`), so that `tokend config check` and the
//! logged configuration show what an operator would have written. humantime's
//! own printing splits a duration into months of 30.44 days (90 days printed
//! as `"2months 29days 2h 52m 48s"`); it is still what prints a duration
//! with a fraction of a second.
//!
//! Owns: the serde form of every duration key. Never imports: anything
//! outside `config`.

use std::time::Duration;

use serde::{Deserializer, Serializer};

pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    humantime_serde::deserialize(d)
}

pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*value))
}

/// `value` as the configuration writes it (see the module's head).
pub fn format(value: Duration) -> String {
    if value.subsec_nanos() != 0 {
        return humantime::format_duration(value).to_string();
    }
    let secs = value.as_secs();
    for (unit, name) in [(86_400, "days"), (3_600, "h"), (60, "m")] {
        if secs != 0 && secs % unit == 0 {
            let n = secs / unit;
            return match name {
                "days" if n == 1 => "1day".to_string(),
                _ => format!("{n}{name}"),
            };
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_in_their_largest_exact_unit_and_read_back() {
        for (d, text) in [
            (Duration::from_secs(90 * 86_400), "90days"),
            (Duration::from_secs(30 * 86_400), "30days"),
            (Duration::from_secs(86_400), "1day"),
            (Duration::from_secs(7_200), "2h"),
            (Duration::from_secs(900), "15m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(0), "0s"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_millis(1_500), "1s 500ms"),
        ] {
            assert_eq!(format(d), text);
            assert_eq!(humantime::parse_duration(text).unwrap(), d, "{text}");
        }
    }
}
