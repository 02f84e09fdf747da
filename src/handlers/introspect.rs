//! `POST /oauth/introspect` (RFC 7662): client authentication against the
//! in-memory client table, then the same verification path as `/validate`.

use crate::cores::Core;
use crate::handlers::client_auth;
use crate::handlers::oauth::{self, OAuthError};
use crate::handlers::validate::check_access_token;
use crate::http::{response, Request, ResponseCtx};

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
    let client = match client_auth::authenticate(core, req, &form) {
        Ok((c, _)) => c,
        Err(e) => return oauth::write_error(out, ctx, e),
    };
    let Some(token) = form.get("token") else {
        return oauth::write_error(out, ctx, OAuthError::InvalidRequest("token is required"));
    };
    // RFC 7662 §2.1: the hint is optional and only an optimisation; refresh
    // tokens are recognised by their prefix whatever the hint says.
    if token.starts_with(crate::handlers::refresh::REFRESH_PREFIX) {
        return match crate::handlers::refresh::introspect_refresh(core, &client, token).await {
            Ok(Some(body)) => write_body(out, ctx, &body),
            Ok(None) => inactive(out, ctx),
            Err(e) => oauth::write_error(out, ctx, e),
        };
    }
    match check_access_token(core, token).await {
        Ok(v) => {
            let mut body = serde_json::json!({
                "active": true,
                "scope": v.scope,
                "client_id": v.client_id,
                "token_type": "Bearer",
                "exp": v.exp,
                "iat": v.iat,
                "sub": v.sub,
                "aud": v.aud,
                "iss": v.iss,
                "jti": v.jti,
            });
            if let Some(u) = &v.username {
                body["username"] = serde_json::Value::String(u.clone());
            }
            write_body(out, ctx, &body)
        }
        // Fail closed and say so: never `active: false` for a token that
        // may be fine, never `active: true` unchecked.
        Err(e @ OAuthError::TemporarilyUnavailable(_)) => oauth::write_error(out, ctx, e),
        Err(_) => inactive(out, ctx),
    }
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
