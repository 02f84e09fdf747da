//! The rules a client's registered redirect URIs (and post-logout redirect
//! URIs) must follow before they are stored. The authorization endpoint
//! (issue #16) then compares a request's `redirect_uri` with them by exact
//! string match ([`ClientRecord::redirect_uri_registered`]), so what is
//! refused here can never become a redirect target.
//!
//! A redirect URI (RFC 6749 §3.1.2, RFC 9700 §2.1, RFC 8252 §7) must be:
//! - absolute, with no fragment (RFC 6749 §3.1.2);
//! - `https`; or `http` on a loopback host only (`127.0.0.1`, `[::1]`,
//!   `localhost`: RFC 8252 §7.3, a native app's own listener); or a
//!   private-use scheme containing a dot, the reverse of a domain the app's
//!   publisher controls (`com.example.app:/callback`, RFC 8252 §7.1). Any
//!   other scheme (`http` to another host, `javascript:`, `data:`, `file:`)
//!   is refused: a code sent there travels in the clear or to whoever
//!   handles the scheme;
//! - without userinfo (`https://user@host/`): it hides the real host from
//!   people reading the URI, and RFC 3986 §7.6 calls it out as a phishing
//!   device;
//! - made only of the characters RFC 3986 allows (`%`-encode the rest), so
//!   that it can go into a `Location` header or an HTML attribute as it is:
//!   no space, no control character, no quote or angle bracket;
//! - at most [`MAX_REDIRECT_URI_BYTES`] long, and a client has at most
//!   [`MAX_REDIRECT_URIS`] of each kind.
//!
//! Owns: those rules and their messages. Never imports anything of the
//! crate: it looks at strings.
//!
//! [`ClientRecord::redirect_uri_registered`]: super::ClientRecord::redirect_uri_registered

use std::fmt;

/// Most redirect URIs (and, separately, post-logout redirect URIs) one
/// client may register. A client has one per platform or environment; 16
/// leaves room for that and bounds the client table's memory and the linear
/// scan of [`super::ClientRecord::redirect_uri_registered`].
pub const MAX_REDIRECT_URIS: usize = 16;

/// Longest redirect URI, in bytes: the length browsers and servers
/// commonly accept in a URL, and far beyond any real callback address. A
/// registered URI also comes back in every authorization request, which
/// must fit `limits.max_head_bytes`.
pub const MAX_REDIRECT_URI_BYTES: usize = 2048;

/// Hosts on which an `http` redirect URI is allowed: the loopback interface
/// of the device the app runs on (RFC 8252 §7.3). `localhost` is accepted
/// too, though RFC 8252 §8.3 prefers the IP literals (a name can resolve
/// elsewhere); compared case-insensitively.
const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "[::1]", "localhost"];

/// Occurs when a redirect URI breaks a rule of the module's head. The
/// message names the rule and how to comply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectUriError {
    /// Occurs when the URI is empty.
    Empty,
    /// Occurs when the URI is longer than [`MAX_REDIRECT_URI_BYTES`].
    TooLong,
    /// Occurs when the URI holds a byte RFC 3986 does not allow (space,
    /// control character, non-ASCII, `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`,
    /// `|`, `}`) or a `%` not followed by two hex digits.
    Character,
    /// Occurs when the URI has no scheme (it is relative).
    NotAbsolute,
    /// Occurs when the URI has a fragment (`#…`), RFC 6749 §3.1.2.
    Fragment,
    /// Occurs when the authority holds userinfo (`user@`).
    Userinfo,
    /// Occurs when an `https` or `http` URI has no host.
    NoHost,
    /// Occurs when the port is not a number from 1 to 65535.
    Port,
    /// Occurs when an `http` URI's host is not a loopback host.
    HttpNotLoopback,
    /// Occurs when the scheme is neither `https`, `http`, nor a private-use
    /// scheme with a dot.
    Scheme,
}

