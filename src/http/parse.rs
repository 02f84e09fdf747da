//! Request parsing: `&[u8]` → a complete request, "need more bytes", or a
//! precise error. Never touches a socket, never allocates.
//!
//! `httparse` does the request line and headers; this module adds the framing
//! rules of RFC 9112 §6 that a server must enforce itself (one body length,
//! no smuggling through `Content-Length` + `Transfer-Encoding`) and the
//! configured size limits.
//!
//! Owns: [`Request`], [`Method`], the size [`Limits`] and every
//! [`ParseError`] with its status and message.
//!
//! Never imports: `net`, `handlers`, `router`, `state`, any service or store,
//! nor (today) anything else of the crate: the limits come in as [`Limits`],
//! filled from the configuration by `state`.

use std::mem::MaybeUninit;

/// Most headers a request may carry, whatever the configuration says. Bounds
/// the stack array the parser uses (32 bytes a slot).
pub const MAX_HEADERS_CAP: usize = 256;

/// The limits of one request, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head (request line + headers + blank line), bytes.
    pub max_head: usize,
    /// Largest body, bytes.
    pub max_body: usize,
    /// Most headers.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8192,
            max_body: 65536,
            max_headers: 64,
        }
    }
}

/// Request methods tokend routes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Other,
}

impl Method {
    fn from_str(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
}

/// A parsed request, borrowing the connection's read buffer. The headers a
/// handler may need are picked out while parsing, so that nothing has to walk
/// the header list twice.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: Method,
    /// Path without the query string.
    pub path: &'a str,
    /// Query string without the `?`, empty when absent.
    pub query: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Whether the connection may stay open after this request.
    pub keep_alive: bool,
    /// The `Authorization` header (the last one when repeated).
    pub authorization: Option<&'a [u8]>,
    /// How many `Authorization` headers came: more than one is refused by
    /// the handlers that read it.
    pub authorization_count: u8,
    pub content_type: Option<&'a [u8]>,
    /// `X-Forwarded-For` (the last one when repeated): read for the
    /// client's address only when the peer is a trusted proxy
    /// ([`super::forwarded::client_ip`]).
    pub forwarded_for: Option<&'a [u8]>,
    /// `Forwarded` (RFC 7239; the last one when repeated), likewise.
    pub forwarded: Option<&'a [u8]>,
    /// `Cookie` (the last one when repeated; browsers send one, RFC 6265
    /// §5.4): the browser session of the sign-in pages.
    pub cookie: Option<&'a [u8]>,
    pub body: &'a [u8],
}

impl Request<'_> {
    /// The media type of `Content-Type`, without parameters, lowercased
    /// comparison helper.
    pub fn content_type_is(&self, media: &str) -> bool {
        match self.content_type {
            Some(ct) => {
                let end = ct.iter().position(|&b| b == b';').unwrap_or(ct.len());
                ct[..end]
                    .trim_ascii()
                    .eq_ignore_ascii_case(media.as_bytes())
            }
            None => false,
        }
    }
}

/// The outcome of parsing the start of a buffer.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A whole request, and how many bytes of the buffer it used.
    Complete(Request<'a>, usize),
    /// More bytes are needed.
    Partial,
}

/// Why a request was refused. Each maps to one status; after any of them the
/// connection is closed, since the framing can no longer be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Occurs when the request line or a header is not valid HTTP/1.x.
    Malformed,
    /// Occurs when the head is larger than `limits.max_head_bytes`.
    HeadTooLarge,
    /// Occurs when there are more headers than `limits.max_headers`.
    TooManyHeaders,
    /// Occurs when `Content-Length` is over `limits.max_body_bytes`.
    BodyTooLarge,
    /// Occurs when `Content-Length` is not a decimal number, or repeated
    /// with different values.
    BadContentLength,
    /// Occurs when both `Content-Length` and `Transfer-Encoding` are present
    /// (a request-smuggling vector, RFC 9112 §6.1).
    ConflictingFraming,
    /// Occurs when the body uses `Transfer-Encoding` (chunked): tokend
    /// requires `Content-Length` and answers `411 Length Required`.
    LengthRequired,
}

