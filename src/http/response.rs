//! Response writing into the connection's reused output buffer.
//!
//! Every response carries `Date` (cached per core, see [`DateCache`]) and
//! `Content-Length`; `Connection: close` is added when the connection ends
//! after it. Nothing here allocates once the buffer has grown to its working
//! size.
//!
//! Imports nothing of the crate: handlers call it, never the other way.

use std::cell::Cell;
use std::io::Write;
use std::time::SystemTime;

/// What a response needs to know about its request and connection.
#[derive(Debug, Clone, Copy)]
pub struct ResponseCtx<'a> {
    /// `Date` header value, 29 bytes (IMF-fixdate).
    pub date: &'a [u8; 29],
    /// Whether the connection stays open after this response.
    pub keep_alive: bool,
    /// A `HEAD` request: headers as for `GET`, no body bytes.
    pub head: bool,
    /// Set when the core began shutting down while the request was being
    /// handled: the response then says `Connection: close` too.
    pub closing: Option<&'a Cell<bool>>,
}

/// Status line for each status tokend sends, and the name of the `Date`
/// header that always follows it: one copy a response instead of two.
fn status_line_and_date(status: u16) -> &'static [u8] {
    match status {
        200 => b"HTTP/1.1 200 OK\r\nDate: ",
        201 => b"HTTP/1.1 201 Created\r\nDate: ",
        204 => b"HTTP/1.1 204 No Content\r\nDate: ",
        400 => b"HTTP/1.1 400 Bad Request\r\nDate: ",
        401 => b"HTTP/1.1 401 Unauthorized\r\nDate: ",
        403 => b"HTTP/1.1 403 Forbidden\r\nDate: ",
        404 => b"HTTP/1.1 404 Not Found\r\nDate: ",
        405 => b"HTTP/1.1 405 Method Not Allowed\r\nDate: ",
        409 => b"HTTP/1.1 409 Conflict\r\nDate: ",
        411 => b"HTTP/1.1 411 Length Required\r\nDate: ",
        413 => b"HTTP/1.1 413 Content Too Large\r\nDate: ",
        415 => b"HTTP/1.1 415 Unsupported Media Type\r\nDate: ",
        429 => b"HTTP/1.1 429 Too Many Requests\r\nDate: ",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\nDate: ",
        500 => b"HTTP/1.1 500 Internal Server Error\r\nDate: ",
        503 => b"HTTP/1.1 503 Service Unavailable\r\nDate: ",
        _ => b"HTTP/1.1 500 Internal Server Error\r\nDate: ",
    }
}

/// Content types tokend sends.
pub const TEXT: &str = "text/plain; charset=utf-8";
pub const JSON: &str = "application/json";

/// Writes a whole response. `extra_headers` are complete header lines, each
/// ending in `\r\n` (pre-rendered by the caller, e.g. from the verified-token
/// cache).
pub fn write(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    status: u16,
    content_type: Option<&str>,
    extra_headers: &[u8],
    body: &[u8],
) {
    write_head(out, ctx, status, content_type, extra_headers, body.len());
    if !ctx.head {
        out.extend_from_slice(body);
    }
}

/// Writes the status line and headers for a body of `len` bytes that the
/// caller appends itself (unless `ctx.head`).
pub fn write_head(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    status: u16,
    content_type: Option<&str>,
    extra_headers: &[u8],
    len: usize,
) {
    write_head_with(out, ctx, status, content_type, len, |o| {
        o.extend_from_slice(extra_headers)
    });
}

