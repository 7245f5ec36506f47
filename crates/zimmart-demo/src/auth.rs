//! Auth service: the demo identity provider. `POST /login` checks a
//! username and password against `data::USERS` and issues an ES256 access
//! token; `/.well-known/jwks.json` and `/.well-known/openid-configuration`
//! publish what the gateway needs to verify it. It also answers profile
//! lookups (`/users/me`, `/users/{id}`).

use std::net::SocketAddr;

use aws_lc_rs::constant_time;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::ISSUER;
use crate::data::{self, User};
use crate::serve::{self, Body, Routed};
use crate::tokens::{Signer, TOKEN_TTL_SECS};

/// Short enough that a restarted demo (new key) is picked up quickly.
const JWKS_CACHE_CONTROL: &str = "max-age=300";

pub(crate) struct Auth {
    signer: Signer,
    /// The address actually bound, for the URLs in the discovery document.
    addr: SocketAddr,
}

impl Auth {
    pub(crate) fn new(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Auth {
            signer: Signer::generate()?,
            addr,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Login,
    Jwks,
    Discovery,
    Me,
    User(&'a str),
}

fn route<'a>(method: &Method, path: &'a str) -> Routed<Route<'a>> {
    match (serve::segments(path).as_slice(), method) {
        (["login"], &Method::POST) => Routed::To(Route::Login),
        (["login"], _) => Routed::NotAllowed("POST"),
        ([".well-known", "jwks.json"], &Method::GET) => Routed::To(Route::Jwks),
        ([".well-known", "openid-configuration"], &Method::GET) => Routed::To(Route::Discovery),
        ([".well-known", "jwks.json" | "openid-configuration"], _) => Routed::NotAllowed("GET"),
        (["users", "me"], &Method::GET) => Routed::To(Route::Me),
        (["users", id], &Method::GET) => Routed::To(Route::User(id)),
        (["users", _], _) => Routed::NotAllowed("GET"),
        _ => Routed::NotFound,
    }
}

impl serve::Service for Auth {
    const NAME: &'static str = "auth";

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        match serve::unrouted(route(&parts.method, path), path) {
            Ok(Route::Login) => self.login(body).await,
            Ok(Route::Jwks) => self.jwks(),
            Ok(Route::Discovery) => self.discovery(),
            Ok(Route::Me) => me(&parts),
            Ok(Route::User(id)) => profile(id),
            Err(resp) => resp,
        }
    }
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

impl Auth {
    async fn login(&self, body: Incoming) -> Response<Body> {
        let creds: Credentials = match serve::read_json(body).await {
            Ok(creds) => creds,
            Err(resp) => return resp,
        };
        // One answer for unknown user and wrong password: no user enumeration.
        let Some(user) = authenticate(&creds) else {
            return serve::problem(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "invalid username or password",
            );
        };
        match self
            .signer
            .issue(user, jsonwebtoken::get_current_timestamp())
        {
            Ok(token) => {
                let mut resp = serve::json(
                    StatusCode::OK,
                    &json!({
                        "access_token": token,
                        "token_type": "Bearer",
                        "expires_in": TOKEN_TTL_SECS,
                    }),
                );
                // RFC 6749 §5.1: responses carrying tokens must not be cached.
                resp.headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                resp
            }
            Err(err) => serve::problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                &format!("signing the token failed: {err}"),
            ),
        }
    }

    fn jwks(&self) -> Response<Body> {
        let mut resp = serve::json(StatusCode::OK, &self.signer.jwks());
        resp.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static(JWKS_CACHE_CONTROL));
        resp
    }

    fn discovery(&self) -> Response<Body> {
        serve::json(
            StatusCode::OK,
            &json!({
                "issuer": ISSUER,
                "jwks_uri": format!("http://{}/.well-known/jwks.json", self.addr),
                "id_token_signing_alg_values_supported": ["ES256"],
            }),
        )
    }
}

fn authenticate(creds: &Credentials) -> Option<&'static User> {
    let user = data::user_by_username(&creds.username)?;
    // Constant time, so response timing does not leak how much matched.
    constant_time::verify_slices_are_equal(user.password.as_bytes(), creds.password.as_bytes())
        .ok()
        .map(|()| user)
}

fn me(parts: &Parts) -> Response<Body> {
    match serve::header(parts, "x-user-id") {
        Some(id) => profile(id),
        None => serve::unauthenticated(),
    }
}

fn profile(id: &str) -> Response<Body> {
    match data::user_by_id(id) {
        Some(user) => serve::json(StatusCode::OK, user),
        None => serve::not_found(&format!("no user {id}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route(&Method::GET, "/users/me"), Routed::To(Route::Me));
        assert_eq!(
            route(&Method::GET, "/users/u-1001"),
            Routed::To(Route::User("u-1001"))
        );
        assert_eq!(
            route(&Method::DELETE, "/users/u-1001"),
            Routed::NotAllowed("GET")
        );
        assert_eq!(route(&Method::GET, "/users"), Routed::NotFound);
        assert_eq!(route(&Method::POST, "/login"), Routed::To(Route::Login));
        assert_eq!(route(&Method::GET, "/login"), Routed::NotAllowed("POST"));
        assert_eq!(
            route(&Method::GET, "/.well-known/jwks.json"),
            Routed::To(Route::Jwks)
        );
        assert_eq!(
            route(&Method::GET, "/.well-known/openid-configuration"),
            Routed::To(Route::Discovery)
        );
        assert_eq!(
            route(&Method::POST, "/.well-known/jwks.json"),
            Routed::NotAllowed("GET")
        );
        assert_eq!(route(&Method::GET, "/.well-known/other"), Routed::NotFound);
    }

    #[test]
    fn only_the_right_password_authenticates() {
        assert_eq!(
            authenticate(&creds("tendai", data::DEMO_PASSWORD)).map(|u| u.id),
            Some("u-1001")
        );
        assert_eq!(
            authenticate(&creds("admin", data::DEMO_PASSWORD)).map(|u| u.role),
            Some("admin")
        );
        assert!(authenticate(&creds("tendai", "wrong")).is_none());
        assert!(authenticate(&creds("tendai", "")).is_none());
        assert!(authenticate(&creds("nobody", data::DEMO_PASSWORD)).is_none());
    }
}
