//! RESP2 replies: the owned [`Reply`], and a small decoder of our own.
//!
//! The decoder works in two passes: `frame_end` checks that a whole,
//! well-formed reply is buffered (the cheap check before the parse, as in
//! mini-redis's `Frame::check`; "incomplete" is `Ok(None)`), then `build`
//! turns exactly those bytes into a `Reply`, bulk strings sharing the read
//! buffer's allocation. It replaced `redis-protocol` (issue #4): callgrind on
//! /validate (one core, wrk -c64) showed its decode, the intermediate
//! `BytesFrame` and the conversion into `Reply` at ~2,100 instructions and
//! two allocations per `MGET` reply, 13% of tokend's userland path; this
//! costs a few hundred and one allocation (the array's `Vec`).
//!
//! Owns: reply decoding, shared by the pipelined and the blocking client.
//! Never imports anything of the crate outside `redis`.

use bytes::{Bytes, BytesMut};

use super::error::{RedisError, ServerErrorCode};

/// Deepest nesting of arrays accepted in a reply (a Lua table of tables,
/// `EXEC`); deeper is a protocol error rather than unbounded recursion.
const MAX_REPLY_DEPTH: usize = 32;

/// One decoded RESP2 reply, owned (bulk strings share the read buffer's
/// allocation through [`Bytes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A null bulk string or null array (e.g. `GET` of a missing key).
    Nil,
    /// An integer reply (`INCR`, `DEL`, `EXISTS`, a Lua number, …).
    Int(i64),
    /// A bulk string.
    Bulk(Bytes),
    /// A simple string (`OK`, `PONG`).
    Simple(String),
    /// An error reply. [`RedisConn::query`](super::RedisConn::query) turns it into
    /// [`RedisError::Server`]; it only appears inside arrays (e.g. a Lua
    /// script returning a table holding an error).
    Error(String),
    /// An array of replies (`MGET`, `EXEC`, a Lua table).
    Array(Vec<Reply>),
}

impl Reply {
    /// True for [`Reply::Nil`].
    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Nil)
    }

    /// True for the simple string `OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Simple(s) if s == "OK")
    }

    /// The integer: an [`Reply::Int`], or a bulk/simple string holding a
    /// decimal integer (`GET` of a counter).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bulk(_) | Reply::Simple(_) => self.as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// The bytes of a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(b) => Some(b),
            Reply::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The text of a bulk or simple string, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// The elements of an array reply.
    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an array reply, by value.
    pub fn into_array(self) -> Option<Vec<Reply>> {
        match self {
            Reply::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// Decodes the next complete reply from the front of `buf`, removing its
/// bytes; `Ok(None)` when more bytes are needed. Shared with the blocking
/// client; public only for the `resp` fuzz target (`fuzz/`), through
/// [`crate::redis::decode_reply`].
pub fn decode_reply(buf: &mut BytesMut) -> Result<Option<Reply>, RedisError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let end = match frame_end(buf, 0, 0) {
        Ok(Some(end)) => end,
        Ok(None) => return Ok(None),
        Err(e) => return Err(undecodable(e, buf)),
    };
    let frame = buf.split_to(end).freeze();
    match build(&frame, 0) {
        Ok((reply, _)) => Ok(Some(reply)),
        Err(e) => Err(undecodable(e, &frame)),
    }
}

#[cold]
fn undecodable(e: RedisError, buf: &[u8]) -> RedisError {
    let head = &buf[..buf.len().min(32)];
    tracing::warn!(
        "redis: undecodable reply starting with {:?}",
        String::from_utf8_lossy(head)
    );
    e
}

/// The line after the type byte at `at`: where it ends (its `\r`) and where
/// the next item starts (after `\r\n`); `Ok(None)` when not all buffered.
#[inline]
fn line_at(buf: &[u8], at: usize) -> Result<Option<(usize, usize)>, RedisError> {
    let start = at + 1;
    let Some(rel) = buf
        .get(start..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\r'))
    else {
        return Ok(None);
    };
    let cr = start + rel;
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((cr, cr + 2))),
        Some(_) => Err(RedisError::Protocol),
    }
}

/// A RESP2 integer: optional `-`, then 1 to 19 decimal digits.
fn parse_int(line: &[u8]) -> Result<i64, RedisError> {
    let (negative, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(RedisError::Protocol);
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RedisError::Protocol);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or(RedisError::Protocol)?;
    }
    Ok(if negative { -n } else { n })
}

/// A bulk-string or array length: `None` for `-1` (null), an error for any
/// other negative number.
fn parse_len(line: &[u8]) -> Result<Option<usize>, RedisError> {
    match parse_int(line)? {
        -1 => Ok(None),
        n => usize::try_from(n)
            .map(Some)
            .map_err(|_| RedisError::Protocol),
    }
}

/// Where the reply starting at `at` ends, checking it; `Ok(None)` when it is
/// not all buffered yet.
fn frame_end(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, RedisError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((cr, next)) = line_at(buf, at)? else {
        return Ok(None);
    };
    let line = &buf[at + 1..cr];
    match kind {
        b'+' | b'-' => Ok(Some(next)),
        b':' => parse_int(line).map(|_| Some(next)),
        b'$' => {
            let Some(len) = parse_len(line)? else {
                return Ok(Some(next));
            };
            let end = next
                .checked_add(len)
                .and_then(|e| e.checked_add(2))
                .ok_or(RedisError::Protocol)?;
            match buf.get(end - 2..end) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some(end)),
                Some(_) => Err(RedisError::Protocol),
            }
        }
        b'*' => {
            let Some(n) = parse_len(line)? else {
                return Ok(Some(next));
            };
            if depth >= MAX_REPLY_DEPTH {
                return Err(RedisError::Protocol);
            }
            let mut at = next;
            for _ in 0..n {
                match frame_end(buf, at, depth + 1)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        _ => Err(RedisError::Protocol),
    }
}

