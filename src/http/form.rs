//! `application/x-www-form-urlencoded` decoding: the one decoder of form
//! bodies ([`Form`]) and of single form-encoded values ([`decode_component`],
//! which HTTP Basic credentials also go through, RFC 6749 §2.3.1).
//!
//! Pure: bytes in, values out; no socket, no OAuth types. Imports nothing of
//! the crate; `handlers` maps [`FormError`] to its OAuth answer.

use std::borrow::Cow;
use std::fmt;

/// Most `&`-separated parts a form body may have (empty ones count too).
///
/// What the endpoints need: the password grant sends at most 6 parameters
/// (`grant_type`, `username`, `password`, `scope`, `client_id`,
/// `client_secret`), introspection and revocation 4; the OAuth extensions a
/// client may add (RFC 8707 `resource`, PKCE, RFC 8693 token exchange,
/// `client_assertion`…) stay under 20. 64 leaves three times that, so no
/// client that speaks OAuth is refused.
///
/// Why a cap: the form is decoded on the core before the client is
/// authenticated, so its cost is paid for anyone. Issue #12: 8,014 distinct
/// parameters (63 KB) took 175–190 ms of core time with the linear duplicate
/// scan (quadratic in the parameter count); 71 ms of CPU time measured again
/// on a release build, 25 µs with the cap (the request refused at the 65th
/// part, reading 63 KB from the socket included). With the cap the scan is bounded:
/// at most 64 × 63 / 2 = 2,016 comparisons, and only names of equal length
/// compare bytes, so it reads at most 32 times the body (one `memcmp` over
/// ≤ 2 MiB for a 64 KiB body); decoding reads each byte once. Counting the
/// empty parts too bounds the loop itself (65 turns at most), so `&&&…`
/// costs no more than a real form. The slowest forms measured are in
/// `handlers::budget`.
pub const MAX_FORM_PARAMS: usize = 64;

/// Occurs when a form body or value cannot be decoded. Both are
/// `invalid_request` on the OAuth endpoints; [`FormError::as_str`] is the
/// `error_description` they send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormError {
    /// Occurs when a parameter name appears twice (RFC 6749 §3.1, §3.2).
    Repeated,
    /// Occurs when a name or value does not decode to UTF-8.
    NotUtf8,
    /// Occurs when the body has more than [`MAX_FORM_PARAMS`] parts.
    TooManyParams,
}

impl FormError {
    /// The message, as a `&'static str` (for `error_description`).
    pub fn as_str(self) -> &'static str {
        match self {
            FormError::Repeated => "a parameter was repeated",
            FormError::NotUtf8 => "parameters must be UTF-8",
            FormError::TooManyParams => "a form may have at most 64 parameters",
        }
    }
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for FormError {}

/// A decoded `application/x-www-form-urlencoded` body. A name or value
/// with nothing to decode (the usual case: a token is base64url) borrows
/// the body's bytes: no allocation, no copy.
#[derive(Debug, Default)]
pub struct Form<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Form<'a> {
    /// Parses strictly: every name and value must decode to UTF-8, no
    /// parameter may appear twice (RFC 6749 §3.1, §3.2), and the body may
    /// have at most [`MAX_FORM_PARAMS`] `&`-separated parts (refused on the
    /// first part over, before it is decoded).
    pub fn parse(body: &'a [u8]) -> Result<Form<'a>, FormError> {
        let mut pairs: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::new();
        // The `&` and `=` are found with `memchr` (SIMD) rather than a byte
        // loop: callgrind put the loop at ~1,900 instructions of an
        // introspection's ~24,000 (its ~500-byte body, issue #15). The parts
        // are those of `body.split(|&b| b == b'&')`: empty ones included.
        let mut rest = Some(body);
        let mut i = 0;
        while let Some(remaining) = rest {
            let part = match memchr::memchr(b'&', remaining) {
                Some(at) => {
                    rest = Some(&remaining[at + 1..]);
                    &remaining[..at]
                }
                None => {
                    rest = None;
                    remaining
                }
            };
            if i >= MAX_FORM_PARAMS {
                return Err(FormError::TooManyParams);
            }
            i += 1;
            if part.is_empty() {
                continue;
            }
            let (name, value) = match memchr::memchr(b'=', part) {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &b""[..]),
            };
            let name = decode_borrowed(name)?;
            let value = decode_borrowed(value)?;
            // Linear, but over at most MAX_FORM_PARAMS names (see there).
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(FormError::Repeated);
            }
            pairs.push((name, value));
        }
        Ok(Form { pairs })
    }

    /// The value of `name`; empty values count as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| &**v)
            .filter(|v| !v.is_empty())
    }
}