/// [`write_head`] with the extra headers written by `extra` straight into
/// the output buffer (each ending in `\r\n`), for headers built per
/// response without a buffer of their own.
#[inline]
pub fn write_head_with(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    status: u16,
    content_type: Option<&str>,
    len: usize,
    extra: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(status_line_and_date(status));
    out.extend_from_slice(ctx.date);
    out.extend_from_slice(b"\r\nContent-Length: ");
    push_u64(out, len as u64);
    out.extend_from_slice(b"\r\n");
    if let Some(ct) = content_type {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(ct.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !ctx.keep_alive || ctx.closing.is_some_and(Cell::get) {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    extra(out);
    out.extend_from_slice(b"\r\n");
}

/// Writes a JSON response whose body is produced by `body` straight into the
/// output buffer: the length is patched in afterwards, so no temporary body
/// buffer is needed.
pub fn write_json_with(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    status: u16,
    extra_headers: &[u8],
    body: impl FnOnce(&mut Vec<u8>),
) {
    write_json_with_head(
        out,
        ctx,
        status,
        |o| o.extend_from_slice(extra_headers),
        body,
    );
}

/// [`write_json_with`] with the extra headers written by `extra` (see
/// [`write_head_with`]).
#[inline]
pub fn write_json_with_head(
    out: &mut Vec<u8>,
    ctx: &ResponseCtx<'_>,
    status: u16,
    extra: impl FnOnce(&mut Vec<u8>),
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    body(out);
    let body_len = out.len() - start;
    if ctx.head {
        out.truncate(start);
        write_head_with(out, ctx, status, Some(JSON), body_len, extra);
        return;
    }
    // Render the head after the body, then rotate it in front of the body.
    write_head_with(out, ctx, status, Some(JSON), body_len, extra);
    let head_len = out.len() - start - body_len;
    out[start..].rotate_right(head_len);
}

/// formatter: a stack buffer, no allocation).
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The `Date` header value, re-rendered at most once a second per core.
#[derive(Debug)]
pub struct DateCache {
    value: Cell<[u8; 29]>,
    second: Cell<u64>,
}

impl Default for DateCache {
    fn default() -> Self {
        let c = DateCache {
            value: Cell::new([b' '; 29]),
            second: Cell::new(0),
        };
        c.refresh();
        c
    }
}

impl DateCache {
    /// Re-renders the value when the second changed. Called from the core's
    /// once-a-second timer task, not per request.
    pub fn refresh(&self) {
        let since = crate::clock::since_epoch();
        let secs = since.as_secs();
        if secs == self.second.get() {
            return;
        }
        let mut v = [b' '; 29];
        let mut w = &mut v[..];
        // IMF-fixdate is always 29 bytes; a failed write leaves spaces.
        let now = SystemTime::UNIX_EPOCH + since;
        let _ = write!(w, "{}", httpdate::HttpDate::from(now));
        self.value.set(v);
        self.second.set(secs);
    }

    /// The current value.
    pub fn get(&self) -> [u8; 29] {
        self.value.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: [u8; 29] = *b"Sun, 06 Nov 1994 08:49:37 GMT";

    #[test]
    fn plain_response() {
        let mut out = Vec::new();
        let ctx = ResponseCtx {
            date: &DATE,
            keep_alive: true,
            head: false,
            closing: None,
        };
        write(&mut out, &ctx, 200, Some(TEXT), b"", b"ok\n");
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 3\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nok\n"
        );
    }

    #[test]
    fn close_and_head() {
        let mut out = Vec::new();
        let ctx = ResponseCtx {
            date: &DATE,
            keep_alive: false,
            head: true,
            closing: None,
        };
        write(&mut out, &ctx, 404, None, b"X-A: b\r\n", b"gone");
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Content-Length: 4\r\n"));
        assert!(s.contains("Connection: close\r\n"));
        assert!(s.ends_with("X-A: b\r\n\r\n"));
    }

    #[test]
    fn json_body_length_is_patched_in() {
        let mut out = b"previous".to_vec();
        let ctx = ResponseCtx {
            date: &DATE,
            keep_alive: true,
            head: false,
            closing: None,
        };
        write_json_with(&mut out, &ctx, 200, b"Cache-Control: no-store\r\n", |o| {
            o.extend_from_slice(br#"{"a":1}"#)
        });
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("previousHTTP/1.1 200 OK\r\n"), "{s}");
        assert!(s.contains("Content-Length: 7\r\n"));
        assert!(s.ends_with("Cache-Control: no-store\r\n\r\n{\"a\":1}"));
    }

    #[test]
    fn decimal_numbers() {
        let mut out = Vec::new();
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            out.clear();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn date_cache_renders_29_bytes() {
        let d = DateCache::default();
        let v = d.get();
        assert!(v.ends_with(b" GMT"));
        assert_ne!(v[0], b' ');
    }
}
