//! HTTP/1.1: parsing requests from bytes and writing responses into bytes.
//! Neither side touches a socket; [`crate::net`] does the I/O.

pub mod parse;
pub mod response;

pub use parse::{parse, Limits, Method, ParseError, Parsed, Request};
pub use response::{DateCache, ResponseCtx};
