//! The `Authorization` header: HTTP Basic client credentials (RFC 6749
//! §2.3.1, RFC 7617) and bearer tokens (RFC 6750 §2.1), read from its bytes.
//!
//! Pure: header bytes in, decoded values out; nothing here knows about
//! clients, tokens or OAuth errors (`handlers` maps [`BasicError`] and
//! [`BearerError`] to its answers, and `identity` receives the decoded
//! id and secret). Imports only [`super::form`] of the crate.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::form::decode_component;

/// Largest `Authorization` header value [`parse_basic`] decodes: bounds the
/// work an anonymous request can cause, far above any real id and secret.
pub const MAX_BASIC_HEADER_BYTES: usize = 4096;

/// Occurs when an `Authorization: Basic` header cannot be read. Every
/// variant is `invalid_client` (RFC 6749 §5.2) on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicError {
    /// Occurs when the header value is over 4 KiB.
    TooLong,
    /// Occurs when the scheme is not `Basic` or no credentials follow it.
    NotBasic,
    /// Occurs when the credentials are not base64.
    Base64,
    /// Occurs when the decoded credentials have no `:`.
    MissingColon,
    /// Occurs when the credentials (after percent-decoding) are not UTF-8.
    NotUtf8,
    /// Occurs when the client id is empty.
    EmptyClientId,
}

impl BasicError {
    /// The message, as a `&'static str` (for `error_description`).
    pub fn as_str(self) -> &'static str {
        match self {
            BasicError::TooLong => "authorization header is too long",
            BasicError::NotBasic => "authorization scheme must be Basic",
            BasicError::Base64 => "basic credentials are not valid base64",
            BasicError::MissingColon => "basic credentials must be client_id:client_secret",
            BasicError::NotUtf8 => "basic credentials are not valid UTF-8",
            BasicError::EmptyClientId => "client id is empty",
        }
    }
}

impl fmt::Display for BasicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for BasicError {}

/// Standard base64 that accepts the padding present or absent: some clients
/// leave it out, and it carries no information.
const BASIC_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Reads HTTP Basic client credentials, RFC 6749 §2.3.1 (`client_secret_basic`):
/// `Basic base64(urlencode(client_id) ":" urlencode(client_secret))`.
///
/// The scheme is case-insensitive (RFC 9110 §11.1); the id and secret are
/// split at the first colon and each is form-urlencoding-decoded by
/// [`decode_component`] (`+` is a space, `%XX` a byte, a malformed `%` kept
/// literally) and must then be UTF-8. The secret may be empty; the id may
/// not. Input over [`MAX_BASIC_HEADER_BYTES`] is refused before any decoding.
pub fn parse_basic(header_value: &[u8]) -> Result<(String, String), BasicError> {
    if header_value.len() > MAX_BASIC_HEADER_BYTES {
        return Err(BasicError::TooLong);
    }
    let value = header_value.trim_ascii();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err(BasicError::NotBasic);
    }
    let token = rest.trim_ascii_start();
    if token.is_empty() {
        return Err(BasicError::NotBasic);
    }
    let decoded = BASIC_BASE64.decode(token).map_err(|_| BasicError::Base64)?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(BasicError::MissingColon)?;
    let id = decode_component(&decoded[..colon]).map_err(|_| BasicError::NotUtf8)?;
    let secret = decode_component(&decoded[colon + 1..]).map_err(|_| BasicError::NotUtf8)?;
    if id.is_empty() {
        return Err(BasicError::EmptyClientId);
    }
    Ok((id, secret))
}

/// Occurs when a request carries no usable bearer token. Every variant is
/// `invalid_request` with a `Bearer` challenge (RFC 6750 §3.1) on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// Occurs when the request has more than one `Authorization` header.
    MoreThanOneHeader,
    /// Occurs when there is no `Authorization` header, or no token after
    /// the scheme.
    Missing,
    /// Occurs when the scheme is not `Bearer`.
    NotBearer,
    /// Occurs when the token is not one token68 value.
    Malformed,
}

impl BearerError {
    /// The message, as a `&'static str` (for `error_description`; static
    /// ASCII without quotes, so it may go into the challenge as it is).
    pub fn as_str(self) -> &'static str {
        match self {
            BearerError::MoreThanOneHeader => "more than one Authorization header",
            BearerError::Missing => "missing bearer token",
            BearerError::NotBearer => "Authorization must use the Bearer scheme",
            BearerError::Malformed => "malformed bearer token",
        }
    }
}

impl fmt::Display for BearerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for BearerError {}

/// Extracts the bearer token from the request's `Authorization` header
/// (RFC 6750 §2.1); `count` is how many such headers the request had. The
/// scheme name is case-insensitive; exactly one header with exactly one
/// token68 value is accepted.
pub fn bearer_token(authorization: Option<&[u8]>, count: u8) -> Result<&str, BearerError> {
    bearer_credentials(authorization, count).and_then(token68)
}

