//! Client authentication for the token, introspection and revocation
//! endpoints: `client_secret_basic` or `client_secret_post` (RFC 6749
//! §2.3.1), against the core's in-memory client table — no PostgreSQL, no
//! slow hash.
//!
//! Owns: the choice between the two methods (one per request), the one
//! failure description that does not tell which client ids exist, and the
//! form-body check of those endpoints ([`form_body`]).
//!
//! Never imports: `net`, `cores` or a store: the client table comes from
//! `state` (`Core::clients`), the Basic decoding from `http`.

use std::rc::Rc;

use crate::handlers::oauth::{Form, OAuthError};
use crate::http::{parse_basic, Request};
use crate::identity::{authenticate_remembered, ClientRecord, ClientTable};
use crate::state::Core;

/// One description for every failure, so answers don't tell which client
/// ids exist.
const FAILED: &str = "client authentication failed";

/// Authenticates the client of `req` against `clients` (the core's table,
/// `Core::clients`). Returns the client, borrowed from the table (no copy
/// per request), and whether Basic was used (for `WWW-Authenticate` on later
/// errors).
pub fn authenticate<'t>(
    core: &Core,
    clients: &'t Rc<ClientTable>,
    req: &Request<'_>,
    form: &Form<'_>,
) -> Result<(&'t ClientRecord, bool), OAuthError> {
    let mut memo = core.secret_memo();
    if req.authorization_count > 1 {
        return Err(OAuthError::InvalidRequest(
            "more than one Authorization header",
        ));
    }
    if let Some(header) = req.authorization {
        let (id, secret) = parse_basic(header).map_err(|_| OAuthError::InvalidClient {
            basic: true,
            description: FAILED,
        })?;
        // RFC 6749 §2.3: one authentication method per request.
        if form.get("client_secret").is_some() || form.get("client_id").is_some_and(|f| f != id) {
            return Err(OAuthError::InvalidRequest(
                "use only one client authentication method",
            ));
        }
        return match authenticate_remembered(clients, &mut memo, &id, Some(&secret)) {
            Ok(c) => Ok((c, true)),
            Err(_) => Err(OAuthError::InvalidClient {
                basic: true,
                description: FAILED,
            }),
        };
    }
    let Some(id) = form.get("client_id") else {
        return Err(OAuthError::InvalidClient {
            basic: true,
            description: "client authentication required",
        });
    };
    match authenticate_remembered(clients, &mut memo, id, form.get("client_secret")) {
        Ok(c) => Ok((c, false)),
        Err(_) => Err(OAuthError::InvalidClient {
            basic: false,
            description: FAILED,
        }),
    }
}

/// Parses a form body, insisting on the form content type.
pub fn form_body<'r>(req: &Request<'r>) -> Result<Form<'r>, OAuthError> {
    if !req.content_type_is("application/x-www-form-urlencoded") {
        return Err(OAuthError::InvalidRequest(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    Form::parse(req.body).map_err(OAuthError::from)
}
