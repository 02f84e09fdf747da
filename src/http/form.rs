//! `application/x-www-form-urlencoded` decoding: the one decoder of form
//! bodies ([`Form`]) and of single form-encoded values ([`decode_component`],
//! which HTTP Basic credentials also go through, RFC 6749 §2.3.1).
//!
//! Pure: bytes in, values out; no socket, no OAuth types. Imports nothing of
//! the crate; `handlers` maps [`FormError`] to its OAuth answer.

use std::fmt;

/// Occurs when a form body or value cannot be decoded. Both are
/// `invalid_request` on the OAuth endpoints; [`FormError::as_str`] is the
/// `error_description` they send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormError {
    /// Occurs when a parameter name appears twice (RFC 6749 §3.1, §3.2).
    Repeated,
    /// Occurs when a name or value does not decode to UTF-8.
    NotUtf8,
}

impl FormError {
    /// The message, as a `&'static str` (for `error_description`).
    pub fn as_str(self) -> &'static str {
        match self {
            FormError::Repeated => "a parameter was repeated",
            FormError::NotUtf8 => "parameters must be UTF-8",
        }
    }
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for FormError {}

/// A decoded `application/x-www-form-urlencoded` body.
#[derive(Debug, Default)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// Parses strictly: every name and value must decode to UTF-8, and no
    /// parameter may appear twice (RFC 6749 §3.1, §3.2).
    pub fn parse(body: &[u8]) -> Result<Form, FormError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in body.split(|&b| b == b'&') {
            if part.is_empty() {
                continue;
            }
            let (name, value) = match part.iter().position(|&b| b == b'=') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &b""[..]),
            };
            let name = decode_component(name)?;
            let value = decode_component(value)?;
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
            .map(|(_, v)| v.as_str())
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
pub fn decode_component(raw: &[u8]) -> Result<String, FormError> {
    // Nothing to decode (the usual case: a JWT or refresh token is
    // base64url): one copy instead of two byte-by-byte passes and three
    // allocations (issue #4: the 485-byte `token` of every introspection).
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return String::from_utf8(raw.to_vec()).map_err(|_| FormError::NotUtf8);
    }
    let plus: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
    String::from_utf8(bytes).map_err(|_| FormError::NotUtf8)
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
