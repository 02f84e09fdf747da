//! The RESP2 reply decoder (`tokend::redis::decode_reply`, shared by the
//! pipelined and the blocking Redis clients), on any bytes from the socket.
//!
//! Invariants checked besides "never panics":
//! - each decoded reply consumes at least one byte, an incomplete one
//!   consumes none, and an error leaves the buffer as it was;
//! - the bytes arriving in two pieces (cut where the input's first byte
//!   says) decode to exactly the replies, and the error, of one piece: the
//!   socket's read boundaries never change what the client sees;
//! - the `Reply` helpers answer on every decoded reply.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokend::redis::{decode_reply, RedisError, Reply};

/// What a client would see: the replies in order, then the error that
/// stopped it (if any), and how many bytes were left undecoded.
#[derive(Debug, PartialEq)]
struct Seen {
    replies: Vec<Reply>,
    error: Option<RedisError>,
    left: usize,
}

fn decode(pieces: &[&[u8]]) -> Seen {
    // Linear in the input: each step checks lengths only, and the bytes
    // left are compared with what was fed once per piece and at the end (a
    // copy of the buffer per reply made the harness, not the decoder,
    // quadratic on inputs of many small replies).
    let mut fed: Vec<u8> = Vec::new();
    let mut buf = BytesMut::new();
    let mut replies = Vec::new();
    let left_is_the_tail = |buf: &BytesMut, fed: &[u8]| {
        assert_eq!(
            &buf[..],
            &fed[fed.len() - buf.len()..],
            "the bytes left are not the input's tail"
        );
    };
    for piece in pieces {
        buf.extend_from_slice(piece);
        fed.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decode_reply(&mut buf) {
                Ok(Some(reply)) => {
                    assert!(buf.len() < before, "a reply consumed nothing");
                    touch(&reply);
                    replies.push(reply);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "an incomplete reply consumed bytes");
                    break;
                }
                Err(error) => {
                    assert_eq!(buf.len(), before, "an error consumed bytes");
                    left_is_the_tail(&buf, &fed);
                    return Seen {
                        replies,
                        error: Some(error),
                        left: buf.len(),
                    };
                }
            }
        }
        left_is_the_tail(&buf, &fed);
    }
    Seen {
        replies,
        error: None,
        left: buf.len(),
    }
}

fn touch(reply: &Reply) {
    let _ = (
        reply.is_nil(),
        reply.is_ok(),
        reply.as_int(),
        reply.as_str(),
    );
    if let Some(items) = reply.as_array() {
        items.iter().for_each(touch);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, wire)) = data.split_first() else {
        return;
    };
    let whole = decode(&[wire]);
    let cut = usize::from(cut) * wire.len() / 255;
    let (a, b) = wire.split_at(cut);
    let split = decode(&[a, b]);
    if whole.error.is_some() {
        // Bytes after the first bad reply are never looked at, whether or
        // not they had arrived.
        assert_eq!(split.replies, whole.replies);
        assert_eq!(split.error, whole.error);
    } else {
        assert_eq!(split, whole, "cut at {cut}");
    }
});
