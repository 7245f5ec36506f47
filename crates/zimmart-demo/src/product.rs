//! Product service: the catalogue. It deliberately checks no credentials,
//! like the team in the story that skipped the JWT library: the gateway is
//! what keeps `DELETE` away from strangers. Every request is logged so the
//! demo can show what the gateway forwarded.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::data::{self, Product};
use crate::serve::{self, Body, Routed};

pub(crate) struct Catalogue {
    inner: Mutex<Inner>,
}

struct Inner {
    products: BTreeMap<u64, Product>,
    /// Ids are never reused, so a deleted product stays gone.
    next_id: u64,
}

impl Catalogue {
    pub(crate) fn seeded() -> Self {
        let products: BTreeMap<u64, Product> = data::seed_products()
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        let next_id = products.keys().next_back().map_or(1, |last| last + 1);
        Catalogue {
            inner: Mutex::new(Inner { products, next_id }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No handler panics mid-update, so a poisoned lock still holds whole data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn list(&self, category: Option<&str>) -> Vec<Product> {
        self.lock()
            .products
            .values()
            .filter(|p| category.is_none_or(|c| p.category.eq_ignore_ascii_case(c)))
            .cloned()
            .collect()
    }

    fn get(&self, id: u64) -> Option<Product> {
        self.lock().products.get(&id).cloned()
    }

    fn add(&self, new: NewProduct) -> Product {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let product = Product::new(id, &new.name, &new.category, new.price_usd_cents, new.stock);
        inner.products.insert(id, product.clone());
        product
    }

    fn remove(&self, id: u64) -> bool {
        self.lock().products.remove(&id).is_some()
    }
}

#[derive(Debug, Deserialize)]
struct NewProduct {
    name: String,
    category: String,
    price_usd_cents: u64,
    #[serde(default)]
    stock: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    List,
    Create,
    Get(&'a str),
    Delete(&'a str),
}

fn route<'a>(method: &Method, path: &'a str) -> Routed<Route<'a>> {
    match (serve::segments(path).as_slice(), method) {
        (["products"], &Method::GET) => Routed::To(Route::List),
        (["products"], &Method::POST) => Routed::To(Route::Create),
        (["products"], _) => Routed::NotAllowed("GET, POST"),
        (["products", id], &Method::GET) => Routed::To(Route::Get(id)),
        (["products", id], &Method::DELETE) => Routed::To(Route::Delete(id)),
        (["products", _], _) => Routed::NotAllowed("GET, DELETE"),
        _ => Routed::NotFound,
    }
}

impl serve::Service for Catalogue {
    const NAME: &'static str = "product";

    fn observe(&self, req: &Request<Incoming>) {
        let header = |name| {
            req.headers()
                .get(name)
                .map_or("absent".into(), |v| String::from_utf8_lossy(v.as_bytes()))
        };
        let authorization = if req.headers().contains_key("authorization") {
            "present"
        } else {
            "absent"
        };
        let target = req
            .uri()
            .path_and_query()
            .map_or(req.uri().path(), |pq| pq.as_str());
        // One flat line, so it reads the same under any subscriber format.
        tracing::info!(
            "product: {} {} x-user-id={} x-role={} authorization={}",
            req.method(),
            target,
            header("x-user-id"),
            header("x-role"),
            authorization,
        );
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        match serve::unrouted(route(&parts.method, path), path) {
            Ok(Route::List) => self.list_response(&parts),
            Ok(Route::Get(id)) => match parse_id(id).and_then(|id| self.get(id)) {
                Some(product) => serve::json(StatusCode::OK, &product),
                None => serve::not_found(&format!("no product {id}")),
            },
            Ok(Route::Create) => match serve::read_json::<NewProduct>(body).await {
                Ok(new) => {
                    let product = self.add(new);
                    serve::created(&format!("/products/{}", product.id), &product)
                }
                Err(resp) => resp,
            },
            Ok(Route::Delete(id)) => match parse_id(id) {
                Some(id) if self.remove(id) => serve::no_content(),
                _ => serve::not_found(&format!("no product {id}")),
            },
            Err(resp) => resp,
        }
    }
}

impl Catalogue {
    fn list_response(&self, parts: &Parts) -> Response<Body> {
        let category = serve::query_param(parts, "category");
        let products = self.list(category.as_deref());
        serve::json(
            StatusCode::OK,
            &json!({ "count": products.len(), "products": products }),
        )
    }
}

fn parse_id(id: &str) -> Option<u64> {
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(&Method::GET, "/products"), Routed::To(Route::List));
        assert_eq!(
            route(&Method::POST, "/products/"),
            Routed::To(Route::Create)
        );
        assert_eq!(
            route(&Method::DELETE, "/products/1"),
            Routed::To(Route::Delete("1"))
        );
        assert_eq!(
            route(&Method::PUT, "/products/1"),
            Routed::NotAllowed("GET, DELETE")
        );
        assert_eq!(
            route(&Method::DELETE, "/products"),
            Routed::NotAllowed("GET, POST")
        );
        assert_eq!(route(&Method::GET, "/products/1/x"), Routed::NotFound);
    }

    #[test]
    fn store_filters_adds_and_removes() {
        let store = Catalogue::seeded();
        assert_eq!(store.list(None).len(), 6);
        assert_eq!(store.list(Some("Beverages")).len(), 2);
        assert!(store.list(Some("toys")).is_empty());

        let added = store.add(NewProduct {
            name: "Lobels Bread".into(),
            category: "bakery".into(),
            price_usd_cents: 100,
            stock: 30,
        });
        assert_eq!(added.id, 7);
        assert_eq!(added.price_zwg_cents, 2680);
        assert_eq!(store.get(7), Some(added));

        assert!(store.remove(7));
        assert!(!store.remove(7));
        assert_eq!(store.get(7), None);
        let next = store.add(NewProduct {
            name: "Lobels Bread".into(),
            category: "bakery".into(),
            price_usd_cents: 100,
            stock: 30,
        });
        assert_eq!(next.id, 8, "ids are not reused");
    }
}
