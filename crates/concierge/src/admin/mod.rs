//! The admin API, on its own listener (keep it on loopback):
//! `GET /healthz`, `GET /config`, `GET /metrics`, `POST /reload`.

mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::body::{Body, full};
use crate::gateway::Gateway;

/// Serves the admin API until shutdown.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener) {
    let stop = gateway.shutdown.clone();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let gw = gateway.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let gw = gw.clone();
                async move { Ok::<_, Infallible>(route(gw, request).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

async fn route(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, json!({"status": "ok"})),
        (&Method::GET, "/config") => json_response(StatusCode::OK, describe(&gateway)),
        (&Method::GET, "/metrics") => match metrics::render(gateway.snapshot()) {
            Ok(text) => {
                let mut response = Response::new(full(text));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            Err(_) => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "cannot encode metrics"}),
            ),
        },
        (&Method::POST, "/reload") => match gateway.reload().await {
            Ok(generation) => json_response(
                StatusCode::OK,
                json!({"reloaded": true, "generation": generation}),
            ),
            Err(error) => {
                crate::gateway::log_rejection("admin API", &error);
                json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"reloaded": false, "errors": error.lines()}),
                )
            }
        },
        (_, "/healthz" | "/config" | "/metrics" | "/reload") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "method not allowed"}),
        ),
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}

/// What is running now: frontends with their routes, services with targets.
fn describe(gateway: &Gateway) -> Value {
    let snapshot = gateway.snapshot();
    let mut frontends: Vec<Value> = snapshot
        .frontends
        .iter()
        .map(|f| {
            json!({
                "name": &*f.name,
                "listen": f.listen.to_string(),
                "tls": f.tls.is_some(),
                "routes": f.routes.values().map(|r| json!({"name": r.name, "service": r.pool.name})).collect::<Vec<_>>(),
            })
        })
        .collect();
    frontends.sort_by_key(|f| f["name"].as_str().unwrap_or_default().to_string());
    let mut services: Vec<Value> = snapshot
        .pools
        .values()
        .map(|p| {
            json!({
                "name": p.name,
                "targets": p.targets.iter().zip(&p.load).map(|(t, l)| json!({
                    "address": t.as_str(),
                    "weight": l.weight,
                    "in_flight": l.in_flight.load(Ordering::Relaxed),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    services.sort_by_key(|s| s["name"].as_str().unwrap_or_default().to_string());
    json!({
        "generation": snapshot.generation,
        "source": gateway.source.path().display().to_string(),
        "frontends": frontends,
        "services": services,
    })
}

fn json_response(status: StatusCode, value: Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
