//! Why a Redis command did not produce a usable reply: [`RedisError`], and
//! the first word of an error reply kept inline ([`ServerErrorCode`]).
//!
//! Owns: the client's error type. Never imports another module of the crate.

use std::fmt;

/// Why a Redis command did not produce a usable reply.
///
/// `Copy` and allocation-free, so the hot path can pass it around freely. Its
/// text is for logs only: HTTP clients see `503 temporarily_unavailable` or
/// `500 server_error`, never this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// Occurs when there is no connection to Redis (not yet connected,
    /// reconnecting after an error, Redis down), when the connection broke
    /// while the command waited for its reply, or when more than
    /// `MAX_IN_FLIGHT` commands are already waiting on this core.
    #[error("redis is unavailable (not connected); requests fail closed until it is back")]
    Unavailable,
    /// Occurs when Redis does not answer within the configured
    /// `redis.timeout`.
    #[error("redis did not answer within the timeout (see redis.timeout)")]
    Timeout,
    /// Occurs when Redis sends bytes that are not valid RESP2, a reply of an
    /// unexpected shape (e.g. `MGET` not answering an array), or when a
    /// command could not be encoded (empty command, wrong argument count).
    #[error("redis protocol error: malformed or unexpected reply")]
    Protocol,
    /// Occurs when Redis answers with an error reply (`WRONGTYPE`, `OOM`,
    /// `NOSCRIPT`, a Lua error, …). The error's first word is kept; the full
    /// text is logged where it is received.
    #[error("redis answered with an error reply ({0})")]
    Server(ServerErrorCode),
    /// Occurs when a `redis://` URL cannot be parsed; the text names the part.
    #[error("invalid redis url: {0} (expected redis://[[user]:password@]host[:port][/db])")]
    InvalidUrl(&'static str),
    /// Occurs when fewer replicas than `redis.min_replicas_acked`
    /// acknowledged a write (`WAIT`) within `redis.timeout`: the write may
    /// not survive a failover, so the request fails closed.
    #[error("fewer replicas than redis.min_replicas_acked acknowledged the write in time")]
    NotReplicated,
    /// Occurs when a sentinel address or the master name cannot be used;
    /// the text says why.
    #[error("invalid redis sentinel setting: {0}")]
    InvalidSentinel(&'static str),
}

/// The first word of a Redis error reply (`ERR`, `WRONGTYPE`, `NOSCRIPT`, …),
/// stored inline so that [`RedisError`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerErrorCode {
    len: u8,
    bytes: [u8; 15],
}

impl ServerErrorCode {
    /// Takes the leading code word of an error message (at most 15 ASCII
    /// letters, digits or `_`).
    pub fn from_message(msg: &str) -> ServerErrorCode {
        let mut code = ServerErrorCode {
            len: 0,
            bytes: [0; 15],
        };
        for &b in msg.as_bytes() {
            if !(b.is_ascii_alphanumeric() || b == b'_')
                || usize::from(code.len) == code.bytes.len()
            {
                break;
            }
            code.bytes[usize::from(code.len)] = b;
            code.len += 1;
        }
        code
    }

    /// The code as text; `"ERR"` if the message had no code word.
    pub fn as_str(&self) -> &str {
        match std::str::from_utf8(&self.bytes[..usize::from(self.len)]) {
            Ok(s) if !s.is_empty() => s,
            _ => "ERR",
        }
    }
}

impl fmt::Display for ServerErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ServerErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerErrorCode({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_code() {
        let c = ServerErrorCode::from_message(
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        );
        assert_eq!(c.as_str(), "WRONGTYPE");
        assert_eq!(ServerErrorCode::from_message("").as_str(), "ERR");
        assert_eq!(
            ServerErrorCode::from_message("AVERYVERYLONGERRORCODE x").as_str(),
            "AVERYVERYLONGER"
        );
        assert_eq!(
            RedisError::Server(c).to_string(),
            "redis answered with an error reply (WRONGTYPE)"
        );
    }
}
