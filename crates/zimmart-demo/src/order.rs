//! Order service: order history and checkout. `OrderBook` holds the logic
//! and knows nothing of HTTP, so a gRPC front end can later call the same
//! methods beside the JSON routes here.

use std::sync::{Mutex, MutexGuard, PoisonError};

use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::data::{self, Order};
use crate::serve::{self, Body, Routed};

pub(crate) struct OrderBook {
    inner: Mutex<Inner>,
}

struct Inner {
    orders: Vec<Order>,
    next_number: u32,
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewOrder {
    items: Vec<NewItem>,
}

#[derive(Debug, Deserialize)]
struct NewItem {
    product_id: u64,
    quantity: u32,
}

/// Why an order was refused; the message is shown to the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Rejected(String);

impl OrderBook {
    pub(crate) fn seeded() -> Self {
        OrderBook {
            inner: Mutex::new(Inner {
                orders: data::seed_orders(),
                next_number: 5005,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No handler panics mid-update, so a poisoned lock still holds whole data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn list_for(&self, user_id: &str) -> Vec<Order> {
        let inner = self.lock();
        let mine = inner.orders.iter().filter(|o| o.user_id == user_id);
        mine.cloned().collect()
    }

    /// An order as seen by `user_id`: other customers' orders do not exist
    /// for them, only admins see every order.
    pub(crate) fn get(&self, id: &str, user_id: &str, is_admin: bool) -> Option<Order> {
        let inner = self.lock();
        let order = inner.orders.iter().find(|o| o.id == id)?;
        (is_admin || order.user_id == user_id).then(|| order.clone())
    }

    pub(crate) fn place(&self, user_id: &str, new: NewOrder) -> Result<Order, Rejected> {
        if new.items.is_empty() {
            return Err(Rejected("an order needs at least one item".into()));
        }
        let items = new
            .items
            .iter()
            .map(|i| match i.quantity {
                0 => Err(Rejected(format!(
                    "quantity of product {} is 0",
                    i.product_id
                ))),
                q => data::order_item(i.product_id, q)
                    .ok_or_else(|| Rejected(format!("no product {}", i.product_id))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut inner = self.lock();
        let id = format!("ord-{}", inner.next_number);
        inner.next_number += 1;
        let order = Order::new(&id, user_id, items, "pending", &data::now_rfc3339());
        inner.orders.push(order.clone());
        Ok(order)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    List,
    Create,
    Get(&'a str),
}

fn route<'a>(method: &Method, path: &'a str) -> Routed<Route<'a>> {
    match (serve::segments(path).as_slice(), method) {
        (["orders"], &Method::GET) => Routed::To(Route::List),
        (["orders"], &Method::POST) => Routed::To(Route::Create),
        (["orders"], _) => Routed::NotAllowed("GET, POST"),
        (["orders", id], &Method::GET) => Routed::To(Route::Get(id)),
        (["orders", _], _) => Routed::NotAllowed("GET"),
        _ => Routed::NotFound,
    }
}

impl serve::Service for OrderBook {
    const NAME: &'static str = "order";

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
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
                let orders = self.list_for(user_id);
                serve::json(
                    StatusCode::OK,
                    &json!({ "user_id": user_id, "count": orders.len(), "orders": orders }),
                )
            }
            Route::Get(id) => match self.get(id, user_id, is_admin(&parts)) {
                Some(order) => serve::json(StatusCode::OK, &order),
                None => serve::not_found(&format!("no order {id}")),
            },
            Route::Create => match serve::read_json::<NewOrder>(body).await {
                Ok(new) => match self.place(user_id, new) {
                    Ok(order) => serve::created(&format!("/orders/{}", order.id), &order),
                    Err(Rejected(why)) => {
                        serve::problem(StatusCode::UNPROCESSABLE_ENTITY, "Order Rejected", &why)
                    }
                },
                Err(resp) => resp,
            },
        }
    }
}

fn is_admin(parts: &Parts) -> bool {
    serve::header(parts, "x-role").is_some_and(|r| r.eq_ignore_ascii_case("admin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_order(items: &[(u64, u32)]) -> NewOrder {
        NewOrder {
            items: items
                .iter()
                .map(|&(product_id, quantity)| NewItem {
                    product_id,
                    quantity,
                })
                .collect(),
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route(&Method::GET, "/orders"), Routed::To(Route::List));
        assert_eq!(route(&Method::POST, "/orders"), Routed::To(Route::Create));
        assert_eq!(
            route(&Method::GET, "/orders/ord-5001"),
            Routed::To(Route::Get("ord-5001"))
        );
        assert_eq!(
            route(&Method::DELETE, "/orders/ord-5001"),
            Routed::NotAllowed("GET")
        );
        assert_eq!(route(&Method::GET, "/cart"), Routed::NotFound);
    }

    #[test]
    fn orders_are_private_to_their_owner() {
        let book = OrderBook::seeded();
        assert_eq!(book.list_for("u-1001").len(), 3);
        assert!(book.get("ord-5001", "u-1001", false).is_some());
        assert!(book.get("ord-5001", "u-1002", false).is_none());
        assert!(book.get("ord-5001", "u-0001", true).is_some());
    }

    #[test]
    fn placing_an_order_prices_it_from_the_catalogue() {
        let book = OrderBook::seeded();
        let order = book.place("u-1003", new_order(&[(1, 2), (5, 1)])).unwrap();
        assert_eq!(order.id, "ord-5005");
        assert_eq!(order.total_usd_cents, 2 * 450 + 165);
        assert_eq!(order.status, "pending");
        assert_eq!(book.list_for("u-1003"), vec![order]);

        assert!(book.place("u-1003", new_order(&[])).is_err());
        assert!(book.place("u-1003", new_order(&[(99, 1)])).is_err());
        assert!(book.place("u-1003", new_order(&[(1, 0)])).is_err());
    }
}