impl RedirectUriError {
    /// The message: which rule, and how to comply.
    pub fn as_str(self) -> &'static str {
        match self {
            RedirectUriError::Empty => "is empty",
            RedirectUriError::TooLong => "is longer than 2048 bytes",
            RedirectUriError::Character => {
                "holds a character a URI may not contain (space, control character, non-ASCII, \" < > \\ ^ ` { | }) or a stray %; percent-encode it (RFC 3986)"
            }
            RedirectUriError::NotAbsolute => {
                "is not an absolute URI: it needs a scheme, like https://app.example.com/callback (RFC 6749 §3.1.2)"
            }
            RedirectUriError::Fragment => {
                "must not have a fragment (#...) (RFC 6749 §3.1.2)"
            }
            RedirectUriError::Userinfo => {
                "must not hold a user name or password (user@host): it hides the real host"
            }
            RedirectUriError::NoHost => "has no host",
            RedirectUriError::Port => "has a port that is not a number from 1 to 65535",
            RedirectUriError::HttpNotLoopback => {
                "uses http on a host that is not loopback: use https, or http only on 127.0.0.1, [::1] or localhost for a native app (RFC 8252 §7.3)"
            }
            RedirectUriError::Scheme => {
                "must use https, http on a loopback host (127.0.0.1, [::1], localhost), or a native app's private-use scheme with a dot, like com.example.app:/callback (RFC 8252 §7.1)"
            }
        }
    }
}

impl fmt::Display for RedirectUriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for RedirectUriError {}

/// Checks one redirect URI (or post-logout redirect URI) against the rules
/// of the module's head.
pub fn check_redirect_uri(uri: &str) -> Result<(), RedirectUriError> {
    if uri.is_empty() {
        return Err(RedirectUriError::Empty);
    }
    if uri.len() > MAX_REDIRECT_URI_BYTES {
        return Err(RedirectUriError::TooLong);
    }
    check_characters(uri.as_bytes())?;
    if uri.contains('#') {
        return Err(RedirectUriError::Fragment);
    }
    let (scheme, rest) = split_scheme(uri).ok_or(RedirectUriError::NotAbsolute)?;
    let host = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find(['/', '?']).unwrap_or(after.len());
            Some(check_authority(&after[..end])?)
        }
        None => None,
    };
    if scheme.eq_ignore_ascii_case("https") {
        match host {
            Some(h) if !h.is_empty() => Ok(()),
            _ => Err(RedirectUriError::NoHost),
        }
    } else if scheme.eq_ignore_ascii_case("http") {
        match host {
            Some(h) if LOOPBACK_HOSTS.iter().any(|l| l.eq_ignore_ascii_case(h)) => Ok(()),
            Some(h) if !h.is_empty() => Err(RedirectUriError::HttpNotLoopback),
            _ => Err(RedirectUriError::NoHost),
        }
    } else if scheme.contains('.') {
        // RFC 8252 §7.1: a reverse domain name; an authority is allowed
        // (`com.example.app://callback`) but the single slash is usual.
        Ok(())
    } else {
        Err(RedirectUriError::Scheme)
    }
}

/// Only the characters of RFC 3986 §2 (unreserved, reserved, and `%`
/// followed by two hex digits).
fn check_characters(uri: &[u8]) -> Result<(), RedirectUriError> {
    let allowed = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b':'
                    | b'/'
                    | b'?'
                    | b'#'
                    | b'['
                    | b']'
                    | b'@'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    };
    let mut i = 0;
    while i < uri.len() {
        match uri[i] {
            b'%' => {
                let hex = uri.get(i + 1..i + 3).unwrap_or_default();
                if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(RedirectUriError::Character);
                }
                i += 3;
            }
            b if allowed(b) => i += 1,
            _ => return Err(RedirectUriError::Character),
        }
    }
    Ok(())
}