/// The decoded values of every `name=` in a query string, in order; unlike
/// [`Form::parse`], a query may repeat a name (`?scope=a&scope=b`). A pair
/// whose name does not decode is not `name`; a value that does not decode
/// is an `Err`, for the caller to refuse.
pub fn query_values<'a>(
    query: &'a [u8],
    name: &'a str,
) -> impl Iterator<Item = Result<String, FormError>> + 'a {
    query
        .split(|&b| b == b'&')
        .filter(|part| !part.is_empty())
        .filter_map(move |part| {
            let (n, v) = match part.iter().position(|&b| b == b'=') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &b""[..]),
            };
            (decode_component(n).ok()? == name).then(|| decode_component(v))
        })
}

/// Decodes one form-encoded name or value as `form_urlencoded::parse` does
/// (`+` is a space, `%XX` a byte, a malformed `%` kept literally), but
/// refusing (rather than replacing) bytes that are not UTF-8.
///
/// One pass into one buffer, each input byte read once (issue #12: the
/// three passes and three buffers it replaced — `+` replaced, then
/// `percent_decode`, then UTF-8 — cost 3.2 ns a byte in a release build, a
/// 64 KiB body of `+` 210 µs of a core before any authentication).
pub fn decode_component(raw: &[u8]) -> Result<String, FormError> {
    decode_borrowed(raw).map(Cow::into_owned)
}

/// [`decode_component`], borrowing `raw` when there is nothing to decode.
fn decode_borrowed(raw: &[u8]) -> Result<Cow<'_, str>, FormError> {
    // Nothing to decode (the usual case: a JWT or refresh token is
    // base64url): `raw` itself, checked (issue #4: the 485-byte `token` of
    // every introspection; its copy into a String of its own cost ~250
    // instructions, callgrind, issue #15). `memchr2` (SIMD): the fold over
    // the bytes it replaced did not vectorise, ~5.6 instructions a byte in
    // callgrind (issue #15).
    if memchr::memchr2(b'%', b'+', raw).is_none() {
        return std::str::from_utf8(raw)
            .map(Cow::Borrowed)
            .map_err(|_| FormError::NotUtf8);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        i += 1;
        out.push(match b {
            b'+' => b' ',
            b'%' => match (
                raw.get(i).and_then(|&h| hex(h)),
                raw.get(i + 1).and_then(|&l| hex(l)),
            ) {
                (Some(h), Some(l)) => {
                    i += 2;
                    (h << 4) | l
                }
                _ => b'%',
            },
            b => b,
        });
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| FormError::NotUtf8)
}

