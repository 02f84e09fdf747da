//! HTTP/1.1: parsing requests from bytes and writing responses into bytes,
//! and decoding what requests carry: form bodies ([`form`]) and the
//! `Authorization` header ([`auth`]: Basic credentials, bearer tokens).
//!
//! Nothing here touches a socket (the connection loop in `net` does the
//! I/O) or knows about OAuth errors, clients or tokens: never imports
//! `net`, `handlers`, `router` or any service.

pub mod auth;
pub mod form;
pub mod forwarded;
pub mod parse;
pub mod response;

pub use auth::{bearer_token, parse_basic, BasicError, BearerError};
pub use form::{Form, FormError};
pub use forwarded::client_ip;
pub use parse::{parse, Limits, Method, ParseError, Parsed, Request};
pub use response::{DateCache, ResponseCtx};
