//! `GET` and `POST /userinfo` (OpenID Connect Core §5.3), issue #16: the
//! claims of the user an access token with the `openid` scope was issued
//! to. The token is checked by [`crate::access::check_access_token`], as
//! `/validate` checks it (signature, claims, revocation); the answer comes
//! from its claims, with no database round trip.
//!
//! Owns: the UserInfo answer. Never imports: `net`, `cores` or a store.

use crate::access::check_access_token;
use crate::handlers::oauth::{self, OAuthError};
use crate::http::{response, Request, ResponseCtx};
use crate::state::Core;

/// `GET` / `POST /userinfo` with `Authorization: Bearer …` (RFC 6750 §2.1).
pub async fn userinfo(
    core: &Core,
    req: &Request<'_>,
    ctx: &ResponseCtx<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let r = async {
        let token = oauth::bearer_token(req.authorization, req.authorization_count)?;
        let v = check_access_token(core, token).await?;
        if !v.scope.split(' ').any(|s| s == "openid") {
            return Err(OAuthError::InsufficientScope(
                "the openid scope is required",
            ));
        }
        let Some(username) = &v.username else {
            return Err(OAuthError::InsufficientScope(
                "this endpoint needs a user's token",
            ));
        };
        #[derive(serde::Serialize)]
        struct UserInfo<'a> {
            sub: &'a str,
            preferred_username: &'a str,
        }
        response::write_json_with(out, ctx, 200, b"Cache-Control: no-store\r\n", |o| {
            let _ = serde_json::to_writer(
                o,
                &UserInfo {
                    sub: &v.sub,
                    preferred_username: username,
                },
            );
        });
        Ok(200)
    }
    .await;
    match r {
        Ok(status) => status,
        Err(e) => oauth::write_error(out, ctx, e),
    }
}