impl ParseError {
    /// HTTP status for this error.
    pub fn status(self) -> u16 {
        match self {
            ParseError::Malformed
            | ParseError::BadContentLength
            | ParseError::ConflictingFraming => 400,
            ParseError::HeadTooLarge | ParseError::TooManyHeaders => 431,
            ParseError::BodyTooLarge => 413,
            ParseError::LengthRequired => 411,
        }
    }

    /// Plain-text explanation sent as the body.
    pub fn message(self) -> &'static str {
        match self {
            ParseError::Malformed => "malformed request line or header\n",
            ParseError::HeadTooLarge => "request head too large\n",
            ParseError::TooManyHeaders => "too many request headers\n",
            ParseError::BodyTooLarge => "request body too large\n",
            ParseError::BadContentLength => "invalid Content-Length\n",
            ParseError::ConflictingFraming => "both Content-Length and Transfer-Encoding\n",
            ParseError::LengthRequired => {
                "Transfer-Encoding is not supported; send Content-Length\n"
            }
        }
    }
}

/// Parses one request from the start of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Result<Parsed<'a>, ParseError> {
    let mut slots: [MaybeUninit<httparse::Header<'a>>; MAX_HEADERS_CAP] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(buf, &mut slots[..max_headers]);
    let head_len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limits.max_head {
                Err(ParseError::HeadTooLarge)
            } else {
                Ok(Parsed::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::TooManyHeaders),
        Err(_) => {
            // A head that is too large may also fail to parse at the point
            // where the buffer was cut; report the size, it's the real cause.
            return Err(if buf.len() > limits.max_head {
                ParseError::HeadTooLarge
            } else {
                ParseError::Malformed
            });
        }
    };
    if head_len > limits.max_head {
        return Err(ParseError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(ParseError::Malformed);
    };
    if !target.starts_with('/') {
        // Absolute-form and authority-form targets are for proxies.
        return Err(ParseError::Malformed);
    }
    // A byte search: `str::split_once('?')` goes through the generic char
    // searcher, ~100 instructions for a short path (callgrind, issue #15).
    let (path, query) = match target.bytes().position(|b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, ""),
    };

    let mut content_length: Option<usize> = None;
    let mut transfer_encoding = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut authorization = None;
    let mut authorization_count: u8 = 0;
    let mut content_type = None;
    let mut forwarded_for = None;
    let mut forwarded = None;
    let mut cookie = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let n = parse_content_length(h.value)?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(ParseError::BadContentLength);
                }
                content_length = Some(n);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => transfer_encoding = true,
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            }
            13 if name.eq_ignore_ascii_case(b"authorization") => {
                authorization = Some(h.value);
                authorization_count = authorization_count.saturating_add(1);
            }
            12 if name.eq_ignore_ascii_case(b"content-type") => content_type = Some(h.value),
            15 if name.eq_ignore_ascii_case(b"x-forwarded-for") => forwarded_for = Some(h.value),
            9 if name.eq_ignore_ascii_case(b"forwarded") => forwarded = Some(h.value),
            6 if name.eq_ignore_ascii_case(b"cookie") => cookie = Some(h.value),
            _ => {}
        }
    }
    if transfer_encoding {
        return Err(if content_length.is_some() {
            ParseError::ConflictingFraming
        } else {
            ParseError::LengthRequired
        });
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body {
        return Err(ParseError::BodyTooLarge);
    }
    let total = head_len + body_len;
    if buf.len() < total {
        return Ok(Parsed::Partial);
    }
    let keep_alive = if version == 1 {
        !conn_close
    } else {
        conn_keep_alive && !conn_close
    };
    Ok(Parsed::Complete(
        Request {
            method: Method::from_str(method),
            path,
            query,
            version,
            keep_alive,
            authorization,
            authorization_count,
            content_type,
            forwarded_for,
            forwarded,
            cookie,
            body: &buf[head_len..total],
        },
        total,
    ))
}

