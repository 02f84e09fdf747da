//! `(method, path)` → route. No I/O, no allocation.
//!
//! Owns the route table: every route, its metrics slot and its `route`
//! label, declared once (the "other" slot of unmatched requests follows the
//! last route). Imports nothing of the crate but `http::Method`; never a
//! handler, a service, a store or `metrics` (which reads its labels here).

use crate::http::Method;

/// Declares [`Route`] and its table from one list, so that a route cannot
/// exist without a metrics slot and a label: the variants in slot order,
/// each with its `route` label.
macro_rules! routes {
    ($($(#[$doc:meta])* $name:ident => $label:literal,)+) => {
        /// Every endpoint tokend serves.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Route {
            $($(#[$doc])* $name,)+
        }

        impl Route {
            /// Every route, in slot order: `Route::ALL[r.slot()] == r`.
            pub const ALL: &'static [Route] = &[$(Route::$name),+];

            /// The route's `route` label in metrics.
            pub const fn label(self) -> &'static str {
                match self {
                    $(Route::$name => $label,)+
                }
            }
        }
    };
}

routes! {
    Healthz => "healthz",
    Readyz => "readyz",
    Metrics => "metrics",
    Validate => "validate",
    Token => "token",
    Introspect => "introspect",
    Revoke => "revoke",
    Jwks => "jwks",
    Metadata => "metadata",
    /// `POST /users`
    Users => "users",
    /// `GET /users/me`
    UsersMe => "users_me",
    /// `POST /users/me/password`
    UsersMePassword => "users_me_password",
    /// `POST /users/me/logout-all`
    UsersMeLogoutAll => "users_me_logout_all",
    /// `POST /users/{username}/disable`
    UserDisable => "user_disable",
    /// `GET` / `POST /authorize`: the authorization endpoint (issue #16).
    Authorize => "authorize",
    /// `POST /login`: the sign-in page's form.
    Login => "login",
    /// `GET` / `POST /userinfo` (OpenID Connect).
    UserInfo => "userinfo",
    /// `GET /.well-known/openid-configuration`.
    OpenIdConfiguration => "openid_configuration",
    /// `GET` / `POST /logout`: RP-initiated logout (OpenID Connect
    /// RP-Initiated Logout 1.0), and its confirmation form.
    Logout => "logout",
}

impl Route {
    /// The route's metrics slot, below [`OTHER_SLOT`]: its place in
    /// [`Route::ALL`] (the macro declares the variants in that order, so the
    /// discriminant is the place; checked at compile time below).
    #[inline]
    pub const fn slot(self) -> usize {
        self as usize
    }
}

/// Metrics slot of the requests that matched no route (404, 405).
pub const OTHER_SLOT: usize = Route::ALL.len();
/// `route` label of [`OTHER_SLOT`].
pub const OTHER_LABEL: &str = "other";
/// Number of metrics slots: one per route, then "other".
pub const ROUTE_SLOTS: usize = OTHER_SLOT + 1;

/// The `route` label of each slot, "other" last.
pub const SLOT_LABELS: [&str; ROUTE_SLOTS] = {
    let mut labels = [OTHER_LABEL; ROUTE_SLOTS];
    let mut i = 0;
    while i < Route::ALL.len() {
        labels[i] = Route::ALL[i].label();
        i += 1;
    }
    labels
};

// Every route sits at its slot, so slots are distinct and below OTHER_SLOT.
const _: () = {
    let mut i = 0;
    while i < Route::ALL.len() {
        assert!(Route::ALL[i].slot() == i);
        i += 1;
    }
};

/// The result of routing a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed<'a> {
    /// A route, and the path parameter when the route has one.
    Found(Route, &'a str),
    /// The path exists, the method doesn't: `405` with this `Allow` value.
    MethodNotAllowed(&'static str),
    NotFound,
}

/// The methods a route takes.
#[derive(Clone, Copy)]
enum Allow {
    /// `GET` (and `HEAD`).
    Get,
    Post,
    /// Both, as OpenID Connect asks of its browser-facing endpoints.
    GetPost,
}

/// Routes a request. `HEAD` is accepted wherever `GET` is.
pub fn route(method: Method, path: &str) -> Routed<'_> {
    use Route::*;
    let get = matches!(method, Method::Get | Method::Head);
    let post = method == Method::Post;
    let (route, allow) = match path {
        "/healthz" => (Healthz, Allow::Get),
        "/readyz" => (Readyz, Allow::Get),
        "/metrics" => (Metrics, Allow::Get),
        "/validate" => (Validate, Allow::Get),
        "/.well-known/jwks.json" => (Jwks, Allow::Get),
        "/.well-known/oauth-authorization-server" => (Metadata, Allow::Get),
        "/users/me" => (UsersMe, Allow::Get),
        "/oauth/token" => (Token, Allow::Post),
        "/oauth/introspect" => (Introspect, Allow::Post),
        "/oauth/revoke" => (Revoke, Allow::Post),
        "/users" => (Users, Allow::Post),
        "/users/me/password" => (UsersMePassword, Allow::Post),
        "/users/me/logout-all" => (UsersMeLogoutAll, Allow::Post),
        // The sign-in routes come after every route of the validation
        // path's (issue #16).
        // OpenID Connect Core §3.1.2.1: GET and POST.
        "/authorize" => (Authorize, Allow::GetPost),
        "/login" => (Login, Allow::Post),
        "/.well-known/openid-configuration" => (OpenIdConfiguration, Allow::Get),
        // OpenID Connect Core §5.3: GET and POST.
        "/userinfo" => (UserInfo, Allow::GetPost),
        // OpenID Connect RP-Initiated Logout 1.0 §2: GET and POST.
        "/logout" => (Logout, Allow::GetPost),
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
    match allow {
        Allow::Get if get => Routed::Found(route, ""),
        Allow::Post if post => Routed::Found(route, ""),
        Allow::GetPost if get || post => Routed::Found(route, ""),
        Allow::Get => Routed::MethodNotAllowed("GET, HEAD"),
        Allow::Post => Routed::MethodNotAllowed("POST"),
        Allow::GetPost => Routed::MethodNotAllowed("GET, HEAD, POST"),
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
        assert_eq!(
            route(Method::Get, "/authorize"),
            Routed::Found(Route::Authorize, "")
        );
        assert_eq!(
            route(Method::Post, "/authorize"),
            Routed::Found(Route::Authorize, "")
        );
        assert_eq!(
            route(Method::Put, "/authorize"),
            Routed::MethodNotAllowed("GET, HEAD, POST")
        );
        assert_eq!(
            route(Method::Post, "/login"),
            Routed::Found(Route::Login, "")
        );
        assert_eq!(
            route(Method::Get, "/login"),
            Routed::MethodNotAllowed("POST")
        );
        for m in [Method::Get, Method::Head, Method::Post] {
            assert_eq!(route(m, "/userinfo"), Routed::Found(Route::UserInfo, ""));
        }
        assert_eq!(
            route(Method::Put, "/userinfo"),
            Routed::MethodNotAllowed("GET, HEAD, POST")
        );
        assert_eq!(
            route(Method::Get, "/.well-known/openid-configuration"),
            Routed::Found(Route::OpenIdConfiguration, "")
        );
        for m in [Method::Get, Method::Head, Method::Post] {
            assert_eq!(route(m, "/logout"), Routed::Found(Route::Logout, ""));
        }
        assert_eq!(
            route(Method::Delete, "/logout"),
            Routed::MethodNotAllowed("GET, HEAD, POST")
        );
        assert_eq!(route(Method::Get, "/logout/"), Routed::NotFound);
    }

    #[test]
    fn every_route_has_its_own_slot_and_label() {
        let mut slots = std::collections::HashSet::new();
        let mut labels = std::collections::HashSet::from([OTHER_LABEL]);
        for &r in Route::ALL {
            assert!(slots.insert(r.slot()), "{r:?}: slot taken");
            assert!(labels.insert(r.label()), "{r:?}: label taken");
            assert!(r.slot() < OTHER_SLOT, "{r:?}");
            assert_eq!(Route::ALL[r.slot()], r);
            assert_eq!(SLOT_LABELS[r.slot()], r.label());
            assert!(r
                .label()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        assert_eq!(slots.len(), Route::ALL.len());
        assert_eq!(SLOT_LABELS[OTHER_SLOT], OTHER_LABEL);
        assert_eq!(SLOT_LABELS.len(), ROUTE_SLOTS);
    }
}
