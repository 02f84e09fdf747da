//! The form decoder: `tokend::http::Form::parse` (bodies of the OAuth
//! endpoints), `http::form::query_values` (`/validate?scope=`) and
//! `http::form::decode_component` (every name and value, and the HTTP Basic
//! credentials), on any bytes.
//!
//! Checked against `form_urlencoded` (the WHATWG decoder tokend's is meant
//! to agree with, except that tokend refuses what is not UTF-8 where
//! `form_urlencoded` substitutes U+FFFD):
//! - a decoded component is `form_urlencoded`'s decoding; a refused one has a
//!   U+FFFD in `form_urlencoded`'s;
//! - an accepted form has exactly `form_urlencoded`'s pairs (unique names,
//!   `get` gives each value, empty ones absent); a form refused for a repeat
//!   has a repeated name; one refused as not UTF-8 has a U+FFFD;
//! - `query_values` yields one item per `form_urlencoded` pair of that name,
//!   in order, the same value or an error where that value has a U+FFFD.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use tokend::http::form::{decode_component, query_values};
use tokend::http::{Form, FormError};

const REPLACEMENT: char = '\u{FFFD}';

fuzz_target!(|data: &[u8]| {
    let reference: Vec<(String, String)> = form_urlencoded::parse(data)
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect();
    component(data);
    form(data, &reference);
    for name in ["scope", ""] {
        query(data, name, &reference);
    }
    // A name taken from the input, so that matching is tried on any name.
    if let Some((name, _)) = reference.first() {
        if !name.contains(REPLACEMENT) {
            query(data, name, &reference);
        }
    }
});

fn component(raw: &[u8]) {
    let got = decode_component(raw);
    if let Ok(s) = &got {
        // Decoding never grows: `%XX` is one byte, `+` one byte.
        assert!(s.len() <= raw.len());
    }
    // Without `&` and `=`, `form_urlencoded` reads the whole input as one
    // name: the same decoding.
    if raw.is_empty() || raw.contains(&b'&') || raw.contains(&b'=') {
        return;
    }
    let (want, _) = form_urlencoded::parse(raw).next().expect("one pair");
    match got {
        Ok(s) => assert_eq!(s, want),
        Err(e) => {
            assert_eq!(e, FormError::NotUtf8);
            assert!(want.contains(REPLACEMENT), "refused {want:?}");
        }
    }
}

fn form(body: &[u8], reference: &[(String, String)]) {
    let mut names = HashSet::new();
    let repeated = !reference.iter().all(|(n, _)| names.insert(n.as_str()));
    let lossy = reference
        .iter()
        .any(|(n, v)| n.contains(REPLACEMENT) || v.contains(REPLACEMENT));
    match Form::parse(body) {
        Ok(form) => {
            assert!(!repeated, "accepted a repeated name");
            for (n, v) in reference {
                let want = Some(v.as_str()).filter(|v| !v.is_empty());
                assert_eq!(form.get(n), want, "{n:?}");
            }
        }
        Err(FormError::Repeated) => assert!(repeated, "no name is repeated"),
        Err(FormError::NotUtf8) => assert!(lossy, "every pair is UTF-8"),
        // Any other refusal (a cap on the parameters, say) is not checked
        // against the reference.
        #[allow(unreachable_patterns)]
        Err(_) => {}
    }
}

fn query(q: &[u8], name: &str, reference: &[(String, String)]) {
    let got: Vec<Result<String, FormError>> = query_values(q, name).collect();
    let want: Vec<&String> = reference
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(got.len(), want.len(), "values of {name:?}");
    for (g, w) in got.iter().zip(want) {
        match g {
            Ok(v) => assert_eq!(v, w),
            Err(e) => {
                assert_eq!(*e, FormError::NotUtf8);
                assert!(w.contains(REPLACEMENT), "refused {w:?}");
            }
        }
    }
}