/// The reply starting at `at` of `frame`, which `frame_end` has checked, and
/// where it ends.
fn build(frame: &Bytes, at: usize) -> Result<(Reply, usize), RedisError> {
    let kind = *frame.get(at).ok_or(RedisError::Protocol)?;
    let (cr, next) = line_at(frame, at)?.ok_or(RedisError::Protocol)?;
    let line = &frame[at + 1..cr];
    Ok(match kind {
        b'+' => (
            Reply::Simple(String::from_utf8_lossy(line).into_owned()),
            next,
        ),
        b'-' => (
            Reply::Error(String::from_utf8_lossy(line).into_owned()),
            next,
        ),
        b':' => (Reply::Int(parse_int(line)?), next),
        b'$' => match parse_len(line)? {
            None => (Reply::Nil, next),
            Some(len) => {
                let end = next + len;
                if frame.len() < end + 2 {
                    return Err(RedisError::Protocol);
                }
                (Reply::Bulk(frame.slice(next..end)), end + 2)
            }
        },
        b'*' => match parse_len(line)? {
            None => (Reply::Nil, next),
            Some(n) => {
                // `n` is bounded by the checked frame: each element takes at
                // least three bytes of it.
                let mut items = Vec::with_capacity(n);
                let mut at = next;
                for _ in 0..n {
                    let (item, end) = build(frame, at)?;
                    items.push(item);
                    at = end;
                }
                (Reply::Array(items), at)
            }
        },
        _ => return Err(RedisError::Protocol),
    })
}

/// Turns an error reply into [`RedisError::Server`], logging its full text
/// (never shown to HTTP clients).
pub(super) fn check_server_error(reply: Reply) -> Result<Reply, RedisError> {
    match reply {
        Reply::Error(msg) => Err(server_error(&msg)),
        other => Ok(other),
    }
}

#[cold]
pub(super) fn server_error(msg: &str) -> RedisError {
    tracing::warn!("redis: error reply: {msg}");
    RedisError::Server(ServerErrorCode::from_message(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_helpers() {
        let b = Reply::Bulk(Bytes::from_static(b"42"));
        assert_eq!(b.as_int(), Some(42));
        assert_eq!(b.as_str(), Some("42"));
        assert!(!b.is_nil());
        assert!(Reply::Nil.is_nil());
        assert!(Reply::Simple("OK".into()).is_ok());
        assert_eq!(Reply::Int(-3).as_int(), Some(-3));
        assert_eq!(
            Reply::Array(vec![Reply::Nil]).as_array().map(|a| a.len()),
            Some(1)
        );

        // Partial input is "need more bytes", not an error; bytes are kept.
        let mut buf = BytesMut::from(&b"*2\r\n$2\r\nhi\r\n"[..]);
        assert_eq!(decode_reply(&mut buf), Ok(None));
        buf.extend_from_slice(b"$-1\r\n:5\r\n");
        assert_eq!(
            decode_reply(&mut buf),
            Ok(Some(Reply::Array(vec![
                Reply::Bulk(Bytes::from_static(b"hi")),
                Reply::Nil
            ])))
        );
        assert_eq!(decode_reply(&mut buf), Ok(Some(Reply::Int(5))));
        assert_eq!(decode_reply(&mut buf), Ok(None));
        let mut bad = BytesMut::from(&b"?what\r\n"[..]);
        assert_eq!(decode_reply(&mut bad), Err(RedisError::Protocol));
    }

    #[test]
    fn decoder_covers_resp2() {
        let wire: &[u8] = b"*5\r\n+OK\r\n-ERR no\r\n:-42\r\n$0\r\n\r\n*2\r\n*-1\r\n$-1\r\n\
                            $4\r\na\r\nb\r\n:9223372036854775807\r\n";
        let first = Reply::Array(vec![
            Reply::Simple("OK".into()),
            Reply::Error("ERR no".into()),
            Reply::Int(-42),
            Reply::Bulk(Bytes::new()),
            Reply::Array(vec![Reply::Nil, Reply::Nil]),
        ]);
        let second = Reply::Bulk(Bytes::from_static(b"a\r\nb"));
        let third = Reply::Int(i64::MAX);
        // Fed in two pieces cut at every position: nothing is decoded before
        // its last byte arrives, and nothing is lost.
        for cut in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(r) = decode_reply(&mut buf).unwrap() {
                got.push(r);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(r) = decode_reply(&mut buf).unwrap() {
                got.push(r);
            }
            assert_eq!(
                got,
                [first.clone(), second.clone(), third.clone()],
                "cut {cut}"
            );
            assert!(buf.is_empty());
        }

        for bad in [
            &b"$-2\r\n"[..],
            b"*-5\r\n",
            b":12a\r\n",
            b":\r\n",
            b":-\r\n",
            b":99999999999999999999\r\n",
            b"$3\r\nabcd\r\n",
            b"+OK\rX",
            b"$x\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert_eq!(decode_reply(&mut buf), Err(RedisError::Protocol), "{bad:?}");
        }
        // Nesting is bounded; at the bound it still decodes.
        let mut deep = BytesMut::new();
        for _ in 0..MAX_REPLY_DEPTH {
            deep.extend_from_slice(b"*1\r\n");
        }
        deep.extend_from_slice(b":1\r\n");
        assert!(decode_reply(&mut deep.clone()).unwrap().is_some());
        let mut deeper = BytesMut::from(&b"*1\r\n"[..]);
        deeper.extend_from_slice(&deep);
        assert_eq!(decode_reply(&mut deeper), Err(RedisError::Protocol));
    }
}
