//! Payment service: the caller's saved payment methods (EcoCash, InnBucks,
//! Visa), always masked.

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::data;
use crate::serve::{self, Body, Routed};

pub(crate) struct Payment;

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Methods,
}

fn route(method: &Method, path: &str) -> Routed<Route> {
    match (serve::segments(path).as_slice(), method) {
        (["payment-methods"], &Method::GET) => Routed::To(Route::Methods),
        (["payment-methods"], _) => Routed::NotAllowed("GET"),
        _ => Routed::NotFound,
    }
}

impl serve::Service for Payment {
    const NAME: &'static str = "payment";

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, _body) = req.into_parts();
        let path = parts.uri.path();
        match serve::unrouted(route(&parts.method, path), path) {
            Ok(Route::Methods) => match serve::header(&parts, "x-user-id") {
                Some(user_id) => serve::json(
                    StatusCode::OK,
                    &json!({
                        "user_id": user_id,
                        "payment_methods": data::payment_methods(user_id),
                    }),
                ),
                None => serve::unauthenticated(),
            },
            Err(resp) => resp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(&Method::GET, "/payment-methods"),
            Routed::To(Route::Methods)
        );
        assert_eq!(
            route(&Method::POST, "/payment-methods"),
            Routed::NotAllowed("GET")
        );
        assert_eq!(route(&Method::GET, "/payments"), Routed::NotFound);
    }

    #[test]
    fn tendai_has_all_three_kinds() {
        let methods = serde_json::to_value(data::payment_methods("u-1001")).unwrap();
        let kinds: Vec<_> = methods
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["ecocash", "innbucks", "visa"]);
        assert_eq!(methods[0]["phone_masked"], "+263 77* *** 123");
        assert_eq!(methods[2]["last4"], "4242");
    }
}
