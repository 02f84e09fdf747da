//! Lua scripts run by `EVALSHA`: [`Script`], the source with its SHA1.
//!
//! The scripts themselves live beside the services that own them, as
//! `.lua` files loaded with `include_str!`; this module only runs them.
//!
//! Owns: a script's name (SHA1) and its `EVALSHA` / `EVAL` commands.
//!
//! Never imports: anything of the crate outside `redis`; in particular no
//! service: it runs their scripts without knowing them.

use redis::ToRedisArgs;

/// A Lua script with its SHA1, run by [`RedisConn::eval`](super::RedisConn::eval) with `EVALSHA`
/// (falling back to `EVAL` once when Redis answers `NOSCRIPT`).
///
/// Build it once (e.g. in a per-core or static struct), not per request.
#[derive(Debug, Clone)]
pub struct Script {
    source: String,
    sha: String,
}

impl Script {
    /// Wraps `source` and computes its SHA1 (hex), the name Redis gives it.
    pub fn new(source: &str) -> Script {
        Script {
            source: source.to_owned(),
            sha: redis::Script::new(source).get_hash().to_owned(),
        }
    }

    /// The SHA1 of the source, lowercase hex.
    pub fn sha(&self) -> &str {
        &self.sha
    }

    /// The Lua source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// `EVALSHA {sha}` (or `EVAL {source}`) with `keys` and `args`.
    pub(super) fn command<K: ToRedisArgs, A: ToRedisArgs>(
        &self,
        by_sha: bool,
        keys: &[K],
        args: &[A],
    ) -> redis::Cmd {
        let mut cmd = if by_sha {
            let mut c = redis::cmd("EVALSHA");
            c.arg(self.sha.as_str());
            c
        } else {
            let mut c = redis::cmd("EVAL");
            c.arg(self.source.as_str());
            c
        };
        cmd.arg(keys.len());
        for k in keys {
            k.write_redis_args(&mut cmd);
        }
        for a in args {
            a.write_redis_args(&mut cmd);
        }
        cmd
    }
}