/// The first half of [`bearer_token`]: the header's count, the `Bearer`
/// scheme and a non-empty value, but not yet the value's characters
/// ([`token68`]). `/validate` looks the value up in the verified-token
/// cache first: a value equal to a token that verified is token68 already,
/// so the character scan (measured for issue #15 at ~1,250 instructions
/// per request for a 485-byte token, a sixth of the request's userland
/// cost) runs only on a cache miss, with the same outcome for every input.
#[inline]
pub fn bearer_credentials(authorization: Option<&[u8]>, count: u8) -> Result<&[u8], BearerError> {
    if count > 1 {
        return Err(BearerError::MoreThanOneHeader);
    }
    let Some(value) = authorization else {
        return Err(BearerError::Missing);
    };
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return Err(BearerError::NotBearer);
    }
    let token = value[7..].trim_ascii();
    if token.is_empty() {
        return Err(BearerError::Missing);
    }
    Ok(token)
}

/// The second half of [`bearer_token`]: `token` (non-empty, from
/// [`bearer_credentials`]) must be token68, RFC 7235 §2.1.
pub fn token68(token: &[u8]) -> Result<&str, BearerError> {
    // token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body_end = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    if body_end == 0 || !is_token68_body(&token[..body_end]) {
        return Err(BearerError::Malformed);
    }
    // token68 is ASCII (checked just above; the tail is '='), so this cannot
    // fail; `from_utf8` then takes its word-at-a-time ASCII path.
    std::str::from_utf8(token).map_err(|_| BearerError::Malformed)
}

