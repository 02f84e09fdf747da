//! `(method, path)` → route. No I/O, no allocation.

use crate::http::Method;

/// Every endpoint tokend serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    Metrics,
    Validate,
    Token,
    Introspect,
    Revoke,
    Jwks,
    Metadata,
    /// `POST /users`
    Users,
    /// `GET /users/me`
    UsersMe,
    /// `POST /users/me/password`
    UsersMePassword,
    /// `POST /users/me/logout-all`
    UsersMeLogoutAll,
    /// `POST /users/{username}/disable`
    UserDisable,
}

/// The result of routing a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed<'a> {
    /// A route, and the path parameter when the route has one.
    Found(Route, &'a str),
    /// The path exists, the method doesn't: `405` with this `Allow` value.
    MethodNotAllowed(&'static str),
    NotFound,
}

/// Routes a request. `HEAD` is accepted wherever `GET` is.
pub fn route(method: Method, path: &str) -> Routed<'_> {
    use Route::*;
    let get = matches!(method, Method::Get | Method::Head);
    let post = method == Method::Post;
    let (route, allowed_get) = match path {
        "/healthz" => (Healthz, true),
        "/readyz" => (Readyz, true),
        "/metrics" => (Metrics, true),
        "/validate" => (Validate, true),
        "/.well-known/jwks.json" => (Jwks, true),
        "/.well-known/oauth-authorization-server" => (Metadata, true),
        "/users/me" => (UsersMe, true),
        "/oauth/token" => (Token, false),
        "/oauth/introspect" => (Introspect, false),
        "/oauth/revoke" => (Revoke, false),
        "/users" => (Users, false),
        "/users/me/password" => (UsersMePassword, false),
        "/users/me/logout-all" => (UsersMeLogoutAll, false),
        _ => {
            if let Some(name) = path
                .strip_prefix("/users/")
                .and_then(|rest| rest.strip_suffix("/disable"))
                .filter(|n| !n.is_empty() && !n.contains('/'))
            {
                return if post {
                    Routed::Found(UserDisable, name)
                } else {
                    Routed::MethodNotAllowed("POST")
                };
            }
            return Routed::NotFound;
        }
    };
    match (allowed_get, get, post) {
        (true, true, _) | (false, _, true) => Routed::Found(route, ""),
        (true, false, _) => Routed::MethodNotAllowed("GET, HEAD"),
        (false, _, false) => Routed::MethodNotAllowed("POST"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(Method::Get, "/healthz"),
            Routed::Found(Route::Healthz, "")
        );
        assert_eq!(
            route(Method::Head, "/healthz"),
            Routed::Found(Route::Healthz, "")
        );
        assert_eq!(
            route(Method::Post, "/oauth/token"),
            Routed::Found(Route::Token, "")
        );
        assert_eq!(
            route(Method::Get, "/oauth/token"),
            Routed::MethodNotAllowed("POST")
        );
        assert_eq!(
            route(Method::Post, "/validate"),
            Routed::MethodNotAllowed("GET, HEAD")
        );
        assert_eq!(route(Method::Get, "/nope"), Routed::NotFound);
        assert_eq!(
            route(Method::Post, "/users/alice/disable"),
            Routed::Found(Route::UserDisable, "alice")
        );
        assert_eq!(route(Method::Post, "/users//disable"), Routed::NotFound);
        assert_eq!(route(Method::Post, "/users/a/b/disable"), Routed::NotFound);
    }
}