/// The value of one hexadecimal digit, either case.
#[inline]
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_parsing_is_strict() {
        let f = Form::parse(b"grant_type=password&username=al+ice&password=p%40ss%3D%26").unwrap();
        assert_eq!(f.get("grant_type"), Some("password"));
        assert_eq!(f.get("username"), Some("al ice"));
        assert_eq!(f.get("password"), Some("p@ss=&"));
        assert_eq!(f.get("scope"), None);
        assert_eq!(Form::parse(b"a=1&a=2").unwrap_err(), FormError::Repeated);
        assert_eq!(FormError::Repeated.as_str(), "a parameter was repeated");
        assert!(Form::parse(b"a=%ff%fe").is_err());
        assert_eq!(Form::parse(b"scope=").unwrap().get("scope"), None);
    }

    /// Issue #12: at most MAX_FORM_PARAMS `&`-separated parts, empty ones
    /// included; the first part over is refused before it is decoded.
    #[test]
    fn at_most_64_parameters() {
        let params = |n: usize| {
            (0..n)
                .map(|i| format!("p{i}=1"))
                .collect::<Vec<_>>()
                .join("&")
        };
        let body = params(MAX_FORM_PARAMS);
        let f = Form::parse(body.as_bytes()).unwrap();
        assert_eq!(f.get("p63"), Some("1"));
        assert_eq!(
            Form::parse(params(MAX_FORM_PARAMS + 1).as_bytes()).unwrap_err(),
            FormError::TooManyParams
        );
        assert_eq!(
            Form::parse(params(8014).as_bytes()).unwrap_err(),
            FormError::TooManyParams
        );
        // Empty parts count: 64 of them pass, 65 do not.
        assert!(Form::parse(&[b'&'; MAX_FORM_PARAMS - 1]).is_ok());
        assert_eq!(
            Form::parse(&[b'&'; MAX_FORM_PARAMS]).unwrap_err(),
            FormError::TooManyParams
        );
        // The part over the cap is not decoded (its bad UTF-8 is not what
        // is reported); a repeat or bad UTF-8 within the cap still is.
        let mut over = params(MAX_FORM_PARAMS).into_bytes();
        over.extend_from_slice(b"&x=%ff");
        assert_eq!(Form::parse(&over).unwrap_err(), FormError::TooManyParams);
        assert_eq!(
            Form::parse(b"a=1&a=2&x=%ff").unwrap_err(),
            FormError::Repeated
        );
        assert_eq!(
            FormError::TooManyParams.as_str(),
            "a form may have at most 64 parameters"
        );
    }

    /// The one-pass decoder (issue #12) decodes exactly as the three passes
    /// it replaced (`+` replaced, `percent_decode`, strict UTF-8), on
    /// every short string over an alphabet of escapes, partial escapes,
    /// `+`, plain and non-UTF-8 bytes, and on random longer ones.
    #[test]
    fn one_pass_decoding_matches_the_three_passes() {
        fn reference(raw: &[u8]) -> Result<String, FormError> {
            let plus: Vec<u8> = raw
                .iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect();
            let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
            String::from_utf8(bytes).map_err(|_| FormError::NotUtf8)
        }
        let alphabet: &[u8] = b"%+2BfFgz\xc3\xa9\xff ";
        let mut input = Vec::new();
        // Every string of up to 4 symbols.
        for len in 0..=4u32 {
            for mut n in 0..alphabet.len().pow(len) {
                input.clear();
                for _ in 0..len {
                    input.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                assert_eq!(decode_component(&input), reference(&input), "{input:?}");
            }
        }
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..40);
            input.clear();
            input.extend((0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())]));
            assert_eq!(decode_component(&input), reference(&input), "{input:?}");
        }
    }

    #[test]
    fn query_values_allow_repeats() {
        let got: Vec<_> = query_values(b"scope=a+b&x=1&sc%6Fpe=c&scope", "scope").collect();
        assert_eq!(got, [Ok("a b".into()), Ok("c".into()), Ok(String::new())]);
        let bad: Vec<_> = query_values(b"scope=%ff&%ff=1", "scope").collect();
        assert_eq!(bad, [Err(FormError::NotUtf8)]);
    }

    /// The value decoder behind both forms and Basic credentials: `+`,
    /// `%XX`, a malformed `%` kept, non-UTF-8 refused (with or without
    /// escapes, so the fast path and the decoding path agree).
    #[test]
    fn component_decoding() {
        assert_eq!(decode_component(b"a+b%20c").unwrap(), "a b c");
        assert_eq!(decode_component(b"%C3%A9").unwrap(), "é");
        assert_eq!(decode_component(b"100%").unwrap(), "100%");
        assert_eq!(decode_component(b"%zz").unwrap(), "%zz");
        assert_eq!(decode_component(b"").unwrap(), "");
        assert_eq!(decode_component(b"%ff"), Err(FormError::NotUtf8));
        assert_eq!(decode_component(b"\xff"), Err(FormError::NotUtf8));
        assert_eq!(FormError::NotUtf8.as_str(), "parameters must be UTF-8");
    }
}
