//! OAuth plumbing shared by the endpoints: the one error type
//! ([`OAuthError`]) and the one function that turns it into a response
//! ([`write_error`]: RFC 6749 §5.2, RFC 6750 §3.1, RFC 7009, RFC 7662); the
//! one mapping of a failed access-token check ([`AccessError`]) to the wire;
//! the bearer token of a request ([`bearer_token`]); and the OAuth answers to
//! the refusals of the form and `Authorization` decoders of [`crate::http`].
//!
//! Owns: every OAuth error code, status, description and header
//! (`WWW-Authenticate`, `Retry-After`, `Cache-Control: no-store`) that tokend
//! sends.
//!
//! Never imports: `net`, `cores`, `state`, a service or a store: it turns
//! errors into bytes and asks nobody anything (of the layers above the
//! services, only `access`'s error type).

use crate::access::AccessError;
use crate::http::{self, response, FormError, ResponseCtx};

/// The form the endpoint handlers take, decoded by [`crate::http::form`].
pub use crate::http::Form;

/// An OAuth error. `code()` is the wire code; the description goes to the
/// client as `error_description` and never contains internal error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthError {
    /// Occurs when a parameter is missing, repeated, malformed or unsupported.
    InvalidRequest(&'static str),
    /// Occurs when a body is larger than its endpoint takes (below
    /// `limits.max_body_bytes`, which the parser enforces): `413` with
    /// `invalid_request`.
    BodyTooLarge(&'static str),
    /// Occurs when client authentication failed. `basic` adds
    /// `WWW-Authenticate: Basic` (RFC 6749 §5.2).
    InvalidClient {
        basic: bool,
        description: &'static str,
    },
    /// Occurs when a grant (password, refresh token) is invalid or expired.
    InvalidGrant(&'static str),
    /// Occurs when the client may not use this grant type.
    UnauthorizedClient(&'static str),
    /// Occurs when the grant type is unknown, not served yet, or switched
    /// off (`oauth.password_grant`); the description names what is served.
    UnsupportedGrantType(&'static str),
    /// Occurs when a requested scope is not allowed.
    InvalidScope(&'static str),
    /// Occurs when a bearer token is missing or malformed (RFC 6750 §3.1).
    BearerInvalidRequest(&'static str),
    /// Occurs when a bearer token is not valid (RFC 6750 §3.1).
    InvalidToken(&'static str),
    /// Occurs when a bearer token lacks a required scope (RFC 6750 §3.1).
    InsufficientScope(&'static str),
    /// Occurs when the caller is authenticated but not allowed.
    Forbidden(&'static str),
    /// Occurs when too many failed logins came from one user or address.
    TooManyRequests { retry_after: u64 },
    /// Occurs when a store is unavailable or the blocking pool is full:
    /// `503` with `Retry-After`, never a `200` and never a `401`.
    TemporarilyUnavailable(&'static str),
    /// Occurs when something unexpected failed; details are in the log only.
    ServerError,
}

impl OAuthError {
    /// The wire error code.
    pub fn code(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_)
            | OAuthError::BodyTooLarge(_)
            | OAuthError::BearerInvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient { .. } => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::InvalidToken(_) => "invalid_token",
            OAuthError::InsufficientScope(_) => "insufficient_scope",
            OAuthError::Forbidden(_) => "access_denied",
            OAuthError::TooManyRequests { .. } => "too_many_requests",
            OAuthError::TemporarilyUnavailable(_) => "temporarily_unavailable",
            OAuthError::ServerError => "server_error",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            OAuthError::InvalidClient { .. } | OAuthError::InvalidToken(_) => 401,
            OAuthError::BearerInvalidRequest(_) => 401,
            OAuthError::InsufficientScope(_) | OAuthError::Forbidden(_) => 403,
            OAuthError::TooManyRequests { .. } => 429,
            OAuthError::BodyTooLarge(_) => 413,
            OAuthError::TemporarilyUnavailable(_) => 503,
            OAuthError::ServerError => 500,
            _ => 400,
        }
    }

    /// The `error_description`.
    pub fn description(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(d)
            | OAuthError::BodyTooLarge(d)
            | OAuthError::BearerInvalidRequest(d)
            | OAuthError::InvalidClient { description: d, .. }
            | OAuthError::InvalidGrant(d)
            | OAuthError::UnauthorizedClient(d)
            | OAuthError::UnsupportedGrantType(d)
            | OAuthError::InvalidScope(d)
            | OAuthError::InvalidToken(d)
            | OAuthError::InsufficientScope(d)
            | OAuthError::Forbidden(d)
            | OAuthError::TemporarilyUnavailable(d) => d,
            OAuthError::TooManyRequests { .. } => "too many failed logins; try again later",
            OAuthError::ServerError => "internal error",
        }
    }
}

/// The one mapping of a failed access-token check to the wire: an invalid or
/// revoked token is `invalid_token` (401), a revocation store that cannot
/// tell is `temporarily_unavailable` (503).
impl From<AccessError> for OAuthError {
    fn from(e: AccessError) -> OAuthError {
        match e {
            AccessError::Invalid(description) => OAuthError::InvalidToken(description),
            AccessError::Revoked => OAuthError::InvalidToken("token revoked"),
            AccessError::Unavailable => {
                OAuthError::TemporarilyUnavailable("revocation store unavailable")
            }
        }
    }
}

/// Writes `err` as a JSON error response with `Cache-Control: no-store`,
/// plus `WWW-Authenticate` / `Retry-After` where they apply. Returns the status.
#[cold]
pub fn write_error(out: &mut Vec<u8>, ctx: &ResponseCtx<'_>, err: OAuthError) -> u16 {
    /// The body: the same bytes `serde_json::json!` gave (its map orders the
    /// keys, and `error` sorts first), without building a map per answer.
    #[derive(serde::Serialize)]
    struct Body {
        error: &'static str,
        error_description: &'static str,
    }
    let status = err.status();
    // The headers are written straight into the output buffer: no buffer of
    // their own per answer (this is the 401 path of anonymous forward-auth
    // traffic, issue #15).
    let headers = |h: &mut Vec<u8>| {
        h.extend_from_slice(b"Cache-Control: no-store\r\nPragma: no-cache\r\n");
        match err {
            OAuthError::InvalidClient { basic: true, .. } => {
                h.extend_from_slice(
                    b"WWW-Authenticate: Basic realm=\"tokend\", charset=\"UTF-8\"\r\n",
                );
            }
            OAuthError::BearerInvalidRequest(_)
            | OAuthError::InvalidToken(_)
            | OAuthError::InsufficientScope(_) => {
                // RFC 6750 §3: the challenge repeats the error; descriptions
                // are static ASCII without quotes.
                h.extend_from_slice(b"WWW-Authenticate: Bearer realm=\"tokend\", error=\"");
                h.extend_from_slice(err.code().as_bytes());
                h.extend_from_slice(b"\", error_description=\"");
                h.extend_from_slice(err.description().as_bytes());
                h.extend_from_slice(b"\"\r\n");
            }
            OAuthError::TooManyRequests { retry_after } => {
                h.extend_from_slice(b"Retry-After: ");
                response::push_u64(h, retry_after.max(1));
                h.extend_from_slice(b"\r\n");
            }
            OAuthError::TemporarilyUnavailable(_) => h.extend_from_slice(b"Retry-After: 1\r\n"),
            _ => {}
        }
    };
    response::write_json_with_head(out, ctx, status, headers, |o| {
        let (code, description) = (err.code(), err.description());
        // The codes and descriptions are static text that JSON writes as
        // it is: copied, where serde_json's escaping scan cost ~300
        // instructions an answer (callgrind, the 401 path, issue #15). Any
        // that would need escaping goes through serde_json.
        let plain = |s: &str| !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
        if plain(code) && plain(description) {
            o.extend_from_slice(b"{\"error\":\"");
            o.extend_from_slice(code.as_bytes());
            o.extend_from_slice(b"\",\"error_description\":\"");
            o.extend_from_slice(description.as_bytes());
            o.extend_from_slice(b"\"}");
        } else {
            let body = Body {
                error: code,
                error_description: description,
            };
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(o, &body);
        }
    });
    status
}

impl From<FormError> for OAuthError {
    /// A body that is not a strict form is `invalid_request` (RFC 6749
    /// §3.1, §3.2), described by the form decoder.
    fn from(e: FormError) -> Self {
        OAuthError::InvalidRequest(e.as_str())
    }
}

/// Extracts the bearer token from the request's `Authorization` header
/// (RFC 6750 §2.1) with [`http::bearer_token`]; a refusal is `invalid_request`
/// with a `Bearer` challenge (RFC 6750 §3.1).
pub fn bearer_token(authorization: Option<&[u8]>, count: u8) -> Result<&str, OAuthError> {
    http::bearer_token(authorization, count)
        .map_err(|e| OAuthError::BearerInvalidRequest(e.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer as the version before issue #15 wrote it: headers in a
    /// `Vec` of their own, the body through `serde_json::json!`. The
    /// cheaper `write_error` must give the same bytes.
    fn write_error_as_before(out: &mut Vec<u8>, ctx: &ResponseCtx<'_>, err: OAuthError) {
        let mut headers: Vec<u8> = Vec::new();
        headers.extend_from_slice(b"Cache-Control: no-store\r\nPragma: no-cache\r\n");
        match err {
            OAuthError::InvalidClient { basic: true, .. } => headers.extend_from_slice(
                b"WWW-Authenticate: Basic realm=\"tokend\", charset=\"UTF-8\"\r\n",
            ),
            OAuthError::BearerInvalidRequest(_)
            | OAuthError::InvalidToken(_)
            | OAuthError::InsufficientScope(_) => {
                headers.extend_from_slice(b"WWW-Authenticate: Bearer realm=\"tokend\", error=\"");
                headers.extend_from_slice(err.code().as_bytes());
                headers.extend_from_slice(b"\", error_description=\"");
                headers.extend_from_slice(err.description().as_bytes());
                headers.extend_from_slice(b"\"\r\n");
            }
            OAuthError::TooManyRequests { retry_after } => headers
                .extend_from_slice(format!("Retry-After: {}\r\n", retry_after.max(1)).as_bytes()),
            OAuthError::TemporarilyUnavailable(_) => {
                headers.extend_from_slice(b"Retry-After: 1\r\n")
            }
            _ => {}
        }
        response::write_json_with(out, ctx, err.status(), &headers, |o| {
            let body =
                serde_json::json!({ "error": err.code(), "error_description": err.description() });
            let _ = serde_json::to_writer(o, &body);
        });
    }

    #[test]
    fn error_answers_keep_their_bytes() {
        let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
        let closing = std::cell::Cell::new(true);
        let errors = [
            OAuthError::InvalidRequest("token is required"),
            OAuthError::BodyTooLarge("body too large"),
            OAuthError::InvalidClient {
                basic: true,
                description: "client authentication failed",
            },
            OAuthError::InvalidClient {
                basic: false,
                description: "client authentication failed",
            },
            OAuthError::InvalidGrant("invalid username or password"),
            OAuthError::UnauthorizedClient("grant not allowed"),
            OAuthError::UnsupportedGrantType(
                "grant_type must be password, refresh_token or client_credentials",
            ),
            OAuthError::UnsupportedGrantType("the password grant is disabled on this server"),
            OAuthError::InvalidScope("scope not allowed"),
            OAuthError::BearerInvalidRequest("missing bearer token"),
            OAuthError::InvalidToken("token expired"),
            OAuthError::InsufficientScope("the token lacks a required scope"),
            OAuthError::Forbidden("not allowed"),
            OAuthError::TooManyRequests { retry_after: 0 },
            OAuthError::TooManyRequests { retry_after: 300 },
            OAuthError::TemporarilyUnavailable("revocation store unavailable"),
            OAuthError::ServerError,
            // Text JSON must escape (no description has any today).
            OAuthError::InvalidRequest("a \"quoted\" back\\slash\tand tab"),
            OAuthError::InvalidRequest("non-ASCII é and DEL \u{7f} stay as they are"),
        ];
        for err in errors {
            for (keep_alive, head, closing) in [
                (true, false, None),
                (false, false, None),
                (true, true, None),
                (true, false, Some(&closing)),
            ] {
                let ctx = ResponseCtx {
                    date: &date,
                    keep_alive,
                    head,
                    closing,
                };
                let (mut now, mut before) = (b"prefix".to_vec(), b"prefix".to_vec());
                assert_eq!(write_error(&mut now, &ctx, err), err.status());
                write_error_as_before(&mut before, &ctx, err);
                assert_eq!(
                    String::from_utf8(now).unwrap(),
                    String::from_utf8(before).unwrap(),
                    "{err:?}"
                );
            }
        }
    }

    /// The form decoder's refusals keep their OAuth answers.
    #[test]
    fn form_errors_are_invalid_request() {
        assert_eq!(
            OAuthError::from(Form::parse(b"a=1&a=2").unwrap_err()),
            OAuthError::InvalidRequest("a parameter was repeated")
        );
        assert_eq!(
            OAuthError::from(Form::parse(b"a=%ff%fe").unwrap_err()),
            OAuthError::InvalidRequest("parameters must be UTF-8")
        );
        let many: String = (0..=crate::http::form::MAX_FORM_PARAMS)
            .map(|i| format!("p{i}=1&"))
            .collect();
        let err = OAuthError::from(Form::parse(many.as_bytes()).unwrap_err());
        assert_eq!(
            err,
            OAuthError::InvalidRequest("a form may have at most 64 parameters")
        );
        assert_eq!((err.status(), err.code()), (400, "invalid_request"));
    }

    /// A body over what its endpoint takes is `413` with `invalid_request`.
    #[test]
    fn body_too_large_is_413_invalid_request() {
        let err = OAuthError::BodyTooLarge("the JSON body may be at most 16 KiB");
        assert_eq!((err.status(), err.code()), (413, "invalid_request"));
        assert_eq!(err.description(), "the JSON body may be at most 16 KiB");
    }

    /// The bearer refusals keep their OAuth answers (401 with a challenge).
    #[test]
    fn bearer_refusals_are_bearer_invalid_request() {
        assert_eq!(bearer_token(Some(b"bearer abc"), 1), Ok("abc"));
        let cases: &[(Option<&[u8]>, u8, &str)] = &[
            (Some(b"Bearer abc"), 2, "more than one Authorization header"),
            (None, 0, "missing bearer token"),
            (Some(b"Bearer "), 1, "missing bearer token"),
            (
                Some(b"Basic abc"),
                1,
                "Authorization must use the Bearer scheme",
            ),
            (Some(b"Bearer a b"), 1, "malformed bearer token"),
        ];
        for (value, count, description) in cases {
            let err = bearer_token(*value, *count).unwrap_err();
            assert_eq!(err, OAuthError::BearerInvalidRequest(description));
            assert_eq!(err.status(), 401);
        }
    }

    #[test]
    fn error_responses() {
        let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
        let ctx = ResponseCtx {
            date: &date,
            keep_alive: true,
            head: false,
            closing: None,
        };
        let mut out = Vec::new();
        let status = write_error(
            &mut out,
            &ctx,
            OAuthError::InvalidClient {
                basic: true,
                description: "client authentication failed",
            },
        );
        assert_eq!(status, 401);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("WWW-Authenticate: Basic"));
        assert!(s.contains("Cache-Control: no-store"));
        assert!(s.ends_with(
            r#"{"error":"invalid_client","error_description":"client authentication failed"}"#
        ));

        let mut out = Vec::new();
        write_error(&mut out, &ctx, OAuthError::InvalidToken("token expired"));
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains(r#"WWW-Authenticate: Bearer realm="tokend", error="invalid_token", error_description="token expired""#));

        let mut out = Vec::new();
        assert_eq!(
            write_error(
                &mut out,
                &ctx,
                OAuthError::TooManyRequests { retry_after: 42 }
            ),
            429
        );
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("Retry-After: 42\r\n"));
    }
}
