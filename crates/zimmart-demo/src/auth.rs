//! Auth service: who the users are. Today it only answers profile lookups;
//! `POST /login` (issuing JWTs) and `GET /.well-known/jwks.json` slot in as
//! new `Route` variants, with credentials checked against `data::USERS`.

use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};

use crate::data;
use crate::serve::{self, Body, Routed};

pub(crate) struct Auth;

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Me,
    User(&'a str),
}

fn route<'a>(method: &Method, path: &'a str) -> Routed<Route<'a>> {
    match (serve::segments(path).as_slice(), method) {
        (["users", "me"], &Method::GET) => Routed::To(Route::Me),
        (["users", id], &Method::GET) => Routed::To(Route::User(id)),
        (["users", _], _) => Routed::NotAllowed("GET"),
        _ => Routed::NotFound,
    }
}

impl serve::Service for Auth {
    const NAME: &'static str = "auth";

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, _body) = req.into_parts();
        let path = parts.uri.path();
        match serve::unrouted(route(&parts.method, path), path) {
            Ok(Route::Me) => me(&parts),
            Ok(Route::User(id)) => profile(id),
            Err(resp) => resp,
        }
    }
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
        assert_eq!(route(&Method::GET, "/login"), Routed::NotFound);
    }
}
