//! Discovery: `GET /.well-known/jwks.json`,
//! `GET /.well-known/oauth-authorization-server` (RFC 8414) and
//! `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0).
//!
//! Owns: the discovery documents and how long they may be cached (5 minutes:
//! keys are published `keys.publish_ahead` before they sign).
//!
//! Never imports: `net`, `cores`, a service or a store: the key set and the
//! client table are `state`'s published snapshots.

use crate::config::Algorithm;
use crate::http::{response, ResponseCtx};
use crate::state::Core;

/// How long clients and resource servers may cache the discovery documents.
/// Key rotation publishes new keys `keys.publish_ahead` (default 10 min)
/// before they sign, so 5 minutes of caching never hides a signing key.
const MAX_AGE: &[u8] = b"Cache-Control: public, max-age=300\r\n";

/// The public keys: every key that signs, will sign, or still verifies.
pub fn jwks(core: &Core, ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    let material = core.key_material();
    response::write(
        out,
        ctx,
        200,
        Some(response::JSON),
        MAX_AGE,
        material.jwks(),
    );
    200
}

/// RFC 8414 authorization server metadata: the same document as
/// [`openid_configuration`] (OpenID Connect Discovery's fields are
/// registered RFC 8414 metadata too).
pub fn metadata(core: &Core, ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    write_discovery(core, ctx, out)
}

/// OpenID Connect Discovery 1.0 §3: `/.well-known/openid-configuration`.
pub fn openid_configuration(core: &Core, ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    write_discovery(core, ctx, out)
}

fn write_discovery(core: &Core, ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> u16 {
    let base = core.public_url();
    let mut scopes: Vec<String> = core
        .clients()
        .iter()
        .flat_map(|c| c.scopes.iter().cloned())
        .chain(std::iter::once("openid".to_string()))
        .collect();
    scopes.sort();
    scopes.dedup();
    // What the token endpoint serves.
    let grants: &[&str] = if core.config().oauth.password_grant {
        &[
            "authorization_code",
            "password",
            "refresh_token",
            "client_credentials",
        ]
    } else {
        &["authorization_code", "refresh_token", "client_credentials"]
    };
    // The algorithms of the keys that sign ID tokens (every key that
    // verifies: a rotation may bring another algorithm).
    let mut algs: Vec<&str> = core
        .key_material()
        .keys()
        .iter()
        .map(|k| match k.alg {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
        })
        .collect();
    algs.sort_unstable();
    algs.dedup();
    let doc = serde_json::json!({
        "issuer": core.issuer(),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        // OpenID Connect RP-Initiated Logout 1.0 §2.1.
        "end_session_endpoint": format!("{base}/logout"),
        "grant_types_supported": grants,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "code_challenge_methods_supported": ["S256"],
        // RFC 9207: every authorization response carries `iss`.
        "authorization_response_iss_parameter_supported": true,
        "prompt_values_supported": ["none", "login"],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "azp",
            "preferred_username"
        ],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "scopes_supported": scopes,
    });
    response::write_json_with(out, ctx, 200, MAX_AGE, |o| {
        let _ = serde_json::to_writer(o, &doc);
    });
    200
}
