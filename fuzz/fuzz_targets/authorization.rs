//! The `Authorization` header readers of `tokend::http::auth`, on any header
//! value: HTTP Basic client credentials (`parse_basic`) and the bearer token
//! with its token68 check (`bearer_token`).
//!
//! Invariants checked besides "never panics":
//! - accepted Basic credentials come from a value within the size cap, have
//!   a non-empty client id, and read back the same when a client encodes
//!   them again (RFC 6749 §2.3.1: form-urlencode, join with `:`, base64);
//! - `bearer_token` accepts exactly what a plain reading of RFC 6750 §2.1
//!   accepts (`Bearer`, any case, one space, then one token68 value with
//!   optional surrounding whitespace), and returns that token;
//! - more than one header, or none, is always refused.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tokend::http::auth::MAX_BASIC_HEADER_BYTES;
use tokend::http::{bearer_token, parse_basic, BearerError};

fuzz_target!(|data: &[u8]| {
    basic(data);
    bearer(data);
});

fn basic(value: &[u8]) {
    let Ok((id, secret)) = parse_basic(value) else {
        return;
    };
    assert!(value.len() <= MAX_BASIC_HEADER_BYTES);
    assert!(!id.is_empty());
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let again = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(&id), enc(&secret)))
    );
    if again.len() <= MAX_BASIC_HEADER_BYTES {
        assert_eq!(parse_basic(again.as_bytes()), Ok((id, secret)));
    }
}

/// RFC 6750 §2.1 read plainly: `token68 = 1*( ALPHA / DIGIT / "-" / "." /
/// "_" / "~" / "+" / "/" ) *"="`.
fn reference(value: &[u8]) -> Option<&[u8]> {
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &token[..body_len];
    let ok = !body.is_empty()
        && body
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    ok.then_some(token)
}

fn bearer(value: &[u8]) {
    let got = bearer_token(Some(value), 1);
    match (got, reference(value)) {
        (Ok(t), Some(want)) => {
            assert_eq!(t.as_bytes(), want);
            // A slice of the header, not a copy.
            let at = (t.as_ptr() as usize).wrapping_sub(value.as_ptr() as usize);
            assert!(at + t.len() <= value.len());
        }
        (Err(_), None) => {}
        (got, want) => panic!("bearer_token gives {got:?}, the reference {want:?}"),
    }
    assert_eq!(
        bearer_token(Some(value), 2),
        Err(BearerError::MoreThanOneHeader)
    );
    assert_eq!(bearer_token(None, 0), Err(BearerError::Missing));
}