/// True when every byte is a token68 body character (RFC 7235 §2.1):
/// `ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/"`.
///
/// Branch-free over the whole slice (`fold` with `&`, no short circuit), so
/// that the compiler vectorises it. Measured for issue #4 (callgrind, one
/// core, wrk -c64 on /validate with 485-byte EdDSA tokens): the per-byte
/// short-circuiting `all(is_ascii_alphanumeric() || matches!(..))` cost
/// ~5,600 instructions per request, 36% of tokend's userland path, and 5% of
/// the core's CPU time in `perf`. Every /validate and bearer-authenticated
/// request runs it, so a rejected token costing a whole scan is no concern.
#[inline]
fn is_token68_body(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        // `b | 0x20` folds ASCII upper case onto lower case; it maps no other
        // byte into `a..=z`.
        let alpha = (b | 0x20).wrapping_sub(b'a') < 26;
        let digit = b.wrapping_sub(b'0') < 10;
        // '-', '.' and '/' are adjacent (0x2D..=0x2F): one range test.
        let other = (b.wrapping_sub(b'-') < 3) | (b == b'_') | (b == b'~') | (b == b'+');
        ok & (alpha | digit | other)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use rand::RngCore;

    fn basic(raw: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(raw)).into_bytes()
    }

    /// A client secret made as `identity::clients` makes them: `tokend_cs_`
    /// and 32 random bytes, base64url without padding.
    fn client_secret() -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        format!("tokend_cs_{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    #[test]
    fn basic_credentials() {
        assert_eq!(
            parse_basic(&basic("app:s3cret")),
            Ok(("app".into(), "s3cret".into()))
        );
        // RFC 6749 §2.3.1: both parts are form-urlencoded first.
        assert_eq!(
            parse_basic(&basic("my%3Aapp:se%3Acret%2B+x")),
            Ok(("my:app".into(), "se:cret+ x".into()))
        );
        // Split at the first (raw) colon; later colons belong to the secret.
        assert_eq!(
            parse_basic(&basic("app:a:b")),
            Ok(("app".into(), "a:b".into()))
        );
        assert_eq!(
            parse_basic(&basic("app:%C3%A9")),
            Ok(("app".into(), "é".into()))
        );
        // Malformed percent-escapes stay literal, as in form_urlencoded.
        assert_eq!(
            parse_basic(&basic("app:100%")),
            Ok(("app".into(), "100%".into()))
        );
        assert_eq!(parse_basic(&basic("app:")), Ok(("app".into(), "".into())));
        // Scheme case-insensitive; padding optional; surrounding spaces ok.
        let token = STANDARD.encode("app:pw");
        for v in [
            format!("basic {token}"),
            format!("BASIC {token}"),
            format!("  Basic   {token}  "),
            format!("Basic {}", token.trim_end_matches('=')),
        ] {
            assert_eq!(
                parse_basic(v.as_bytes()),
                Ok(("app".into(), "pw".into())),
                "{v:?}"
            );
        }
        // The real secret format round-trips (base64url: '-' and '_' are
        // left alone by the form decoding).
        for secret in [client_secret(), "tokend_cs_a-b_c".to_string()] {
            assert_eq!(
                parse_basic(&basic(&format!("svc:{secret}"))),
                Ok(("svc".into(), secret))
            );
        }
    }

    #[test]
    fn broken_basic_credentials() {
        let cases: &[(&[u8], BasicError)] = &[
            (b"", BasicError::NotBasic),
            (b"Basic", BasicError::NotBasic),
            (b"Basic ", BasicError::NotBasic),
            (b"Bearer abc", BasicError::NotBasic),
            (b"Basicabc", BasicError::NotBasic),
            (b"Digest username=x", BasicError::NotBasic),
            (b"Basic !!!!", BasicError::Base64),
            (b"Basic YXBw OnB3", BasicError::Base64),
            (b"Basic YXBwOnB3\xff", BasicError::Base64),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_basic(input),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(parse_basic(&basic("apppw")), Err(BasicError::MissingColon));
        assert_eq!(parse_basic(&basic(":pw")), Err(BasicError::EmptyClientId));
        assert_eq!(parse_basic(&basic("%3A")), Err(BasicError::MissingColon));
        assert_eq!(parse_basic(&basic("app:%ff")), Err(BasicError::NotUtf8));
        assert_eq!(parse_basic(&basic("%C3:pw")), Err(BasicError::NotUtf8));
        let raw = [b"app:".as_slice(), &[0xC3, 0x28]].concat();
        let v = format!("Basic {}", STANDARD.encode(raw));
        assert_eq!(parse_basic(v.as_bytes()), Err(BasicError::NotUtf8));
        let long = basic(&format!("app:{}", "x".repeat(4000)));
        assert!(long.len() > MAX_BASIC_HEADER_BYTES);
        assert_eq!(parse_basic(&long), Err(BasicError::TooLong));
        let fits = basic(&format!("app:{}", "x".repeat(3000)));
        assert!(parse_basic(&fits).is_ok());
    }

    #[test]
    fn bearer_extraction() {
        assert_eq!(
            bearer_token(Some(b"Bearer abc.def-_~+/=="), 1),
            Ok("abc.def-_~+/==")
        );
        assert_eq!(bearer_token(Some(b"bearer abc"), 1), Ok("abc"));
        assert_eq!(bearer_token(Some(b"BEARER abc"), 1), Ok("abc"));
        assert!(bearer_token(None, 0).is_err());
        assert!(bearer_token(Some(b"Basic abc"), 1).is_err());
        assert!(bearer_token(Some(b"Bearer abc def"), 1).is_err());
        assert!(bearer_token(Some(b"Bearer "), 1).is_err());
        assert!(bearer_token(Some(b"Bearer abc"), 2).is_err());
        assert!(bearer_token(Some(b"Bearer a\"b"), 1).is_err());
        assert!(bearer_token(Some(b"Bearer ==="), 1).is_err());
    }

    /// Which refusal each malformed header gets: its description is what the
    /// client reads in `error_description` and the `Bearer` challenge.
    #[test]
    fn bearer_refusals() {
        let cases: &[(Option<&[u8]>, u8, BearerError)] = &[
            (Some(b"Bearer abc"), 2, BearerError::MoreThanOneHeader),
            (None, 0, BearerError::Missing),
            (Some(b"Bearer "), 1, BearerError::Missing),
            (Some(b"Bearer    "), 1, BearerError::Missing),
            (Some(b"Basic abc"), 1, BearerError::NotBearer),
            (Some(b"Bearer"), 1, BearerError::NotBearer),
            (Some(b"Bearerabc"), 1, BearerError::NotBearer),
            (Some(b"Bearer abc def"), 1, BearerError::Malformed),
            (Some(b"Bearer a\"b"), 1, BearerError::Malformed),
            (Some(b"Bearer ==="), 1, BearerError::Malformed),
            (Some(b"Bearer a=b"), 1, BearerError::Malformed),
        ];
        for (value, count, want) in cases {
            assert_eq!(
                bearer_token(*value, *count),
                Err(*want),
                "{:?}",
                value.map(String::from_utf8_lossy)
            );
        }
    }

    /// The branch-free token68 check (issue #4) accepts exactly the bytes of
    /// the plain definition, alone and at every position of a long token.
    #[test]
    fn token68_check_matches_the_definition() {
        for b in 0..=255u8 {
            let want =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_token68_body(&[b]), want, "byte {b:#04x}");
            let mut long = vec![b'a'; 97];
            for at in [0, 31, 32, 63, 96] {
                long[at] = b;
                assert_eq!(is_token68_body(&long), want, "byte {b:#04x} at {at}");
                long[at] = b'a';
            }
        }
    }
}
