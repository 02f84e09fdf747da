//! `POST /oauth/introspect` (RFC 7662): client authentication against the
//! in-memory client table, then, for an access token, the check `/validate`
//! also uses ([`crate::access`]); a refresh token, known by its prefix, goes
//! to [`super::refresh`].
//!
//! Owns: the introspection answer: an active token's fields,
//! `{"active":false}` for anything invalid or revoked (and for a refresh
//! token issued to another client), and `503` (never `active: false`) when
//! the revocation store cannot tell.
//!
//! Never imports: `net`, `cores`, `tokens`, `revocation` or a store: the
//! token check is `access`'s, never re-done here.

use crate::access::{check_access_token, AccessError};
use crate::handlers::client_auth;
use crate::handlers::oauth::{self, OAuthError};
use crate::http::{response, Request, ResponseCtx};
use crate::state::Core;

const NO_STORE: &[u8] = b"Cache-Control: no-store\r\nPragma: no-cache\r\n";

/// `POST /oauth/introspect`.
pub async fn introspect(
    core: &Core,
    req: &Request<'_>,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let form = match client_auth::form_body(req) {
        Ok(f) => f,
        Err(e) => return oauth::write_error(out, ctx, e),
    };
    let clients = core.clients();
    let client = match client_auth::authenticate(core, &clients, req, &form) {
        // RFC 7662 §2.1: the caller must authenticate, which a public client
        // (no secret) cannot; the metadata lists no `none` method either.
        Ok((c, _)) if c.is_public() => {
            let e = OAuthError::InvalidClient {
                basic: false,
                description: "a public client may not introspect tokens",
            };
            return oauth::write_error(out, ctx, e);
        }
        Ok((c, _)) => c,
        Err(e) => return oauth::write_error(out, ctx, e),
    };
    let Some(token) = form.get("token") else {
        return oauth::write_error(out, ctx, OAuthError::InvalidRequest("token is required"));
    };
    // RFC 7662 §2.1: the hint is optional and only an optimisation; refresh
    // tokens are recognised by their prefix whatever the hint says.
    if token.starts_with(crate::handlers::refresh::REFRESH_PREFIX) {
        return match crate::handlers::refresh::introspect_refresh(core, client, token).await {
            Ok(Some(body)) => write_body(out, ctx, &body),
            Ok(None) => inactive(out, ctx),
            Err(e) => oauth::write_error(out, ctx, e),
        };
    }
    match check_access_token(core, token).await {
        Ok(v) => {
            // Rendered at the token's first introspection and kept with it
            // in the core's verified-token cache (issue #15: serialising
            // these ~400 bytes was a tenth of an introspection's cost).
            let body = v.introspection_body(|v| {
                let body = Active {
                    active: true,
                    aud: &v.aud,
                    client_id: &v.client_id,
                    exp: v.exp,
                    iat: v.iat,
                    iss: &v.iss,
                    jti: &v.jti,
                    scope: &v.scope,
                    sub: &v.sub,
                    token_type: "Bearer",
                    username: v.username.as_deref(),
                };
                // Writing JSON into a Vec cannot fail.
                serde_json::to_vec(&body).unwrap_or_default()
            });
            response::write(out, ctx, 200, Some(response::JSON), NO_STORE, body);
            200
        }
        // Fail closed and say so: never `active: false` for a token that
        // may be fine, never `active: true` unchecked.
        Err(e @ AccessError::Unavailable) => oauth::write_error(out, ctx, e.into()),
        Err(_) => inactive(out, ctx),
    }
}

/// The answer for an active access token (RFC 7662 §2.2), serialised
/// straight from the verified token's fields.
///
/// It replaced a `serde_json::json!` map (issue #4: callgrind on
/// /oauth/introspect showed the map, its ~12 `String` keys and copied values
/// among the largest userland costs). The fields are in alphabetical order so
/// that the bytes stay those of the map it replaced (a `BTreeMap`: serde_json
/// without `preserve_order`); `username` is left out when absent, as before.
#[derive(serde::Serialize)]
struct Active<'a> {
    active: bool,
    aud: &'a str,
    client_id: &'a str,
    exp: u64,
    iat: u64,
    iss: &'a str,
    jti: &'a str,
    scope: &'a str,
    sub: &'a str,
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
}

fn write_body(out: &mut Vec<u8>, ctx: &ResponseCtx<'_>, body: &serde_json::Value) -> u16 {
    response::write_json_with(out, ctx, 200, NO_STORE, |o| {
        let _ = serde_json::to_writer(o, body);
    });
    200
}

fn inactive(out: &mut Vec<u8>, ctx: &ResponseCtx<'_>) -> u16 {
    response::write(
        out,
        ctx,
        200,
        Some(response::JSON),
        NO_STORE,
        br#"{"active":false}"#,
    );
    200
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The struct writes the very bytes of the `json!` map it replaced
    /// (issue #4), with and without `username`.
    #[test]
    fn active_body_bytes_unchanged() {
        for username in [None, Some("alice \"the\" admin")] {
            let body = Active {
                active: true,
                aud: "tokend",
                client_id: "cli",
                exp: 1_700_000_900,
                iat: 1_700_000_000,
                iss: "http://127.0.0.1:8080",
                jti: "j\u{e9}1",
                scope: "read write",
                sub: "4a69e5bb",
                token_type: "Bearer",
                username,
            };
            let mut old = serde_json::json!({
                "active": true,
                "scope": body.scope,
                "client_id": body.client_id,
                "token_type": "Bearer",
                "exp": body.exp,
                "iat": body.iat,
                "sub": body.sub,
                "aud": body.aud,
                "iss": body.iss,
                "jti": body.jti,
            });
            if let Some(u) = username {
                old["username"] = serde_json::Value::String(u.to_owned());
            }
            assert_eq!(
                serde_json::to_vec(&body).unwrap(),
                serde_json::to_vec(&old).unwrap()
            );
        }
    }
}