/// The scheme (RFC 3986 §3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`)
/// and what follows its colon; `None` when the URI has no scheme.
fn split_scheme(uri: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = uri.split_once(':')?;
    let mut bytes = scheme.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

/// Checks an authority (`host[:port]`, no userinfo) and returns its host
/// (an IPv6 literal with its brackets).
fn check_authority(authority: &str) -> Result<&str, RedirectUriError> {
    if authority.contains('@') {
        return Err(RedirectUriError::Userinfo);
    }
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => {
                let (host, after) = authority.split_at(end + 1);
                match after {
                    "" => (host, None),
                    _ => match after.strip_prefix(':') {
                        Some(port) => (host, Some(port)),
                        None => return Err(RedirectUriError::Port),
                    },
                }
            }
            None => return Err(RedirectUriError::NoHost),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if let Some(port) = port {
        // RFC 3986 allows an empty port; nobody means it, and the URI the
        // client sends later would have to repeat the stray colon exactly.
        let ok = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !ok {
            return Err(RedirectUriError::Port);
        }
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        for uri in [
            "https://app.example.com/callback",
            "https://app.example.com",
            "https://app.example.com:8443/cb?tenant=a&x=%2F",
            "https://[2001:db8::1]/cb",
            "HTTPS://app.example.com/cb",
            // RFC 8252 §7.3: loopback, any port.
            "http://127.0.0.1/cb",
            "http://127.0.0.1:51004/oauth2redirect",
            "http://[::1]:8080/",
            "http://localhost:3000/callback",
            "http://LOCALHOST/cb",
            // RFC 8252 §7.1: private-use schemes of native apps.
            "com.example.app:/oauth2redirect/example-provider",
            "com.example.app://callback",
            "io.github.someone.tool:/cb",
        ] {
            assert_eq!(check_redirect_uri(uri), Ok(()), "{uri}");
        }
        let longest = format!("https://a.example/{}", "x".repeat(2048 - 18));
        assert_eq!(longest.len(), MAX_REDIRECT_URI_BYTES);
        assert_eq!(check_redirect_uri(&longest), Ok(()));
    }

    #[test]
    fn refused_with_the_rule_named() {
        use RedirectUriError::*;
        let long = format!("https://a.example/{}", "x".repeat(2048));
        let cases: &[(&str, RedirectUriError)] = &[
            ("", Empty),
            (long.as_str(), TooLong),
            // RFC 6749 §3.1.2: absolute, no fragment.
            ("/callback", NotAbsolute),
            ("app.example.com/callback", NotAbsolute),
            ("1https://a.example/", NotAbsolute),
            ("https://app.example.com/cb#frag", Fragment),
            ("https://app.example.com/cb#", Fragment),
            // Not loopback: the code would travel in the clear.
            ("http://app.example.com/cb", HttpNotLoopback),
            ("http://127.0.0.2/cb", HttpNotLoopback),
            ("http://localhost.evil.example/cb", HttpNotLoopback),
            ("http://127.0.0.1.nip.io/cb", HttpNotLoopback),
            ("http://[::2]/cb", HttpNotLoopback),
            ("http://0.0.0.0/cb", HttpNotLoopback),
            // Userinfo hides the host.
            ("https://app.example.com@evil.example/cb", Userinfo),
            ("https://user:pw@app.example.com/cb", Userinfo),
            ("http://127.0.0.1@evil.example/cb", Userinfo),
            ("com.example.app://user@host/cb", Userinfo),
            // No host.
            ("https:/cb", NoHost),
            ("https:///cb", NoHost),
            ("https:app.example.com", NoHost),
            ("http://:8080/cb", NoHost),
            ("http://[::1/cb", NoHost),
            // Ports.
            ("https://app.example.com:/cb", Port),
            ("https://app.example.com:0/cb", Port),
            ("https://app.example.com:65536/cb", Port),
            ("https://app.example.com:80a/cb", Port),
            ("http://[::1]x/cb", Port),
            // Schemes without a dot: not https, not a native app's own.
            ("javascript:alert(1)", Scheme),
            ("data:text/html,hi", Scheme),
            ("file:///etc/passwd", Scheme),
            ("myapp://callback", Scheme),
            ("ftp://files.example.com/", Scheme),
            // Characters that would break a header or an HTML attribute.
            ("https://app.example.com/c b", Character),
            ("https://app.example.com/cb\r\nSet-Cookie: x=1", Character),
            ("https://app.example.com/\"><script>", Character),
            ("https://app.example.com/\u{e9}", Character),
            ("https://app.example.com/%zz", Character),
            ("https://app.example.com/%4", Character),
            ("https://app.example.com/{x}", Character),
            ("https://app.example.com\\@evil.example/", Character),
        ];
        for (uri, want) in cases {
            assert_eq!(check_redirect_uri(uri), Err(*want), "{uri:?}");
        }
    }

    #[test]
    fn messages_name_the_rule() {
        let e = check_redirect_uri("http://app.example.com/cb").unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
        assert!(e.to_string().contains("127.0.0.1"), "{e}");
        let e = check_redirect_uri("https://a.example/#x").unwrap_err();
        assert!(e.to_string().contains("fragment"), "{e}");
        let e = check_redirect_uri("myapp:/cb").unwrap_err();
        assert!(e.to_string().contains("com.example.app:/callback"), "{e}");
    }
}