/// `Content-Length = 1*DIGIT`, at most 15 digits (no overflow, no sign, no
/// whitespace inside: httparse already trimmed the ends).
fn parse_content_length(v: &[u8]) -> Result<usize, ParseError> {
    if v.is_empty() || v.len() > 15 || !v.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadContentLength);
    }
    Ok(v.iter()
        .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits::default()
    }

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse(buf, &lim()) {
            Ok(Parsed::Complete(r, n)) => (r, n),
            other => panic!("expected complete, got {other:?}"),
        }
    }

    #[test]
    fn simple_get() {
        let (r, n) = complete(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(n, 34);
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/healthz");
        assert!(r.keep_alive);
        assert!(r.body.is_empty());
    }

    #[test]
    fn query_and_authorization() {
        let (r, _) =
            complete(b"GET /validate?scope=a%20b HTTP/1.1\r\nAuthorization: Bearer abc\r\n\r\n");
        assert_eq!(r.path, "/validate");
        assert_eq!(r.query, "scope=a%20b");
        assert_eq!(r.authorization, Some(&b"Bearer abc"[..]));
        assert_eq!(r.authorization_count, 1);
        let (r, _) = complete(b"GET / HTTP/1.1\r\nAuthorization: a\r\nauthorization: b\r\n\r\n");
        assert_eq!(r.authorization_count, 2);
        assert_eq!(r.cookie, None);
        let (r, _) =
            complete(b"GET /authorize HTTP/1.1\r\nAccept: */*\r\nCOOKIE: a=1; b=2\r\n\r\n");
        assert_eq!(r.cookie, Some(&b"a=1; b=2"[..]));
    }

    #[test]
    fn partial_head_and_body() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost", &lim()),
            Ok(Parsed::Partial)
        ));
        let req = b"POST /oauth/token HTTP/1.1\r\nContent-Length: 5\r\n\r\nab";
        assert!(matches!(parse(req, &lim()), Ok(Parsed::Partial)));
        let req = b"POST /oauth/token HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcdeGET";
        let (r, n) = complete(req);
        assert_eq!(r.body, b"abcde");
        assert_eq!(n, req.len() - 3);
    }

    #[test]
    fn http10_and_connection_header() {
        let (r, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r.keep_alive);
        let (r, _) = complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!r.keep_alive);
    }

    #[test]
    fn framing_errors() {
        let e = |b: &[u8]| parse(b, &lim()).unwrap_err();
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"),
            ParseError::ConflictingFraming
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ParseError::LengthRequired
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            ParseError::BadContentLength
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n"),
            ParseError::BadContentLength
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            ParseError::BadContentLength
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            ParseError::BadContentLength
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n"),
            ParseError::BodyTooLarge
        );
        // Identical repeated lengths are allowed (RFC 9110 §8.6).
        assert!(parse(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
            &lim()
        )
        .is_ok());
    }

    #[test]
    fn malformed() {
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse(bad, &lim()).unwrap_err(),
                ParseError::Malformed,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limits() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(parse(&big, &lim()).unwrap_err(), ParseError::HeadTooLarge);
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big, &lim()).unwrap_err(), ParseError::HeadTooLarge);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..65 {
            many.extend_from_slice(format!("X-{i}: a\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse(&many, &lim()).unwrap_err(),
            ParseError::TooManyHeaders
        );
    }

    #[test]
    fn content_type() {
        let (r, _) = complete(
            b"POST / HTTP/1.1\r\nContent-Type: Application/X-WWW-Form-Urlencoded; charset=utf-8\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(r.content_type_is("application/x-www-form-urlencoded"));
        assert!(!r.content_type_is("application/json"));
    }
}
