//! Notification service: the SMS, email and push messages sent to a user,
//! and the unread badge count the app shows.

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::data;
use crate::serve::{self, Body, Routed};

pub(crate) struct Notifications;

#[derive(Debug, PartialEq, Eq)]
enum Route {
    List,
    UnreadCount,
}

fn route(method: &Method, path: &str) -> Routed<Route> {
    match (serve::segments(path).as_slice(), method) {
        (["notifications"], &Method::GET) => Routed::To(Route::List),
        (["notifications", "unread-count"], &Method::GET) => Routed::To(Route::UnreadCount),
        (["notifications"] | ["notifications", "unread-count"], _) => Routed::NotAllowed("GET"),
        _ => Routed::NotFound,
    }
}

impl serve::Service for Notifications {
    const NAME: &'static str = "notification";

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, _body) = req.into_parts();
        let path = parts.uri.path();
        let route = match serve::unrouted(route(&parts.method, path), path) {
            Ok(route) => route,
            Err(resp) => return resp,
        };
        let Some(user_id) = serve::header(&parts, "x-user-id") else {
            return serve::unauthenticated();
        };
        match route {
            Route::List => {
                let unread_only =
                    serve::query_param(&parts, "unread").is_some_and(|v| v == "true" || v == "1");
                let list: Vec<_> = data::notifications_for(user_id)
                    .filter(|n| !(unread_only && n.read))
                    .collect();
                serve::json(
                    StatusCode::OK,
                    &json!({ "user_id": user_id, "count": list.len(), "notifications": list }),
                )
            }
            Route::UnreadCount => {
                let unread = data::notifications_for(user_id).filter(|n| !n.read).count();
                serve::json(StatusCode::OK, &json!({ "unread": unread }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(&Method::GET, "/notifications"),
            Routed::To(Route::List)
        );
        assert_eq!(
            route(&Method::GET, "/notifications/unread-count"),
            Routed::To(Route::UnreadCount)
        );
        assert_eq!(
            route(&Method::POST, "/notifications/unread-count"),
            Routed::NotAllowed("GET")
        );
        assert_eq!(
            route(&Method::GET, "/notifications/n-9001"),
            Routed::NotFound
        );
    }

    #[test]
    fn tendai_has_three_unread() {
        let all: Vec<_> = data::notifications_for("u-1001").collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all.iter().filter(|n| !n.read).count(), 3);
        assert_eq!(data::notifications_for("u-0001").count(), 0);
    }
}
